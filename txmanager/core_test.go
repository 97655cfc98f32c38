package txmanager

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ctStep runs Step on g and checks what holds for every event: Step leaves
// g alone, every transition it returns applies in order (as the server
// persists them), and the reply's state is the state after them. It
// returns the result and the group after the transitions.
func ctStep(t testing.TB, g *Group, ev Event) (Result, *Group) {
	t.Helper()
	before := ctClone(g)
	res := Step(g, ev)
	if !reflect.DeepEqual(g, before) {
		t.Fatalf("Step(%s) modified its input:\n got %+v\nwant %+v", ev.Kind, g, before)
	}
	if g == nil {
		if len(res.Transitions) != 0 {
			t.Fatalf("Step(%s) on an unknown group wants transitions %+v", ev.Kind, res.Transitions)
		}
		return res, nil
	}
	after := ctClone(g)
	for i, tr := range res.Transitions {
		if err := ApplyTransition(after, tr); err != nil {
			t.Fatalf("Step(%s) returned transition %d (%s) that ApplyTransition refuses: %v\ngroup %+v", ev.Kind, i, tr.Kind, err, after)
		}
	}
	if res.Reply.State != after.State {
		t.Fatalf("Step(%s): reply state %s, but the group is %s after the transitions", ev.Kind, res.Reply.State, after.State)
	}
	return res, after
}

type coreCase struct {
	name   string
	g      *Group
	ev     Event
	trans  []Transition // exact, except that Reason is a required substring
	sends  []Send       // exact, in order
	code   ReplyCode
	state  GroupState
	reason string // required substring of Reply.Reason
	after  GroupState
}

func ctCheckCase(t *testing.T, tc coreCase) {
	t.Helper()
	res, after := ctStep(t, tc.g, tc.ev)
	if len(res.Transitions) != len(tc.trans) {
		t.Fatalf("transitions = %+v, want %+v", res.Transitions, tc.trans)
	}
	for i, want := range tc.trans {
		got := res.Transitions[i]
		if !strings.Contains(got.Reason, want.Reason) {
			t.Errorf("transition %d reason %q does not contain %q", i, got.Reason, want.Reason)
		}
		got.Reason, want.Reason = "", ""
		if !reflect.DeepEqual(got, want) {
			t.Errorf("transition %d = %+v, want %+v", i, got, want)
		}
	}
	if len(res.Sends) != 0 || len(tc.sends) != 0 {
		if !reflect.DeepEqual(res.Sends, tc.sends) {
			t.Errorf("sends = %+v, want %+v", res.Sends, tc.sends)
		}
	}
	if res.Reply.Code != tc.code || res.Reply.State != tc.state {
		t.Errorf("reply = %v/%s (%q), want %v/%s", res.Reply.Code, res.Reply.State, res.Reply.Reason, tc.code, tc.state)
	}
	if !strings.Contains(res.Reply.Reason, tc.reason) {
		t.Errorf("reply reason %q does not contain %q", res.Reply.Reason, tc.reason)
	}
	if after != nil && tc.after != 0 && after.State != tc.after {
		t.Errorf("group after = %s, want %s", after.State, tc.after)
	}
}

func ctRun(t *testing.T, cases []coreCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { ctCheckCase(t, tc) })
	}
}

var (
	ctDecided    = []GroupState{GroupCommitting, GroupCommitted, GroupRollingBack, GroupRolledBack}
	ctAllStates  = []GroupState{GroupActive, GroupCommitting, GroupCommitted, GroupRollingBack, GroupRolledBack}
	ctI0, ctI1   = ctInstances[0], ctInstances[1]
	ctI2         = ctInstances[2]
	ctB1, ctB2   = ctBranchID(1), ctBranchID(2)
	ctB3, ctB9   = ctBranchID(3), ctBranchID(9)
	ctNow, ctDue = int64(2000), int64(5000) // before the deadline, at it
)

// ctDoneFor returns the branch state that a branch in a group in state gs
// typically has: done when gs is terminal.
func ctDoneFor(gs GroupState, st BranchState) BranchState {
	switch gs {
	case GroupCommitted:
		return BranchCommitted
	case GroupRolledBack:
		return BranchRolledBack
	}
	return st
}

func TestStepJoin(t *testing.T) {
	newBranch := Branch{ID: ctB9, Service: "svc-2", Instance: "spoofed", Datasource: "orders", Mode: "lcn", State: BranchPrepared, Reason: "x"}
	joined := Branch{ID: ctB9, Service: "svc-2", Instance: ctI2, Datasource: "orders", Mode: "lcn", State: BranchRegistered, Reason: "x"}
	cases := []coreCase{
		{name: "ok: branch registered under the sender's instance",
			g:     ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev:    Event{Kind: EvJoin, Group: ctGroupID, NowMS: ctNow, Instance: ctI2, Branch: newBranch},
			trans: []Transition{{Kind: TransJoin, Group: ctGroupID, Branch: joined, AtMS: ctNow}},
			code:  ReplyOK, state: GroupActive, after: GroupActive},
		{name: "one ms before the deadline",
			g:     ctGroup(GroupActive),
			ev:    Event{Kind: EvJoin, Group: ctGroupID, NowMS: ctDue - 1, Instance: ctI2, Branch: newBranch},
			trans: []Transition{{Kind: TransJoin, Group: ctGroupID, Branch: joined, AtMS: ctDue - 1}},
			code:  ReplyOK, state: GroupActive},
		{name: "at the deadline: rollback decided, every branch told, sender refused",
			g:     ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 0, BranchRegistered)),
			ev:    Event{Kind: EvJoin, Group: ctGroupID, NowMS: ctDue, Instance: ctI2, Branch: newBranch},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue, Reason: "deadline"}},
			sends: []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1}, {Instance: ctI0, Group: ctGroupID, Branch: ctB2}},
			code:  ReplyConflict, state: GroupRollingBack, reason: "deadline", after: GroupRollingBack},
		{name: "after the deadline, no branches: rolled back at once",
			g:     ctGroup(GroupActive),
			ev:    Event{Kind: EvJoin, Group: ctGroupID, NowMS: ctDue + 100, Instance: ctI2, Branch: newBranch},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue + 100, Reason: "deadline"}},
			code:  ReplyConflict, state: GroupRolledBack, reason: "deadline", after: GroupRolledBack},
	}
	for _, gs := range ctDecided {
		for _, now := range []int64{ctNow, ctDue + 1} {
			cases = append(cases, coreCase{name: fmt.Sprintf("group %s at %d: refused", gs, now),
				g:    ctGroup(gs, ctBranch(1, 1, ctDoneFor(gs, BranchPrepared))),
				ev:   Event{Kind: EvJoin, Group: ctGroupID, NowMS: now, Instance: ctI2, Branch: newBranch},
				code: ReplyConflict, state: gs, after: gs})
		}
	}
	ctRun(t, cases)
}

func TestStepVote(t *testing.T) {
	three := func() *Group {
		return ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchRegistered), ctBranch(3, 0, BranchPrepared))
	}
	allRollback := []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1}, {Instance: ctI2, Group: ctGroupID, Branch: ctB2}, {Instance: ctI0, Group: ctGroupID, Branch: ctB3}}
	cases := []coreCase{
		{name: "ok from REGISTERED", g: three(),
			ev:    Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI2, BranchID: ctB2, OK: true},
			trans: []Transition{{Kind: TransVote, Group: ctGroupID, BranchID: ctB2, BranchTo: BranchPrepared, AtMS: ctNow}},
			code:  ReplyOK, state: GroupActive},
		{name: "ok again from PREPARED (service called twice): nothing to write", g: three(),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyOK, state: GroupActive},
		{name: "failed: vote recorded, rollback decided, every branch told", g: three(),
			ev: Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI2, BranchID: ctB2, OK: false, Reason: "duplicate key"},
			trans: []Transition{
				{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctNow, Reason: "duplicate key",
					BranchID: ctB2, BranchTo: BranchFailed, BranchReason: "duplicate key"},
			},
			sends: allRollback,
			code:  ReplyOK, state: GroupRollingBack, after: GroupRollingBack},
		{name: "failed from PREPARED", g: three(),
			ev: Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, BranchID: ctB3, OK: false, Reason: "panic"},
			trans: []Transition{
				{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctNow, Reason: ctB3,
					BranchID: ctB3, BranchTo: BranchFailed, BranchReason: "panic"},
			},
			sends: allRollback,
			code:  ReplyOK, state: GroupRollingBack},
		{name: "foreign instance", g: three(),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB2, OK: true},
			code: ReplyForbidden, state: GroupActive},
		{name: "foreign instance voting failed cannot doom the group", g: three(),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, BranchID: ctB2, OK: false},
			code: ReplyForbidden, state: GroupActive, after: GroupActive},
		{name: "starter instance voting for another's branch", g: three(),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, BranchID: ctB1, OK: true},
			code: ReplyForbidden, state: GroupActive},
		{name: "unknown branch", g: three(),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB9, OK: true},
			code: ReplyNotFound, state: GroupActive},
		{name: "at the deadline: rollback instead of counting the vote", g: three(),
			ev:    Event{Kind: EvVote, Group: ctGroupID, NowMS: ctDue, Instance: ctI2, BranchID: ctB2, OK: true},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue, Reason: "deadline"}},
			sends: allRollback,
			code:  ReplyConflict, state: GroupRollingBack, reason: "deadline"},
		{name: "failed again on FAILED branch of an ACTIVE group: no-op",
			g:    ctGroup(GroupActive, ctBranch(1, 1, BranchFailed)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: false},
			code: ReplyOK, state: GroupActive},
		{name: "ok after failed: refused, FAILED is final",
			g:    ctGroup(GroupActive, ctBranch(1, 1, BranchFailed)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyConflict, state: GroupActive},
		{name: "duplicate ok after a commit decision: no-op",
			g:    ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyOK, state: GroupCommitting},
		{name: "duplicate failed after the rollback it caused: no-op",
			g:    ctGroup(GroupRollingBack, ctBranch(1, 1, BranchFailed)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: false},
			code: ReplyOK, state: GroupRollingBack},
		{name: "failed vote in a rolled-back group: agrees with the decision",
			g:    ctGroup(GroupRolledBack, ctBranch(1, 1, BranchRolledBack)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: false},
			code: ReplyOK, state: GroupRolledBack},
		{name: "late ok from REGISTERED in a rolling-back group",
			g:    ctGroup(GroupRollingBack, ctBranch(1, 1, BranchRegistered)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyConflict, state: GroupRollingBack},
		{name: "late ok from PREPARED in a rolling-back group",
			g:    ctGroup(GroupRollingBack, ctBranch(1, 1, BranchPrepared)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyConflict, state: GroupRollingBack},
		{name: "late ok in a rolled-back group",
			g:    ctGroup(GroupRolledBack, ctBranch(1, 1, BranchRolledBack)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyConflict, state: GroupRolledBack},
		{name: "failed after a commit decision: refused",
			g:    ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: false},
			code: ReplyConflict, state: GroupCommitting},
		{name: "ok from a committed branch of a committed group",
			g:    ctGroup(GroupCommitted, ctBranch(1, 1, BranchCommitted)),
			ev:   Event{Kind: EvVote, Group: ctGroupID, NowMS: ctNow, Instance: ctI1, BranchID: ctB1, OK: true},
			code: ReplyConflict, state: GroupCommitted},
	}
	ctRun(t, cases)
}

func TestStepDecide(t *testing.T) {
	prepared := func() *Group {
		return ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchPrepared))
	}
	withState := func(st BranchState) *Group {
		return ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, st))
	}
	commitSends := []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1, Commit: true}, {Instance: ctI2, Group: ctGroupID, Branch: ctB2, Commit: true}}
	rollbackSends := []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1}, {Instance: ctI2, Group: ctGroupID, Branch: ctB2}}
	rb := func(at int64, reason string) []Transition {
		return []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: at, Reason: reason}}
	}
	cases := []coreCase{
		{name: "commit, all prepared", g: prepared(),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, Commit: true},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: ctNow}},
			sends: commitSends, code: ReplyOK, state: GroupCommitting},
		{name: "commit one ms before the deadline", g: prepared(),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctDue - 1, Instance: ctI0, Commit: true},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: ctDue - 1}},
			sends: commitSends, code: ReplyOK, state: GroupCommitting},
		{name: "commit with no branch: committed at once", g: ctGroup(GroupActive),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, Commit: true},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: ctNow}},
			code:  ReplyOK, state: GroupCommitted},
		{name: "commit with an unvoted branch: rollback", g: withState(BranchRegistered),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, Commit: true},
			trans: rb(ctNow, ctB2), sends: rollbackSends, code: ReplyConflict, state: GroupRollingBack, reason: "REGISTERED"},
		{name: "commit with a failed branch: rollback", g: withState(BranchFailed),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, Commit: true},
			trans: rb(ctNow, ctB2), sends: rollbackSends, code: ReplyConflict, state: GroupRollingBack, reason: "FAILED"},
		{name: "commit at the deadline: rollback", g: prepared(),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctDue, Instance: ctI0, Commit: true},
			trans: rb(ctDue, "deadline"), sends: rollbackSends, code: ReplyConflict, state: GroupRollingBack, reason: "deadline"},
		{name: "rollback asked", g: prepared(),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0},
			trans: rb(ctNow, "starter"), sends: rollbackSends, code: ReplyOK, state: GroupRollingBack},
		{name: "rollback asked after the deadline", g: withState(BranchRegistered),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctDue + 1, Instance: ctI0},
			trans: rb(ctDue+1, ""), sends: rollbackSends, code: ReplyOK, state: GroupRollingBack},
		{name: "rollback with no branch: rolled back at once", g: ctGroup(GroupActive),
			ev:    Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0},
			trans: rb(ctNow, ""), code: ReplyOK, state: GroupRolledBack},
	}
	for _, gs := range ctAllStates {
		for _, commit := range []bool{true, false} {
			for _, inst := range []string{ctI1, ctI2, "", "inst-0 "} {
				cases = append(cases, coreCase{name: fmt.Sprintf("not the starter (%q), %s, commit=%v", inst, gs, commit),
					g:    ctGroup(gs, ctBranch(1, 1, ctDoneFor(gs, BranchPrepared))),
					ev:   Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: inst, Commit: commit},
					code: ReplyForbidden, state: gs})
			}
		}
	}
	// Decided: the answer is the decision already made; asking to commit a
	// rolled-back group is a conflict. Rolling back a committing group is
	// answered with its state (the client reads State and reports it).
	for _, gs := range ctDecided {
		for _, commit := range []bool{true, false} {
			code := ReplyOK
			if commit && !gs.Commit() {
				code = ReplyConflict
			}
			cases = append(cases, coreCase{name: fmt.Sprintf("already %s, commit=%v", gs, commit),
				g:    ctGroup(gs, ctBranch(1, 1, ctDoneFor(gs, BranchPrepared))),
				ev:   Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctDue + 1000, Instance: ctI0, Commit: commit},
				code: code, state: gs, reason: "decided earlier"})
		}
	}
	ctRun(t, cases)
}

// TestStepDecideIdempotent asks twice, as a starter whose first answer was
// lost would, and gets the same answer.
func TestStepDecideIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name string
		g    *Group
	}{
		{"commits", ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared))},
		{"rolls back", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered))},
		{"no branch", ctGroup(GroupActive)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := Event{Kind: EvDecide, Group: ctGroupID, NowMS: ctNow, Instance: ctI0, Commit: true}
			first, g := ctStep(t, tc.g, ev)
			ev.NowMS += 10
			second, g2 := ctStep(t, g, ev)
			if len(second.Transitions) != 0 || len(second.Sends) != 0 {
				t.Fatalf("second decide did something: %+v", second)
			}
			if first.Reply != second.Reply {
				t.Fatalf("answers differ: %+v then %+v", first.Reply, second.Reply)
			}
			if !reflect.DeepEqual(g, g2) {
				t.Fatalf("second decide changed the group")
			}
		})
	}
}

func TestStepTick(t *testing.T) {
	cases := []coreCase{
		{name: "before the deadline", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev: Event{Kind: EvTick, Group: ctGroupID, NowMS: ctDue - 1}, code: ReplyOK, state: GroupActive},
		{name: "at the deadline", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchFailed)),
			ev:    Event{Kind: EvTick, Group: ctGroupID, NowMS: ctDue},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue, Reason: "deadline"}},
			sends: []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1}, {Instance: ctI2, Group: ctGroupID, Branch: ctB2}},
			code:  ReplyOK, state: GroupRollingBack},
		{name: "long after the deadline, all prepared: still rollback", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev:    Event{Kind: EvTick, Group: ctGroupID, NowMS: ctDue + 1e9},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue + 1e9, Reason: "deadline"}},
			sends: []Send{{Instance: ctI1, Group: ctGroupID, Branch: ctB1}},
			code:  ReplyOK, state: GroupRollingBack},
		{name: "after the deadline, no branch", g: ctGroup(GroupActive),
			ev:    Event{Kind: EvTick, Group: ctGroupID, NowMS: ctDue},
			trans: []Transition{{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: ctDue, Reason: "deadline"}},
			code:  ReplyOK, state: GroupRolledBack},
	}
	for _, gs := range ctDecided {
		for _, now := range []int64{ctNow, ctDue, ctDue + 1e6} {
			cases = append(cases, coreCase{name: fmt.Sprintf("%s at %d: nothing", gs, now),
				g:  ctGroup(gs, ctBranch(1, 1, ctDoneFor(gs, BranchPrepared))),
				ev: Event{Kind: EvTick, Group: ctGroupID, NowMS: now}, code: ReplyOK, state: gs})
		}
	}
	ctRun(t, cases)
}

func TestStepAck(t *testing.T) {
	ack := func(inst, branch string, out BranchState) Event {
		return Event{Kind: EvAck, Group: ctGroupID, NowMS: ctNow, Instance: inst, BranchID: branch, Outcome: out, Reason: "why"}
	}
	done := func(to BranchState, reason string) []Transition {
		return []Transition{{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctB1, BranchTo: to, AtMS: ctNow, Reason: reason}}
	}
	two := func(gs GroupState) *Group {
		return ctGroup(gs, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchPrepared))
	}
	cases := []coreCase{
		{name: "before a decision", g: two(GroupActive), ev: ack(ctI1, ctB1, BranchRolledBack), code: ReplyConflict, state: GroupActive},
		{name: "foreign instance", g: two(GroupCommitting), ev: ack(ctI2, ctB1, BranchCommitted), code: ReplyForbidden, state: GroupCommitting},
		{name: "foreign instance, lost", g: two(GroupCommitting), ev: ack(ctI0, ctB1, BranchLost), code: ReplyForbidden, state: GroupCommitting},
		{name: "unknown branch", g: two(GroupCommitting), ev: ack(ctI1, ctB9, BranchCommitted), code: ReplyNotFound, state: GroupCommitting},

		// Outcome mapping.
		{name: "commit + committed", g: two(GroupCommitting), ev: ack(ctI1, ctB1, BranchCommitted),
			trans: done(BranchCommitted, "why"), code: ReplyOK, state: GroupCommitting},
		{name: "commit + rolled_back = LOST", g: two(GroupCommitting), ev: ack(ctI1, ctB1, BranchRolledBack),
			trans: done(BranchLost, "why"), code: ReplyOK, state: GroupCommitting},
		{name: "commit + lost = LOST", g: two(GroupCommitting), ev: ack(ctI1, ctB1, BranchLost),
			trans: done(BranchLost, "why"), code: ReplyOK, state: GroupCommitting},
		{name: "rollback + rolled_back", g: two(GroupRollingBack), ev: ack(ctI1, ctB1, BranchRolledBack),
			trans: done(BranchRolledBack, "why"), code: ReplyOK, state: GroupRollingBack},
		{name: "rollback + lost = ROLLED_BACK", g: two(GroupRollingBack), ev: ack(ctI1, ctB1, BranchLost),
			trans: done(BranchRolledBack, "why"), code: ReplyOK, state: GroupRollingBack},
		{name: "rollback + committed = LOST", g: two(GroupRollingBack), ev: ack(ctI1, ctB1, BranchCommitted),
			trans: done(BranchLost, "why"), code: ReplyOK, state: GroupRollingBack},

		// The last outcome finishes the group.
		{name: "last commit ack", g: ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchCommitted)),
			ev: ack(ctI1, ctB1, BranchCommitted), trans: done(BranchCommitted, ""), code: ReplyOK, state: GroupCommitted},
		{name: "last rollback ack, failed branch", g: ctGroup(GroupRollingBack, ctBranch(1, 1, BranchFailed), ctBranch(2, 2, BranchRolledBack)),
			ev: ack(ctI1, ctB1, BranchRolledBack), trans: done(BranchRolledBack, ""), code: ReplyOK, state: GroupRolledBack},
		{name: "last ack lost under commit", g: ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)),
			ev: ack(ctI1, ctB1, BranchRolledBack), trans: done(BranchLost, ""), code: ReplyOK, state: GroupCommitted},
	}
	// Duplicates are no-ops whatever they say.
	for _, gs := range ctDecided {
		for _, have := range []BranchState{BranchCommitted, BranchRolledBack, BranchLost} {
			if have == BranchCommitted && !gs.Commit() || have == BranchRolledBack && gs.Commit() {
				continue
			}
			for _, out := range []BranchState{BranchCommitted, BranchRolledBack, BranchLost} {
				cases = append(cases, coreCase{name: fmt.Sprintf("duplicate: %s branch %s, ack %s", gs, have, out),
					g:    ctGroup(gs, ctBranch(1, 1, have), ctBranch(2, 2, ctDoneFor(gs, BranchPrepared))),
					ev:   ack(ctI1, ctB1, out),
					code: ReplyOK, state: gs})
			}
		}
	}
	ctRun(t, cases)

	// The reason of a mapped outcome says what happened.
	res, after := ctStep(t, two(GroupCommitting), ack(ctI1, ctB1, BranchRolledBack))
	if r := res.Transitions[0].Reason; !strings.Contains(r, "rolled back") || !strings.Contains(r, "why") {
		t.Errorf("LOST reason %q does not say the branch rolled back and why", r)
	}
	if !strings.Contains(after.Attention, ctB1) {
		t.Errorf("attention %q does not name the lost branch", after.Attention)
	}
}

func TestStepResync(t *testing.T) {
	resync := func(inst, branch string) Event {
		return Event{Kind: EvResync, Group: ctGroupID, NowMS: ctNow, Instance: inst, BranchID: branch}
	}
	cases := []coreCase{
		{name: "active: wait for the decision", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev: resync(ctI1, ctB1), code: ReplyOK, state: GroupActive},
		{name: "unknown branch of an active group: roll it back", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev:    resync(ctI2, ctB9),
			sends: []Send{{Instance: ctI2, Group: ctGroupID, Branch: ctB9}},
			code:  ReplyNotFound, state: GroupActive},
		{name: "unknown branch of a committing group: roll it back", g: ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)),
			ev:    resync(ctI2, ctB9),
			sends: []Send{{Instance: ctI2, Group: ctGroupID, Branch: ctB9}},
			code:  ReplyNotFound, state: GroupCommitting},
		{name: "foreign instance", g: ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)),
			ev: resync(ctI2, ctB1), code: ReplyForbidden, state: GroupCommitting},
	}
	for _, gs := range ctDecided {
		cases = append(cases, coreCase{name: "decided " + gs.String(),
			g:     ctGroup(gs, ctBranch(1, 1, ctDoneFor(gs, BranchPrepared)), ctBranch(2, 2, ctDoneFor(gs, BranchPrepared))),
			ev:    resync(ctI2, ctB2),
			sends: []Send{{Instance: ctI2, Group: ctGroupID, Branch: ctB2, Commit: gs.Commit()}},
			code:  ReplyOK, state: gs})
	}
	ctRun(t, cases)
}

// TestStepUnknownGroup: presumed abort.
func TestStepUnknownGroup(t *testing.T) {
	other := ctBranchID(77) // a group id the store does not know
	res, _ := ctStep(t, nil, Event{Kind: EvResync, Group: other, NowMS: ctNow, Instance: ctI2, BranchID: ctB1})
	want := []Send{{Instance: ctI2, Group: other, Branch: ctB1, Commit: false}}
	if !reflect.DeepEqual(res.Sends, want) || res.Reply.Code != ReplyNotFound || res.Reply.State != 0 {
		t.Fatalf("resync of an unknown group = %+v, want sends %+v and not found", res, want)
	}
	for _, k := range []EventKind{EvJoin, EvVote, EvDecide, EvTick, EvAck, EvRetry} {
		for _, commit := range []bool{false, true} {
			ev := Event{Kind: k, Group: other, NowMS: ctNow, Instance: ctI0, BranchID: ctB1, OK: true, Commit: commit, Outcome: BranchCommitted,
				Branch: ctBranch(5, 0, BranchRegistered)}
			res, _ := ctStep(t, nil, ev)
			if len(res.Sends) != 0 || res.Reply.Code != ReplyNotFound || res.Reply.State != 0 {
				t.Errorf("%s on an unknown group = %+v, want not found and nothing else", k, res)
			}
		}
	}
}

func TestStepRetry(t *testing.T) {
	cases := []coreCase{
		{name: "active: nothing to send", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev: Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctNow}, code: ReplyOK, state: GroupActive},
		{name: "active past its deadline: still nothing (the reaper decides)", g: ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)),
			ev: Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctDue + 1}, code: ReplyOK, state: GroupActive},
		{name: "committing: only branches not done",
			g: ctGroup(GroupCommitting, ctBranch(1, 1, BranchCommitted), ctBranch(2, 2, BranchPrepared), ctBranch(3, 0, BranchPrepared),
				ctBranch(4, 1, BranchLost)),
			ev:    Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctNow},
			sends: []Send{{Instance: ctI2, Group: ctGroupID, Branch: ctB2, Commit: true}, {Instance: ctI0, Group: ctGroupID, Branch: ctB3, Commit: true}},
			code:  ReplyOK, state: GroupCommitting},
		{name: "rolling back: only branches not done",
			g: ctGroup(GroupRollingBack, ctBranch(1, 1, BranchRolledBack), ctBranch(2, 2, BranchFailed), ctBranch(3, 0, BranchRegistered),
				ctBranch(4, 1, BranchLost), ctBranch(5, 2, BranchPrepared)),
			ev: Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctNow},
			sends: []Send{{Instance: ctI2, Group: ctGroupID, Branch: ctB2}, {Instance: ctI0, Group: ctGroupID, Branch: ctB3},
				{Instance: ctI2, Group: ctGroupID, Branch: ctBranchID(5)}},
			code: ReplyOK, state: GroupRollingBack},
		{name: "committed: nothing", g: ctGroup(GroupCommitted, ctBranch(1, 1, BranchCommitted)),
			ev: Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctNow}, code: ReplyOK, state: GroupCommitted},
		{name: "rolled back: nothing", g: ctGroup(GroupRolledBack, ctBranch(1, 1, BranchRolledBack)),
			ev: Event{Kind: EvRetry, Group: ctGroupID, NowMS: ctNow}, code: ReplyOK, state: GroupRolledBack},
	}
	ctRun(t, cases)
}

func TestStepPanicsOnUnknownEvent(t *testing.T) {
	for _, k := range []EventKind{0, 99} {
		g := ctGroup(GroupActive)
		before := ctClone(g)
		p := ctPanics(func() { Step(g, Event{Kind: k, Group: ctGroupID}) })
		if p == nil || !strings.Contains(fmt.Sprint(p), "BUG") {
			t.Errorf("event kind %d: panic = %v, want a BUG panic", k, p)
		}
		if !reflect.DeepEqual(g, before) {
			t.Errorf("event kind %d changed the group", k)
		}
	}
}

func TestCoreNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range []EventKind{EvJoin, EvVote, EvDecide, EvTick, EvAck, EvResync, EvRetry} {
		n := k.String()
		if strings.HasPrefix(n, "EventKind(") || seen[n] {
			t.Errorf("EventKind %d: name %q", k, n)
		}
		seen[n] = true
	}
	if got := EventKind(42).String(); got != "EventKind(42)" {
		t.Errorf("EventKind(42).String() = %q", got)
	}
	seen = map[string]bool{}
	for _, c := range []ReplyCode{ReplyOK, ReplyNotFound, ReplyConflict, ReplyForbidden} {
		n := c.String()
		if strings.HasPrefix(n, "ReplyCode(") || seen[n] {
			t.Errorf("ReplyCode %d: name %q", c, n)
		}
		seen[n] = true
	}
	if got := ReplyCode(9).String(); got != "ReplyCode(9)" {
		t.Errorf("ReplyCode(9).String() = %q", got)
	}
}

// TestStepNeverMutatesInput runs every event kind against groups in every
// state, with branches in every state, and checks the input is untouched
// (ctStep does the check).
func TestStepNeverMutatesInput(t *testing.T) {
	// The branch states a group in each state can hold.
	reachable := map[GroupState][]BranchState{
		GroupActive:      {BranchRegistered, BranchPrepared, BranchFailed},
		GroupCommitting:  {BranchPrepared, BranchCommitted, BranchLost},
		GroupCommitted:   {BranchCommitted, BranchLost},
		GroupRollingBack: {BranchRegistered, BranchPrepared, BranchFailed, BranchRolledBack, BranchLost},
		GroupRolledBack:  {BranchRolledBack, BranchLost},
	}
	n := 0
	for _, gs := range ctAllStates {
		for _, bs := range reachable[gs] {
			for _, k := range []EventKind{EvJoin, EvVote, EvDecide, EvTick, EvAck, EvResync, EvRetry} {
				for _, flag := range []bool{false, true} {
					for _, now := range []int64{ctNow, ctDue} {
						for _, out := range []BranchState{BranchCommitted, BranchRolledBack, BranchLost} {
							g := ctGroup(gs, ctBranch(1, 1, bs), ctBranch(2, 2, ctDoneFor(gs, BranchPrepared)))
							g.Branches = append(make([]Branch, 0, 8), g.Branches...) // spare capacity: appends would show
							ev := Event{Kind: k, Group: ctGroupID, NowMS: now, Instance: ctI1, BranchID: ctB1, OK: flag, Commit: flag,
								Outcome: out, Reason: "r", Branch: ctBranch(8, 1, BranchRegistered)}
							if k == EvDecide {
								ev.Instance = ctI0
							}
							t.Run(fmt.Sprintf("%s/%s/%s/%v/%d/%s", gs, bs, k, flag, now, out), func(t *testing.T) {
								ctStep(t, g, ev)
								if g.Branches[:3][2] != (Branch{}) {
									t.Fatalf("Step wrote past the end of the input's branch list")
								}
							})
							n++
						}
					}
				}
			}
		}
	}
	if n < 1000 {
		t.Fatalf("only %d combinations", n)
	}
}

// ---------------------------------------------------------------------------
// Model-based testing: random event sequences against a running group.

// The byte encoding of an event sequence (the fuzz input):
//
//	byte 0: deadline = 20 + b ms (the group is created at 0 by inst-0)
//	then 4 bytes per event: op, sel, flags, dt
//	  op % 8: 0 join, 1 vote, 2 decide, 3 tick, 4 ack, 5 resync, 6 retry,
//	          7 the previous event again (a duplicate)
//	  sel: join: instance sel%3; others: branch sel % (n+1), n = an unknown branch
//	  flags: bit 0 vote failed / decide rollback; bit 1 foreign instance;
//	         bits 2-3 ack outcome (0 committed, 1 rolled_back, 2 lost);
//	         bit 7 crash: persist only the first (bits 4-5) % len transitions
//	         and deliver nothing
//	  dt: clock step: dt&0x80 ? (dt&0x7f)*4 : dt%32-4 ms (small steps may go
//	      back, as clocks of two TxManagers may disagree)
const (
	fsmJoin = iota
	fsmVote
	fsmDecide
	fsmTick
	fsmAck
	fsmResync
	fsmRetry
	fsmDup
	fsmPrepared
)

const (
	fsmFail        = 1 << 0
	fsmForeign     = 1 << 1
	fsmRolled      = 1 << 2
	fsmLost        = 2 << 2
	fsmXA          = 1 << 3 // join: an xa branch (same bit as the ack outcome's high bit)
	fsmSameService = 1 << 6 // prepared: sent by another instance of the owner's service
	fsmCrash       = 1 << 7
)

type fsmEv [4]byte

func fsmSeed(deadline byte, evs ...fsmEv) []byte {
	b := []byte{deadline}
	for _, e := range evs {
		b = append(b, e[:]...)
	}
	return b
}

const fsmStep = 10 // dt for a +6 ms step
const fsmJump = 0xff

func fsmSeeds() [][]byte {
	return [][]byte{
		nil,
		{7},
		// Happy path: two participants vote, the starter commits, both acknowledge.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmJoin, 2, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep},
			fsmEv{fsmAck, 0, 0, fsmStep}, fsmEv{fsmRetry, 0, 0, fsmStep}, fsmEv{fsmAck, 1, 0, fsmStep},
			fsmEv{fsmResync, 0, 0, fsmStep}, fsmEv{fsmRetry, 0, 0, fsmStep}),
		// A failed vote dooms the group; the commit that follows is refused.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmJoin, 2, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, fsmFail, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep},
			fsmEv{fsmAck, 0, fsmRolled, fsmStep}, fsmEv{fsmAck, 1, fsmRolled, fsmStep}),
		// The deadline passes between the votes and the commit.
		fsmSeed(30,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmVote, 0, 0, fsmStep},
			fsmEv{fsmTick, 0, 0, fsmJump}, fsmEv{fsmDecide, 0, 0, fsmStep},
			fsmEv{fsmAck, 0, fsmRolled, fsmStep}),
		// A commit asked exactly when the deadline passes, no reaper first.
		fsmSeed(28, // deadline 48 ms
			fsmEv{fsmJoin, 0, 0, fsmStep}, fsmEv{fsmVote, 0, 0, fsmStep}, // now 12
			fsmEv{fsmDecide, 0, 0, 0x80 | 9}, fsmEv{fsmAck, 0, 0, fsmStep}), // now 48
		// Joins after the decision are refused.
		fsmSeed(200,
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmJoin, 1, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmResync, 0, 0, fsmStep}),
		// Other instances try to vote, acknowledge and decide for branches they do not own.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmVote, 0, fsmForeign, fsmStep},
			fsmEv{fsmVote, 0, fsmForeign | fsmFail, fsmStep}, fsmEv{fsmDecide, 1, fsmForeign, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmDecide, 0, 0, fsmStep},
			fsmEv{fsmAck, 0, fsmForeign | fsmRolled, fsmStep}, fsmEv{fsmResync, 0, fsmForeign, fsmStep}),
		// A crash between the failed vote and the rollback decision.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmJoin, 2, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, fsmFail | fsmCrash | 1<<4, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmVote, 1, fsmFail, fsmStep},
			fsmEv{fsmTick, 0, 0, fsmJump}, fsmEv{fsmAck, 1, fsmLost, fsmStep}),
		// Every message twice.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep},
			fsmEv{fsmVote, 1, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep},
			fsmEv{fsmAck, 0, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep},
			fsmEv{fsmAck, 1, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep}),
		// A branch reports rolled back under a commit decision: LOST, flagged.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmJoin, 2, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmAck, 0, fsmRolled, fsmStep},
			fsmEv{fsmAck, 1, fsmLost, fsmStep}, fsmEv{fsmResync, 1, 0, fsmStep}),
		// A branch reports committed under a rollback decision.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmDecide, 0, fsmFail, fsmStep},
			fsmEv{fsmAck, 0, 0, fsmStep}),
		// Four branches, one unvoted, a resync of an unknown branch, then commit.
		fsmSeed(250,
			fsmEv{fsmJoin, 0, 0, fsmStep}, fsmEv{fsmJoin, 1, 0, fsmStep}, fsmEv{fsmJoin, 2, 0, fsmStep}, fsmEv{fsmJoin, 1, 0, fsmStep},
			fsmEv{fsmJoin, 2, 0, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep}, fsmEv{fsmVote, 2, 0, fsmStep},
			fsmEv{fsmResync, 4, 0, fsmStep}, fsmEv{fsmDecide, 0, 0, fsmStep}),
		// xa, two phases: votes make the branches READY, the commit starts
		// the prepare phase, the last prepared branch decides commit.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, fsmXA, fsmStep}, fsmEv{fsmJoin, 2, fsmXA, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmResync, 1, 0, fsmStep},
			fsmEv{fsmPrepared, 0, 0, fsmStep}, fsmEv{fsmDup, 0, 0, fsmStep}, fsmEv{fsmDecide, 0, 0, fsmStep},
			fsmEv{fsmPrepared, 1, 0, fsmStep},
			fsmEv{fsmAck, 0, 0, fsmStep}, fsmEv{fsmAck, 1, 0, fsmStep}),
		// xa, one branch: one-phase commit, no prepare phase.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, fsmXA, fsmStep}, fsmEv{fsmVote, 0, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmAck, 0, 0, fsmStep}),
		// xa, a branch fails to prepare: rollback.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, fsmXA, fsmStep}, fsmEv{fsmJoin, 2, fsmXA, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmPrepared, 0, fsmFail, fsmStep},
			fsmEv{fsmAck, 0, fsmRolled, fsmStep}, fsmEv{fsmAck, 1, fsmRolled, fsmStep}),
		// xa, a prepared branch recovered and reported by another instance of
		// its service; its owner never comes back.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, fsmXA, fsmStep}, fsmEv{fsmJoin, 2, fsmXA, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmPrepared, 0, fsmSameService, fsmStep},
			fsmEv{fsmPrepared, 1, 0, fsmStep}, fsmEv{fsmRetry, 0, fsmForeign, fsmStep},
			fsmEv{fsmAck, 1, 0, fsmStep}),
		// xa, the owner of a READY branch is gone during the prepare phase.
		fsmSeed(200,
			fsmEv{fsmJoin, 1, fsmXA, fsmStep}, fsmEv{fsmJoin, 2, fsmXA, fsmStep},
			fsmEv{fsmVote, 0, 0, fsmStep}, fsmEv{fsmVote, 1, 0, fsmStep},
			fsmEv{fsmDecide, 0, 0, fsmStep}, fsmEv{fsmPrepared, 1, 0, fsmStep},
			fsmEv{fsmRetry, 0, fsmForeign, fsmStep}),
	}
}

type fsmReader struct {
	b []byte
	i int
}

func (r *fsmReader) more() bool { return r.i < len(r.b) }
func (r *fsmReader) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func fsmInstIndex(inst string) int {
	for i, s := range ctInstances {
		if s == inst {
			return i
		}
	}
	return 0
}

// fsmRun decodes data into events, feeds them to Step and ApplyTransition
// as the server would, and checks the invariants after every step. With
// live, it then drives the group to its end and checks that it gets there.
// It returns the final record.
func fsmRun(t testing.TB, data []byte, live bool) *Group {
	r := &fsmReader{b: data}
	g := &Group{ID: ctGroupID, State: GroupActive, StarterService: "svc-0", Starter: ctInstances[0],
		CreatedMS: 0, DeadlineMS: 20 + int64(r.next())}
	var now int64
	var last Event
	haveLast := false
	fresh := 0
	for step := 0; r.more() && step < 256; step++ {
		op, sel, fl, dt := r.next(), r.next(), r.next(), r.next()
		if dt&0x80 != 0 {
			now += int64(dt&0x7f) * 4
		} else {
			now += int64(dt%32) - 4
		}
		// pick selects a branch (or an unknown one) and the sending instance.
		pick := func() (string, string) {
			i := int(sel) % (len(g.Branches) + 1)
			id, owner := ctBranchID(0xdead), ctInstances[int(sel)%3]
			if i < len(g.Branches) {
				id, owner = g.Branches[i].ID, g.Branches[i].Instance
			}
			if fl&fsmForeign != 0 {
				owner = ctInstances[(fsmInstIndex(owner)+1+int(sel>>4)%2)%3]
			}
			return id, owner
		}
		ev := Event{Group: ctGroupID, NowMS: now}
		switch op % 9 {
		case fsmJoin:
			if len(g.Branches) >= 4 {
				ev.Kind = EvTick
				break
			}
			fresh++
			inst := int(sel) % 3
			ev.Kind, ev.Instance = EvJoin, ctInstances[inst]
			mode := "lcn"
			if fl&fsmXA != 0 {
				mode = "xa"
			}
			ev.Branch = Branch{ID: ctBranchID(0x100 + fresh), Service: fmt.Sprintf("svc-%d", inst), Datasource: fmt.Sprintf("ds-%d", fl>>2&1), Mode: mode}
		case fsmVote:
			ev.Kind, ev.OK, ev.Reason = EvVote, fl&fsmFail == 0, "local failure"
			ev.BranchID, ev.Instance = pick()
		case fsmDecide:
			ev.Kind, ev.Commit, ev.Instance = EvDecide, fl&fsmFail == 0, ctInstances[0]
			if fl&fsmForeign != 0 {
				ev.Instance = ctInstances[int(sel)%3]
			}
		case fsmTick:
			ev.Kind = EvTick
		case fsmAck:
			ev.Kind, ev.Reason = EvAck, "phase 2"
			ev.Outcome = []BranchState{BranchCommitted, BranchRolledBack, BranchLost, BranchCommitted}[fl>>2&3]
			ev.BranchID, ev.Instance = pick()
		case fsmResync:
			ev.Kind = EvResync
			ev.BranchID, ev.Instance = pick()
		case fsmRetry:
			ev.Kind = EvRetry
			if fl&fsmForeign != 0 {
				// The server found this owner gone past the lost-after limit.
				ev.Absent = []string{ctInstances[1+int(sel)%2]}
			}
		case fsmPrepared:
			ev.Kind, ev.OK, ev.Reason = EvPrepared, fl&fsmFail == 0, "XA PREPARE failed"
			ev.BranchID, ev.Instance = pick()
			if fl&fsmSameService != 0 {
				// Another instance of the owner's service (xa recovery).
				if b, ok := g.Branch(ev.BranchID); ok {
					ev.Instance = b.Service + "/recovered"
				}
			}
		case fsmDup:
			if !haveLast {
				ev.Kind = EvTick
				break
			}
			ev = last
			ev.NowMS = now
			if ev.Kind == EvJoin {
				// A repeated join request is a new request: the server
				// gives every join a fresh branch id (Event.Branch.ID).
				fresh++
				ev.Branch.ID = ctBranchID(0x100 + fresh)
				if len(g.Branches) >= 4 {
					ev = Event{Kind: EvTick, Group: ctGroupID, NowMS: now}
				}
			}
		}
		last, haveLast = ev, true
		crash := -1
		if fl&fsmCrash != 0 {
			crash = int(fl >> 4 & 3)
		}
		g = fsmStepCheck(t, g, ev, crash)
	}

	if !live {
		return g
	}
	// Liveness: the reaper, then every owner acknowledging what it was told,
	// must bring the group to its terminal state.
	now += 1 << 20
	if g.State.Open() {
		g = fsmStepCheck(t, g, Event{Kind: EvTick, Group: ctGroupID, NowMS: now}, -1)
		if g.State.Open() {
			t.Fatalf("group still %s after a tick past its deadline", g.State)
		}
	}
	res, _ := ctStep(t, g, Event{Kind: EvRetry, Group: ctGroupID, NowMS: now})
	for _, s := range res.Sends {
		out := BranchRolledBack
		if s.Commit {
			out = BranchCommitted
		}
		g = fsmStepCheck(t, g, Event{Kind: EvAck, Group: ctGroupID, NowMS: now, Instance: s.Instance, BranchID: s.Branch, Outcome: out}, -1)
	}
	if !g.State.Terminal() {
		t.Fatalf("group %s after every branch acknowledged its decision: %+v", g.State, g)
	}
	if g.State == GroupCommitted && g.Attention == "" {
		for _, b := range g.Branches {
			if b.State != BranchCommitted {
				t.Fatalf("group COMMITTED without attention but branch %s is %s", b.ID, b.State)
			}
		}
	}
	return g
}

// fsmStepCheck steps g with ev, persists the transitions (only the first
// crash%len of them if crash >= 0: the TxManager died while persisting, and
// nothing was sent), checks every invariant and returns the new record.
func fsmStepCheck(t testing.TB, g *Group, ev Event, crash int) *Group {
	t.Helper()
	before := ctClone(g)
	res := Step(g, ev)
	if !reflect.DeepEqual(g, before) {
		t.Fatalf("Step(%+v) modified its input", ev)
	}
	n := len(res.Transitions)
	crashed := crash >= 0 && n > 0
	if crashed {
		n = crash % n
	}
	cur := ctClone(g)
	owner := func(id string) (Branch, bool) { return cur.Branch(id) }
	var steps []Transition // a decision carrying a vote is checked as the vote, then the decision
	for _, tr := range res.Transitions[:n] {
		if tr.Kind == TransDecide && tr.BranchID != "" {
			vote, decision := tr.Split()
			steps = append(steps, vote, decision)
			continue
		}
		steps = append(steps, tr)
	}
	for _, tr := range steps {
		// Who may cause what.
		switch tr.Kind {
		case TransJoin:
			if ev.Kind != EvJoin || tr.Branch.Instance != ev.Instance || tr.Branch.State != BranchRegistered || tr.Branch.ID != ev.Branch.ID {
				t.Fatalf("join %+v from event %+v", tr.Branch, ev)
			}
		case TransVote:
			b, ok := owner(tr.BranchID)
			if !ok || tr.BranchID != ev.BranchID && ev.Kind != EvRetry {
				t.Fatalf("vote on %s from event %+v", tr.BranchID, ev)
			}
			switch ev.Kind {
			case EvVote:
				want := BranchFailed
				if ev.OK {
					want = BranchPrepared
					if b.Mode == "xa" {
						want = BranchReady
					}
				}
				if b.Instance != ev.Instance || tr.BranchTo != want {
					t.Fatalf("vote OK=%v on %s branch owned by %q recorded as %s from %+v", ev.OK, b.Mode, b.Instance, tr.BranchTo, ev)
				}
			case EvPrepared:
				if !mayActFor(b, ev.Instance) || cur.State != GroupPreparing || b.State != BranchReady || (tr.BranchTo == BranchPrepared) != ev.OK {
					t.Fatalf("prepared OK=%v recorded as %s for %+v in %s from %+v", ev.OK, tr.BranchTo, b, cur.State, ev)
				}
			case EvRetry:
				if !slices.Contains(ev.Absent, b.Instance) || tr.BranchTo != BranchFailed || cur.State != GroupPreparing {
					t.Fatalf("retry voted %s for %+v (absent %v)", tr.BranchTo, b, ev.Absent)
				}
			default:
				t.Fatalf("vote on %s from event %+v", tr.BranchID, ev)
			}
		case TransBranchDone:
			b, ok := owner(tr.BranchID)
			switch {
			case !ok:
				t.Fatalf("outcome for unknown %s from %+v", tr.BranchID, ev)
			case ev.Kind == EvAck:
				if !mayActFor(b, ev.Instance) {
					t.Fatalf("outcome for %s from event %+v (owner %q)", tr.BranchID, ev, b.Instance)
				}
			case ev.Kind == EvRetry:
				if !slices.Contains(ev.Absent, b.Instance) || (b.Mode == "xa" && b.State == BranchPrepared) {
					t.Fatalf("retry gave up on %+v (absent %v)", b, ev.Absent)
				}
			default:
				t.Fatalf("outcome for %s from event %+v", tr.BranchID, ev)
			}
		case TransDecide:
			inTime := ev.NowMS < cur.DeadlineMS
			switch tr.GroupTo {
			case GroupPreparing:
				ready := 0
				for _, b := range cur.Branches {
					if !b.State.Voted() {
						t.Fatalf("prepare phase with branch %s %s", b.ID, b.State)
					}
					if b.State == BranchReady {
						ready++
					}
				}
				if ev.Kind != EvDecide || !ev.Commit || ev.Instance != cur.Starter || !inTime || ready == 0 || len(cur.Branches) < 2 {
					t.Fatalf("prepare phase started on event %+v with %d ready of %d", ev, ready, len(cur.Branches))
				}
			case GroupCommitting:
				// Invariant 2: commit only when asked by the starter, in time,
				// with every joined branch prepared (or a single branch that
				// commits in one phase).
				switch {
				case ev.Kind == EvDecide && ev.Commit && ev.Instance == cur.Starter && inTime && cur.State == GroupActive:
				case ev.Kind == EvPrepared && ev.OK && inTime && cur.State == GroupPreparing:
				default:
					t.Fatalf("commit decided on event %+v (deadline %d, state %s)", ev, cur.DeadlineMS, cur.State)
				}
				onePhase := len(cur.Branches) == 1 && cur.Branches[0].State == BranchReady && ev.Kind == EvDecide
				for _, b := range cur.Branches {
					if b.State != BranchPrepared && !onePhase {
						t.Fatalf("commit decided with branch %s %s", b.ID, b.State)
					}
				}
			default:
				// A rollback needs a cause.
				allVoted := true
				for _, b := range cur.Branches {
					allVoted = allVoted && b.State.Voted()
				}
				late := !inTime
				ok := false
				switch ev.Kind {
				case EvTick, EvJoin:
					ok = late
				case EvVote, EvPrepared:
					ok = late || !ev.OK
				case EvDecide:
					ok = ev.Instance == cur.Starter && (!ev.Commit || late || !allVoted)
				case EvRetry:
					ok = cur.State == GroupPreparing && len(ev.Absent) > 0
				}
				if !ok {
					t.Fatalf("rollback decided without a cause on event %+v (deadline %d, all voted %v)", ev, cur.DeadlineMS, allVoted)
				}
			}
		}
		if err := ApplyTransition(cur, tr); err != nil {
			t.Fatalf("Step's own transition %+v was refused: %v\nevent %+v\ngroup %+v", tr, err, ev, cur)
		}
	}
	after := cur

	// Decisions never change, terminal states absorb.
	if before.State.Decided() && (!after.State.Decided() || after.State.Commit() != before.State.Commit()) {
		t.Fatalf("decision changed: %s -> %s on %+v", before.State, after.State, ev)
	}
	if before.State.Terminal() && (len(res.Transitions) != 0 || !reflect.DeepEqual(after, before)) {
		t.Fatalf("terminal group changed by %+v: %+v", ev, res.Transitions)
	}
	if len(after.Branches) < len(before.Branches) {
		t.Fatalf("branches vanished")
	}
	for i, b := range before.Branches {
		a := after.Branches[i]
		if a.ID != b.ID || a.Instance != b.Instance || a.Service != b.Service || a.Datasource != b.Datasource {
			t.Fatalf("branch %d identity changed: %+v -> %+v", i, b, a)
		}
		if b.State.Done() && (a.State != b.State || a.Reason != b.Reason) {
			t.Fatalf("done branch %s changed: %s -> %s", b.ID, b.State, a.State)
		}
		if b.State == BranchFailed && a.State != BranchFailed && a.State != BranchRolledBack && a.State != BranchLost {
			t.Fatalf("FAILED branch %s became %s", b.ID, a.State)
		}
	}
	if after.State.Decided() && len(after.Branches) != len(before.Branches) && before.State.Decided() {
		t.Fatalf("branch joined a decided group")
	}
	if after.State.Decided() && ctAllDone(after) != after.State.Terminal() {
		t.Fatalf("group %s with all branches done = %v", after.State, ctAllDone(after))
	}
	if after.State.Commit() {
		lost := false
		for _, b := range after.Branches {
			switch b.State {
			case BranchPrepared, BranchCommitted:
			case BranchReady:
				if len(after.Branches) != 1 {
					t.Fatalf("group decided commit has branch %s READY next to others", b.ID)
				}
			case BranchLost:
				lost = true
			default:
				t.Fatalf("group decided commit has branch %s %s", b.ID, b.State)
			}
		}
		if lost && after.Attention == "" {
			t.Fatalf("commit group with a lost branch needs no attention?")
		}
	}

	if crashed {
		return after // nothing was sent, nobody was answered
	}
	if res.Reply.State != after.State {
		t.Fatalf("reply state %s, group %s", res.Reply.State, after.State)
	}
	if res.Reply.Code == ReplyForbidden && (len(res.Transitions) != 0 || len(res.Sends) != 0) {
		t.Fatalf("forbidden event %+v still acted: %+v", ev, res)
	}
	for _, s := range res.Sends {
		if s.Group != ctGroupID {
			t.Fatalf("send for group %q", s.Group)
		}
		b, known := after.Branch(s.Branch)
		if !known {
			// Only a resync for a branch the TM never recorded; presumed abort.
			if ev.Kind != EvResync || s.Commit || s.Instance != ev.Instance || s.Branch != ev.BranchID {
				t.Fatalf("send %+v for an unknown branch on %+v", s, ev)
			}
			continue
		}
		if s.Instance != b.Instance {
			t.Fatalf("send %+v to %q, but the branch belongs to %q", s, s.Instance, b.Instance)
		}
		if s.Prepare {
			if after.State != GroupPreparing || b.State != BranchReady || s.Commit {
				t.Fatalf("prepare request %+v for branch %s in group %s", s, b.State, after.State)
			}
			continue
		}
		if !after.State.Decided() {
			t.Fatalf("decision sent for an ACTIVE group: %+v", s)
		}
		if s.Commit != after.State.Commit() {
			t.Fatalf("send commit=%v for a group decided %s", s.Commit, after.State)
		}
	}
	return after
}

func FuzzCoordinatorFSM(f *testing.F) {
	for _, s := range fsmSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsmRun(t, data, true)
	})
}

// TestCoreFSMRandom is the same model over many pseudo-random sequences,
// so that plain go test explores more than the seeds.
func TestCoreFSMRandom(t *testing.T) {
	n := 4000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		rng := rand.New(rand.NewPCG(20240611, uint64(i)))
		data := make([]byte, 1+4*rng.IntN(40))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		// Bias: mostly small clock steps, few foreign senders and crashes.
		for j := 1; j+3 < len(data); j += 4 {
			if rng.IntN(4) != 0 {
				data[j+2] &^= fsmForeign | fsmCrash
			}
			if rng.IntN(8) != 0 {
				data[j+3] &^= 0x80
			}
		}
		ok := t.Run(fmt.Sprint(i), func(t *testing.T) { fsmRun(t, data, true) })
		if !ok {
			t.Fatalf("sequence %d failed; input %x", i, data)
		}
	}
}

// TestCoreFSMSeedsReachDecisions makes sure the hand-written seeds do what
// their comments say, so that the model checks meaningful paths.
func TestCoreFSMSeedsReachDecisions(t *testing.T) {
	seeds := fsmSeeds()
	if g := fsmRun(t, seeds[2], false); g.State != GroupCommitted || g.Attention != "" {
		t.Errorf("happy path ended %s (%q)", g.State, g.Attention)
	}
	if g := fsmRun(t, seeds[3], false); g.State != GroupRolledBack || !strings.Contains(g.Reason, "voted failed") {
		t.Errorf("failed-vote path ended %s (%q)", g.State, g.Reason)
	}
	if g := fsmRun(t, seeds[4], false); g.State != GroupRolledBack || !strings.Contains(g.Reason, "deadline") {
		t.Errorf("deadline path ended %s (%q)", g.State, g.Reason)
	}
	if g := fsmRun(t, seeds[5], false); g.State != GroupRolledBack || !strings.Contains(g.Reason, "deadline") {
		t.Errorf("commit-at-deadline path ended %s (%q)", g.State, g.Reason)
	}
	if g := fsmRun(t, seeds[6], false); g.State != GroupCommitted || len(g.Branches) != 0 {
		t.Errorf("late-join path ended %s with %d branches", g.State, len(g.Branches))
	}
	if g := fsmRun(t, seeds[7], false); g.State != GroupCommitting {
		t.Errorf("foreign-sender path ended %s", g.State)
	}
	if g := fsmRun(t, seeds[8], false); g.State != GroupRollingBack || g.Branches[1].State != BranchRolledBack {
		t.Errorf("crash path ended %s %+v", g.State, g.Branches)
	}
	if g := fsmRun(t, seeds[9], false); g.State != GroupCommitted || g.Attention != "" {
		t.Errorf("duplicates path ended %s (%q)", g.State, g.Attention)
	}
	if g := fsmRun(t, seeds[10], false); g.State != GroupCommitted || g.Attention == "" {
		t.Errorf("lost path ended %s (%q)", g.State, g.Attention)
	}
	if g := fsmRun(t, seeds[11], false); g.State != GroupRolledBack || g.Attention == "" {
		t.Errorf("committed-under-rollback path ended %s (%q)", g.State, g.Attention)
	}
	if g := fsmRun(t, seeds[12], false); g.State != GroupRollingBack || len(g.Branches) != 4 {
		t.Errorf("four-branch path ended %s with %d branches", g.State, len(g.Branches))
	}
	if g := fsmRun(t, seeds[13], false); g.State != GroupCommitted || g.Attention != "" || !strings.Contains(g.Reason, "every branch prepared") {
		t.Errorf("xa two-phase path ended %s (%q, %q)", g.State, g.Reason, g.Attention)
	}
	if g := fsmRun(t, seeds[14], false); g.State != GroupCommitted || g.Branches[0].State != BranchCommitted {
		t.Errorf("xa one-phase path ended %s %+v", g.State, g.Branches)
	}
	if g := fsmRun(t, seeds[15], false); g.State != GroupRolledBack || !strings.Contains(g.Reason, "failed to prepare") {
		t.Errorf("xa prepare-failure path ended %s (%q)", g.State, g.Reason)
	}
	if g := fsmRun(t, seeds[16], false); g.State != GroupCommitting || g.Branches[0].State != BranchPrepared || g.Branches[1].State != BranchCommitted {
		t.Errorf("xa recovered-prepare path ended %s %+v", g.State, g.Branches)
	}
	if g := fsmRun(t, seeds[17], false); g.State != GroupRollingBack || !strings.Contains(g.Reason, "gone before preparing") {
		t.Errorf("xa owner-gone-while-preparing path ended %s (%q)", g.State, g.Reason)
	}
}
