package xa_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/xa"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// openDB opens a *sql.DB on dsn that the test closes at cleanup.
func openDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// sharedDB returns a fresh database on the test binary's MariaDB with a
// table t(id INT PRIMARY KEY, v VARCHAR(64)) and its DSN.
func sharedDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	_, dsn := testenv.SharedMariaDB(t).CreateDatabase(t)
	db := openDB(t, dsn)
	mustExec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
	return db, dsn
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustExec(t testing.TB, e xa.Execer, q string, args ...any) {
	t.Helper()
	if _, err := e.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func newXid() xa.Xid { return xa.Xid{Group: gid.New(), Branch: gid.New()} }

func conn(t testing.TB, db *sql.DB) *sql.Conn {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func count(t testing.TB, db *sql.DB, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM t WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// listed reports whether Recover lists x.
func listed(t testing.TB, q xa.Queryer, x xa.Xid) bool {
	t.Helper()
	xs, err := xa.Recover(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// prepareOn runs XA START, an insert of row id, XA END and XA PREPARE of x on c.
func prepareOn(t testing.TB, c xa.Execer, x xa.Xid, id int) {
	t.Helper()
	ctx := context.Background()
	if err := xa.Start(ctx, c, x); err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "INSERT INTO t (id, v) VALUES (?, ?)", id, x.Group)
	if err := xa.End(ctx, c, x); err != nil {
		t.Fatal(err)
	}
	if err := xa.Prepare(ctx, c, x); err != nil {
		t.Fatal(err)
	}
}
