package sqlproxy

// Unit tests of the xa branch state machine over the fake driver, which
// accepts every XA statement and logs it. The behaviour of a real server is
// tested in xa_integration_test.go.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/xa"
)

func xaMode(o *Options) {
	o.Mode = ModeXA
	o.RecoveryInterval = -1 // rounds are run by hand where tested
}

// xaHoldOne runs one local tx in a fresh group on an xa datasource and
// returns the group, its Held, its xid and the branch's physical conn id.
func xaHoldOne(t *testing.T, e *testEnv) (string, Held, xa.Xid, int) {
	t.Helper()
	group := gid.New()
	h, id := holdOne(t, e, group)
	x := xa.Xid{Group: group, Branch: h.(*held).b.id}
	return group, h, x, id
}

// xaLog returns the XA statements the fake saw on conn id, for xid x, in order,
// without the xid ("XA START", "XA END", "XA COMMIT ONE PHASE"...).
func xaLog(e *testEnv, id int, x xa.Xid) []string {
	var out []string
	prefix := fmt.Sprintf("c%d exec ", id)
	for _, l := range e.srv.logCopy() {
		if !strings.HasPrefix(l, prefix+"XA ") || !strings.Contains(l, x.SQL()) {
			continue
		}
		out = append(out, strings.Join(strings.Fields(strings.Replace(strings.TrimPrefix(l, prefix), x.SQL(), "", 1)), " "))
	}
	return out
}

func checkXALog(t *testing.T, e *testEnv, id int, x xa.Xid, want ...string) {
	t.Helper()
	if got := xaLog(e, id, x); strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("XA statements on c%d = %q, want %q", id, got, want)
	}
}

func TestLCNPrepareIsNoop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h, id := holdOne(t, e, "g")
	before := len(e.srv.logCopy())
	mustNil(t, "Prepare", h.Prepare(ctx))
	mustNil(t, "Prepare again", h.Prepare(ctx))
	check(t, "driver calls by Prepare", len(e.srv.logCopy()), before)

	// The branch still takes work of its group: nothing changed.
	tx, err := e.db.BeginTx(gctx("g"), nil)
	mustNil(t, "BeginTx after lcn Prepare", err)
	_, err = tx.ExecContext(gctx("g"), "INSERT second")
	mustNil(t, "Exec", err)
	mustNil(t, "Commit", tx.Commit())
	mustNil(t, "Held.Commit", h.Commit(ctx))
	check(t, "inner commit", e.srv.count(fmt.Sprintf("c%d commit", id)), 1)
	if err := h.Prepare(ctx); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("Prepare after Commit = %v, want ErrAlreadyDecided", err)
	}
}

func TestXAVoteLeavesBranchActive(t *testing.T) {
	e := newEnv(t, xaMode)
	group, _, x, id := xaHoldOne(t, e)
	check(t, "join", e.co.joins[0], group+" ds1 xa")
	checkXALog(t, e, id, x, "XA START")
	check(t, "connection id recorded", e.srv.count(fmt.Sprintf("c%d query SELECT CONNECTION_ID()", id)), 1)
	check(t, "no local begin", e.srv.countPrefix(fmt.Sprintf("c%d begin", id)), 0)
	if !liveXids.has(x) {
		t.Error("xid of a held branch not live")
	}
}

func TestXAPrepareThenCommit(t *testing.T) {
	e := newEnv(t, xaMode)
	ctx := context.Background()
	group, h, x, id := xaHoldOne(t, e)
	mustNil(t, "Prepare", h.Prepare(ctx))
	checkXALog(t, e, id, x, "XA START", "XA END", "XA PREPARE")
	mustNil(t, "Prepare again", h.Prepare(ctx))
	checkXALog(t, e, id, x, "XA START", "XA END", "XA PREPARE")

	// The group is committing: no more local work of it here.
	g := gctx(group)
	if _, err := e.db.BeginTx(g, nil); !errors.Is(err, ErrBranchPrepared) {
		t.Errorf("BeginTx after Prepare = %v, want ErrBranchPrepared", err)
	}
	if _, err := e.db.ExecContext(g, "INSERT late"); !errors.Is(err, ErrBranchPrepared) {
		t.Errorf("autocommit Exec after Prepare = %v, want ErrBranchPrepared", err)
	}
	check(t, "late statement sent", e.srv.countPrefix(fmt.Sprintf("c%d exec INSERT late", id)), 0)
	check(t, "joins", e.co.joinCount(group), 1)

	mustNil(t, "Held.Commit", h.Commit(ctx))
	checkXALog(t, e, id, x, "XA START", "XA END", "XA PREPARE", "XA COMMIT")
	check(t, "branches", e.branches(), 0)
	check(t, "free list", fmt.Sprint(e.free()), fmt.Sprint([]int{id}))
	if liveXids.has(x) {
		t.Error("xid still live after commit")
	}
	if err := h.Prepare(ctx); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("Prepare after Commit = %v, want ErrAlreadyDecided", err)
	}
	mustNil(t, "Held.Commit again", h.Commit(ctx))
	if err := h.Rollback(ctx); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("Rollback after Commit = %v, want ErrAlreadyDecided", err)
	}
}

func TestXAOnePhaseCommitAndRollbacks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		prepare bool
		commit  bool
		want    []string
	}{
		{"one-phase commit", false, true, []string{"XA START", "XA END", "XA COMMIT ONE PHASE"}},
		{"rollback before prepare", false, false, []string{"XA START", "XA END", "XA ROLLBACK"}},
		{"rollback after prepare", true, false, []string{"XA START", "XA END", "XA PREPARE", "XA ROLLBACK"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xaMode)
			_, h, x, id := xaHoldOne(t, e)
			if tc.prepare {
				mustNil(t, "Prepare", h.Prepare(ctx))
			}
			apply := h.Rollback
			if tc.commit {
				apply = h.Commit
			}
			mustNil(t, "decision", apply(ctx))
			checkXALog(t, e, id, x, tc.want...)
			check(t, "free list", fmt.Sprint(e.free()), fmt.Sprint([]int{id}))
		})
	}
}

func TestXAPrepareRefusedWhileLocalTxOpen(t *testing.T) {
	e := newEnv(t, xaMode)
	ctx := context.Background()
	group, h, x, id := xaHoldOne(t, e)
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "second BeginTx", err)
	_, err = tx.ExecContext(g, "INSERT second")
	mustNil(t, "Exec", err)

	err = h.Prepare(ctx)
	if !errors.Is(err, ErrVoteFailed) || !strings.Contains(err.Error(), "still open") {
		t.Fatalf("Prepare with a local tx open = %v, want ErrVoteFailed naming the open local transaction", err)
	}
	checkXALog(t, e, id, x, "XA START", "XA END", "XA ROLLBACK")
	if err := tx.Commit(); !errors.Is(err, ErrBranchEnded) {
		t.Errorf("local Commit after the failed Prepare = %v, want ErrBranchEnded", err)
	}
	mustNil(t, "Rollback decision", h.Rollback(ctx))
	check(t, "branches", e.branches(), 0)
}

func TestXADecisionsAfterFailedPrepare(t *testing.T) {
	ctx := context.Background()
	refused := &mysql.MySQLError{Number: 1399, Message: "XAER_RMFAIL (test)"}
	for _, tc := range []struct {
		name   string
		err    error // XA PREPARE's answer
		commit bool  // the decision delivered after it
	}{
		{"server refused, rollback", refused, false},
		{"server refused, commit", refused, true},
		{"connection failed, rollback", errors.New("invalid connection"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xaMode, func(o *Options) { o.ApplyTimeout = 5 * time.Second })
			_, h, x, id := xaHoldOne(t, e)
			e.srv.set(func(s *fakeServer) {
				s.stmtHook = func(conn int, q string) error {
					if conn == id && strings.HasPrefix(q, "XA PREPARE") {
						return tc.err
					}
					return nil
				}
			})
			err := h.Prepare(ctx)
			if !errors.Is(err, ErrVoteFailed) || !errors.Is(err, tc.err) {
				t.Fatalf("Prepare = %v, want ErrVoteFailed wrapping the cause", err)
			}
			if tc.err == refused {
				// Not prepared, session fine: rolled back on it.
				checkXALog(t, e, id, x, "XA START", "XA END", "XA PREPARE", "XA ROLLBACK")
			} else {
				// Perhaps prepared: the connection is closed and the
				// branch rolled back from another one.
				check(t, "own conn closed", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
				if n := sideCount(e, id, "exec XA ROLLBACK "+x.SQL()); n != 1 {
					t.Errorf("XA ROLLBACK from another conn: %d, want 1", n)
				}
			}
			check(t, "branches", e.branches(), 0)
			if liveXids.has(x) {
				t.Error("xid still live")
			}
			if tc.commit {
				if err := h.Commit(ctx); !errors.Is(err, ErrBranchLost) {
					t.Errorf("Commit after failed Prepare = %v, want ErrBranchLost", err)
				}
			} else {
				mustNil(t, "Rollback after failed Prepare", h.Rollback(ctx))
			}
		})
	}
}

// sideCount counts the log entries "c<n> <entry>" of conns other than own.
func sideCount(e *testEnv, own int, entry string) int {
	n := 0
	for _, l := range e.srv.logCopy() {
		var c int
		if _, err := fmt.Sscanf(l, "c%d ", &c); err == nil && c != own && strings.HasSuffix(l, " "+entry) {
			n++
		}
	}
	return n
}

func TestXAForbiddenStatement(t *testing.T) {
	e := newEnv(t, xaMode)
	group := gid.New()
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	_, err = tx.ExecContext(g, "INSERT ok")
	mustNil(t, "Exec", err)
	for _, q := range []string{"CREATE TABLE x (id INT)", "  /* c */ commit", "LOCK TABLES t WRITE"} {
		_, err := tx.ExecContext(g, q)
		if !errors.Is(err, ErrForbiddenInXA) {
			t.Fatalf("Exec %q = %v, want ErrForbiddenInXA", q, err)
		}
		if check := "cannot run in an xa branch"; !strings.Contains(err.Error(), check) || !strings.Contains(err.Error(), `datasource "ds1"`) {
			t.Errorf("error %q does not name the mode and datasource", err)
		}
	}
	if _, err := tx.PrepareContext(g, "ALTER TABLE t ADD c INT"); !errors.Is(err, ErrForbiddenInXA) {
		t.Errorf("Prepare of DDL = %v, want ErrForbiddenInXA", err)
	}
	if _, err := tx.QueryContext(g, "DROP TABLE t"); !errors.Is(err, ErrForbiddenInXA) {
		t.Errorf("Query of DDL = %v, want ErrForbiddenInXA", err)
	}
	_, err = tx.ExecContext(g, "CREATE TABLE x (id INT)")
	if want := `sqlproxy: datasource "ds1": CREATE TABLE cannot run in an xa branch`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q, want prefix %q", err, want)
	}
	for _, l := range e.srv.logCopy() {
		if strings.Contains(l, "CREATE") || strings.Contains(l, "ALTER") || strings.Contains(l, "DROP") || strings.Contains(l, "LOCK") {
			t.Errorf("forbidden statement reached the driver: %s", l)
		}
	}
	if err := tx.Commit(); !errors.Is(err, ErrLocalTxFailed) || !errors.Is(err, ErrForbiddenInXA) {
		t.Errorf("Commit = %v, want ErrLocalTxFailed wrapping ErrForbiddenInXA", err)
	}
	vs := e.co.votesFor(group)
	if len(vs) != 1 || vs[0].ok {
		t.Errorf("votes = %+v, want one failed vote", vs)
	}

	// Autocommit: fails, votes failed; outside a group: passes through.
	g2 := gid.New()
	if _, err := e.db.ExecContext(gctx(g2), "TRUNCATE t"); !errors.Is(err, ErrForbiddenInXA) {
		t.Errorf("autocommit TRUNCATE in a group = %v, want ErrForbiddenInXA", err)
	}
	if vs := e.co.votesFor(g2); len(vs) != 1 || vs[0].ok {
		t.Errorf("autocommit votes = %+v, want one failed vote", vs)
	}
	_, err = e.db.ExecContext(context.Background(), "CREATE TABLE outside (id INT)")
	mustNil(t, "DDL outside a group", err)
}

// A prepared branch whose own connection fails at commit is finished from
// another connection; while that fails too the decision is in doubt and the
// branch stays prepared; delivering it again finishes it.
func TestXAInDoubtRetries(t *testing.T) {
	e := newEnv(t, xaMode, func(o *Options) { o.ApplyTimeout = 300 * time.Millisecond })
	ctx := context.Background()
	group, h, x, id := xaHoldOne(t, e)
	mustNil(t, "Prepare", h.Prepare(ctx))

	var mu sync.Mutex
	down := true
	errDown := errors.New("connection refused (test)")
	e.srv.set(func(s *fakeServer) {
		s.stmtHook = func(conn int, q string) error {
			mu.Lock()
			defer mu.Unlock()
			if down && (strings.HasPrefix(q, "XA COMMIT") || strings.Contains(q, "processlist")) {
				return errDown
			}
			return nil
		}
	})
	err := h.Commit(ctx)
	if !errors.Is(err, ErrInDoubt) || !errors.Is(err, errDown) {
		t.Fatalf("Commit with the database unreachable = %v, want ErrInDoubt wrapping the cause", err)
	}
	check(t, "own conn closed", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
	check(t, "branches (still held)", e.branches(), 1)
	if !liveXids.has(x) {
		t.Error("in-doubt xid not live: recovery would take it")
	}
	if _, err := e.db.ExecContext(gctx(group), "INSERT late"); !errors.Is(err, ErrBranchPrepared) {
		t.Errorf("local work while in doubt = %v, want ErrBranchPrepared", err)
	}
	if err := h.Rollback(ctx); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("Rollback while a commit is in doubt = %v, want ErrAlreadyDecided", err)
	}
	if err := h.Prepare(ctx); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("Prepare while a commit is in doubt = %v, want ErrAlreadyDecided", err)
	}
	if err := h.Commit(ctx); !errors.Is(err, ErrInDoubt) {
		t.Errorf("second Commit while still down = %v, want ErrInDoubt", err)
	}

	mu.Lock()
	down = false
	mu.Unlock()
	mustNil(t, "Commit after recovery", h.Commit(ctx))
	if n := sideCount(e, id, "exec XA COMMIT "+x.SQL()); n < 1 {
		t.Errorf("XA COMMIT from another conn: %d", n)
	}
	check(t, "branches", e.branches(), 0)
	check(t, "free list", len(e.free()), 0)
	if liveXids.has(x) {
		t.Error("xid still live after commit")
	}
	mustNil(t, "Commit again", h.Commit(ctx))
	check(t, "own conn closed once", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
}

// Prepare, Commit and Rollback delivered concurrently apply exactly one
// outcome, and only after XA PREPARE when Prepare won.
func TestXAPrepareConcurrentWithDecision(t *testing.T) {
	ctx := context.Background()
	for i := range 50 {
		e := newEnv(t, xaMode)
		_, h, x, id := xaHoldOne(t, e)
		commit := i%2 == 0
		var wg sync.WaitGroup
		var perr, derr error
		wg.Go(func() { perr = h.Prepare(ctx) })
		wg.Go(func() {
			if commit {
				derr = h.Commit(ctx)
			} else {
				derr = h.Rollback(ctx)
			}
		})
		wg.Wait()
		mustNil(t, "decision", derr)
		log := strings.Join(xaLog(e, id, x), "; ")
		switch {
		case perr == nil && commit:
			if log != "XA START; XA END; XA PREPARE; XA COMMIT" {
				t.Fatalf("Prepare ok, commit: %s", log)
			}
		case commit:
			if !errors.Is(perr, ErrAlreadyDecided) || log != "XA START; XA END; XA COMMIT ONE PHASE" {
				t.Fatalf("Prepare = %v after commit: %s", perr, log)
			}
		case perr == nil:
			// Prepared first, then rolled back.
			if log != "XA START; XA END; XA PREPARE; XA ROLLBACK" {
				t.Fatalf("Prepare ok, rollback: %s", log)
			}
		default:
			if log != "XA START; XA END; XA PREPARE; XA ROLLBACK" && log != "XA START; XA END; XA ROLLBACK" {
				t.Fatalf("Prepare = %v, rollback: %s", perr, log)
			}
		}
		check(t, "branches", e.branches(), 0)
	}
}

func TestXABeginOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *sql.TxOptions
		set  string
		err  string
	}{
		{name: "default"},
		{name: "read committed", opts: &sql.TxOptions{Isolation: sql.LevelReadCommitted}, set: "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"},
		{name: "serializable read only", opts: &sql.TxOptions{Isolation: sql.LevelSerializable, ReadOnly: true}, set: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"},
		{name: "read only", opts: &sql.TxOptions{ReadOnly: true}, set: "SET TRANSACTION READ ONLY"},
		{name: "snapshot", opts: &sql.TxOptions{Isolation: sql.LevelSnapshot}, err: "isolation level Snapshot is not supported in an xa branch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xaMode)
			g := gctx(gid.New())
			tx, err := e.db.BeginTx(g, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("BeginTx = %v, want %q", err, tc.err)
				}
				return
			}
			mustNil(t, "BeginTx", err)
			id := connID(t, g, tx)
			mustNil(t, "Rollback", tx.Rollback())
			var got []string
			for _, l := range e.srv.logCopy() {
				if strings.HasPrefix(l, fmt.Sprintf("c%d exec SET TRANSACTION", id)) {
					got = append(got, strings.TrimPrefix(l, fmt.Sprintf("c%d exec ", id)))
				}
			}
			want := []string{}
			if tc.set != "" {
				want = []string{tc.set}
			}
			check(t, "SET TRANSACTION", fmt.Sprint(got), fmt.Sprint(want))
		})
	}
}

// A SET TRANSACTION left pending by a failed XA START would apply to the
// connection's next transaction: the connection is dropped.
func TestXAStartFailureAfterSetDropsConn(t *testing.T) {
	e := newEnv(t, xaMode)
	e.srv.set(func(s *fakeServer) {
		s.stmtHook = func(_ int, q string) error {
			if strings.HasPrefix(q, "XA START") {
				return &mysql.MySQLError{Number: 1440, Message: "XAER_DUPID (test)"}
			}
			return nil
		}
	})
	if _, err := e.db.BeginTx(gctx(gid.New()), &sql.TxOptions{Isolation: sql.LevelReadCommitted}); err == nil {
		t.Fatal("BeginTx succeeded")
	}
	check(t, "conn closed", e.srv.count("c1 close"), 1)
}

func TestAutoModeOnFakeDriverIsLCN(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Mode = ModeAuto })
	check(t, "Mode before use", e.cn.Mode(), "")
	_, err := e.db.ExecContext(context.Background(), "INSERT outside")
	mustNil(t, "Exec outside a group", err)
	check(t, "Mode outside a group", e.cn.Mode(), "")
	_, _ = holdOne(t, e, "g")
	check(t, "Mode", e.cn.Mode(), ModeLCN)
	check(t, "join", e.co.joins[0], "g ds1 lcn")
	check(t, "recovery started", e.cn.src.recStarted.Load(), false)
	check(t, "side pool opened", e.cn.src.sideDB == nil, true)
	check(t, "mode xa", newEnv(t, xaMode).cn.Mode(), ModeXA)
	check(t, "mode \"\"", newEnv(t).cn.Mode(), ModeLCN)
}

// Recovery starts at the first use of the connector, and Close stops it
// and waits for it.
func TestRecoveryGoroutineLifecycle(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Mode = ModeXA; o.RecoveryInterval = time.Millisecond })
	check(t, "started before use", e.cn.src.recStarted.Load(), false)
	mustNil(t, "Ping", e.db.PingContext(context.Background()))
	rounds := func() int { return countSuffix(e.srv.logCopy(), " query XA RECOVER") }
	deadline := time.Now().Add(10 * time.Second)
	for rounds() < 2 { // the first round, and a periodic one
		if time.Now().After(deadline) {
			t.Fatalf("no recovery rounds: %q", e.srv.logCopy())
		}
		time.Sleep(time.Millisecond)
	}
	mustNil(t, "Close", e.db.Close())
	if e.cn.src.stopCtx.Err() == nil {
		t.Fatal("recovery not stopped")
	}
	n := rounds()
	done := make(chan struct{})
	go func() { e.cn.src.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close returned before the recovery goroutine ended")
	}
	check(t, "rounds after Close", rounds(), n)
}
