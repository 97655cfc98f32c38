package txmanager

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Helpers shared by group_test.go and core_test.go carry a "ct" prefix so
// they do not collide with other test files of the package.

const ctGroupID = "aaaa0000000000000000000000000001"

// ctBranchID returns the n-th test branch id.
func ctBranchID(n int) string { return fmt.Sprintf("bbbb%028x", n) }

var ctInstances = []string{"inst-0", "inst-1", "inst-2"} // inst-0 is the starter

// ctBranch returns branch n owned by instance inst (an index into
// ctInstances) in state st.
func ctBranch(n, inst int, st BranchState) Branch {
	return Branch{ID: ctBranchID(n), Service: fmt.Sprintf("svc-%d", inst), Instance: ctInstances[inst],
		Datasource: fmt.Sprintf("ds-%d", n), Mode: "lcn", State: st}
}

// ctGroup returns a group in state st with the given branches, with the
// times a group in that state would carry.
func ctGroup(st GroupState, branches ...Branch) *Group {
	g := &Group{ID: ctGroupID, State: st, StarterService: "svc-0", Starter: ctInstances[0],
		CreatedMS: 1000, DeadlineMS: 5000, Branches: branches}
	if st.Decided() {
		g.DecidedMS, g.Reason = 2000, "decided earlier"
	}
	if st.Terminal() {
		g.FinishedMS = 3000
	}
	return g
}

// ctClone is a deep copy that, unlike Group.Clone, keeps a nil branch list
// nil and an empty one empty, so that reflect.DeepEqual against it detects
// any change at all.
func ctClone(g *Group) *Group {
	if g == nil {
		return nil
	}
	c := *g
	if g.Branches != nil {
		c.Branches = make([]Branch, len(g.Branches), cap(g.Branches))
		copy(c.Branches, g.Branches)
	}
	return &c
}

// ctPanics runs f and returns what it panicked with (nil if it returned).
func ctPanics(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}

func ctAllDone(g *Group) bool {
	for _, b := range g.Branches {
		if !b.State.Done() {
			return false
		}
	}
	return true
}

// ctExpectApplied is the documented effect of an accepted transition,
// written independently of ApplyTransition. The Attention text of a LOST
// outcome is checked separately.
func ctExpectApplied(before *Group, t Transition) *Group {
	want := ctClone(before)
	want.Version++ // every transition applied counts
	set := func(id string, st BranchState, reason string) {
		for i := range want.Branches {
			if want.Branches[i].ID == id {
				want.Branches[i].State, want.Branches[i].Reason = st, reason
				return
			}
		}
		panic("test bug: no branch " + id)
	}
	finish := func() {
		if (want.State == GroupCommitting || want.State == GroupRollingBack) && ctAllDone(want) {
			if want.State == GroupCommitting {
				want.State = GroupCommitted
			} else {
				want.State = GroupRolledBack
			}
			want.FinishedMS = t.AtMS
		}
	}
	switch t.Kind {
	case TransJoin:
		want.Branches = append(want.Branches, t.Branch)
	case TransVote:
		set(t.BranchID, t.BranchTo, t.Reason)
	case TransDecide:
		if t.GroupTo == GroupPreparing { // not a decision: no DecidedMS
			want.State, want.Reason = t.GroupTo, t.Reason
			break
		}
		want.State, want.DecidedMS, want.Reason = t.GroupTo, t.AtMS, t.Reason
		finish()
	case TransBranchDone:
		set(t.BranchID, t.BranchTo, t.Reason)
		finish()
	}
	return want
}

// Columns of the exhaustive table: the state of the branch the transition
// names (b1), or absent.
var ctBranchCols = []BranchState{0, BranchRegistered, BranchPrepared, BranchFailed, BranchCommitted, BranchRolledBack, BranchLost, BranchReady}

// Rows of the exhaustive table.
var ctGroupRows = []GroupState{GroupActive, GroupCommitting, GroupCommitted, GroupRollingBack, GroupRolledBack, GroupPreparing}

type ctVariant struct {
	name string
	t    Transition
	// want[i][j] is the outcome in group state ctGroupRows[i] with b1 in
	// state ctBranchCols[j]: A applied, C ErrConflict, N ErrNotFound, P
	// panic (a bug in the caller), X covered by a separate test.
	// For decide, column "absent" means a group with no branch at all.
	want [6]string
}

func ctVariants() []ctVariant {
	const at = 4000
	b1 := ctBranchID(1)
	join := ctBranch(1, 1, BranchRegistered)
	return []ctVariant{
		//                                                               absent REG PREP FAIL COMMITTED ROLLED_BACK LOST READY
		{"join", Transition{Kind: TransJoin, Group: ctGroupID, Branch: join, AtMS: at}, [6]string{
			/* ACTIVE       */ "ACCCCCCC",
			/* COMMITTING   */ "CCCCCCCC",
			/* COMMITTED    */ "CCCCCCCC",
			/* ROLLING_BACK */ "CCCCCCCC",
			/* ROLLED_BACK  */ "CCCCCCCC",
			/* PREPARING    */ "CCCCCCCC"}},
		{"vote READY", Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchReady, AtMS: at}, [6]string{
			"NAACCCCA",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC"}},
		{"vote PREPARED", Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchPrepared, AtMS: at}, [6]string{
			"NAACCCCA",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCA"}},
		{"vote FAILED", Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchFailed, AtMS: at, Reason: "unique violation"}, [6]string{
			"NAACCCCA",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCC",
			"NCCCCCCA"}},
		{"decide PREPARING", Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupPreparing, AtMS: at, Reason: "commit asked: preparing"}, [6]string{
			"CCCCCCCA",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC"}},
		{"decide COMMITTING", Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: at, Reason: "commit asked"}, [6]string{
			"ACACCCCX", // READY: see TestApplyOnePhaseCommit
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"ACACCCCX"}},
		{"decide ROLLING_BACK", Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: at, Reason: "rollback asked"}, [6]string{
			"AAAAAAAA",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"CCCCCCCC",
			"AAAAAAAA"}},
		{"done COMMITTED", Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchCommitted, AtMS: at}, [6]string{
			"NCCCCCCC",
			"NAAACCCA",
			"NAAACCCA",
			"NPPPCCCP",
			"NPPPCCCP",
			"NCCCCCCC"}},
		{"done ROLLED_BACK", Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchRolledBack, AtMS: at, Reason: "xa rollback"}, [6]string{
			"NCCCCCCC",
			"NXXXCCCX", // see TestApplyRolledBackInCommitGroupRefused
			"NXXXCCCX",
			"NAAACCCA",
			"NAAACCCA",
			"NCCCCCCC"}},
		{"done LOST", Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchLost, AtMS: at, Reason: "session gone"}, [6]string{
			"NCCCCCCC",
			"NAAACCCA",
			"NAAACCCA",
			"NAAACCCA",
			"NAAACCCA",
			"NCCCCCCC"}},
	}
}

// ctSibling is a second branch that does not change any cell's outcome: not
// done while the group is undecided or deciding, done once it is terminal.
func ctSibling(st GroupState) Branch {
	switch st {
	case GroupActive, GroupCommitting, GroupPreparing:
		return ctBranch(2, 2, BranchPrepared)
	case GroupRollingBack:
		return ctBranch(2, 2, BranchRegistered)
	case GroupCommitted:
		return ctBranch(2, 2, BranchCommitted)
	default:
		return ctBranch(2, 2, BranchRolledBack)
	}
}

// TestApplyTransitionExhaustive applies every transition kind to every
// (group state × state of the named branch), alone and next to a sibling
// branch, and checks the exact effect or the exact refusal.
func TestApplyTransitionExhaustive(t *testing.T) {
	cells := 0
	for _, v := range ctVariants() {
		for i, gs := range ctGroupRows {
			if len(v.want[i]) != len(ctBranchCols) {
				t.Fatalf("table row %s/%s has %d cells", v.name, gs, len(v.want[i]))
			}
			for j, bs := range ctBranchCols {
				code := v.want[i][j]
				if code == 'X' {
					continue
				}
				for _, sibling := range []bool{false, true} {
					var branches []Branch
					if sibling {
						branches = append(branches, ctSibling(gs))
					}
					if bs != 0 {
						branches = append(branches, ctBranch(1, 1, bs))
					}
					g := ctGroup(gs, branches...)
					name := fmt.Sprintf("%s/%s/b1=%v/sibling=%v", v.name, gs, bs, sibling)
					t.Run(name, func(t *testing.T) {
						ctCheckCell(t, g, v.t, code)
					})
					cells++
				}
			}
		}
	}
	if cells < 250 {
		t.Fatalf("only %d cells checked", cells)
	}
}

func ctCheckCell(t *testing.T, g *Group, tr Transition, code byte) {
	t.Helper()
	before := ctClone(g)
	var err error
	p := ctPanics(func() { err = ApplyTransition(g, tr) })
	switch code {
	case 'P':
		if p == nil {
			t.Fatalf("want a panic (caller bug), got err=%v, group %+v", err, g)
		}
		if !strings.Contains(fmt.Sprint(p), "BUG") {
			t.Errorf("panic %q does not say BUG", p)
		}
		if !reflect.DeepEqual(g, before) {
			t.Errorf("group changed before the panic:\n got %+v\nwant %+v", g, before)
		}
		return
	case 'C', 'N':
		if p != nil {
			t.Fatalf("unexpected panic: %v", p)
		}
		if err == nil {
			t.Fatalf("applied; want refusal %c. group now %+v", code, g)
		}
		var ce *ConflictError
		if code == 'C' {
			if !errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			if !errors.As(err, &ce) || ce.Group != before.State {
				t.Fatalf("err = %#v, want *ConflictError with Group %s", err, before.State)
			}
		} else if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if !reflect.DeepEqual(g, before) {
			t.Fatalf("refused transition changed the group:\n got %+v\nwant %+v", g, before)
		}
		return
	case 'A':
		if p != nil {
			t.Fatalf("unexpected panic: %v", p)
		}
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		want := ctExpectApplied(before, tr)
		if tr.Kind == TransBranchDone && tr.BranchTo == BranchLost {
			b, _ := before.Branch(tr.BranchID)
			for _, s := range []string{b.ID, b.Service, b.Instance, tr.Reason, "lost"} {
				if !strings.Contains(g.Attention, s) {
					t.Errorf("Attention %q does not mention %q", g.Attention, s)
				}
			}
			want.Attention = g.Attention
		}
		if !reflect.DeepEqual(g, want) {
			t.Fatalf("effect:\n got %+v\nwant %+v", g, want)
		}
		return
	}
	t.Fatalf("bad table code %q", code)
}

// TestApplyRolledBackInCommitGroupRefused: a group decided to commit may end
// COMMITTED (or flagged), never COMMITTED with a branch quietly rolled back
// and no Attention. No caller can legally build this transition (the core
// turns a rolled-back outcome under a commit decision into LOST), so, like a
// COMMITTED outcome under a rollback decision, ApplyTransition must refuse it
// (panic or error) rather than record it.
func TestApplyRolledBackInCommitGroupRefused(t *testing.T) {
	for _, gs := range []GroupState{GroupCommitting, GroupCommitted} {
		for _, bs := range []BranchState{BranchRegistered, BranchPrepared, BranchFailed, BranchReady} {
			g := ctGroup(gs, ctBranch(1, 1, bs))
			before := ctClone(g)
			var err error
			p := ctPanics(func() {
				err = ApplyTransition(g, Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctBranchID(1), BranchTo: BranchRolledBack, AtMS: 4000})
			})
			if p == nil && err == nil {
				t.Errorf("%s group, branch %s: ROLLED_BACK outcome recorded; group is now %s with attention %q", gs, bs, g.State, g.Attention)
				continue
			}
			if !reflect.DeepEqual(g, before) {
				t.Errorf("%s group, branch %s: refused but changed the group", gs, bs)
			}
		}
	}
}

// TestApplyOnePhaseCommit: a READY (not yet durable) branch may be committed
// only when it is the group's single branch (XA COMMIT ... ONE PHASE); next
// to any other branch the group must prepare first.
func TestApplyOnePhaseCommit(t *testing.T) {
	commit := Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: 4000, Reason: "commit asked"}
	for _, gs := range []GroupState{GroupActive, GroupPreparing} {
		g := ctGroup(gs, ctBranch(1, 1, BranchReady))
		ctCheckCell(t, g, commit, 'A')
		if g.State != GroupCommitting || g.DecidedMS != 4000 {
			t.Errorf("%s: one-phase commit left the group %s (decided %d)", gs, g.State, g.DecidedMS)
		}
		for _, other := range []BranchState{BranchPrepared, BranchReady} {
			g := ctGroup(gs, ctBranch(1, 1, BranchReady), ctBranch(2, 2, other))
			ctCheckCell(t, g, commit, 'C')
		}
	}
}

func TestApplyTransitionPanicsOnProgrammerErrors(t *testing.T) {
	b1 := ctBranchID(1)
	cases := []struct {
		name string
		g    *Group
		t    Transition
	}{
		{"vote to COMMITTED", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchCommitted}},
		{"vote to ROLLED_BACK", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchRolledBack}},
		{"vote to LOST", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchLost}},
		{"vote to REGISTERED", ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchRegistered}},
		{"vote to zero", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1}},
		{"vote to unknown state", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: 99}},
		{"vote to COMMITTED for unknown branch", ctGroup(GroupActive), Transition{Kind: TransVote, Group: ctGroupID, BranchID: b1, BranchTo: BranchCommitted}},
		{"decide to ACTIVE", ctGroup(GroupActive), Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupActive}},
		{"decide to COMMITTED", ctGroup(GroupActive), Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitted}},
		{"decide to ROLLED_BACK", ctGroup(GroupActive), Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRolledBack}},
		{"decide to zero", ctGroup(GroupActive), Transition{Kind: TransDecide, Group: ctGroupID}},
		{"decide to COMMITTED in a decided group", ctGroup(GroupCommitting), Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitted}},
		{"done to REGISTERED", ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchRegistered}},
		{"done to PREPARED", ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchPrepared}},
		{"done to FAILED", ctGroup(GroupRollingBack, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchFailed}},
		{"done to zero", ctGroup(GroupRollingBack, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1}},
		{"done COMMITTED under rollback", ctGroup(GroupRollingBack, ctBranch(1, 1, BranchPrepared)), Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: b1, BranchTo: BranchCommitted}},
		{"join PREPARED", ctGroup(GroupActive), Transition{Kind: TransJoin, Group: ctGroupID, Branch: ctBranch(1, 1, BranchPrepared)}},
		{"join zero state", ctGroup(GroupActive), Transition{Kind: TransJoin, Group: ctGroupID, Branch: ctBranch(1, 1, 0)}},
		{"join PREPARED to a decided group", ctGroup(GroupRolledBack), Transition{Kind: TransJoin, Group: ctGroupID, Branch: ctBranch(1, 1, BranchPrepared)}},
		{"kind zero", ctGroup(GroupActive), Transition{Group: ctGroupID}},
		{"unknown kind", ctGroup(GroupActive), Transition{Kind: 99, Group: ctGroupID}},
		{"other group's transition", ctGroup(GroupActive, ctBranch(1, 1, BranchRegistered)), Transition{Kind: TransVote, Group: ctBranchID(7), BranchID: b1, BranchTo: BranchPrepared}},
		{"transition without group", ctGroup(GroupActive), Transition{Kind: TransDecide, GroupTo: GroupRollingBack}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ctClone(tc.g)
			var err error
			p := ctPanics(func() { err = ApplyTransition(tc.g, tc.t) })
			if p == nil {
				t.Fatalf("no panic (err=%v)", err)
			}
			if !strings.Contains(fmt.Sprint(p), "BUG") {
				t.Errorf("panic %q does not say BUG", p)
			}
			if !reflect.DeepEqual(tc.g, before) {
				t.Errorf("group changed before the panic")
			}
		})
	}
}

// TestApplyDecideCommitNeedsEveryBranchPrepared looks at groups of several
// branches: one branch not PREPARED, wherever it is, refuses the commit.
func TestApplyDecideCommitNeedsEveryBranchPrepared(t *testing.T) {
	P, R, F := BranchPrepared, BranchRegistered, BranchFailed
	for _, tc := range []struct {
		states []BranchState
		ok     bool
	}{
		{nil, true},
		{[]BranchState{P}, true},
		{[]BranchState{P, P, P, P}, true},
		{[]BranchState{R}, false},
		{[]BranchState{F}, false},
		{[]BranchState{P, R}, false},
		{[]BranchState{R, P}, false},
		{[]BranchState{P, F}, false},
		{[]BranchState{P, P, P, R}, false},
		{[]BranchState{F, P, P, P}, false},
		{[]BranchState{P, BranchLost}, false},
	} {
		var bs []Branch
		for i, s := range tc.states {
			bs = append(bs, ctBranch(i+1, i%3, s))
		}
		g := ctGroup(GroupActive, bs...)
		before := ctClone(g)
		err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: 4000})
		if tc.ok {
			if err != nil {
				t.Errorf("%v: commit refused: %v", tc.states, err)
			} else if want := ctExpectApplied(before, Transition{Kind: TransDecide, GroupTo: GroupCommitting, AtMS: 4000}); !reflect.DeepEqual(g, want) {
				t.Errorf("%v: got %+v, want %+v", tc.states, g, want)
			}
			continue
		}
		if !errors.Is(err, ErrConflict) {
			t.Errorf("%v: commit: err = %v, want ErrConflict", tc.states, err)
		}
		if !reflect.DeepEqual(g, before) {
			t.Errorf("%v: refused commit changed the group", tc.states)
		}
		// Rolling back is always possible.
		if err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupRollingBack, AtMS: 4000}); err != nil {
			t.Errorf("%v: rollback refused: %v", tc.states, err)
		}
	}
}

func TestApplyDecideTwiceRefused(t *testing.T) {
	for _, first := range []GroupState{GroupCommitting, GroupRollingBack} {
		for _, second := range []GroupState{GroupCommitting, GroupRollingBack} {
			g := ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared))
			if err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: first, AtMS: 10, Reason: "first"}); err != nil {
				t.Fatal(err)
			}
			before := ctClone(g)
			err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: second, AtMS: 20, Reason: "second"})
			if !errors.Is(err, ErrConflict) {
				t.Errorf("%s then %s: err = %v, want ErrConflict", first, second, err)
			}
			if !reflect.DeepEqual(g, before) || g.State != first || g.DecidedMS != 10 || g.Reason != "first" {
				t.Errorf("%s then %s: second decision changed the group: %+v", first, second, g)
			}
		}
	}
}

func TestApplyDecideWithoutBranchesIsTerminal(t *testing.T) {
	for to, terminal := range map[GroupState]GroupState{GroupCommitting: GroupCommitted, GroupRollingBack: GroupRolledBack} {
		g := ctGroup(GroupActive)
		if err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: to, AtMS: 4321, Reason: "r"}); err != nil {
			t.Fatal(err)
		}
		if g.State != terminal || g.DecidedMS != 4321 || g.FinishedMS != 4321 || g.Reason != "r" {
			t.Errorf("decide %s with no branch: %+v, want %s decided and finished at 4321", to, g, terminal)
		}
	}
}

func TestApplyBranchDoneSequence(t *testing.T) {
	g := ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchPrepared), ctBranch(3, 0, BranchPrepared))
	done := func(n int, to BranchState, at int64) error {
		return ApplyTransition(g, Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctBranchID(n), BranchTo: to, AtMS: at, Reason: fmt.Sprint("r", n)})
	}
	// Before a decision, no outcome.
	if err := done(1, BranchCommitted, 10); !errors.Is(err, ErrConflict) {
		t.Fatalf("outcome before the decision: err = %v, want ErrConflict", err)
	}
	if err := ApplyTransition(g, Transition{Kind: TransDecide, Group: ctGroupID, GroupTo: GroupCommitting, AtMS: 20}); err != nil {
		t.Fatal(err)
	}
	if err := done(1, BranchCommitted, 30); err != nil {
		t.Fatal(err)
	}
	if err := done(1, BranchCommitted, 31); !errors.Is(err, ErrConflict) {
		t.Fatalf("second outcome for a branch: err = %v, want ErrConflict", err)
	}
	if err := done(1, BranchLost, 31); !errors.Is(err, ErrConflict) {
		t.Fatalf("changing a branch's outcome: err = %v, want ErrConflict", err)
	}
	if err := done(9, BranchCommitted, 31); !errors.Is(err, ErrNotFound) {
		t.Fatalf("outcome for an unknown branch: err = %v, want ErrNotFound", err)
	}
	if err := done(3, BranchLost, 40); err != nil {
		t.Fatal(err)
	}
	if g.State != GroupCommitting || g.FinishedMS != 0 {
		t.Fatalf("group finished before its last branch: %+v", g)
	}
	if err := done(2, BranchCommitted, 50); err != nil {
		t.Fatal(err)
	}
	if g.State != GroupCommitted || g.FinishedMS != 50 || g.DecidedMS != 20 {
		t.Fatalf("after the last outcome: state %s finished %d decided %d, want COMMITTED 50 20", g.State, g.FinishedMS, g.DecidedMS)
	}
	if g.Attention == "" {
		t.Fatalf("a COMMITTED group with a LOST branch carries no attention")
	}
	if err := done(2, BranchCommitted, 60); !errors.Is(err, ErrConflict) {
		t.Fatalf("outcome in a terminal group: err = %v, want ErrConflict", err)
	}
}

func TestApplyLostAttentionAccumulates(t *testing.T) {
	g := ctGroup(GroupRollingBack, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchRegistered))
	g.Attention = ""
	if err := ApplyTransition(g, Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctBranchID(1), BranchTo: BranchLost, AtMS: 10, Reason: "reason one"}); err != nil {
		t.Fatal(err)
	}
	first := g.Attention
	if err := ApplyTransition(g, Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctBranchID(2), BranchTo: BranchLost, AtMS: 11, Reason: "reason two"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.Attention, first) || len(g.Attention) <= len(first) {
		t.Fatalf("second lost branch replaced the attention text: %q then %q", first, g.Attention)
	}
	for _, s := range []string{ctBranchID(1), "svc-1", "inst-1", "reason one", ctBranchID(2), "svc-2", "inst-2", "reason two"} {
		if !strings.Contains(g.Attention, s) {
			t.Errorf("attention %q does not mention %q", g.Attention, s)
		}
	}
	if g.State != GroupRolledBack {
		t.Errorf("state %s, want ROLLED_BACK", g.State)
	}
	// A branch outcome other than LOST leaves Attention alone.
	g = ctGroup(GroupCommitting, ctBranch(1, 1, BranchPrepared))
	g.Attention = "earlier note"
	if err := ApplyTransition(g, Transition{Kind: TransBranchDone, Group: ctGroupID, BranchID: ctBranchID(1), BranchTo: BranchCommitted, AtMS: 10}); err != nil {
		t.Fatal(err)
	}
	if g.Attention != "earlier note" {
		t.Errorf("COMMITTED outcome changed attention to %q", g.Attention)
	}
}

func TestApplyJoinAndVoteFlow(t *testing.T) {
	g := ctGroup(GroupActive)
	b := ctBranch(1, 1, BranchRegistered)
	if err := ApplyTransition(g, Transition{Kind: TransJoin, Group: ctGroupID, Branch: b}); err != nil {
		t.Fatal(err)
	}
	before := ctClone(g)
	if err := ApplyTransition(g, Transition{Kind: TransJoin, Group: ctGroupID, Branch: b}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate join: err = %v, want ErrConflict", err)
	}
	// Same id, other owner: still a duplicate.
	b2 := ctBranch(1, 2, BranchRegistered)
	if err := ApplyTransition(g, Transition{Kind: TransJoin, Group: ctGroupID, Branch: b2}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate join id from another instance: err = %v, want ErrConflict", err)
	}
	if !reflect.DeepEqual(g, before) {
		t.Fatalf("refused joins changed the group")
	}
	vote := func(to BranchState) error {
		return ApplyTransition(g, Transition{Kind: TransVote, Group: ctGroupID, BranchID: b.ID, BranchTo: to, Reason: to.String()})
	}
	if err := vote(BranchPrepared); err != nil {
		t.Fatal(err)
	}
	if err := vote(BranchPrepared); err != nil { // a service called twice votes twice
		t.Fatalf("second prepared vote: %v", err)
	}
	if err := vote(BranchFailed); err != nil {
		t.Fatalf("failed vote after prepared: %v", err)
	}
	for _, to := range []BranchState{BranchPrepared, BranchFailed} {
		if err := vote(to); !errors.Is(err, ErrConflict) {
			t.Fatalf("vote %s after FAILED: err = %v, want ErrConflict (FAILED is final)", to, err)
		}
	}
	if got, _ := g.Branch(b.ID); got.State != BranchFailed || got.Reason != "FAILED" {
		t.Fatalf("branch = %+v", got)
	}
}

func TestGroupCloneIsDeep(t *testing.T) {
	g := ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchRegistered))
	c := g.Clone()
	if !reflect.DeepEqual(c, g) {
		t.Fatalf("clone differs: %+v vs %+v", c, g)
	}
	c.Branches[0].State = BranchFailed
	c.Branches = append(c.Branches, ctBranch(3, 0, BranchRegistered))
	c.State = GroupRollingBack
	if g.Branches[0].State != BranchPrepared || len(g.Branches) != 2 || g.State != GroupActive {
		t.Fatalf("changing the clone changed the original: %+v", g)
	}
	// A join applied to a clone must not show through a shared backing array.
	g = ctGroup(GroupActive)
	g.Branches = make([]Branch, 0, 4)
	c = g.Clone()
	if err := ApplyTransition(c, Transition{Kind: TransJoin, Group: ctGroupID, Branch: ctBranch(1, 1, BranchRegistered)}); err != nil {
		t.Fatal(err)
	}
	if len(g.Branches) != 0 || g.Branches[:1][0].ID != "" {
		t.Fatalf("join on the clone wrote into the original's backing array")
	}
}

func TestGroupBranchLookup(t *testing.T) {
	g := ctGroup(GroupActive, ctBranch(1, 1, BranchPrepared), ctBranch(2, 2, BranchFailed))
	if b, ok := g.Branch(ctBranchID(2)); !ok || b.State != BranchFailed || b.Instance != "inst-2" {
		t.Fatalf("Branch(2) = %+v, %v", b, ok)
	}
	if b, ok := g.Branch(ctBranchID(3)); ok || b != (Branch{}) {
		t.Fatalf("Branch(3) = %+v, %v; want zero, false", b, ok)
	}
	b, _ := g.Branch(ctBranchID(1))
	b.State = BranchLost
	if g.Branches[0].State != BranchPrepared {
		t.Fatalf("Branch returned a reference into the group")
	}
}

func TestApplyStateNamesRoundTrip(t *testing.T) {
	groupNames := map[GroupState]string{GroupActive: "ACTIVE", GroupCommitting: "COMMITTING", GroupCommitted: "COMMITTED",
		GroupRollingBack: "ROLLING_BACK", GroupRolledBack: "ROLLED_BACK", GroupPreparing: "PREPARING"}
	for s, name := range groupNames {
		if s.String() != name {
			t.Errorf("GroupState %d String() = %q, want %q", s, s.String(), name)
		}
		got, err := ParseGroupState(name)
		if err != nil || got != s {
			t.Errorf("ParseGroupState(%q) = %v, %v", name, got, err)
		}
	}
	for _, s := range []GroupState{0, 7, 8, 255} {
		want := fmt.Sprintf("GroupState(%d)", uint8(s))
		if s.String() != want {
			t.Errorf("GroupState(%d).String() = %q, want %q", s, s.String(), want)
		}
		if _, err := ParseGroupState(s.String()); err == nil {
			t.Errorf("ParseGroupState(%q) accepted an unknown state", s.String())
		}
	}
	branchNames := map[BranchState]string{BranchRegistered: "REGISTERED", BranchPrepared: "PREPARED", BranchFailed: "FAILED",
		BranchCommitted: "COMMITTED", BranchRolledBack: "ROLLED_BACK", BranchLost: "LOST", BranchReady: "READY"}
	for s, name := range branchNames {
		if s.String() != name {
			t.Errorf("BranchState %d String() = %q, want %q", s, s.String(), name)
		}
		got, err := ParseBranchState(name)
		if err != nil || got != s {
			t.Errorf("ParseBranchState(%q) = %v, %v", name, got, err)
		}
	}
	for _, s := range []BranchState{0, 8, 9, 255} {
		want := fmt.Sprintf("BranchState(%d)", uint8(s))
		if s.String() != want {
			t.Errorf("BranchState(%d).String() = %q, want %q", s, s.String(), want)
		}
		if _, err := ParseBranchState(s.String()); err == nil {
			t.Errorf("ParseBranchState(%q) accepted an unknown state", s.String())
		}
	}
	for _, bad := range []string{"", "active", "Active", " ACTIVE", "ACTIVE ", "ROLLING-BACK", "PREPARED", "REGISTERED", "LOST"} {
		if s, err := ParseGroupState(bad); err == nil {
			t.Errorf("ParseGroupState(%q) = %v, nil; want an error", bad, s)
		}
	}
	for _, bad := range []string{"", "prepared", "ACTIVE", "COMMITTING", "ROLLING_BACK", "LOST\n"} {
		if s, err := ParseBranchState(bad); err == nil {
			t.Errorf("ParseBranchState(%q) = %v, nil; want an error", bad, s)
		}
	}
}

func TestApplyStatePredicates(t *testing.T) {
	for _, tc := range []struct {
		s                           GroupState
		decided, terminal, isCommit bool
	}{
		{GroupActive, false, false, false},
		{GroupCommitting, true, false, true},
		{GroupCommitted, true, true, true},
		{GroupRollingBack, true, false, false},
		{GroupRolledBack, true, true, false},
	} {
		if tc.s.Decided() != tc.decided || tc.s.Terminal() != tc.terminal || tc.s.Commit() != tc.isCommit {
			t.Errorf("%s: Decided %v Terminal %v Commit %v; want %v %v %v", tc.s,
				tc.s.Decided(), tc.s.Terminal(), tc.s.Commit(), tc.decided, tc.terminal, tc.isCommit)
		}
	}
	for s, done := range map[BranchState]bool{BranchRegistered: false, BranchPrepared: false, BranchFailed: false,
		BranchCommitted: true, BranchRolledBack: true, BranchLost: true} {
		if s.Done() != done {
			t.Errorf("%s.Done() = %v, want %v", s, s.Done(), done)
		}
	}
	seen := map[string]bool{}
	for _, k := range []TransitionKind{TransJoin, TransVote, TransDecide, TransBranchDone} {
		n := k.String()
		if strings.HasPrefix(n, "TransitionKind(") || seen[n] {
			t.Errorf("TransitionKind %d has name %q", k, n)
		}
		seen[n] = true
	}
	if got := TransitionKind(0).String(); got != "TransitionKind(0)" {
		t.Errorf("TransitionKind(0).String() = %q", got)
	}
}
