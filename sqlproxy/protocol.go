package sqlproxy

import (
	"context"
	"database/sql/driver"
)

// branchProtocol is what a branch mode does to a physical connection: it
// turns the local work done on it into a branch that can vote, be prepared
// and then be committed or rolled back by the group's decision. lcnProtocol
// and xaProtocol (xa.go) implement it.
//
// The proxy calls begin after Coordinator.Join (so ref is complete), with
// exclusive use of pc; the branchTx methods are called with exclusive use of
// the same pc (the branch lease), never concurrently.
type branchProtocol interface {
	mode() string
	begin(ctx context.Context, pc physConn, ref branchRef, opts driver.TxOptions) (branchTx, error)
}

// branchRef identifies a branch (for xa: the parts of its xid).
type branchRef struct {
	group, branch, datasource string
}

// branchTx is a branch's open local work. A vote (Tx.Commit in a group)
// needs nothing from it: the work stays open until prepare or the outcome.
type branchTx interface {
	// check vets a statement's text before it runs in the branch: an error
	// means it must not be sent (it counts as a failed statement).
	check(query string) error
	// prepare is the prepare phase (Held.Prepare): it makes the vote
	// durable. lcn: nothing. xa: XA END and XA PREPARE. Called at most once
	// with success; after an error the branch is rolled back.
	prepare(ctx context.Context) error
	// commit and rollback apply the outcome. ctx is detached from any
	// request. An xa commit or rollback of a prepared branch may fail with
	// ErrInDoubt: the branch is still prepared and may be finished by
	// calling the same method again.
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
	// connClosed reports whether the branchTx closed pc itself (it found it
	// broken): the branch must then neither close nor reuse it, nor close
	// the statements that lived on it.
	connClosed() bool
}

// lcnProtocol: the branch is an ordinary local transaction, held open on its
// connection until the decision.
type lcnProtocol struct{}

func (lcnProtocol) mode() string { return ModeLCN }

func (lcnProtocol) begin(ctx context.Context, pc physConn, _ branchRef, opts driver.TxOptions) (branchTx, error) {
	// The transaction outlives the request that begins it. Some drivers keep
	// watching the BeginTx ctx for the life of the transaction (and cancel or
	// kill the connection when it ends), so give them one that never ends.
	tx, err := pc.begin(context.WithoutCancel(ctx), opts)
	if err != nil {
		return nil, err
	}
	return lcnTx{tx: tx}, nil
}

type lcnTx struct{ tx driver.Tx }

func (lcnTx) check(string) error               { return nil }
func (lcnTx) prepare(context.Context) error    { return nil }
func (t lcnTx) commit(context.Context) error   { return t.tx.Commit() }
func (t lcnTx) rollback(context.Context) error { return t.tx.Rollback() }
func (lcnTx) connClosed() bool                 { return false }
