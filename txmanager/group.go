package txmanager

import (
	"github.com/golcn/golcn/internal/gid"

	"errors"
	"fmt"
)

// Branch is one participant's part of a group: the work of one datasource in
// one client process (instance).
type Branch struct {
	ID         string      `json:"id"`
	Service    string      `json:"service"`
	Instance   string      `json:"instance"`
	Datasource string      `json:"datasource"`
	Mode       string      `json:"mode,omitempty"`
	State      BranchState `json:"state"`
	Reason     string      `json:"reason,omitempty"`
}

// Group is the TxManager's record of a transaction group. Times are unix
// milliseconds so that the record, and the core that reasons about it, carry no
// wall clock.
type Group struct {
	ID             string     `json:"id"`
	State          GroupState `json:"state"`
	StarterService string     `json:"starter_service"`
	Starter        string     `json:"starter"` // instance id of the starter's session
	CreatedMS      int64      `json:"created_ms"`
	DeadlineMS     int64      `json:"deadline_ms"`
	DecidedMS      int64      `json:"decided_ms,omitempty"`
	FinishedMS     int64      `json:"finished_ms,omitempty"`
	Reason         string     `json:"reason,omitempty"`    // why it was decided as it was
	Attention      string     `json:"attention,omitempty"` // non-empty: needs an operator, and why
	Branches       []Branch   `json:"branches,omitempty"`
	// Version counts the transitions applied to the record since it was
	// created (0 at Create). A transition with CheckVersion set applies only
	// to the version it names, so a caller that stepped a copy it kept can
	// tell whether the group changed since (see Transition.CheckVersion).
	Version int64 `json:"version,omitempty"`
}

// Clone returns a deep copy of g.
func (g *Group) Clone() *Group {
	c := *g
	c.Branches = append([]Branch(nil), g.Branches...)
	return &c
}

// branch returns the index of branch id in g, or -1.
func (g *Group) branch(id string) int {
	for i := range g.Branches {
		if g.Branches[i].ID == id {
			return i
		}
	}
	return -1
}

// Branch returns the branch with the given id.
func (g *Group) Branch(id string) (Branch, bool) {
	if i := g.branch(id); i >= 0 {
		return g.Branches[i], true
	}
	return Branch{}, false
}

// TransitionKind names a durable change to a group.
type TransitionKind uint8

// Transition kinds. Each is applied by a store as one atomic compare-and-set
// on the expected old state (see ApplyTransition for the exact preconditions).
const (
	// TransJoin adds Branch (state REGISTERED) to an ACTIVE group.
	TransJoin TransitionKind = iota + 1
	// TransVote moves BranchID to BranchTo (READY, PREPARED or FAILED). In
	// an ACTIVE group REGISTERED, READY and PREPARED may vote (again); in a
	// PREPARING group only READY may, to PREPARED or FAILED (the prepare
	// phase's answer). FAILED is final.
	TransVote
	// TransDecide moves an open group to GroupTo. PREPARING (from ACTIVE
	// only) needs every branch READY or PREPARED and one READY at least;
	// COMMITTING needs every branch PREPARED, or a single branch READY (a
	// one-phase commit); ROLLING_BACK needs nothing. A decided group with no
	// branch left to notify goes straight to its terminal state.
	//
	// With BranchID set, the decision carries the vote that caused it: the
	// vote of BranchID to BranchTo (PREPARED with COMMITTING, the last
	// branch of a prepare phase; FAILED with ROLLING_BACK), with reason
	// BranchReason, is applied first under the TransVote rules, and both
	// are one compare-and-set (one store write instead of two).
	TransDecide
	// TransBranchDone records BranchID's phase-2 outcome (COMMITTED,
	// ROLLED_BACK or LOST) in a decided group. When the last branch is done
	// the group becomes terminal in the same step.
	TransBranchDone
)

func (k TransitionKind) String() string {
	switch k {
	case TransJoin:
		return "join"
	case TransVote:
		return "vote"
	case TransDecide:
		return "decide"
	case TransBranchDone:
		return "branch-done"
	}
	return fmt.Sprintf("TransitionKind(%d)", uint8(k))
}

// Transition is one durable change to one group.
type Transition struct {
	Kind     TransitionKind `json:"kind"`
	Group    string         `json:"group"`
	Branch   Branch         `json:"branch,omitzero"` // TransJoin
	BranchID string         `json:"branch_id,omitempty"`
	BranchTo BranchState    `json:"branch_to,omitempty"`
	GroupTo  GroupState     `json:"group_to,omitempty"`
	AtMS     int64          `json:"at_ms"`
	Reason   string         `json:"reason,omitempty"`
	// BranchReason is the reason of the vote a TransDecide carries.
	BranchReason string `json:"branch_reason,omitempty"`
	// CheckVersion makes the transition a compare-and-set on the whole
	// record as well: it applies only if the group's Version is IfVersion,
	// and is refused with ErrConflict otherwise (the group changed since
	// the caller's copy of it). Without it, only the transition's own
	// preconditions are checked.
	CheckVersion bool  `json:"-"`
	IfVersion    int64 `json:"-"`
}

// Errors returned by stores and by ApplyTransition.
var (
	// ErrNotFound: no such group (or branch).
	ErrNotFound = errors.New("txmanager: not found")
	// ErrExists: a group with that id already exists.
	ErrExists = errors.New("txmanager: group already exists")
	// ErrConflict: the group or branch was not in the state the transition
	// expects. Errors wrapping it are *ConflictError.
	ErrConflict = errors.New("txmanager: state conflict")
)

// ConflictError says why a transition's compare-and-set failed.
type ConflictError struct {
	Group  GroupState // the group's state when the transition was refused
	Detail string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("txmanager: state conflict: group is %s: %s", e.Group, e.Detail)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

func conflict(g *Group, format string, args ...any) error {
	return &ConflictError{Group: g.State, Detail: fmt.Sprintf(format, args...)}
}

// ApplyTransition applies t to g in place, or returns an error (wrapping
// ErrConflict or ErrNotFound) and leaves g unchanged. It is the one
// definition of every transition's precondition and effect; the Redis store's
// scripts implement the same rules and the store conformance tests hold them to
// it. It panics on a transition that no caller can legally build (a bug).
// A transition applied increments g.Version.
func ApplyTransition(g *Group, t Transition) error {
	if t.Group != g.ID {
		panic(fmt.Sprintf("BUG: transition for group %s applied to group %s", t.Group, g.ID))
	}
	t.MustBeWellFormed()
	if t.CheckVersion && g.Version != t.IfVersion {
		return conflict(g, "stale: the group changed (version %d, expected %d)", g.Version, t.IfVersion)
	}
	if err := applyTransition(g, t); err != nil {
		return err
	}
	g.Version++
	return nil
}

func applyTransition(g *Group, t Transition) error {
	if t.Kind == TransDecide && t.BranchID != "" {
		vote, decision := t.Split()
		after := g.Clone()
		if err := applyTransition(after, vote); err != nil {
			return err
		}
		if err := applyTransition(after, decision); err != nil {
			return err
		}
		*g = *after
		return nil
	}
	switch t.Kind {
	case TransJoin:
		if g.State != GroupActive {
			return conflict(g, "join refused: group already decided")
		}
		if g.branch(t.Branch.ID) >= 0 {
			return conflict(g, "branch %s already joined", t.Branch.ID)
		}
		g.Branches = append(g.Branches, t.Branch)
		return nil

	case TransVote:
		i := g.branch(t.BranchID)
		if i < 0 {
			return fmt.Errorf("%w: branch %s in group %s", ErrNotFound, t.BranchID, g.ID)
		}
		b := &g.Branches[i]
		switch g.State {
		case GroupActive:
			switch b.State {
			case BranchRegistered, BranchReady, BranchPrepared:
			default:
				return conflict(g, "branch %s is %s, cannot vote", b.ID, b.State)
			}
		case GroupPreparing:
			// Only the prepare phase's answer: READY becomes PREPARED or FAILED.
			if b.State != BranchReady || t.BranchTo == BranchReady {
				return conflict(g, "branch %s is %s, cannot vote %s while preparing", b.ID, b.State, t.BranchTo)
			}
		default:
			return conflict(g, "vote refused: group already decided")
		}
		b.State, b.Reason = t.BranchTo, t.Reason
		return nil

	case TransDecide:
		if !g.State.Open() {
			return conflict(g, "already decided")
		}
		switch t.GroupTo {
		case GroupPreparing:
			if g.State != GroupActive {
				return conflict(g, "already preparing")
			}
			ready := false
			for _, b := range g.Branches {
				if !b.State.Voted() {
					return conflict(g, "prepare refused: branch %s is %s", b.ID, b.State)
				}
				ready = ready || b.State == BranchReady
			}
			if !ready {
				return conflict(g, "prepare refused: no branch to prepare")
			}
			g.State, g.Reason = GroupPreparing, t.Reason
			return nil
		case GroupCommitting:
			// Every branch durable, or a single branch that commits in one
			// phase (its own commit is then the whole group's).
			onePhase := len(g.Branches) == 1 && g.Branches[0].State == BranchReady
			for _, b := range g.Branches {
				if b.State != BranchPrepared && !onePhase {
					return conflict(g, "commit refused: branch %s is %s", b.ID, b.State)
				}
			}
		}
		g.State, g.DecidedMS, g.Reason = t.GroupTo, t.AtMS, t.Reason
		g.finishIfDone(t.AtMS)
		return nil

	case TransBranchDone:
		i := g.branch(t.BranchID)
		if i < 0 {
			return fmt.Errorf("%w: branch %s in group %s", ErrNotFound, t.BranchID, g.ID)
		}
		if !g.State.Decided() {
			return conflict(g, "outcome for branch %s before a decision", t.BranchID)
		}
		b := &g.Branches[i]
		if b.State.Done() {
			return conflict(g, "branch %s already %s", b.ID, b.State)
		}
		if t.BranchTo == BranchCommitted && !g.State.Commit() {
			panic("BUG: branch committed in a group decided to roll back")
		}
		if t.BranchTo == BranchRolledBack && g.State.Commit() {
			// A branch that could not commit is LOST, never quietly rolled back.
			panic("BUG: branch rolled back in a group decided to commit")
		}
		b.State, b.Reason = t.BranchTo, t.Reason
		if t.BranchTo == BranchLost {
			g.addAttention(fmt.Sprintf("branch %s (service %s, instance %s) lost: %s", b.ID, b.Service, b.Instance, t.Reason))
		}
		g.finishIfDone(t.AtMS)
		return nil
	}
	panic("unreachable: MustBeWellFormed checked the kind")
}

// Split returns the vote and the decision a TransDecide carrying a vote is
// made of (t's BranchID is then not empty).
func (t Transition) Split() (vote, decision Transition) {
	vote = Transition{Kind: TransVote, Group: t.Group, BranchID: t.BranchID, BranchTo: t.BranchTo,
		AtMS: t.AtMS, Reason: t.BranchReason}
	decision = t
	decision.BranchID, decision.BranchTo, decision.BranchReason = "", 0, ""
	decision.CheckVersion = false
	return vote, decision
}

// MustBeWellFormed panics on a transition that no caller can legally build,
// whatever the group's state (a programmer error, never a runtime
// condition). Every store calls it before looking the group up, so all
// stores refuse such a transition the same way.
func (t Transition) MustBeWellFormed() {
	switch t.Kind {
	case TransJoin:
		if t.Branch.State != BranchRegistered {
			panic("BUG: join of a branch not in state REGISTERED")
		}
	case TransVote:
		if t.BranchTo != BranchReady && t.BranchTo != BranchPrepared && t.BranchTo != BranchFailed {
			panic("BUG: vote to state " + t.BranchTo.String())
		}
	case TransDecide:
		if t.GroupTo != GroupPreparing && t.GroupTo != GroupCommitting && t.GroupTo != GroupRollingBack {
			panic("BUG: decide to state " + t.GroupTo.String())
		}
		switch {
		case t.BranchID == "" && t.BranchTo == 0:
		case t.BranchID != "" && t.GroupTo == GroupCommitting && t.BranchTo == BranchPrepared:
		case t.BranchID != "" && t.GroupTo == GroupRollingBack && t.BranchTo == BranchFailed:
		default:
			panic("BUG: decide to " + t.GroupTo.String() + " carrying a vote " + t.BranchTo.String())
		}
	case TransBranchDone:
		if !t.BranchTo.Done() {
			panic("BUG: branch-done to state " + t.BranchTo.String())
		}
	default:
		panic(fmt.Sprintf("BUG: unknown transition kind %d", t.Kind))
	}
}

func (g *Group) addAttention(s string) {
	if g.Attention == "" {
		g.Attention = s
	} else {
		g.Attention += "; " + s
	}
}

// finishIfDone moves a decided group whose branches are all done to its
// terminal state.
func (g *Group) finishIfDone(atMS int64) {
	if g.State != GroupCommitting && g.State != GroupRollingBack {
		return
	}
	for _, b := range g.Branches {
		if !b.State.Done() {
			return
		}
	}
	if g.State == GroupCommitting {
		g.State = GroupCommitted
	} else {
		g.State = GroupRolledBack
	}
	g.FinishedMS = atMS
}

// newBranchID returns a fresh branch id.
func newBranchID() string { return gid.New() }
