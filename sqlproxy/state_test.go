package sqlproxy

import (
	"database/sql/driver"
	"strings"
	"testing"
)

func TestStateStrings(t *testing.T) {
	for s, want := range map[connState]string{connIdle: "idle", connInTx: "in local tx", connDetached: "detached", connClosed: "closed", 9: "connState(9)"} {
		check(t, "connState", s.String(), want)
	}
	for s, want := range map[branchState]string{branchJoining: "joining", branchWorking: "working", branchHeld: "held", branchPreparing: "preparing", branchPrepared: "prepared", branchApplying: "applying", branchDone: "done", 9: "branchState(9)"} {
		check(t, "branchState", s.String(), want)
	}
	for o, want := range map[outcome]string{outcomeNone: "none", outcomeCommitted: "committed", outcomeRolledBack: "rolled back", outcomeBroken: "broken", outcomeFailed: "failed", outcomeAbandoned: "abandoned", 9: "outcome(9)"} {
		check(t, "outcome", o.String(), want)
	}
	for w, want := range map[want]string{wantNone: "none", wantCommit: "commit", wantRollback: "rollback", 9: "want(9)"} {
		check(t, "want", w.String(), want)
	}
	for p, want := range map[xaPhase]string{xaActive: "active", xaIdle: "idle", xaMaybePrepared: "maybe prepared", xaPrepared: "prepared", xaFinished: "finished", 9: "xaPhase(9)"} {
		check(t, "xaPhase", p.String(), want)
	}
	for r, want := range map[Resolution]string{ResolveWait: "wait", ResolveCommit: "commit", ResolveRollback: "rollback", ResolveSkip: "skip", 9: "Resolution(9)"} {
		check(t, "Resolution", r.String(), want)
	}
}

func mustPanicBUG(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		s, _ := r.(string)
		if !strings.Contains(s, "BUG") {
			t.Errorf("%s: recovered %v, want a BUG panic", name, r)
		}
	}()
	f()
}

func TestImpossibleTransitionsPanic(t *testing.T) {
	src := newSource(Options{Datasource: "d", ApplyTimeout: 1, Mode: ModeLCN}, fakeConnector{newFakeServer()}, nil)
	newB := func(s branchState) *branch {
		b := newBranch(src, "g")
		b.state = s
		return b
	}
	mustPanicBUG(t, "working from held", func() {
		newB(branchHeld).toWorkingLocked("b", ModeLCN, nil, physConn{}, nil, nil, driver.TxOptions{}, nil)
	})
	mustPanicBUG(t, "held from joining", func() { newB(branchJoining).toHeldLocked() })
	mustPanicBUG(t, "held from done", func() { newB(branchDone).toHeldLocked() })
	mustPanicBUG(t, "commit from working", func() { newB(branchWorking).toApplyingLocked(wantCommit, nil) })
	mustPanicBUG(t, "applying twice", func() { newB(branchApplying).toApplyingLocked(wantRollback, nil) })
	mustPanicBUG(t, "done twice", func() { newB(branchDone).toDoneLocked(outcomeCommitted, nil) })
	mustPanicBUG(t, "committed while joining", func() { newB(branchJoining).toDoneLocked(outcomeCommitted, nil) })
	mustPanicBUG(t, "abandoned after joining", func() { newB(branchHeld).toDoneLocked(outcomeAbandoned, nil) })
	mustPanicBUG(t, "override without pending commit", func() { newB(branchHeld).overrideCommitLocked(nil) })
	mustPanicBUG(t, "leave without local tx", func() { newB(branchHeld).leaveLocked() })
	mustPanicBUG(t, "preparing from working", func() { newB(branchWorking).toPreparingLocked() })
	mustPanicBUG(t, "preparing without the lease", func() { newB(branchHeld).toPreparingLocked() })
	mustPanicBUG(t, "preparing with a local tx open", func() {
		b := newB(branchHeld)
		b.leased, b.active = true, 1
		b.toPreparingLocked()
	})
	mustPanicBUG(t, "prepared from held", func() { newB(branchHeld).toPreparedLocked() })
	mustPanicBUG(t, "in doubt from held", func() { newB(branchHeld).toInDoubtLocked(nil) })
	mustPanicBUG(t, "in doubt of a branch never prepared", func() { newB(branchApplying).toInDoubtLocked(nil) })
	mustPanicBUG(t, "done from prepared", func() { newB(branchPrepared).toDoneLocked(outcomeCommitted, nil) })
	mustPanicBUG(t, "done from preparing", func() { newB(branchPreparing).toDoneLocked(outcomeRolledBack, nil) })
	mustPanicBUG(t, "held from prepared", func() { newB(branchPrepared).toHeldLocked() })

	// held → held is the allowed no-op of a second vote.
	b := newB(branchHeld)
	b.toHeldLocked()
	check(t, "held again", b.state, branchHeld)

	c := &conn{src: src}
	mustPanicBUG(t, "plain tx on detached conn", func() {
		c.state = connDetached
		c.toInTx(&plainTx{})
	})
	mustPanicBUG(t, "begin in tx", func() {
		c.state = connInTx
		c.toInTx(&groupTx{})
	})
	mustPanicBUG(t, "end tx when idle", func() {
		c.state = connIdle
		c.endTx(&plainTx{})
	})
	mustPanicBUG(t, "hand-over when detached", func() {
		c.state = connDetached
		c.handOver(nil)
	})
	mustPanicBUG(t, "close twice", func() {
		c.state = connClosed
		c.toClosed()
	})
}
