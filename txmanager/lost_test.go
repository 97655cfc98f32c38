package txmanager

import (
	"strings"
	"testing"
)

// A branch whose owner has been gone past the lost-after limit is recorded
// LOST in a commit group (which then needs attention) and ROLLED_BACK in a
// rollback group; a present owner still gets the decision pushed; an xa
// branch is never presumed lost.
func TestRetryRecordsAbsentOwnersBranches(t *testing.T) {
	mk := func(state GroupState, mode string) *Group {
		return &Group{ID: "g", State: state, Starter: "s/1", DeadlineMS: 100, Branches: []Branch{
			{ID: "b1", Service: "stock", Instance: "stock/dead", Mode: mode, State: BranchPrepared},
			{ID: "b2", Service: "acct", Instance: "acct/alive", Mode: mode, State: BranchPrepared},
		}}
	}
	ev := Event{Kind: EvRetry, Group: "g", NowMS: 50, Absent: []string{"stock/dead"}}

	r := Step(mk(GroupCommitting, "lcn"), ev)
	if len(r.Transitions) != 1 || r.Transitions[0].BranchID != "b1" || r.Transitions[0].BranchTo != BranchLost {
		t.Fatalf("commit: transitions %+v", r.Transitions)
	}
	if len(r.Sends) != 1 || r.Sends[0].Branch != "b2" || !r.Sends[0].Commit {
		t.Fatalf("commit: sends %+v", r.Sends)
	}
	g := mk(GroupCommitting, "lcn")
	if err := ApplyTransition(g, r.Transitions[0]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Attention, "b1") || !strings.Contains(g.Attention, "stock/dead") || !strings.Contains(g.Attention, "lost") {
		t.Fatalf("attention %q does not name the branch, its owner and the loss", g.Attention)
	}

	r = Step(mk(GroupRollingBack, "lcn"), ev)
	if len(r.Transitions) != 1 || r.Transitions[0].BranchTo != BranchRolledBack {
		t.Fatalf("rollback: transitions %+v", r.Transitions)
	}

	r = Step(mk(GroupCommitting, "xa"), ev)
	if len(r.Transitions) != 0 || len(r.Sends) != 2 {
		t.Fatalf("xa: transitions %+v sends %+v; a durable branch waits for its owner", r.Transitions, r.Sends)
	}

	// Both owners gone: the last loss makes the group terminal, with attention.
	both := mk(GroupCommitting, "lcn")
	r = Step(both, Event{Kind: EvRetry, Group: "g", NowMS: 60, Absent: []string{"stock/dead", "acct/alive"}})
	for _, tr := range r.Transitions {
		if err := ApplyTransition(both, tr); err != nil {
			t.Fatal(err)
		}
	}
	if both.State != GroupCommitted || both.Attention == "" || r.Reply.State != GroupCommitted {
		t.Fatalf("group after losing every branch: %s attention %q reply %s", both.State, both.Attention, r.Reply.State)
	}
}
