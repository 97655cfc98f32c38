package lcnmysql_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/sqlproxy/lcnmysql"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Adoption is a driver name: sql.Open("lcn-mysql", dsn) passes statements
// straight through outside a group, and inside a group holds the work until
// the TxManager's decision, using the process's default client.
func TestOpenByName(t *testing.T) {
	mdb := testenv.SharedMariaDB(t)
	_, dsn := mdb.CreateDatabase(t)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := txmanager.New(txmanager.Config{Logger: log, Auth: txmanager.AuthConfig{Insecure: true}}, txmanager.NewMemoryStore(txmanager.StoreOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); _ = srv.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = srv.Run(ctx) }()

	c, err := txclient.New(txclient.Config{ManagerURL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws", Service: "adopter", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); txclient.SetDefault(nil) })
	txclient.SetDefault(c)

	db, err := sql.Open(lcnmysql.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (id INT PRIMARY KEY, v INT)`); err != nil {
		t.Fatalf("outside a group: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO t VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}

	gctx, g, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(gctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(gctx, `UPDATE t SET v = 42 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("vote: %v", err)
	}
	read := func() int {
		var v int
		if err := db.QueryRow(`SELECT v FROM t WHERE id = 1`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := read(); v != 0 {
		t.Fatalf("held work visible before the decision: v=%d", v)
	}
	if err := g.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for read() != 42 {
		if time.Now().After(deadline) {
			t.Fatal("committed work never became visible")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The datasource name is the DSN's address and database, and never carries
// the password.
func TestOptionsDatasource(t *testing.T) {
	opt, err := lcnmysql.Options("app:s3cret@tcp(db:3306)/orders?parseTime=true")
	if err != nil {
		t.Fatal(err)
	}
	if opt.Datasource != "db:3306/orders" || strings.Contains(opt.Datasource, "s3cret") {
		t.Fatalf("datasource %q", opt.Datasource)
	}
	if opt.Mode != sqlproxy.ModeAuto {
		t.Fatalf("mode %q, want %q", opt.Mode, sqlproxy.ModeAuto)
	}
	if _, err := lcnmysql.Options("::not a dsn"); err == nil {
		t.Fatal("malformed DSN accepted")
	}
}

// OpenDB forces a branch mode; an unknown one is refused.
func TestOpenDBMode(t *testing.T) {
	mdb := testenv.SharedMariaDB(t)
	_, dsn := mdb.CreateDatabase(t)
	if _, err := lcnmysql.OpenDB(dsn, "2pc"); err == nil || !strings.Contains(err.Error(), `unknown branch mode "2pc"`) {
		t.Fatalf("OpenDB with mode 2pc: %v", err)
	}
	for _, mode := range []string{"", sqlproxy.ModeLCN, sqlproxy.ModeXA, sqlproxy.ModeAuto} {
		db, err := lcnmysql.OpenDB(dsn, mode)
		if err != nil {
			t.Fatalf("OpenDB(%q): %v", mode, err)
		}
		if err := db.Ping(); err != nil {
			t.Fatalf("OpenDB(%q): ping: %v", mode, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lcnmysql.OpenDB("::not a dsn", ""); err == nil {
		t.Fatal("malformed DSN accepted")
	}
}
