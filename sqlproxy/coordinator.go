package sqlproxy

import (
	"context"
	"fmt"
)

// Coordinator is what the proxy needs from a transaction coordinator client.
// txclient.Client implements it; tests use a fake. sqlproxy defines it so that
// neither package imports the other's internals.
//
// All methods are safe for concurrent use.
type Coordinator interface {
	// Join registers a new branch of group for the named datasource, in the
	// given mode ("lcn" or "xa": always the effective mode, never "auto"),
	// and returns the branch id the TxManager assigned. It fails, leaving
	// nothing behind, if the group is not ACTIVE or the TxManager cannot be
	// reached. An xa branch id, like the group id, must be a canonical id
	// (package gid): the two make the branch's XA xid.
	Join(ctx context.Context, group, datasource, mode string) (branch string, err error)

	// Vote reports a branch's local result: ok (prepared, held until the
	// decision) or failed (reason says why). It returns nil only after the
	// TxManager durably recorded a prepared vote. Any error means the vote may
	// not have counted: the caller must roll the branch back locally and
	// report the error. A failed vote is best effort: its error can be
	// ignored, because the TxManager never commits a group with a branch that
	// did not vote prepared.
	Vote(ctx context.Context, group, branch string, ok bool, reason string) error

	// Hold hands a branch that voted prepared to the coordinator. When the
	// group's decision arrives the coordinator calls h.Commit or h.Rollback
	// (after h.Prepare, for an xa branch of a group with several branches),
	// on a context detached from any request, and reports the result to the
	// TxManager. Holding the same (group, branch) again is a no-op (a service
	// called twice in one group votes twice).
	Hold(group, branch string, h Held)
}

// Held is a branch waiting for its group's decision. All methods are safe
// for concurrent use with each other; each takes its own ctx, which bounds
// only the waiting for local work of the group that still uses the branch
// (the statements themselves run on a context detached from it, bounded by
// Options.ApplyTimeout).
type Held interface {
	// Prepare makes the branch's vote durable: the prepare phase of a group
	// whose commit was asked, before the TxManager decides.
	//
	// lcn: returns nil (nothing to do; the vote is the held transaction).
	//
	// xa: it waits, respecting ctx, for a statement of the group in flight
	// on the branch, then fails if a local transaction of the group is still
	// open, else runs XA END and XA PREPARE on the branch's connection. On
	// success the branch is prepared: it survives this process, its
	// connection and a database restart, and any later local work of the
	// group on this datasource fails with ErrBranchPrepared. On failure the
	// branch is rolled back (or its connection closed) and the error wraps
	// ErrVoteFailed; a later Rollback then succeeds.
	//
	// Calling it again after a success returns nil; after Commit or Rollback
	// was called it returns an error wrapping ErrAlreadyDecided.
	Prepare(ctx context.Context) error

	// Commit applies the group's commit decision and releases the branch's
	// physical connection. xa: XA COMMIT of a prepared branch, or XA END and
	// XA COMMIT ... ONE PHASE of one that was never prepared (a group with
	// a single branch). A prepared branch whose connection failed is
	// finished from another connection; if that is impossible too, the
	// error wraps ErrInDoubt, the branch stays prepared and Commit may be
	// called again to retry.
	Commit(ctx context.Context) error

	// Rollback applies the group's rollback decision. As Commit; a branch
	// already rolled back (locally, or by the database when its unprepared
	// connection failed) is a success.
	Rollback(ctx context.Context) error
}

// Resolution is the TxManager's answer for a branch found prepared in the
// database that no live branch of this process holds (xa recovery).
type Resolution uint8

const (
	ResolveWait     Resolution = iota // not decided yet: look again next round
	ResolveCommit                     // the group committed: XA COMMIT it
	ResolveRollback                   // rolled back, or unknown group (presumed abort): XA ROLLBACK it
	ResolveSkip                       // another service's branch: leave it alone
)

func (r Resolution) String() string {
	switch r {
	case ResolveWait:
		return "wait"
	case ResolveCommit:
		return "commit"
	case ResolveRollback:
		return "rollback"
	case ResolveSkip:
		return "skip"
	default:
		return fmt.Sprintf("Resolution(%d)", uint8(r))
	}
}

// Resolver is implemented by a Coordinator that can resolve prepared xa
// branches left by a crashed process, a killed connection or a restarted
// database. Without it, xa recovery is disabled (logged once).
type Resolver interface {
	// Resolve returns the decision for the prepared branch (group, branch).
	Resolve(ctx context.Context, group, branch string) (Resolution, error)
	// Resolved reports that the recovered branch was finished; committed
	// says how. It is idempotent on the TxManager side.
	Resolved(ctx context.Context, group, branch string, committed bool) error
}
