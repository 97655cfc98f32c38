package exdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func openSQLite(t *testing.T) *sql.DB {
	t.Helper()
	conn, err := Connector(SQLite, SQLiteDSN(filepath.Join(t.TempDir(), "t.db")))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// A transaction open on one connection makes BeginTx on another wait (in
// Go, not in SQLite's busy handler) until it ends; a waiter whose ctx ends
// gives up with ctx's error.
func TestSQLiteWriteLockQueues(t *testing.T) {
	db := openSQLite(t)
	ctx := context.Background()
	held, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Exec(`INSERT INTO t (k, v) VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := db.BeginTx(short, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BeginTx while another transaction is open: got %v, want deadline exceeded", err)
	}

	done := make(chan error, 1)
	go func() {
		tx, err := db.BeginTx(ctx, nil)
		if err == nil {
			_, err = tx.Exec(`UPDATE t SET v = v + 1 WHERE k = 1`)
		}
		if err == nil {
			err = tx.Commit()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("second transaction finished while the first was open: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := held.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("second transaction after the first committed: %v", err)
	}
	var v int
	if err := db.QueryRow(`SELECT v FROM t WHERE k = 1`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("v = %d, %v; want 2", v, err)
	}
}

// Closing a connection with an open transaction lets the lock go.
func TestSQLiteWriteLockReleasedOnClose(t *testing.T) {
	ctx := context.Background()
	conn, err := Connector(SQLite, SQLiteDSN(filepath.Join(t.TempDir(), "t.db")))
	if err != nil {
		t.Fatal(err)
	}
	begin := func(ctx context.Context) (driver.Conn, error) {
		dc, err := conn.Connect(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := dc.(driver.ConnBeginTx).BeginTx(ctx, driver.TxOptions{}); err != nil {
			_ = dc.Close()
			return nil, err
		}
		return dc, nil
	}
	first, err := begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	second, err := begin(tctx)
	if err != nil {
		t.Fatalf("BeginTx after the holder closed: %v", err)
	}
	_ = second.Close()
}
