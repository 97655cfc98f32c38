// Package sqlproxy is a database/sql/driver that wraps any other driver and
// turns a local transaction run inside a transaction group into a branch of
// that group (LCN style: Lock, Confirm, Notify).
//
// The proxy knows only the database/sql/driver contract and the small
// [Coordinator] interface it defines (join a group, vote, hand over a held
// branch); the coordinator client (txclient) implements that interface.
//
// # Contract
//
// Outside a group (the context carries no group id, see
// internal/groupctx) every call passes straight through to the inner driver,
// and every optional interface of the inner connection is forwarded, with
// database/sql's own fallback where the inner driver lacks one.
//
// Inside a group:
//
//   - The first local transaction of a group on a datasource (BeginTx with a
//     group ctx, or an autocommit statement with one) calls
//     Coordinator.Join and opens the group's branch: a local transaction on
//     that connection's physical connection. The proxy connection is then
//     detached: IsValid reports false and ResetSession returns
//     driver.ErrBadConn, so database/sql drops the wrapper and never puts the
//     held physical connection back in its pool.
//   - Every later local transaction of the group in this process on the same
//     datasource (the same service called twice, or concurrently) runs in
//     that same branch, on the same physical connection, so it sees the
//     group's earlier writes and never waits on its own locks. Access to the
//     physical connection is serialised per statement (for queries, until
//     the Rows are closed), so nested and concurrent calls in one group do
//     not deadlock against each other.
//   - Tx.Commit votes: it calls Coordinator.Vote(ok) with the BeginTx
//     context (bounded by Options.VoteTimeout) and returns only after the
//     vote was recorded. The branch's first successful vote then calls
//     Coordinator.Hold (once per branch; later local transactions of the
//     group vote again but do not hold again). The local transaction stays
//     open until the decision. If the vote fails, Commit
//     rolls back and returns an error wrapping [ErrVoteFailed]: the group
//     will not commit this work.
//   - Tx.Rollback, or Tx.Commit after a failed statement ([ErrLocalTxFailed]),
//     rolls the branch back — all of the group's work on this datasource,
//     since the group can no longer commit — and votes failed.
//   - An autocommit Exec with a group ctx is an implicit local transaction:
//     it runs in the branch and votes before returning. An autocommit Query
//     votes when its Rows are closed (Rows.Close returns the vote's error).
//   - The coordinator applies the decision through [Held]: Commit or
//     Rollback, exactly once, on a context detached from any request. The
//     branch's physical connection then goes to a bounded free list that
//     Connect takes from first (or is closed if anything failed).
//
// While a local transaction is open it alone decides where statements run:
// those of a group transaction run in its branch whatever their context,
// those of a transaction begun outside a group run on the own connection
// whatever their context. A statement prepared outside a group transaction
// and later executed with a group context re-runs its text in the branch.
//
// # Usage
//
// Wrap the inner driver's connector (preferred), or register a wrapped
// driver and use sql.Open:
//
//	inner, _ := mysql.NewConnector(cfg)
//	db, err := sqlproxy.OpenDB(inner, sqlproxy.Options{
//		Datasource:      "orders",
//		CoordinatorFunc: func() (sqlproxy.Coordinator, error) { return txclientDefault() },
//	})
//	// or: sqlproxy.Register("lcn-mysql", mysql.MySQLDriver{}, optionsForDSN)
//	//     db, err := sql.Open("lcn-mysql", dsn)
//
//	// In a request whose ctx carries a group (set by txclient's middleware):
//	tx, err := db.BeginTx(ctx, nil)
//	...
//	_, err = tx.ExecContext(ctx, "UPDATE stock SET n = n - 1 WHERE id = ?", id)
//	...
//	err = tx.Commit() // voted prepared and held; nil means the TxManager knows the branch
//
// # State machines
//
// DESIGN's proxy-connection machine (idle → in local tx → voted (held) →
// applying → done) is split in two, each explicit with one function per
// transition that panics with "BUG" on an impossible source:
//
// The proxy connection (connState) — what database/sql holds:
//
//	idle ──BeginTx──▶ in local tx ──Commit/Rollback──▶ idle      (outside a group, or
//	                                                            the group had a branch)
//	idle ──first work of a group──▶ detached (physical conn handed to the branch)
//	detached ──BeginTx in a group with a branch──▶ in local tx ──▶ detached
//	any ──Close──▶ closed
//
// The branch (branchState) — what happens to the physical connection once
// it serves a group:
//
//	joining ──Join and local begin ok──▶ working ──vote ok──▶ held ──decision──▶ applying ──▶ done
//	joining ──Join or begin failed──▶ done
//	working | held ──local failure or rollback──▶ applying (rollback) ──▶ done
//	working | held | applying ──physical connection failed──▶ done
//
// In applying, the outcome waits until it can be applied: the connection is
// free and, for a commit, no local transaction of the group is still open.
// Whoever makes it applicable applies it, so a decision is never lost when
// its caller stops waiting ([ErrApplyPending]). A commit decision that
// arrives while a local transaction of the group runs (the starter did not
// wait for a call) waits for it: that work commits with the group if it
// commits, and the branch is lost ([ErrBranchLost]) if it fails.
//
// # Modes
//
// Only mode "lcn" is implemented: the vote is the open local transaction,
// which is not durable (if the process dies, the database rolls the work
// back; the TxManager must report such a branch as lost). Modes "xa" and
// "auto" are rejected at construction with [ErrModeNotSupported]; they plug
// in as another implementation of the internal branch protocol.
//
// # Notes
//
//   - The options of the first local transaction of a group on a
//     datasource apply to its branch. A later one asking for another
//     isolation level, or for read-write on a read-only branch, fails with
//     [ErrIncompatibleTx].
//   - Any failed statement in a group transaction makes its Commit vote
//     failed, even an error the application meant to handle.
//   - A sql.Conn whose connection was detached by a group transaction
//     cannot run work outside that group any more: it returns
//     [ErrConnDetached] (a driver.ErrBadConn), and database/sql closes it.
//   - The inner driver's NamedValueChecker and ColumnConverter are assumed
//     not to touch connection state: the proxy may call them for a branch's
//     connection while another request of the group uses it.
//   - A group that is rolled back while one of its requests still has Rows
//     open waits for those Rows to be closed.
package sqlproxy
