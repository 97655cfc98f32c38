package xa

import (
	"context"
	"time"
)

// ConnectionID returns the server's id of the session behind c
// (SELECT CONNECTION_ID()). Record it before handing a prepared branch's
// connection away, so that WaitDisconnected can tell when the server has
// finished with the session.
func ConnectionID(ctx context.Context, c Queryer) (uint64, error) {
	const stmt = "SELECT CONNECTION_ID()"
	rows, err := c.QueryContext(ctx, stmt)
	if err != nil {
		return 0, &Error{Stmt: stmt, Err: err}
	}
	defer rows.Close()
	var id uint64
	if rows.Next() {
		err = rows.Scan(&id)
	} else if err = rows.Err(); err == nil {
		err = errNoRow
	}
	if err != nil {
		return 0, &Error{Stmt: stmt, Err: err}
	}
	return id, nil
}

// WaitDisconnected polls information_schema.processlist until the session
// id is gone (or ctx ends). On MariaDB a session leaves the processlist only
// after it has detached its prepared XA branch, so after it returns nil the
// branch can be finished safely from another session. Finishing it while
// the server is still tearing the session down is unsafe on MariaDB 10.11
// (see the package doc: XA COMMIT may report success and leave the work
// uncommitted and locked).
func WaitDisconnected(ctx context.Context, q Queryer, id uint64) error {
	const stmt = "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?"
	backoff := backoffStart
	for {
		rows, err := q.QueryContext(ctx, stmt, id)
		if err != nil {
			return &Error{Stmt: stmt, Err: err}
		}
		var n int
		if rows.Next() {
			err = rows.Scan(&n)
		}
		rows.Close()
		if err != nil {
			return &Error{Stmt: stmt, Err: err}
		}
		if n == 0 {
			return nil
		}
		if err := sleep(ctx, backoff); err != nil {
			return &Error{Stmt: stmt, Err: err}
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}
