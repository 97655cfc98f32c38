package sqlproxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// holdOne runs one local tx in group g and returns its Held and the branch's
// physical conn id.
func holdOne(t *testing.T, e *testEnv, group string) (Held, int) {
	t.Helper()
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	id := connID(t, g, tx)
	_, err = tx.ExecContext(g, "INSERT first")
	mustNil(t, "Exec", err)
	mustNil(t, "Commit", tx.Commit())
	h := e.co.held(group)
	if h == nil {
		t.Fatal("no Hold")
	}
	return h, id
}

func TestHeldAppliesExactlyOnceAndReleasesConn(t *testing.T) {
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		name := map[bool]string{true: "Commit", false: "Rollback"}[commit]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			h, id := holdOne(t, e, "g")
			apply := h.Rollback
			entry := fmt.Sprintf("c%d rollback", id)
			if commit {
				apply, entry = h.Commit, fmt.Sprintf("c%d commit", id)
			}
			mustNil(t, "first "+name, apply(ctx))
			check(t, entry, e.srv.count(entry), 1)
			check(t, "branches", e.branches(), 0)
			if got := e.free(); !slices.Equal(got, []int{id}) {
				t.Fatalf("free list = %v, want [%d]", got, id)
			}

			// The same decision again reports the same outcome and applies
			// nothing; the other decision is refused.
			same, other := h.Commit, h.Rollback
			if !commit {
				same, other = h.Rollback, h.Commit
			}
			if err := same(ctx); err != nil {
				t.Errorf("same decision again = %v, want nil", err)
			}
			if err := other(ctx); !errors.Is(err, ErrAlreadyDecided) {
				t.Errorf("other decision = %v, want ErrAlreadyDecided", err)
			}
			check(t, "inner commits+rollbacks", countSuffix(e.srv.logCopy(), " commit")+countSuffix(e.srv.logCopy(), " rollback"), 1)

			// Connect reuses the released conn after resetting it.
			dc, err := e.cn.Connect(ctx)
			mustNil(t, "Connect", err)
			check(t, "reused conn", fakeID(dc), id)
			check(t, "reset", e.srv.count(fmt.Sprintf("c%d reset", id)), 1)
			check(t, "free list", len(e.free()), 0)
			mustNil(t, "Close", dc.Close())
		})
	}
}

func TestHeldCommitFailureClosesConn(t *testing.T) {
	e := newEnv(t)
	h, id := holdOne(t, e, "g")
	errCommit := errors.New("commit failed")
	e.srv.set(func(s *fakeServer) { s.commitErr = errCommit })
	err := h.Commit(context.Background())
	if !errors.Is(err, ErrApplyFailed) || !errors.Is(err, errCommit) {
		t.Fatalf("Held.Commit = %v, want ErrApplyFailed wrapping the cause", err)
	}
	check(t, "conn closed", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
	check(t, "free list", len(e.free()), 0)
	check(t, "branches", e.branches(), 0)
}

func TestFreeListIsBounded(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxIdleReleased = 1 })
	ctx := context.Background()
	var helds []Held
	var ids []int
	for i := range 3 {
		h, id := holdOne(t, e, fmt.Sprintf("g%d", i))
		helds, ids = append(helds, h), append(ids, id)
	}
	for _, h := range helds {
		mustNil(t, "Held.Commit", h.Commit(ctx))
	}
	check(t, "free list", len(e.free()), 1)
	closed := 0
	for _, id := range ids {
		closed += e.srv.count(fmt.Sprintf("c%d close", id))
	}
	check(t, "released conns closed", closed, 2)
}

func TestDecisionDuringLocalWork(t *testing.T) {
	ctx := context.Background()

	t.Run("rollback applies between statements", func(t *testing.T) {
		e := newEnv(t)
		h, id := holdOne(t, e, "g")
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		_, err = tx.ExecContext(g, "INSERT second")
		mustNil(t, "Exec", err)

		mustNil(t, "Held.Rollback", h.Rollback(ctx))
		check(t, "inner rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)

		if _, err := tx.ExecContext(g, "INSERT third"); !errors.Is(err, ErrBranchEnded) {
			t.Errorf("Exec after rollback decision = %v, want ErrBranchEnded", err)
		}
		if err := tx.Commit(); !errors.Is(err, ErrBranchEnded) && !errors.Is(err, ErrLocalTxFailed) {
			t.Errorf("Commit after rollback decision = %v", err)
		}
		check(t, "third statement never ran", e.srv.count(fmt.Sprintf("c%d exec INSERT third", id)), 0)
		// A decided group takes no new work.
		e.co.decide("g")
		if _, err := e.db.BeginTx(g, nil); !errors.Is(err, ErrJoinFailed) {
			t.Errorf("BeginTx after the decision = %v, want ErrJoinFailed", err)
		}
	})

	t.Run("rollback waits for the statement in progress", func(t *testing.T) {
		e := newEnv(t)
		h, id := holdOne(t, e, "g")
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		rows, err := tx.QueryContext(g, "SELECT CONN") // keeps the branch until closed
		mustNil(t, "Query", err)

		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := h.Rollback(short); !errors.Is(err, ErrApplyPending) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Held.Rollback while rows open = %v, want ErrApplyPending", err)
		}
		check(t, "rollbacks while rows open", e.srv.count(fmt.Sprintf("c%d rollback", id)), 0)
		mustNil(t, "rows.Close", rows.Close())
		// Closing the rows released the branch, which applied the decision.
		check(t, "rollbacks after rows closed", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
		check(t, "branches", e.branches(), 0)
		_ = tx.Rollback()
	})

	t.Run("commit waits for open local work", func(t *testing.T) {
		e := newEnv(t)
		h, id := holdOne(t, e, "g")
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		_, err = tx.ExecContext(g, "INSERT second")
		mustNil(t, "Exec", err)

		done := make(chan error, 1)
		go func() { done <- h.Commit(ctx) }()
		select {
		case err := <-done:
			t.Fatalf("Held.Commit returned %v while a local tx of the group is open", err)
		case <-time.After(20 * time.Millisecond):
		}
		check(t, "commits while open", e.srv.count(fmt.Sprintf("c%d commit", id)), 0)
		_, err = tx.ExecContext(g, "INSERT third")
		mustNil(t, "Exec while commit pending", err)
		if _, err := e.db.BeginTx(g, nil); !errors.Is(err, ErrBranchEnded) {
			t.Errorf("new local tx while the commit is pending = %v, want ErrBranchEnded", err)
		}
		mustNil(t, "local Commit", tx.Commit())
		mustNil(t, "Held.Commit", <-done)
		check(t, "commits", e.srv.count(fmt.Sprintf("c%d commit", id)), 1)
		check(t, "third statement committed with the group", e.srv.count(fmt.Sprintf("c%d exec INSERT third", id)), 1)
	})

	t.Run("commit pending is applied by the local tx", func(t *testing.T) {
		e := newEnv(t)
		h, id := holdOne(t, e, "g")
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		if err := h.Commit(short); !errors.Is(err, ErrApplyPending) {
			t.Fatalf("Held.Commit = %v, want ErrApplyPending", err)
		}
		mustNil(t, "local Commit", tx.Commit())
		check(t, "commits", e.srv.count(fmt.Sprintf("c%d commit", id)), 1)
		check(t, "branches", e.branches(), 0)
		check(t, "free", len(e.free()), 1)
	})

	t.Run("local failure after commit decision loses the branch", func(t *testing.T) {
		e := newEnv(t)
		h, id := holdOne(t, e, "g")
		g := gctx("g")
		tx, err := e.db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		done := make(chan error, 1)
		go func() { done <- h.Commit(ctx) }()
		time.Sleep(10 * time.Millisecond)
		mustNil(t, "local Rollback", tx.Rollback())
		if err := <-done; !errors.Is(err, ErrBranchLost) {
			t.Fatalf("Held.Commit = %v, want ErrBranchLost", err)
		}
		check(t, "rollbacks", e.srv.count(fmt.Sprintf("c%d rollback", id)), 1)
		check(t, "commits", e.srv.count(fmt.Sprintf("c%d commit", id)), 0)
	})

	t.Run("decision applied inside Hold", func(t *testing.T) {
		e := newEnv(t)
		// A coordinator that already knows the outcome may apply it at once.
		results := make(chan error, 1)
		e.co.set(func(f *fakeCoord) {
			f.onHold = func(_ string, h Held) { results <- h.Commit(ctx) }
		})
		_, err := e.db.ExecContext(gctx("g"), "INSERT a")
		mustNil(t, "Exec", err)
		mustNil(t, "Held.Commit inside Hold", <-results)
		check(t, "commits", countSuffix(e.srv.logCopy(), " commit"), 1)
	})
}

func TestAutocommitQueryVoteErrorFromRowsClose(t *testing.T) {
	e := newEnv(t)
	errTM := errors.New("tm unreachable")
	e.co.set(func(f *fakeCoord) { f.voteErr = errTM })
	rows, err := e.db.QueryContext(gctx("g"), "SELECT CONN")
	mustNil(t, "Query", err)
	for rows.Next() {
	}
	if err := rows.Close(); !errors.Is(err, ErrVoteFailed) {
		// database/sql closes the rows itself after the last Next; the
		// vote's error is only reported by an explicit Close before that.
		t.Logf("rows.Close after draining = %v", err)
	}
	check(t, "branches", e.branches(), 0)
	check(t, "rollbacks", countSuffix(e.srv.logCopy(), " rollback"), 1)

	rows, err = e.db.QueryContext(gctx("g2"), "SELECT CONN")
	mustNil(t, "Query", err)
	if err := rows.Close(); !errors.Is(err, ErrVoteFailed) {
		t.Errorf("rows.Close = %v, want ErrVoteFailed", err)
	}
}
