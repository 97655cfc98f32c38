package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Backoff between attempts of CommitPrepared/RollbackPrepared while the xid
// is still listed: it starts short because the usual cause (MariaDB has not
// yet detached the branch from a session that just disconnected) clears in
// well under a millisecond to a few milliseconds.
const (
	backoffStart = time.Millisecond
	backoffMax   = 100 * time.Millisecond
)

// notaHook, when set (tests only, see export_test.go), is called each time
// XA COMMIT/ROLLBACK of a prepared branch answered XAER_NOTA, with whether
// XA RECOVER listed the xid at that moment.
var notaHook atomic.Pointer[func(x Xid, listed bool)]

// CommitPrepared commits the prepared branch x from any connection of db,
// typically not the one that prepared it (recovery, or after the preparing
// connection died). It returns nil only when XA COMMIT succeeded.
//
// On XAER_NOTA it does not assume the branch is finished (DESIGN invariant
// 8): it runs XA RECOVER, and while x is still listed (on MariaDB a session
// that just disconnected may not have detached its prepared branch yet) it
// retries with a short backoff until XA COMMIT succeeds or wait has passed,
// then fails with an error wrapping ErrStillPrepared. If x is not listed it
// fails with an error wrapping ErrUnknownXid; the caller decides what that
// means (already committed by an earlier attempt, or never prepared).
// If the server answers with an XA_RB* error (it rolled the branch back) it
// fails with an error wrapping ErrRolledBack: MariaDB does that for a
// prepared branch that wrote nothing once its session is gone, so a caller
// that knows the branch was read-only may treat it as done.
//
// On MariaDB do not call it while the session that prepared x is being torn
// down: a commit racing the teardown can be reported successful yet leave
// the work uncommitted (see the package doc); if you closed that session
// yourself, WaitDisconnected first.
//
// ctx bounds the whole call, including the waits between attempts; use a
// context detached from any business request. Safe for concurrent use;
// calling it again after success yields ErrUnknownXid, never a second commit.
func CommitPrepared(ctx context.Context, db *sql.DB, x Xid, wait time.Duration) error {
	return finishPrepared(ctx, db, "XA COMMIT", x, FormatID, wait)
}

// RollbackPrepared is CommitPrepared with XA ROLLBACK: same retries, same
// errors, except that an XA_RB* answer (the server rolled it back) is
// success. ErrUnknownXid after a rollback request usually means the branch
// was rolled back already (or never prepared), but it may also have been
// committed: the server keeps no memory of finished xids.
func RollbackPrepared(ctx context.Context, db *sql.DB, x Xid, wait time.Duration) error {
	return finishPrepared(ctx, db, "XA ROLLBACK", x, FormatID, wait)
}

func finishPrepared(ctx context.Context, db *sql.DB, verb string, x Xid, format int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	backoff := backoffStart
	for {
		err := runFormat(ctx, db, verb, x, format, "")
		switch {
		case err == nil:
			return nil
		case IsRolledBack(err):
			// The server rolled the branch back and forgot it. MariaDB
			// answers so when a branch that wrote nothing is finished
			// from another session (commit or rollback alike).
			if verb == "XA ROLLBACK" {
				return nil
			}
			var e *Error
			errors.As(err, &e)
			return &Error{Stmt: e.Stmt, Err: fmt.Errorf("%w: %w", ErrRolledBack, e.Err)}
		case !IsNotA(err):
			return err // invalid xid, or another failure (wrapped with the statement)
		}
		listed, rerr := isListed(ctx, db, x, format)
		if h := notaHook.Load(); h != nil {
			(*h)(x, listed && rerr == nil)
		}
		var e *Error
		errors.As(err, &e) // always an *Error from runFormat
		switch {
		case rerr != nil:
			return &Error{Stmt: e.Stmt, Err: fmt.Errorf("%w; checking XA RECOVER: %w", e.Err, rerr)}
		case !listed:
			return &Error{Stmt: e.Stmt, Err: fmt.Errorf("%w (XA RECOVER does not list it): %w", ErrUnknownXid, e.Err)}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &Error{Stmt: e.Stmt, Err: fmt.Errorf("%w after %v (XA RECOVER lists it): %w", ErrStillPrepared, wait, e.Err)}
		}
		if err := sleep(ctx, min(backoff, left)); err != nil {
			return &Error{Stmt: e.Stmt, Err: fmt.Errorf("%w (XA RECOVER lists it): %w", ErrStillPrepared, err)}
		}
		backoff = min(2*backoff, backoffMax)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
