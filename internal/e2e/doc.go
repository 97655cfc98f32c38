// Package e2e holds golcn's end-to-end integration tests: a real TxManager
// (embedded file store and Redis store), real TxClients over websockets, the
// proxy driver over real MariaDB, and services talking HTTP. It has no
// non-test code beyond this comment.
package e2e
