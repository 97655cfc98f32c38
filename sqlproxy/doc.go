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
//     Coordinator.Join and opens the group's branch on that connection's
//     physical connection: a local transaction (lcn) or an XA transaction
//     (xa: XA START). The proxy connection is then
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
//     group vote again but do not hold again). The branch stays open (xa:
//     ACTIVE, no XA END yet) until the prepare phase or the decision. If the
//     vote fails, Commit
//     rolls back and returns an error wrapping [ErrVoteFailed]: the group
//     will not commit this work.
//   - Tx.Rollback, or Tx.Commit after a failed statement ([ErrLocalTxFailed]),
//     rolls the branch back — all of the group's work on this datasource,
//     since the group can no longer commit — and votes failed.
//   - An autocommit Exec with a group ctx is an implicit local transaction:
//     it runs in the branch and votes before returning. An autocommit Query
//     votes when its Rows are closed (Rows.Close returns the vote's error).
//   - The coordinator applies the decision through [Held]: Commit or
//     Rollback, on a context detached from any request (after Held.Prepare
//     for an xa branch of a group with several branches, see below). The
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
//		Mode:            sqlproxy.ModeAuto, // xa on MariaDB 10.5.2+ / MySQL 5.7.7+
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
// # The prepare phase and one-phase commit (xa)
//
// MariaDB refuses any further XA START, and any write, on a connection
// after XA PREPARE, while a service called twice in one group must reuse
// its branch (DESIGN invariant 7). So a local Tx.Commit only votes, leaving
// the XA transaction ACTIVE, and a group with xa branches commits in two
// phases: when the starter asks to commit, the TxManager asks each xa
// branch to prepare (Held.Prepare: XA END, XA PREPARE: the durable vote)
// and decides commit only when all are prepared. Held.Prepare fails (and
// rolls the branch back) if a local transaction of the group is still open
// on the datasource; after it succeeds, local work of the group fails with
// [ErrBranchPrepared].
//
// A group with a single branch skips the prepare phase: Held.Commit of a
// branch that was never prepared runs XA END and XA COMMIT ... ONE PHASE.
// If its connection dies during that statement the outcome is unknown (the
// branch was not prepared, so XA RECOVER cannot tell): Commit returns an
// error wrapping [ErrApplyFailed] that says so, for the coordinator to
// report as needing attention. A one-phase commit the server refused
// returns [ErrBranchLost].
//
// Held.Commit or Held.Rollback of a prepared branch runs XA COMMIT or XA
// ROLLBACK on the branch's connection. If that connection fails, the proxy
// closes it, waits (a few seconds at most) until the server has torn the
// session down, and finishes the branch from a side pool of connections
// (DESIGN invariant 8: XAER_NOTA is never taken as success while XA RECOVER
// lists the xid). An xid XA RECOVER no longer lists was finished with the
// decided outcome (only that outcome is ever applied to it): success. If
// the branch cannot be finished now (the database is down) the error wraps
// [ErrInDoubt]: the branch stays prepared and durable, and delivering the
// same decision again retries.
//
// Rolling back a branch that was never prepared needs nothing from a
// broken connection: the server rolled it back when the connection went.
//
// # Recovery (xa)
//
// A prepared branch survives the process, its connection and a database
// restart. Every datasource in mode xa (and in mode auto over
// go-sql-driver/mysql) runs one recovery goroutine, started by the first
// use of its connector (so at start-up if the service pings its database)
// and stopped by its Close (sql.DB.Close). Each round (at once, then every
// Options.RecoveryInterval) runs XA RECOVER on the side pool, leaves alone
// the xids held by a live branch of this process (of any datasource), asks
// the coordinator's [Resolver] about each of the others and commits or
// rolls it back as answered, then reports it with Resolver.Resolved. Later
// rounds act only on xids the previous round listed too, one interval
// earlier: on MariaDB, finishing a branch while its dying session is still
// being torn down can report success and leave the work uncommitted (see
// internal/xa); the first round of a process acts at once (a crashed
// predecessor's sessions are long gone). Failures are logged and retried
// at the next round. A Coordinator that is not a Resolver disables
// recovery (logged once).
//
// # Statements not allowed in an xa branch
//
// Every statement text run in an xa branch (Exec, Query, Prepare, in a
// transaction or autocommit) is checked first; DDL and the other statements
// that commit implicitly or that XA forbids (CREATE/ALTER/DROP/TRUNCATE,
// BEGIN/COMMIT/ROLLBACK, SET autocommit, LOCK TABLES, ...) fail with an
// error wrapping [ErrForbiddenInXA] that names the statement and the mode,
// without reaching the server, and count as a failed statement. Run them
// outside the group.
//
// # Modes
//
//   - lcn ([ModeLCN], also ""): the vote is the open local transaction,
//     which is not durable (if the process dies, the database rolls the
//     work back; the TxManager must report such a branch as lost). Any
//     driver.
//   - xa ([ModeXA]): XA transactions, MySQL/MariaDB syntax, durable once
//     prepared. Needs a server that keeps prepared branches across a
//     disconnect: MariaDB 10.5.2 or later, MySQL 5.7.7 or later. The local
//     transaction's isolation level and read-only flag apply to the branch
//     (SET TRANSACTION before XA START; levels READ UNCOMMITTED, READ
//     COMMITTED, REPEATABLE READ, SERIALIZABLE).
//   - auto ([ModeAuto]): xa when the inner driver is go-sql-driver/mysql and
//     the server keeps a prepared branch across a disconnect (probed once,
//     by doing it, at the first group use; a probe that cannot reach the
//     server fails that join with [ErrJoinFailed] and is retried), lcn
//     otherwise. The choice is logged once; [Connector.Mode] reports it.
//
// The mode given to Coordinator.Join is always the effective "lcn" or "xa".
//
// Privileges (xa): XA RECOVER (recovery, and finishing a branch from the
// side pool) needs XA_RECOVER_ADMIN on MySQL 8.0; durable prepared
// branches need MariaDB 10.5.2+ or MySQL 5.7.7+.
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
//	joining ──Join and begin ok──▶ working ──vote ok──▶ held ──decision──▶ applying ──▶ done
//	joining ──Join or begin failed──▶ done
//	held ──Held.Prepare (xa, no local tx open)──▶ preparing ──XA PREPARE ok──▶ prepared
//	preparing ──XA END/PREPARE failed──▶ applying (rollback) ──▶ done
//	prepared | preparing ──decision──▶ applying ──▶ done
//	applying ──prepared branch not finished (ErrInDoubt)──▶ prepared ──same decision──▶ applying
//	working | held ──local failure or rollback──▶ applying (rollback) ──▶ done
//	working | held | applying ──physical connection failed──▶ done
//
// In applying, the outcome waits until it can be applied: the connection is
// free and, for a commit, no local transaction of the group is still open.
// Whoever makes it applicable applies it, so a decision is never lost when
// its caller stops waiting ([ErrApplyPending]). A commit decision that
// arrives while a local transaction of the group runs (the starter did not
// wait for a call) waits for it: that work commits with the group if it
// commits, and the branch is lost ([ErrBranchLost]) if it fails. Preparing
// and prepared take no local work.
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
