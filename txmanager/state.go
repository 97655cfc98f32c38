package txmanager

import "fmt"

// GroupState is where a transaction group is in its life.
//
//	ACTIVE ──commit, all prepared──▶ COMMITTING ──all acked──▶ COMMITTED
//	   └──rollback, failed vote, deadline──▶ ROLLING_BACK ──all acked──▶ ROLLED_BACK
//
// A decision (leaving ACTIVE) is written once and never changes.
type GroupState uint8

// Group states.
const (
	GroupActive GroupState = iota + 1
	GroupCommitting
	GroupCommitted
	GroupRollingBack
	GroupRolledBack
)

var groupStateNames = [...]string{GroupActive: "ACTIVE", GroupCommitting: "COMMITTING", GroupCommitted: "COMMITTED",
	GroupRollingBack: "ROLLING_BACK", GroupRolledBack: "ROLLED_BACK"}

func (s GroupState) String() string {
	if s >= GroupActive && s <= GroupRolledBack {
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
func (s GroupState) Decided() bool { return s != GroupActive }

// Terminal reports whether every branch has acknowledged the outcome.
func (s GroupState) Terminal() bool { return s == GroupCommitted || s == GroupRolledBack }

// Commit reports whether the decision is commit.
func (s GroupState) Commit() bool { return s == GroupCommitting || s == GroupCommitted }

// BranchState is where one branch is, as the TxManager sees it.
//
//	REGISTERED ──vote ok──▶ PREPARED ──ack──▶ COMMITTED | ROLLED_BACK | LOST
//	     └──────vote failed──▶ FAILED ──ack──▶ ROLLED_BACK
//
// A PREPARED branch may vote again while the group is ACTIVE (a service
// called twice in one group); a FAILED vote is final.
type BranchState uint8

// Branch states.
const (
	BranchRegistered BranchState = iota + 1
	BranchPrepared
	BranchFailed
	BranchCommitted
	BranchRolledBack
	BranchLost
)

var branchStateNames = [...]string{BranchRegistered: "REGISTERED", BranchPrepared: "PREPARED", BranchFailed: "FAILED",
	BranchCommitted: "COMMITTED", BranchRolledBack: "ROLLED_BACK", BranchLost: "LOST"}

func (s BranchState) String() string {
	if s >= BranchRegistered && s <= BranchLost {
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

// Done reports whether the branch has its outcome applied (or lost).
func (s BranchState) Done() bool {
	return s == BranchCommitted || s == BranchRolledBack || s == BranchLost
}
