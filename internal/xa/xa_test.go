package xa_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/xa"
)

func TestXidSQL(t *testing.T) {
	x := xa.Xid{Group: strings.Repeat("0a", 16), Branch: strings.Repeat("b1", 16)}
	want := "'" + x.Group + "','" + x.Branch + "',4997966"
	if got := x.SQL(); got != want {
		t.Fatalf("SQL() = %q, want %q", got, want)
	}
	if xa.FormatID != 4997966 || xa.ProbeFormatID == xa.FormatID {
		t.Fatalf("format ids: %d, %d", xa.FormatID, xa.ProbeFormatID)
	}
	for _, bad := range []xa.Xid{
		{},
		{Group: x.Group},
		{Group: strings.ToUpper(x.Group), Branch: x.Branch},
		{Group: x.Group, Branch: x.Branch[:31] + "'"},
		{Group: x.Group + "0", Branch: x.Branch},
	} {
		if s := bad.SQL(); s != "" {
			t.Errorf("%#v.SQL() = %q, want \"\"", bad, s)
		}
		if err := bad.Validate(); !errors.Is(err, xa.ErrNotGolcnXid) {
			t.Errorf("%#v.Validate() = %v, want ErrNotGolcnXid", bad, err)
		}
	}
}

// failExecer fails the test if any statement reaches it.
type failExecer struct{ t *testing.T }

func (f failExecer) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	f.t.Errorf("statement sent for an invalid xid: %s", q)
	return nil, nil
}

func TestInvalidXidSendsNothing(t *testing.T) {
	ctx := context.Background()
	bad := xa.Xid{Group: "x'; DROP TABLE t; --", Branch: gid.New()}
	var c xa.Execer = failExecer{t}
	for name, err := range map[string]error{
		"Start":    xa.Start(ctx, c, bad),
		"End":      xa.End(ctx, c, bad),
		"Prepare":  xa.Prepare(ctx, c, bad),
		"Commit":   xa.Commit(ctx, c, bad, true),
		"Rollback": xa.Rollback(ctx, c, bad),
	} {
		if !errors.Is(err, xa.ErrNotGolcnXid) {
			t.Errorf("%s = %v, want ErrNotGolcnXid", name, err)
		}
	}
}

func TestLifecycle(t *testing.T) {
	db, _ := sharedDB(t)
	ctx := ctxT(t)
	c := conn(t, db)

	// Two-phase commit on one connection.
	x := newXid()
	prepareOn(t, c, x, 1)
	if n := count(t, db, "id = 1"); n != 0 {
		t.Fatalf("prepared row visible before commit: %d", n)
	}
	if err := xa.Commit(ctx, c, x, false); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "id = 1"); n != 1 {
		t.Fatalf("committed row count = %d, want 1", n)
	}

	// One-phase commit.
	y := newXid()
	if err := xa.Start(ctx, c, y); err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "INSERT INTO t VALUES (2, 'one phase')")
	if err := xa.End(ctx, c, y); err != nil {
		t.Fatal(err)
	}
	if err := xa.Commit(ctx, c, y, true); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "id = 2"); n != 1 {
		t.Fatalf("one-phase row count = %d, want 1", n)
	}

	// Rollback of a prepared branch, and of an ended one.
	z := newXid()
	prepareOn(t, c, z, 3)
	if err := xa.Rollback(ctx, c, z); err != nil {
		t.Fatal(err)
	}
	w := newXid()
	if err := xa.Start(ctx, c, w); err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "INSERT INTO t VALUES (4, 'ended')")
	if err := xa.End(ctx, c, w); err != nil {
		t.Fatal(err)
	}
	if err := xa.Rollback(ctx, c, w); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "id IN (3, 4)"); n != 0 {
		t.Fatalf("rolled-back rows visible: %d", n)
	}

	// Errors name the statement and the xid; a finished xid is NOTA.
	err := xa.Commit(ctx, c, x, false)
	if !xa.IsNotA(err) || !strings.Contains(err.Error(), "xa: XA COMMIT "+x.SQL()+": ") {
		t.Fatalf("second commit: %v; want XAER_NOTA naming the statement", err)
	}
	if xa.IsRMFail(err) || xa.IsDupID(err) || xa.IsNotA(errors.New("1397")) {
		t.Fatal("IsRMFail/IsDupID/IsNotA misclassify")
	}
	if err := xa.Start(ctx, c, x); err != nil {
		t.Fatal(err)
	}
	if err := xa.Start(ctx, conn(t, db), x); !xa.IsDupID(err) {
		t.Fatalf("XA START of a live xid on another conn = %v, want XAER_DUPID", err)
	}
	if err := xa.End(ctx, c, x); err != nil {
		t.Fatal(err)
	}
	if err := xa.Rollback(ctx, c, x); err != nil {
		t.Fatal(err)
	}
}

// TestPreparedConnCannotStartAnother records MariaDB's answer to "a service
// called twice in one group": after XA PREPARE the session keeps the
// prepared branch attached and refuses XA START (and any write) with
// XAER_RMFAIL until that branch is committed or rolled back. Reads still work.
func TestPreparedConnCannotStartAnother(t *testing.T) {
	db, _ := sharedDB(t)
	ctx := ctxT(t)
	a := conn(t, db)
	x := newXid()
	prepareOn(t, a, x, 1)
	if err := xa.Start(ctx, a, newXid()); !xa.IsRMFail(err) {
		t.Fatalf("XA START after PREPARE on the same conn = %v, want XAER_RMFAIL", err)
	}
	if _, err := a.ExecContext(ctx, "INSERT INTO t VALUES (2, 'x')"); !xa.IsRMFail(err) {
		t.Fatalf("INSERT after PREPARE = %v, want XAER_RMFAIL", err)
	}
	if _, err := a.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatalf("SELECT after PREPARE = %v", err)
	}
	// Another session cannot finish it while it is attached, and says NOTA
	// although XA RECOVER lists it: the reason for invariant 8.
	if err := xa.Commit(ctx, conn(t, db), x, false); !xa.IsNotA(err) {
		t.Fatalf("XA COMMIT from another session while attached = %v, want XAER_NOTA", err)
	}
	if !listed(t, db, x) {
		t.Fatal("XA RECOVER does not list an attached prepared xid")
	}
	began := time.Now()
	err := xa.CommitPrepared(ctx, db, x, 100*time.Millisecond)
	if !errors.Is(err, xa.ErrStillPrepared) || !xa.IsNotA(err) {
		t.Fatalf("CommitPrepared while attached = %v, want ErrStillPrepared wrapping XAER_NOTA", err)
	}
	if d := time.Since(began); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("CommitPrepared waited %v, want about 100ms", d)
	}
	if err := xa.Commit(ctx, a, x, false); err != nil {
		t.Fatal(err)
	}
	if err := xa.Start(ctx, a, newXid()); err != nil {
		t.Fatalf("XA START after the prepared branch finished: %v", err)
	}
}

func TestRecover(t *testing.T) {
	db, dsn := sharedDB(t)
	ctx := ctxT(t)

	// A golcn branch prepared on a connection that then closed.
	x := newXid()
	a := conn(t, openDB(t, dsn))
	prepareOn(t, a, x, 1)
	xa.ClosePhysically(a)
	if !listed(t, db, x) {
		t.Fatal("Recover does not list a prepared golcn xid after its connection closed")
	}

	// Foreign xids, kept attached to a live session: another format id, and
	// golcn's format id with ids that are not golcn ids.
	c := conn(t, db)
	foreign := []string{
		newXid().Literal(1),
		"'abc','def'," + "4997966",
		"'" + gid.New() + "','',4997966",
	}
	for i, lit := range foreign {
		mustExec(t, c, "XA START "+lit)
		mustExec(t, c, "INSERT INTO t VALUES (?, 'foreign')", 10+i)
		mustExec(t, c, "XA END "+lit)
		mustExec(t, c, "XA PREPARE "+lit)
		all, err := xa.RecoverAll(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		got, err := xa.Recover(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for _, y := range got {
			if strings.Contains(lit, "'"+y.Group+"'") {
				t.Errorf("Recover returned foreign xid %s as %v", lit, y)
			}
		}
		seen := false
		for _, r := range all {
			seen = seen || lit == fmt.Sprintf("'%s','%s',%d", r.Gtrid, r.Bqual, r.Format)
		}
		if !seen {
			t.Errorf("raw XA RECOVER does not list the foreign xid %s: %+v", lit, all)
		}
		mustExec(t, c, "XA ROLLBACK "+lit)
	}

	if err := xa.CommitPrepared(ctx, db, x, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if listed(t, db, x) || count(t, db, "id = 1") != 1 {
		t.Fatal("after CommitPrepared: still listed or row missing")
	}
}

func TestFinishUnknownXid(t *testing.T) {
	db, _ := sharedDB(t)
	ctx := ctxT(t)
	x := newXid()
	for name, f := range map[string]func() error{
		"CommitPrepared":   func() error { return xa.CommitPrepared(ctx, db, x, time.Second) },
		"RollbackPrepared": func() error { return xa.RollbackPrepared(ctx, db, x, time.Second) },
	} {
		err := f()
		if !errors.Is(err, xa.ErrUnknownXid) || !xa.IsNotA(err) {
			t.Errorf("%s of a never-prepared xid = %v, want ErrUnknownXid wrapping XAER_NOTA", name, err)
		}
	}
	// After a successful CommitPrepared, a second one is not a second success.
	c := conn(t, db)
	prepareOn(t, c, x, 1)
	if err := xa.Commit(ctx, c, x, false); err != nil {
		t.Fatal(err)
	}
	if err := xa.CommitPrepared(ctx, db, x, time.Second); !errors.Is(err, xa.ErrUnknownXid) {
		t.Fatalf("CommitPrepared of a committed xid = %v, want ErrUnknownXid", err)
	}
}

func TestRollbackPreparedAfterClose(t *testing.T) {
	db, dsn := sharedDB(t)
	ctx := ctxT(t)
	x := newXid()
	a := conn(t, openDB(t, dsn))
	prepareOn(t, a, x, 1)
	xa.ClosePhysically(a)
	if err := xa.RollbackPrepared(ctx, db, x, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if listed(t, db, x) || count(t, db, "id = 1") != 0 {
		t.Fatal("after RollbackPrepared: still listed or row present")
	}
}

// TestCommitPreparedRace is DESIGN invariant 8 under load: prepare on a
// connection of one pool, close it, and at once commit from another pool.
// On MariaDB the server may not have detached the branch from the closing
// session yet, answers XAER_NOTA, and still lists the xid; CommitPrepared
// must retry, not report success or give up.
//
// It also exposes a MariaDB 10.11 bug: now and then XA COMMIT issued while
// the closing session is being torn down returns success, the xid leaves XA
// RECOVER, and the InnoDB transaction stays RUNNING (thread 0) with its row
// uncommitted and locked until the server restarts. That is the server
// breaking its contract, not this package; it is logged, and fails the
// test only with LCN_XA_STRICT_RACE=1. It runs on a private server, killed
// at the end, because an orphan would block DROP DATABASE for ever.
func TestCommitPreparedRace(t *testing.T) {
	raceTest(t, false)
}

// TestCommitPreparedAfterDisconnect is the safe recipe for finishing a
// branch whose session the caller closed itself: wait until the session has
// left the processlist, then CommitPrepared. It must never lose a commit.
func TestCommitPreparedAfterDisconnect(t *testing.T) {
	raceTest(t, true)
}

func raceTest(t *testing.T, waitGone bool) {
	m := testenv.StartMariaDB(t)
	_, dsn := m.CreateDatabase(t)
	dbB := openDB(t, dsn)
	mustExec(t, dbB, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
	dbA := openDB(t, dsn)
	ctx := ctxT(t)
	var notaListed, notaUnlisted, delayed atomic.Int64
	var cur atomic.Pointer[xa.Xid]
	var seenThis atomic.Bool
	restore := xa.SetNotaHook(func(x xa.Xid, l bool) {
		if l {
			notaListed.Add(1)
		} else {
			notaUnlisted.Add(1)
		}
		if p := cur.Load(); p != nil && *p == x && !seenThis.Swap(true) {
			delayed.Add(1)
		}
	})
	defer restore()

	const n = 200
	xids := make([]xa.Xid, n)
	for i := range n {
		x := newXid()
		xids[i] = x
		cur.Store(&x)
		seenThis.Store(false)
		a := conn(t, dbA)
		prepareOn(t, a, x, i)
		id, err := xa.ConnectionID(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		xa.ClosePhysically(a)
		if waitGone {
			if err := xa.WaitDisconnected(ctx, dbB, id); err != nil {
				t.Fatal(err)
			}
		}
		if err := xa.CommitPrepared(ctx, dbB, x, 10*time.Second); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
	}
	t.Logf("%d iterations (wait for disconnect: %v): XAER_NOTA answered %d times with the xid listed (retried) in %d iterations; %d times unlisted",
		n, waitGone, notaListed.Load(), delayed.Load(), notaUnlisted.Load())
	if notaUnlisted.Load() != 0 {
		t.Errorf("XAER_NOTA with the xid not listed %d times", notaUnlisted.Load())
	}
	left, err := xa.Recover(ctx, dbB)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("XA RECOVER still lists %d golcn xids: %v", len(left), left)
	}
	if got := count(t, dbB, "1=1"); got != n {
		dumpServerState(t, dbB, xids)
		msg := fmt.Sprintf("committed rows = %d, want %d: MariaDB reported XA COMMIT success for %d branches it did not commit", got, n, n-got)
		if waitGone || os.Getenv("LCN_XA_STRICT_RACE") == "1" {
			t.Error(msg)
		} else {
			t.Log("KNOWN MARIADB BUG: " + msg)
		}
	}
	m.Kill(t) // drops any orphaned transaction with the server
}

func TestProbeDurable(t *testing.T) {
	db, _ := sharedDB(t)
	ctx := ctxT(t)
	for range 3 {
		durable, err := xa.ProbeDurable(ctx, db)
		if err != nil || !durable {
			t.Fatalf("ProbeDurable = %v, %v; want true on MariaDB >= 10.5", durable, err)
		}
	}
	all, err := xa.RecoverAll(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if r.Format == xa.ProbeFormatID {
			t.Errorf("probe xid left prepared: %+v", r)
		}
	}
	// The pool is still usable (the probe discarded its connection).
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPreparedSurvivesServerKill(t *testing.T) {
	m := testenv.StartMariaDB(t)
	_, dsn := m.CreateDatabase(t)
	db := openDB(t, dsn)
	mustExec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
	x := newXid()
	a := conn(t, db)
	prepareOn(t, a, x, 1)

	m.Kill(t)
	m.Restart(t)

	db2 := openDB(t, dsn)
	ctx := ctxT(t)
	if !listed(t, db2, x) {
		t.Fatal("prepared xid not listed after kill and restart")
	}
	if n := count(t, db2, "id = 1"); n != 0 {
		t.Fatalf("prepared row visible after restart: %d", n)
	}
	if err := xa.CommitPrepared(ctx, db2, x, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db2, "id = 1"); n != 1 {
		t.Fatalf("row count after CommitPrepared = %d, want 1", n)
	}
	if listed(t, db2, x) {
		t.Fatal("xid still listed after CommitPrepared")
	}
}

// TestReadOnlyBranch records a MariaDB quirk: a prepared branch that wrote
// nothing, finished from another session after its own closed, is answered
// with XA_RBROLLBACK for XA COMMIT and XA ROLLBACK alike (the same session
// can commit it normally).
func TestReadOnlyBranch(t *testing.T) {
	db, dsn := sharedDB(t)
	ctx := ctxT(t)
	for _, commit := range []bool{true, false} {
		x := newXid()
		a := conn(t, openDB(t, dsn))
		if err := xa.Start(ctx, a, x); err != nil {
			t.Fatal(err)
		}
		mustExec(t, a, "SELECT COUNT(*) FROM t")
		if err := xa.End(ctx, a, x); err != nil {
			t.Fatal(err)
		}
		if err := xa.Prepare(ctx, a, x); err != nil {
			t.Fatal(err)
		}
		xa.ClosePhysically(a)
		if !listed(t, db, x) {
			t.Fatal("read-only prepared branch not listed after its session closed")
		}
		if commit {
			err := xa.CommitPrepared(ctx, db, x, 5*time.Second)
			if !errors.Is(err, xa.ErrRolledBack) || !xa.IsRolledBack(err) {
				t.Errorf("CommitPrepared of a read-only branch = %v, want ErrRolledBack (MariaDB behaviour changed?)", err)
			}
		} else if err := xa.RollbackPrepared(ctx, db, x, 5*time.Second); err != nil {
			t.Errorf("RollbackPrepared of a read-only branch = %v, want nil", err)
		}
		if listed(t, db, x) {
			t.Error("read-only branch still listed")
		}
	}
}

// dumpServerState logs what the server still holds, for a failed race test.
func dumpServerState(t *testing.T, db *sql.DB, xids []xa.Xid) {
	t.Helper()
	ctx := context.Background()
	for i, x := range xids {
		var n int
		db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t WHERE id = ?", i).Scan(&n)
		if n == 0 {
			t.Logf("missing row %d of xid %v", i, x)
		}
	}
	all, err := xa.RecoverAll(ctx, db)
	t.Logf("raw XA RECOVER: %+v %v", all, err)
	for _, q := range []string{
		"SELECT trx_id, trx_state, trx_started, trx_mysql_thread_id, trx_rows_modified FROM information_schema.innodb_trx",
		"SELECT id, command, state, time, info FROM information_schema.processlist",
	} {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Logf("%s: %v", q, err)
			continue
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			t.Logf("%v", vals)
		}
		rows.Close()
	}
}
