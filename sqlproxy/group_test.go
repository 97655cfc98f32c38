package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGroupCommitVotesHoldsAndKeepsConnOutOfPool(t *testing.T) {
	e := newEnv(t)
	e.db.SetMaxOpenConns(2)
	ctx := context.Background()
	g := gctx("g1")

	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	held := connID(t, g, tx)
	_, err = tx.ExecContext(g, "INSERT a")
	mustNil(t, "Exec", err)
	mustNil(t, "Commit", tx.Commit())

	// Commit returned only after the vote; the branch was handed over.
	votes := e.co.votesFor("g1")
	if len(votes) != 1 || !votes[0].ok {
		t.Fatalf("votes after Commit = %+v, want one ok vote", votes)
	}
	check(t, "joins", e.co.joinCount("g1"), 1)
	check(t, "join", e.co.joins[0], "g1 ds1 lcn")
	h := e.co.held("g1")
	if h == nil {
		t.Fatal("Commit did not hand the branch to the coordinator")
	}
	// The inner transaction is still open: not committed.
	check(t, "inner commits", e.srv.count(fmt.Sprintf("c%d commit", held)), 0)
	if got := e.srv.inTx(); !slices.Equal(got, []int{held}) {
		t.Fatalf("conns in tx = %v, want [%d]", got, held)
	}

	// The pool never hands out the held physical conn.
	c1, err := e.db.Conn(ctx)
	mustNil(t, "Conn", err)
	c2, err := e.db.Conn(ctx)
	mustNil(t, "Conn", err)
	id1, id2 := connID(t, ctx, c1), connID(t, ctx, c2)
	if id1 == held || id2 == held || id1 == id2 {
		t.Fatalf("pool conns %d, %d; held %d: the pool reused the held conn", id1, id2, held)
	}
	c1.Close()
	c2.Close()
	for range 5 {
		if id := connID(t, ctx, e.db); id == held {
			t.Fatalf("query ran on the held conn %d", id)
		}
	}
	check(t, "held conn closes", e.srv.count(fmt.Sprintf("c%d close", held)), 0)

	// The decision commits it and releases it for reuse by Connect.
	mustNil(t, "Held.Commit", h.Commit(ctx))
	check(t, "inner commits", e.srv.count(fmt.Sprintf("c%d commit", held)), 1)
	check(t, "branches", e.branches(), 0)
	if got := e.free(); !slices.Equal(got, []int{held}) {
		t.Fatalf("free list = %v, want [%d]", got, held)
	}
	e.db.SetMaxIdleConns(0) // the next conn must come from Connect
	c3, err := e.db.Conn(ctx)
	mustNil(t, "Conn", err)
	defer c3.Close()
	check(t, "conn after release", connID(t, ctx, c3), held)
	check(t, "reset before reuse", e.srv.count(fmt.Sprintf("c%d reset", held)), 1)
}

func TestCommitReturnsOnlyAfterTheVote(t *testing.T) {
	e := newEnv(t)
	gate := make(chan struct{})
	e.co.set(func(f *fakeCoord) { f.voteGate = gate })
	g := gctx("g")
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	_, err = tx.ExecContext(g, "INSERT a")
	mustNil(t, "Exec", err)
	done := make(chan error, 1)
	go func() { done <- tx.Commit() }()
	select {
	case err := <-done:
		t.Fatalf("Commit returned %v before the vote was recorded", err)
	case <-time.After(20 * time.Millisecond):
	}
	check(t, "holds before the vote", e.co.holdCalls, 0)
	close(gate)
	mustNil(t, "Commit", <-done)
	check(t, "ok votes", len(e.co.votesFor("g")), 1)
	check(t, "holds", e.co.holdCalls, 1)
}

func TestVoteBoundedByVoteTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.VoteTimeout = 20 * time.Millisecond })
	e.co.set(func(f *fakeCoord) { f.voteGate = make(chan struct{}) }) // never answers
	g := gctx("g")
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	err = tx.Commit()
	if !errors.Is(err, ErrVoteFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Commit = %v, want ErrVoteFailed after VoteTimeout", err)
	}
	check(t, "branches", e.branches(), 0)
	check(t, "rollbacks", countSuffix(e.srv.logCopy(), " rollback"), 1)
}

func TestSameGroupRunsInOneBranch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	t.Run("same sql.DB", func(t *testing.T) {
		g := gctx("g")
		var ids []int
		for i := range 3 {
			tx, err := e.db.BeginTx(g, nil)
			mustNil(t, "BeginTx", err)
			ids = append(ids, connID(t, g, tx))
			_, err = tx.ExecContext(g, fmt.Sprintf("INSERT %d", i))
			mustNil(t, "Exec", err)
			mustNil(t, "Commit", tx.Commit())
		}
		if ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("local txs of one group ran on conns %v", ids)
		}
		check(t, "joins", e.co.joinCount("g"), 1)
		check(t, "begins on the branch conn", e.srv.countPrefix(fmt.Sprintf("c%d begin", ids[0])), 1)
		check(t, "votes", len(e.co.votesFor("g")), 3)
		check(t, "hold calls (once per branch)", e.co.holdCalls, 1)
	})

	t.Run("two sql.Conn", func(t *testing.T) {
		g := gctx("g2")
		cA, err := e.db.Conn(ctx)
		mustNil(t, "Conn", err)
		cB, err := e.db.Conn(ctx)
		mustNil(t, "Conn", err)
		defer cB.Close()

		txA, err := cA.BeginTx(g, nil)
		mustNil(t, "BeginTx A", err)
		a := connID(t, g, txA)
		mustNil(t, "Commit A", txA.Commit())
		txB, err := cB.BeginTx(g, nil)
		mustNil(t, "BeginTx B", err)
		b := connID(t, g, txB)
		mustNil(t, "Commit B", txB.Commit())
		check(t, "B's conn", b, a)
		check(t, "joins", e.co.joinCount("g2"), 1)

		// B only routed to the branch: it keeps its own physical conn.
		if own := connID(t, ctx, cB); own == a {
			t.Errorf("B runs work outside the group on the branch conn %d", a)
		}
		// A handed its physical conn to the branch: it still runs work of
		// the group, but nothing else.
		txA, err = cA.BeginTx(g, nil)
		mustNil(t, "BeginTx A again", err)
		check(t, "A's conn in the group", connID(t, g, txA), a)
		mustNil(t, "Commit A again", txA.Commit())
		_, err = cA.ExecContext(ctx, "INSERT outside")
		if !errors.Is(err, ErrConnDetached) || !errors.Is(err, driver.ErrBadConn) {
			t.Errorf("work outside the group on a detached conn: err = %v, want ErrConnDetached", err)
		}
		cA.Close()
		check(t, "joins", e.co.joinCount("g2"), 1)
	})
}

func TestVoteErrorRollsBackAndReleases(t *testing.T) {
	e := newEnv(t)
	errTM := errors.New("tm unreachable")
	e.co.set(func(f *fakeCoord) { f.voteErr = errTM })
	g := gctx("g")

	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	id := connID(t, g, tx)
	_, err = tx.ExecContext(g, "INSERT a")
	mustNil(t, "Exec", err)
	err = tx.Commit()
	if !errors.Is(err, ErrVoteFailed) || !errors.Is(err, errTM) || !strings.Contains(err.Error(), "will not commit") {
		t.Fatalf("Commit = %v, want ErrVoteFailed wrapping the cause", err)
	}
	check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
	check(t, "conns in tx", len(e.srv.inTx()), 0)
	check(t, "branches", e.branches(), 0)
	check(t, "holds", e.co.holdCalls, 0)
	if got := e.free(); !slices.Equal(got, []int{id}) {
		t.Errorf("free list = %v, want the branch conn %d back", got, id)
	}
	votes := e.co.votesFor("g")
	if len(votes) != 2 || !votes[0].ok || votes[1].ok {
		t.Errorf("votes = %+v, want ok (failed to record) then failed", votes)
	}
}

func TestLocalRollbackAndFailedStatementVoteFailed(t *testing.T) {
	t.Run("Rollback", func(t *testing.T) {
		e := newEnv(t)
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		id := connID(t, g, tx)
		mustNil(t, "Rollback", tx.Rollback())
		votes := e.co.votesFor("g")
		if len(votes) != 1 || votes[0].ok {
			t.Fatalf("votes = %+v, want one failed vote", votes)
		}
		check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
		check(t, "branches", e.branches(), 0)
		check(t, "holds", e.co.holdCalls, 0)
	})
	t.Run("failed statement", func(t *testing.T) {
		e := newEnv(t)
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		id := connID(t, g, tx)
		if _, err := tx.ExecContext(g, "FAIL a"); !errors.Is(err, errFakeStatement) {
			t.Fatalf("Exec(FAIL) = %v", err)
		}
		_, err = tx.ExecContext(g, "INSERT b")
		mustNil(t, "Exec after failure", err)
		err = tx.Commit()
		if !errors.Is(err, ErrLocalTxFailed) || !errors.Is(err, errFakeStatement) {
			t.Fatalf("Commit = %v, want ErrLocalTxFailed wrapping the statement's error", err)
		}
		votes := e.co.votesFor("g")
		if len(votes) != 1 || votes[0].ok {
			t.Fatalf("votes = %+v, want one failed vote", votes)
		}
		check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
		check(t, "branches", e.branches(), 0)
	})
}

func TestJoinFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.db.SetMaxOpenConns(1)
	e.co.set(func(f *fakeCoord) { f.joinErr = errNotActive })
	g := gctx("g")

	_, err := e.db.BeginTx(g, nil)
	if !errors.Is(err, ErrJoinFailed) || !errors.Is(err, errNotActive) {
		t.Fatalf("BeginTx = %v, want ErrJoinFailed wrapping the cause", err)
	}
	_, err = e.db.ExecContext(g, "INSERT a")
	if !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("Exec = %v, want ErrJoinFailed", err)
	}
	check(t, "inner begins", e.srv.countPrefix("c1 begin"), 0)
	check(t, "inner execs", e.srv.countPrefix("c1 exec"), 0)
	check(t, "branches", e.branches(), 0)
	check(t, "votes", len(e.co.votes), 0)
	// The conn was not detached: it is still the pool's only conn.
	check(t, "SELECT CONN", connID(t, context.Background(), e.db), 1)
	check(t, "physical conns opened", e.srv.opened(), 1)
}

func TestBeginFailureAfterJoinVotesFailed(t *testing.T) {
	e := newEnv(t)
	e.db.SetMaxOpenConns(1)
	errBegin := errors.New("begin refused")
	e.srv.set(func(s *fakeServer) { s.beginErr = errBegin })
	g := gctx("g")
	_, err := e.db.BeginTx(g, nil)
	if !errors.Is(err, errBegin) {
		t.Fatalf("BeginTx = %v", err)
	}
	votes := e.co.votesFor("g")
	if len(votes) != 1 || votes[0].ok {
		t.Fatalf("votes = %+v, want one failed vote for the joined branch", votes)
	}
	check(t, "branches", e.branches(), 0)
	e.srv.set(func(s *fakeServer) { s.beginErr = nil })
	check(t, "SELECT CONN", connID(t, context.Background(), e.db), 1)
}

func TestAutocommitInGroup(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := gctx("g")

	res, err := e.db.ExecContext(g, "INSERT a")
	mustNil(t, "Exec", err)
	if n, _ := res.RowsAffected(); n != 1 {
		t.Errorf("RowsAffected = %d", n)
	}
	check(t, "joins", e.co.joinCount("g"), 1)
	votes := e.co.votesFor("g")
	if len(votes) != 1 || !votes[0].ok {
		t.Fatalf("votes = %+v, want one ok vote", votes)
	}
	h := e.co.held("g")
	if h == nil {
		t.Fatal("no Hold")
	}
	inTx := e.srv.inTx()
	if len(inTx) != 1 {
		t.Fatalf("conns in tx = %v, want the branch", inTx)
	}
	id := inTx[0]
	check(t, "exec on the branch", e.srv.count(fmt.Sprintf("c%d exec INSERT a", id)), 1)
	check(t, "inner commits", e.srv.count(fmt.Sprintf("c%d commit", id)), 0)

	// An autocommit query runs in the branch and votes when closed.
	rows, err := e.db.QueryContext(g, "SELECT CONN")
	mustNil(t, "Query", err)
	check(t, "votes while rows open", len(e.co.votesFor("g")), 1)
	if !rows.Next() {
		t.Fatal("no row")
	}
	var got int
	mustNil(t, "Scan", rows.Scan(&got))
	check(t, "query conn", got, id)
	mustNil(t, "rows.Close", rows.Close())
	check(t, "votes after rows closed", len(e.co.votesFor("g")), 2)

	// A failing autocommit statement votes failed and rolls the branch back;
	// the decision then finds it rolled back.
	if _, err := e.db.ExecContext(g, "FAIL b"); !errors.Is(err, errFakeStatement) {
		t.Fatalf("Exec(FAIL) = %v", err)
	}
	votes = e.co.votesFor("g")
	if last := votes[len(votes)-1]; last.ok {
		t.Errorf("last vote %+v, want failed", last)
	}
	check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
	check(t, "branches", e.branches(), 0)
	if err := h.Commit(ctx); !errors.Is(err, ErrBranchLost) {
		t.Errorf("Held.Commit after local rollback = %v, want ErrBranchLost", err)
	}
}

func TestHeldRollbackAfterLocalRollbackSucceeds(t *testing.T) {
	e := newEnv(t)
	g := gctx("g")
	_, err := e.db.ExecContext(g, "INSERT a")
	mustNil(t, "Exec", err)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	mustNil(t, "Rollback", tx.Rollback())
	mustNil(t, "Held.Rollback", e.co.held("g").Rollback(context.Background()))
	check(t, "inner rollbacks", countSuffix(e.srv.logCopy(), " rollback"), 1)
	check(t, "branches", e.branches(), 0)
}

func TestStmtPreparedOutsideGroupRunsInBranch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := gctx("g")
	e.db.SetMaxOpenConns(2)

	st, err := e.db.PrepareContext(ctx, "INSERT s ?")
	mustNil(t, "Prepare", err)
	defer st.Close()

	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	branch := connID(t, g, tx)
	_, err = tx.StmtContext(g, st).ExecContext(g, 1)
	mustNil(t, "tx.Stmt Exec", err)
	mustNil(t, "Commit", tx.Commit())
	check(t, "text run in the branch", e.srv.count(fmt.Sprintf("c%d exec INSERT s ?", branch)), 1)

	// Executed outside a transaction with a group ctx: an implicit local tx
	// in the branch, wherever the statement was prepared.
	_, err = st.ExecContext(g, 2)
	mustNil(t, "stmt Exec in group", err)
	check(t, "text runs in the branch", e.srv.count(fmt.Sprintf("c%d exec INSERT s ?", branch)), 2)
	check(t, "prepared stmt execs", e.srv.countPrefix(fmt.Sprintf("c%d stmt exec", branch)), 0)
	check(t, "joins", e.co.joinCount("g"), 1)
	check(t, "votes", len(e.co.votesFor("g")), 2)

	// Outside the group it runs as prepared, never on the branch.
	_, err = st.ExecContext(ctx, 3)
	mustNil(t, "stmt Exec outside", err)
	check(t, "stmt execs on the branch conn", e.srv.countPrefix(fmt.Sprintf("c%d stmt exec", branch)), 0)
	check(t, "stmt execs elsewhere", countSuffix(e.srv.logCopy(), " stmt exec INSERT s ?"), 1)

	mustNil(t, "Held.Commit", e.co.held("g").Commit(ctx))
	// The statement prepared on the conn that became the branch was closed
	// with the branch, before its conn was reused.
	check(t, "branch stmt closed", e.srv.count(fmt.Sprintf("c%d stmt close INSERT s ?", branch)), 1)
}

func TestStmtPreparedInGroupTx(t *testing.T) {
	e := newEnv(t)
	g := gctx("g")
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	id := connID(t, g, tx)
	st, err := tx.PrepareContext(g, "INSERT p ?")
	mustNil(t, "Prepare", err)
	_, err = st.ExecContext(g, 1)
	mustNil(t, "Exec", err)
	rows, err := st.QueryContext(g, 2)
	mustNil(t, "Query", err)
	rows.Close()
	mustNil(t, "Commit", tx.Commit())
	check(t, "prepare on branch", e.srv.count(fmt.Sprintf("c%d prepare INSERT p ?", id)), 1)
	check(t, "stmt exec on branch", e.srv.count(fmt.Sprintf("c%d stmt exec INSERT p ?", id)), 1)
	check(t, "stmt query on branch", e.srv.count(fmt.Sprintf("c%d stmt query INSERT p ?", id)), 1)
	check(t, "stmt closed by Tx end", e.srv.count(fmt.Sprintf("c%d stmt close INSERT p ?", id)), 1)
}

func TestBadConnBreaksBranchWithoutRetry(t *testing.T) {
	e := newEnv(t)
	g := gctx("g")
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	id := connID(t, g, tx)
	_, err = tx.ExecContext(g, "BADCONN x")
	if !errors.Is(err, ErrBranchBroken) || errors.Is(err, driver.ErrBadConn) {
		t.Fatalf("Exec(BADCONN) = %v, want ErrBranchBroken not wrapping driver.ErrBadConn", err)
	}
	check(t, "branch conn closed", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
	check(t, "branches", e.branches(), 0)
	if err := tx.Commit(); !errors.Is(err, ErrLocalTxFailed) {
		t.Fatalf("Commit = %v, want ErrLocalTxFailed", err)
	}
	votes := e.co.votesFor("g")
	if len(votes) != 1 || votes[0].ok {
		t.Errorf("votes = %+v, want one failed", votes)
	}

	// Autocommit: database/sql must not retry on another conn.
	_, err = e.db.ExecContext(g, "BADCONN y")
	if !errors.Is(err, ErrBranchBroken) {
		t.Fatalf("autocommit Exec(BADCONN) = %v", err)
	}
	check(t, "BADCONN y attempts", countSuffix(e.srv.logCopy(), " exec BADCONN y"), 1)
}

func countSuffix(log []string, suffix string) int {
	n := 0
	for _, l := range log {
		if strings.HasSuffix(l, suffix) {
			n++
		}
	}
	return n
}

func TestIncompatibleOptions(t *testing.T) {
	e := newEnv(t)
	g := gctx("g")
	tx, err := e.db.BeginTx(g, &sql.TxOptions{ReadOnly: true})
	mustNil(t, "BeginTx ro", err)
	mustNil(t, "Commit", tx.Commit())
	if _, err := e.db.BeginTx(g, nil); !errors.Is(err, ErrIncompatibleTx) {
		t.Errorf("read-write tx on a read-only branch: %v, want ErrIncompatibleTx", err)
	}
	if _, err := e.db.BeginTx(g, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable}); !errors.Is(err, ErrIncompatibleTx) {
		t.Errorf("other isolation: %v, want ErrIncompatibleTx", err)
	}
	tx, err = e.db.BeginTx(g, &sql.TxOptions{ReadOnly: true})
	mustNil(t, "BeginTx ro again", err)
	mustNil(t, "Commit", tx.Commit())
}

func TestRowsInGroupForwardOptionalInterfaces(t *testing.T) {
	e := newEnv(t)
	g := gctx("g")
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	rows, err := tx.QueryContext(g, "SELECT CONN")
	mustNil(t, "Query", err)
	cts, err := rows.ColumnTypes()
	mustNil(t, "ColumnTypes", err)
	check(t, "DatabaseTypeName", cts[0].DatabaseTypeName(), "BIGINT")
	if _, ok := cts[0].Length(); ok {
		t.Error("Length ok without RowsColumnTypeLength")
	}
	if rows.NextResultSet() {
		t.Error("NextResultSet true without RowsNextResultSet")
	}
	mustNil(t, "rows.Close", rows.Close())
	mustNil(t, "Commit", tx.Commit())
}

func TestConnCloseDuringGroupTxRollsBack(t *testing.T) {
	e := newEnv(t)
	ctx := gctx("g")
	dc, err := e.cn.Connect(ctx)
	mustNil(t, "Connect", err)
	c := dc.(*conn)
	id := fakeID(c)
	_, err = c.BeginTx(ctx, driver.TxOptions{})
	mustNil(t, "BeginTx", err)
	check(t, "state", c.state, connInTx)
	mustNil(t, "Close", c.Close())
	check(t, "state", c.state, connClosed)
	check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
	votes := e.co.votesFor("g")
	if len(votes) != 1 || votes[0].ok {
		t.Errorf("votes = %+v, want one failed", votes)
	}
	check(t, "branches", e.branches(), 0)
	// The physical conn went to the branch, which released it.
	check(t, "closes", e.srv.count(fmt.Sprintf("c%d close", id)), 0)
	if got := e.free(); !slices.Equal(got, []int{id}) {
		t.Errorf("free list = %v", got)
	}
}
