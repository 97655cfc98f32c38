package testenv

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mainActive is set by Main: it guarantees StopShared runs at exit, which
// shared servers and the MariaDB data directory template rely on.
var mainActive atomic.Bool

var shared struct {
	sync.Mutex
	mariadb    *MariaDB
	mariadbErr error
	redis      *Redis
	redisErr   error
}

// Main runs the tests, stops the shared servers and exits with the tests'
// status. Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m interface{ Run() int }) {
	mainActive.Store(true)
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared kills the shared servers, removes their files and the MariaDB
// data directory template. Main calls it; it is safe to call more than once.
func StopShared() {
	shared.Lock()
	mdb, rds := shared.mariadb, shared.redis
	shared.mariadb, shared.mariadbErr = nil, nil
	shared.redis, shared.redisErr = nil, nil
	shared.Unlock()
	if mdb != nil {
		if err := mdb.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop shared MariaDB: %v\n", err)
		}
	}
	if rds != nil {
		if err := rds.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop shared Redis: %v\n", err)
		}
	}
	if err := removeTemplate(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	}
}

func requireMain(t testing.TB, what string) {
	t.Helper()
	if !mainActive.Load() {
		t.Fatalf("testenv: %s needs the package's TestMain to call testenv.Main(m) "+
			"(it stops shared servers at exit): add\n\tfunc TestMain(m *testing.M) { testenv.Main(m) }", what)
	}
}

// SharedMariaDB returns the test binary's shared MariaDB, starting it on
// first use. Do not Kill, Stop or Restart it; use CreateDatabase for
// isolation. Requires testenv.Main in TestMain. A failed start is remembered
// and fails later callers without retrying.
func SharedMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	paths := require(t, binMariaDBD, binInstallDB)
	requireMain(t, "SharedMariaDB")
	shared.Lock()
	defer shared.Unlock()
	if shared.mariadb == nil && shared.mariadbErr == nil {
		began := time.Now()
		shared.mariadb, shared.mariadbErr = startMariaDB(paths[0], paths[1])
		if shared.mariadbErr == nil {
			shared.mariadb.shared = true
			t.Logf("testenv: shared MariaDB on %s started in %v", shared.mariadb.Addr, time.Since(began).Round(time.Millisecond))
		}
	}
	if shared.mariadbErr != nil {
		t.Fatalf("testenv: start shared MariaDB: %v", shared.mariadbErr)
	}
	return shared.mariadb
}

// SharedRedis returns the test binary's shared Redis, starting it on first
// use. Do not Kill, Stop or Restart it. Tests sharing it must use distinct
// keys. Requires testenv.Main in TestMain.
func SharedRedis(t testing.TB) *Redis {
	t.Helper()
	paths := require(t, binRedis)
	requireMain(t, "SharedRedis")
	shared.Lock()
	defer shared.Unlock()
	if shared.redis == nil && shared.redisErr == nil {
		began := time.Now()
		shared.redis, shared.redisErr = startRedis(paths[0])
		if shared.redisErr == nil {
			shared.redis.shared = true
			t.Logf("testenv: shared Redis on %s started in %v", shared.redis.Addr, time.Since(began).Round(time.Millisecond))
		}
	}
	if shared.redisErr != nil {
		t.Fatalf("testenv: start shared Redis: %v", shared.redisErr)
	}
	return shared.redis
}
