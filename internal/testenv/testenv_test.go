package testenv

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
)

func TestMain(m *testing.M) { Main(m) }

func TestRequireDecision(t *testing.T) {
	notFound := errors.New(`exec: "mariadbd": executable file not found in $PATH`)
	tests := []struct {
		name    string
		lookErr error
		env     string
		want    requireAction
		wantMsg string
	}{
		{"found", nil, "", actionRun, ""},
		{"found and required", nil, "1", actionRun, ""},
		{"missing", notFound, "", actionSkip, "INTEGRATION TEST SKIPPED: mariadbd not found"},
		{"missing env 0", notFound, "0", actionSkip, "INTEGRATION TEST SKIPPED: mariadbd not found"},
		{"missing env garbage", notFound, "yes please", actionSkip, "INTEGRATION TEST SKIPPED"},
		{"missing required", notFound, "1", actionFail, "INTEGRATION TEST FAILED: mariadbd not found"},
		{"missing required true", notFound, "true", actionFail, "LCN_REQUIRE_INTEGRATION=true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := requireDecision("mariadbd", "install it", tt.lookErr, tt.env)
			if got != tt.want {
				t.Fatalf("action = %v, want %v (msg %q)", got, tt.want, msg)
			}
			if !strings.Contains(msg, tt.wantMsg) {
				t.Fatalf("msg = %q, want it to contain %q", msg, tt.wantMsg)
			}
			if got != actionRun && !strings.Contains(msg, notFound.Error()) {
				t.Fatalf("msg = %q does not include the lookup error", msg)
			}
		})
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 20; i++ {
		p := FreePort(t)
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("FreePort returned %d (seen before: %v)", p, seen[p])
		}
		seen[p] = true
		l, err := net.Listen("tcp", hostPort(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}

func TestSanitizeName(t *testing.T) {
	got := sanitizeName("TestFoo/sub-test #1/" + strings.Repeat("x", 100))
	if len(got) > 40 || !strings.HasPrefix(got, "testfoo_sub_test__1_") {
		t.Fatalf("sanitizeName = %q", got)
	}
}

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, ctx context.Context, e interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := e.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

type xaRow struct {
	formatID, gtridLen, bqualLen int
	data                         string
}

func xaRecover(t *testing.T, ctx context.Context, db *sql.DB) []xaRow {
	t.Helper()
	rows, err := db.QueryContext(ctx, "XA RECOVER")
	if err != nil {
		t.Fatalf("XA RECOVER: %v", err)
	}
	defer rows.Close()
	var out []xaRow
	for rows.Next() {
		var r xaRow
		if err := rows.Scan(&r.formatID, &r.gtridLen, &r.bqualLen, &r.data); err != nil {
			t.Fatalf("scan XA RECOVER: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("XA RECOVER rows: %v", err)
	}
	return out
}

func countRows(t *testing.T, ctx context.Context, db *sql.DB, where string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM kv WHERE "+where).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", where, err)
	}
	return n
}

// TestMariaDBKillRestart proves committed InnoDB data and a prepared XA
// branch survive SIGKILL + Restart, and that the branch can be rolled back.
func TestMariaDBKillRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	m := StartMariaDB(t)
	if !strings.HasPrefix(m.Addr, "127.0.0.1:") || m.Port == 3306 {
		t.Fatalf("unexpected address %s", m.Addr)
	}
	if len(m.Socket) > maxSocketPath {
		t.Fatalf("socket path too long: %s", m.Socket)
	}
	name, dsn := m.CreateDatabase(t)
	if want := "root@tcp(" + m.Addr + ")/" + name + "?"; !strings.HasPrefix(dsn, want) || !strings.Contains(dsn, "parseTime=true") {
		t.Fatalf("DSN = %q, want prefix %q and parseTime=true", dsn, want)
	}

	db := openDB(t, dsn)
	mustExec(t, ctx, db, "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL) ENGINE=InnoDB")
	mustExec(t, ctx, db, "INSERT INTO kv VALUES (1, 'committed')")

	// Prepare an XA branch on a dedicated connection and leave it prepared.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const xid = "'lcn-gtrid-1','lcn-bq-1'"
	mustExec(t, ctx, conn, "XA START "+xid)
	mustExec(t, ctx, conn, "INSERT INTO kv VALUES (2, 'prepared')")
	mustExec(t, ctx, conn, "XA END "+xid)
	mustExec(t, ctx, conn, "XA PREPARE "+xid)

	m.Kill(t)
	conn.Close() // the server is gone; just release the pool's slot
	db.Close()

	if _, err := m.probeOnce(); err == nil {
		t.Fatal("server still answers after Kill")
	}

	m.Restart(t)
	db = openDB(t, dsn)

	var v string
	if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE id = 1").Scan(&v); err != nil || v != "committed" {
		t.Fatalf("committed row after restart: v=%q err=%v", v, err)
	}
	if n := countRows(t, ctx, db, "id = 2"); n != 0 {
		t.Fatalf("prepared (uncommitted) row visible after restart: %d", n)
	}
	recs := xaRecover(t, ctx, db)
	want := xaRow{formatID: 1, gtridLen: len("lcn-gtrid-1"), bqualLen: len("lcn-bq-1"), data: "lcn-gtrid-1lcn-bq-1"}
	if len(recs) != 1 || recs[0] != want {
		t.Fatalf("XA RECOVER after restart = %+v, want [%+v]", recs, want)
	}

	mustExec(t, ctx, db, "XA ROLLBACK "+xid)
	if recs := xaRecover(t, ctx, db); len(recs) != 0 {
		t.Fatalf("XA RECOVER after rollback = %+v, want none", recs)
	}
	if n := countRows(t, ctx, db, "id = 2"); n != 0 {
		t.Fatalf("rolled-back row present: %d", n)
	}
	// The rolled-back branch released its locks.
	mustExec(t, ctx, db, "INSERT INTO kv VALUES (2, 'after-rollback')")

	// Graceful Stop + Restart keeps data too.
	db.Close()
	m.Stop(t)
	m.Restart(t)
	db = openDB(t, dsn)
	if n := countRows(t, ctx, db, "id IN (1, 2)"); n != 2 {
		t.Fatalf("rows after stop/restart = %d, want 2", n)
	}
}

// probeOnce runs a single readiness probe with a short timeout.
func (m *MariaDB) probeOnce() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := m.probe(ctx)
	return err == nil, err
}

func TestSharedMariaDB(t *testing.T) {
	t.Parallel()
	m := SharedMariaDB(t)
	if m2 := SharedMariaDB(t); m2 != m {
		t.Fatal("SharedMariaDB returned a different instance")
	}
	var name string
	t.Run("create", func(t *testing.T) {
		var dsn string
		name, dsn = m.CreateDatabase(t)
		db := openDB(t, dsn)
		mustExec(t, context.Background(), db, "CREATE TABLE x (id INT PRIMARY KEY)")
	})
	// The subtest's cleanup dropped the schema.
	db := openDB(t, m.DSN(""))
	var n int
	err := db.QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", name).Scan(&n)
	if err != nil || n != 0 {
		t.Fatalf("schema %s after cleanup: count=%d err=%v", name, n, err)
	}
}

func TestCleanupRemovesFiles(t *testing.T) {
	t.Parallel()
	var mdir, rdir string
	t.Run("servers", func(t *testing.T) {
		mdir = StartMariaDB(t).Dir
		rdir = StartRedis(t).Dir
	})
	for _, d := range []string{mdir, rdir} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after cleanup (err=%v)", d, err)
		}
	}
}

// redisDo sends one command over a fresh connection and returns a bulk or
// simple string reply (nil bulk reply -> "", false).
func redisDo(t *testing.T, addr string, args ...string) (string, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial redis %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatalf("write %v: %v", args, err)
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("read %v: %v", args, err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], true
	case strings.HasPrefix(line, "$-1"):
		return "", false
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			t.Fatalf("bad bulk header %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			t.Fatalf("read bulk: %v", err)
		}
		return string(buf[:n]), true
	default:
		t.Fatalf("%v: unexpected reply %q", args, line)
	}
	return "", false
}

func TestRedisKillRestart(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	if got, _ := redisDo(t, r.Addr, "SET", "lcn:key", "durable value"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	r.Kill(t)
	r.Kill(t) // idempotent
	r.Restart(t)
	if got, ok := redisDo(t, r.Addr, "GET", "lcn:key"); !ok || got != "durable value" {
		t.Fatalf("GET after kill+restart = %q, %v", got, ok)
	}
	if got, _ := redisDo(t, r.Addr, "SET", "lcn:key2", "v2"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	r.Stop(t)
	r.Restart(t)
	if got, ok := redisDo(t, r.Addr, "GET", "lcn:key2"); !ok || got != "v2" {
		t.Fatalf("GET after stop+restart = %q, %v", got, ok)
	}
}

func TestRedisRestartEmpty(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	if got, _ := redisDo(t, r.Addr, "SET", "lcn:key", "v"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	r.RestartEmpty(t)
	if got, ok := redisDo(t, r.Addr, "GET", "lcn:key"); ok {
		t.Fatalf("GET after RestartEmpty = %q, want nil", got)
	}
	if got, _ := redisDo(t, r.Addr, "SET", "lcn:key", "again"); got != "OK" {
		t.Fatalf("SET after RestartEmpty = %q", got)
	}
}

func TestSharedRedis(t *testing.T) {
	t.Parallel()
	r := SharedRedis(t)
	if SharedRedis(t) != r {
		t.Fatal("SharedRedis returned a different instance")
	}
	if got, _ := redisDo(t, r.Addr, "PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
}

// TestLaunchOnTakenPort checks that a server whose port is held by another
// private server fails with a detected clash instead of mistaking the other
// server for itself (the probes check @@datadir / the Redis pid).
func TestLaunchOnTakenPort(t *testing.T) {
	t.Parallel()
	m1, m2 := StartMariaDB(t), StartMariaDB(t)
	m2.Kill(t)
	m2.Port, m2.Addr = m1.Port, m1.Addr
	if clash, err := m2.launch(); err == nil || !clash {
		t.Fatalf("MariaDB launch on a taken port: clash=%v err=%v", clash, err)
	}

	r1, r2 := StartRedis(t), StartRedis(t)
	r2.Kill(t)
	r2.Port, r2.Addr = r1.Port, r1.Addr
	if clash, err := r2.launch(); err == nil || !clash {
		t.Fatalf("Redis launch on a taken port: clash=%v err=%v", clash, err)
	} else if !strings.Contains(err.Error(), "--- tail of ") {
		t.Fatalf("start error lacks the log tail: %v", err)
	}
}

// TestNoGoroutineLeak runs alone (not parallel) and checks that starting,
// killing, restarting and cleaning up servers leaves no goroutines behind.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("servers", func(t *testing.T) {
		m := StartMariaDB(t)
		m.Kill(t)
		m.Restart(t)
		r := StartRedis(t)
		r.Kill(t)
		r.Restart(t)
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}
