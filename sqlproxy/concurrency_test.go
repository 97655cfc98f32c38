package sqlproxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestConcurrentGroups runs many requests in several groups at once, mixing
// explicit transactions, autocommit statements and work outside any group.
// Each group must get exactly one Join and one physical conn, the fake must
// never see a conn used by two goroutines at once, and every branch must be
// released after its decision.
func TestConcurrentGroups(t *testing.T) {
	e := newEnv(t)
	e.co.set(func(f *fakeCoord) { f.joinDelay = 2 * time.Millisecond }) // widen the join window
	const groups, workers, rounds = 6, 5, 4
	ctx := context.Background()

	var mu sync.Mutex
	seen := make(map[string][]int) // group -> physical conns seen by its work
	var errs []error
	record := func(group string, id int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", group, err))
			return
		}
		if id != 0 {
			seen[group] = append(seen[group], id)
		}
	}

	var wg sync.WaitGroup
	for gi := range groups {
		group := fmt.Sprintf("g%d", gi)
		for w := range workers {
			wg.Go(func() {
				g := gctx(group)
				for r := range rounds {
					switch (w + r) % 3 {
					case 0:
						tx, err := e.db.BeginTx(g, nil)
						if err != nil {
							record(group, 0, err)
							continue
						}
						if _, err := tx.ExecContext(g, "SLEEP INSERT"); err != nil {
							record(group, 0, err)
						}
						var id int
						if err := tx.QueryRowContext(g, "SELECT CONN").Scan(&id); err != nil {
							record(group, 0, err)
						}
						record(group, id, tx.Commit())
					case 1:
						_, err := e.db.ExecContext(g, "SLEEP INSERT auto")
						record(group, 0, err)
					case 2:
						var id int
						err := e.db.QueryRowContext(g, "SELECT CONN").Scan(&id)
						record(group, id, err)
					}
				}
			})
		}
	}
	for range 3 {
		wg.Go(func() {
			for range 20 {
				_, err := e.db.ExecContext(ctx, "SLEEP outside")
				record("none", 0, err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}

	branchConn := make(map[string]int)
	for gi := range groups {
		group := fmt.Sprintf("g%d", gi)
		check(t, group+" joins", e.co.joinCount(group), 1)
		ids := slices.Compact(slices.Sorted(slices.Values(seen[group])))
		if len(ids) != 1 {
			t.Errorf("%s ran on conns %v, want one", group, ids)
			continue
		}
		branchConn[group] = ids[0]
		votes := e.co.votesFor(group)
		check(t, group+" votes", len(votes), workers*rounds)
		for _, v := range votes {
			if !v.ok {
				t.Errorf("%s: failed vote %+v", group, v)
			}
		}
	}
	check(t, "branches held", e.branches(), groups)
	check(t, "conns in tx", len(e.srv.inTx()), groups)

	// Decisions arrive concurrently too.
	for gi := range groups {
		group := fmt.Sprintf("g%d", gi)
		h := e.co.held(group)
		wg.Go(func() {
			var err error
			if gi%2 == 0 {
				err = h.Commit(ctx)
			} else {
				err = h.Rollback(ctx)
			}
			record(group, 0, err)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("decision errors: %v", errs)
	}
	for gi := range groups {
		group := fmt.Sprintf("g%d", gi)
		op := map[bool]string{true: "commit", false: "rollback"}[gi%2 == 0]
		check(t, group+" "+op, e.srv.count(fmt.Sprintf("c%d %s", branchConn[group], op)), 1)
	}
	check(t, "branches", e.branches(), 0)
	check(t, "conns in tx", len(e.srv.inTx()), 0)
}

// TestConcurrentDecisionAndWork delivers the decision while requests of the
// group keep working. Work must stop cleanly (the branch ended or the group
// refused the join), a commit must wait for open local work and succeed, and
// nothing may be left held.
func TestConcurrentDecisionAndWork(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%t", commit), func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			h, id := holdOne(t, e, "g")
			g := gctx("g")

			var wg sync.WaitGroup
			var mu sync.Mutex
			var unexpected []error
			expected := func(err error) bool {
				return errors.Is(err, ErrBranchEnded) || errors.Is(err, ErrJoinFailed) ||
					(!commit && errors.Is(err, ErrLocalTxFailed))
			}
			for w := range 6 {
				wg.Go(func() {
					for {
						var err error
						if w%2 == 0 {
							_, err = e.db.ExecContext(g, "SLEEP auto")
						} else {
							var tx interface {
								Commit() error
								Rollback() error
							}
							t, berr := e.db.BeginTx(g, nil)
							if berr != nil {
								err = berr
							} else {
								tx = t
								if _, err = t.ExecContext(g, "SLEEP one"); err == nil {
									_, err = t.ExecContext(g, "SLEEP two")
								}
								if cerr := tx.Commit(); err == nil {
									err = cerr
								}
							}
						}
						if err != nil {
							if !expected(err) {
								mu.Lock()
								unexpected = append(unexpected, err)
								mu.Unlock()
							}
							return
						}
					}
				})
			}
			time.Sleep(10 * time.Millisecond)
			e.co.decide("g") // the TxManager refuses joins from now on
			var derr error
			if commit {
				derr = h.Commit(ctx)
			} else {
				derr = h.Rollback(ctx)
			}
			wg.Wait()
			mustNil(t, "decision", derr)
			if len(unexpected) > 0 {
				t.Fatalf("unexpected errors: %v", unexpected)
			}
			op := map[bool]string{true: "commit", false: "rollback"}[commit]
			check(t, op, e.srv.count(fmt.Sprintf("c%d %s", id, op)), 1)
			check(t, "branches", e.branches(), 0)
			check(t, "conns in tx", len(e.srv.inTx()), 0)
		})
	}
}
