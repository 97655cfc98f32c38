package config

import (
	"testing"

	"github.com/golcn/golcn/internal/testenv"
)

// testPKI is a throw-away CA with a server and a client certificate, as
// PEM files.
type testPKI struct {
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	otherKey              string // a key that matches neither certificate
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	var p testPKI
	p.caFile = ca.WriteCA(t, dir, "ca.pem")
	p.serverCert, p.serverKey = testenv.WriteKeyPair(t, dir, "server", ca.Issue(t, "server", true))
	p.clientCert, p.clientKey = testenv.WriteKeyPair(t, dir, "client", ca.Issue(t, "client", false))
	p.otherKey = testenv.WriteKey(t, dir, "other.key")
	return p
}
