package testenv

import "fmt"

// Standalone servers: for commands (cmd/lcnbench) that need a private server
// outside any test. They behave like StartMariaDB and StartRedis (fresh
// directory, free port on 127.0.0.1, same server options) but are owned by
// the caller, who must call Close; a missing binary is an error, not a skip.

// StartMariaDBServer starts a private mariadbd. The caller owns it and must
// Close it, which kills the server and removes its files.
func StartMariaDBServer() (*MariaDB, error) {
	d, err := binMariaDBD.lookPath()
	if err != nil {
		return nil, fmt.Errorf("testenv: mariadbd: %w (%s)", err, binMariaDBD.hint)
	}
	i, err := binInstallDB.lookPath()
	if err != nil {
		return nil, fmt.Errorf("testenv: mariadb-install-db: %w (%s)", err, binInstallDB.hint)
	}
	return startMariaDB(d, i)
}

// Close kills a server started by StartMariaDBServer and removes its files.
// It is idempotent.
func (m *MariaDB) Close() error { return m.destroy() }

// StartRedisServer starts a private redis-server (AOF, appendfsync always).
// The caller owns it and must Close it, which kills the server and removes
// its files.
func StartRedisServer() (*Redis, error) {
	p, err := binRedis.lookPath()
	if err != nil {
		return nil, fmt.Errorf("testenv: redis-server: %w (%s)", err, binRedis.hint)
	}
	return startRedis(p)
}

// Close kills a server started by StartRedisServer and removes its files.
// It is idempotent.
func (r *Redis) Close() error { return r.destroy() }
