// Package xa holds the XA building blocks of golcn's "xa" branch mode
// (DESIGN §4) and of its crash recovery, for MySQL and MariaDB through
// github.com/go-sql-driver/mysql. It knows nothing about the TxManager or
// the proxy driver.
//
// # Xids
//
// A golcn branch is the xid (gtrid = group id, bqual = branch id,
// formatID = FormatID), both ids canonical (package gid). Statements are
// built only from validated ids; an invalid Xid fails with ErrNotGolcnXid
// before anything is sent.
//
// # Statements
//
// Start, End, Prepare, Commit (optionally ONE PHASE) and Rollback run one
// XA statement on the connection that owns the branch and return *Error,
// which names the statement and wraps the driver error (test with IsNotA,
// IsRMFail, IsDupID, IsRolledBack). They do not interpret XAER_NOTA.
//
// # Finishing a prepared branch from elsewhere (DESIGN invariant 8)
//
// CommitPrepared and RollbackPrepared finish a prepared branch from any
// session. XAER_NOTA is never success: while XA RECOVER still lists the xid
// (MariaDB keeps it attached to its session until that session is torn
// down) they retry until the wait expires (ErrStillPrepared); if it is not
// listed they return ErrUnknownXid and the caller decides. Recover lists
// the golcn branches a server holds prepared.
//
// MariaDB behaviour measured on 10.11 (see the tests):
//
//   - After XA PREPARE the session keeps the branch attached: it cannot XA
//     START another xid or write (XAER_RMFAIL) until it commits or rolls
//     the prepared branch back; reads still work. Other sessions see the
//     xid in XA RECOVER but get XAER_NOTA from XA COMMIT/ROLLBACK.
//   - Finishing a branch from another session while its own session is
//     being torn down is unsafe: XA COMMIT now and then returns success,
//     the xid leaves XA RECOVER, and the InnoDB transaction stays RUNNING,
//     uncommitted, holding its locks until a restart. A caller that closes
//     the preparing connection itself must record ConnectionID first and
//     call WaitDisconnected before CommitPrepared/RollbackPrepared.
//   - A prepared branch that wrote nothing, finished from another session,
//     answers XA_RBROLLBACK to commit and rollback alike: CommitPrepared
//     returns ErrRolledBack, RollbackPrepared nil.
//   - Prepared branches survive a killed connection and a server kill and
//     restart (10.5.2 and later); ProbeDurable checks the first by doing.
//
// # Statements not allowed in a branch
//
// ForbiddenInXA classifies a query before it runs in a branch, so the proxy
// can fail with an error naming the statement and the mode.
//
// # Usage
//
//	x := xa.Xid{Group: groupID, Branch: branchID}
//	conn, _ := db.Conn(ctx)
//	_ = xa.Start(ctx, conn, x)
//	// ... the branch's statements on conn ...
//	_ = xa.End(ctx, conn, x)
//	if err := xa.Prepare(ctx, conn, x); err != nil { /* vote failed */ }
//	// later, with the TM's decision, on the same conn:
//	err := xa.Commit(ctx, conn, x, false)
//	// or, at recovery, from any session:
//	for _, x := range must(xa.Recover(ctx, db)) {
//		err := xa.CommitPrepared(ctx, db, x, 5*time.Second)
//	}
//
// All functions are safe for concurrent use as far as their connection
// argument is; ctx bounds each call (go-sql-driver/mysql kills the session
// when ctx ends mid-statement, which rolls back an ACTIVE branch but leaves
// a PREPARED one prepared).
package xa
