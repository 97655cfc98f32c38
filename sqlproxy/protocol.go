package sqlproxy

import (
	"context"
	"database/sql/driver"
	"fmt"
)

// branchProtocol is what a branch mode does to a physical connection: it
// turns the local work done on it into a branch that can vote and then be
// committed or rolled back by the group's decision. lcn is one
// implementation; xa (XA START / END / PREPARE / COMMIT / ROLLBACK keyed by
// the branch's xid) is meant to be another.
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

// branchTx is a branch's open local work.
type branchTx interface {
	// prepare is the local half of a prepared vote, run before
	// Coordinator.Vote(ok). lcn: nothing (the open transaction is the vote).
	// xa: XA END and XA PREPARE.
	prepare(ctx context.Context) error
	// commit and rollback apply the outcome. ctx is detached from any request.
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

func protocolFor(mode string) (branchProtocol, error) {
	switch mode {
	case "", ModeLCN:
		return lcnProtocol{}, nil
	case ModeXA, ModeAuto:
		return nil, fmt.Errorf("%w: mode %q (use %q)", ErrModeNotSupported, mode, ModeLCN)
	default:
		return nil, fmt.Errorf("sqlproxy: unknown branch mode %q (want %q, %q or %q)", mode, ModeLCN, ModeXA, ModeAuto)
	}
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

func (lcnTx) prepare(context.Context) error    { return nil }
func (t lcnTx) commit(context.Context) error   { return t.tx.Commit() }
func (t lcnTx) rollback(context.Context) error { return t.tx.Rollback() }
