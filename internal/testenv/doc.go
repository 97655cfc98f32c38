// Package testenv starts private MariaDB and Redis servers for integration
// tests.
//
// # Contract
//
// Every server started by this package is private to the test binary: it runs
// from a fresh directory under os.TempDir(), listens only on 127.0.0.1 on a
// free port, and never touches a system server (3306/6379) or state left by
// an earlier run. Servers run in their own process group, their stdout and
// stderr go to a log file in their directory, and the tail of that log is
// included in every start failure.
//
//   - StartMariaDB / StartRedis start a server owned by one test. It is killed
//     and its files are removed by t.Cleanup. Such servers may be Kill'ed,
//     Stop'ped and Restart'ed (same port, same data) to test crash recovery.
//     MariaDB runs with InnoDB, innodb_flush_log_at_trx_commit=1 and no
//     binary log; Redis runs with appendonly yes and appendfsync always, so
//     acknowledged writes survive Kill+Restart.
//   - SharedMariaDB / SharedRedis return one server per test binary, started
//     lazily on first use, for tests that do not kill servers (Kill, Stop and
//     Restart on a shared server fail the test). Use MariaDB.CreateDatabase
//     to get an isolated schema.
//
// Shared servers are stopped by StopShared, which Main calls, so a package
// using them must have this TestMain (SharedMariaDB/SharedRedis fail the test
// otherwise):
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Under Main, StartMariaDB also copies a data directory initialised once per
// test binary instead of running mariadb-install-db for every server (about
// two seconds saved per server); Main removes it at exit.
//
// MariaDB's root user has no password and uses mysql_native_password (the
// data directory is initialised with --auth-root-authentication-method=normal),
// so MariaDB.DSN works over TCP.
//
// # TLS
//
// NewCA, CA.Issue, CA.WriteCA, WriteKeyPair and WriteKey make throw-away
// certificates (ECDSA P-256, valid for an hour) for TLS and mutual-TLS tests.
//
// # Skipping
//
// If a needed binary (mariadbd, mariadb-install-db, redis-server) is missing,
// the constructors skip the test with a message starting with
// "INTEGRATION TEST SKIPPED". With LCN_REQUIRE_INTEGRATION=1 they fail it
// instead, so CI cannot silently skip integration tests. Binaries are looked
// up in PATH and then in /usr/sbin, /usr/local/sbin and /usr/local/bin; the
// variables LCN_MARIADBD, LCN_MARIADB_INSTALL_DB and LCN_REDIS_SERVER may
// name them explicitly.
package testenv
