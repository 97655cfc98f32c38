package sqlproxy

import "context"

// Coordinator is what the proxy needs from a transaction coordinator client.
// txclient.Client implements it; tests use a fake. sqlproxy defines it so that
// neither package imports the other's internals.
//
// All methods are safe for concurrent use.
type Coordinator interface {
	// Join registers a new branch of group for the named datasource, in the
	// given mode ("lcn" or "xa"), and returns the branch id the TxManager
	// assigned. It fails, leaving nothing behind, if the group is not ACTIVE
	// or the TxManager cannot be reached.
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
	// exactly once, on a context detached from any request, and reports the
	// result to the TxManager. Holding the same (group, branch) again is a
	// no-op (a service called twice in one group votes twice).
	Hold(group, branch string, h Held)
}

// Held is a branch waiting for its group's decision. Commit and Rollback
// apply the outcome to the held local transaction and release its physical
// connection; each is called at most once, and never both.
type Held interface {
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}
