package txmanager

import "fmt"

// GroupState is where a transaction group is in its life.
//
//	ACTIVE ──commit, all prepared (or one branch: one phase)──▶ COMMITTING ──all acked──▶ COMMITTED
//	   │ └──commit, some xa branch READY──▶ PREPARING ──all prepared──▶ COMMITTING
//	   │                                      └──prepare failed, rollback, deadline──▶ ROLLING_BACK
//	   └──rollback, failed vote, deadline──▶ ROLLING_BACK ──all acked──▶ ROLLED_BACK
//
// ACTIVE and PREPARING are open: nothing is decided yet, and the deadline
// still applies. PREPARING is the prepare phase of a group with xa branches:
// the starter asked to commit and the TxManager waits for every READY
// branch to make its vote durable (XA PREPARE); it accepts no new branch.
// A decision (COMMITTING or ROLLING_BACK) is written once and never changes.
type GroupState uint8

// Group states.
const (
	GroupActive GroupState = iota + 1
	GroupCommitting
	GroupCommitted
	GroupRollingBack
	GroupRolledBack
	GroupPreparing // after the others: stored state numbers never change
)

var groupStateNames = [...]string{GroupActive: "ACTIVE", GroupCommitting: "COMMITTING", GroupCommitted: "COMMITTED",
	GroupRollingBack: "ROLLING_BACK", GroupRolledBack: "ROLLED_BACK", GroupPreparing: "PREPARING"}

func (s GroupState) String() string {
	if s >= GroupActive && s <= GroupPreparing {
		return groupStateNames[s]
	}
	return fmt.Sprintf("GroupState(%d)", uint8(s))
}

// ParseGroupState is the inverse of String.
func ParseGroupState(s string) (GroupState, error) {
	for i, n := range groupStateNames {
		if n != "" && n == s {
			return GroupState(i), nil
		}
	}
	return 0, fmt.Errorf("txmanager: unknown group state %q", s)
}

// Decided reports whether the group's outcome is fixed.
func (s GroupState) Decided() bool { return s >= GroupCommitting && s <= GroupRolledBack }

// Open reports whether nothing is decided yet (ACTIVE or PREPARING): the
// deadline applies and the reaper rolls the group back when it passes.
func (s GroupState) Open() bool { return s == GroupActive || s == GroupPreparing }

// Undone reports whether the TxManager owes the group's branches pushes:
// prepare requests (PREPARING) or the decision (COMMITTING, ROLLING_BACK).
// The retrier sends them again until they are answered.
func (s GroupState) Undone() bool {
	return s == GroupPreparing || s == GroupCommitting || s == GroupRollingBack
}

// Terminal reports whether every branch has acknowledged the outcome.
func (s GroupState) Terminal() bool { return s == GroupCommitted || s == GroupRolledBack }

// Commit reports whether the decision is commit.
func (s GroupState) Commit() bool { return s == GroupCommitting || s == GroupCommitted }

// BranchState is where one branch is, as the TxManager sees it.
//
//	REGISTERED ──vote ok (lcn)──▶ PREPARED ──ack──▶ COMMITTED | ROLLED_BACK | LOST
//	     │  └──vote ok (xa)──▶ READY ──prepared (PREPARING)──▶ PREPARED
//	     │                       │  └──one-phase commit ack──▶ COMMITTED | LOST
//	     │                       └──prepare failed──▶ FAILED
//	     └──────vote failed──▶ FAILED ──ack──▶ ROLLED_BACK
//
// READY is an xa branch whose work is done and voted but not yet durable:
// its XA transaction is still open on the participant's connection, so that
// a service called twice in one group keeps using it (XA PREPARE forbids
// any further work on the connection). The prepare phase (group PREPARING)
// moves it to PREPARED. A READY or PREPARED branch may vote again while the
// group is ACTIVE; a FAILED vote is final.
type BranchState uint8

// Branch states.
const (
	BranchRegistered BranchState = iota + 1
	BranchPrepared
	BranchFailed
	BranchCommitted
	BranchRolledBack
	BranchLost
	BranchReady // after the others: stored state numbers never change
)

var branchStateNames = [...]string{BranchRegistered: "REGISTERED", BranchPrepared: "PREPARED", BranchFailed: "FAILED",
	BranchCommitted: "COMMITTED", BranchRolledBack: "ROLLED_BACK", BranchLost: "LOST", BranchReady: "READY"}

func (s BranchState) String() string {
	if s >= BranchRegistered && s <= BranchReady {
		return branchStateNames[s]
	}
	return fmt.Sprintf("BranchState(%d)", uint8(s))
}

// ParseBranchState is the inverse of String.
func ParseBranchState(s string) (BranchState, error) {
	for i, n := range branchStateNames {
		if n != "" && n == s {
			return BranchState(i), nil
		}
	}
	return 0, fmt.Errorf("txmanager: unknown branch state %q", s)
}

// Voted reports whether the branch voted ok (READY or PREPARED).
func (s BranchState) Voted() bool { return s == BranchReady || s == BranchPrepared }

// Done reports whether the branch has its outcome applied (or lost).
func (s BranchState) Done() bool {
	return s == BranchCommitted || s == BranchRolledBack || s == BranchLost
}
