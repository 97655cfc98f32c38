package xa

import (
	"context"
	"database/sql"
	"errors"

	"github.com/go-sql-driver/mysql"
)

// Execer runs one statement. *sql.Conn, *sql.DB and *sql.Tx implement it;
// XA statements must run on the connection that owns the branch, so use a
// *sql.Conn (or a raw connection adapted to this interface) for Start..Prepare.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Queryer runs one query. *sql.Conn and *sql.DB implement it.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Error is returned by every statement of this package that the server (or
// the connection) failed. It names the statement and the xid.
type Error struct {
	Stmt string // the full statement, e.g. "XA PREPARE '…','…',4997966"
	Err  error  // the driver's error, possibly joined with a sentinel
}

func (e *Error) Error() string { return "xa: " + e.Stmt + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// MySQL/MariaDB server error numbers of the XA family.
const (
	errXAERNotA     = 1397 // XAER_NOTA: unknown xid
	errXAERRMFail   = 1399 // XAER_RMFAIL: command not allowed in the current state
	errXAERDupID    = 1440 // XAER_DUPID: xid already exists
	errXARBRollback = 1402 // XA_RBROLLBACK: the branch was rolled back
	errXARBTimeout  = 1613 // XA_RBTIMEOUT: rolled back, took too long
	errXARBDeadlock = 1614 // XA_RBDEADLOCK: rolled back, deadlock
)

// IsNotA reports whether err carries MySQL/MariaDB error 1397 (XAER_NOTA,
// "unknown XID"). Never take it as success on XA COMMIT/ROLLBACK of a
// prepared branch (DESIGN invariant 8): use CommitPrepared/RollbackPrepared.
func IsNotA(err error) bool { return isServerErr(err, errXAERNotA) }

// IsRMFail reports whether err carries error 1399 (XAER_RMFAIL: the command
// is not allowed in the transaction's current state, for example XA START
// while a prepared branch is still attached to the session).
func IsRMFail(err error) bool { return isServerErr(err, errXAERRMFail) }

// IsDupID reports whether err carries error 1440 (XAER_DUPID: the xid exists).
func IsDupID(err error) bool { return isServerErr(err, errXAERDupID) }

// IsRolledBack reports whether err carries one of the XA_RB* errors (1402
// XA_RBROLLBACK, 1613 XA_RBTIMEOUT, 1614 XA_RBDEADLOCK): the server has
// rolled the branch back and no longer knows it.
func IsRolledBack(err error) bool {
	return isServerErr(err, errXARBRollback) || isServerErr(err, errXARBTimeout) || isServerErr(err, errXARBDeadlock)
}

// IsServerError reports whether err carries an error answered by the
// MySQL/MariaDB server (any error number), as opposed to a failure of the
// connection or of the client. After a server error the session is still
// there and the statement was refused; after any other error the caller
// cannot know whether the statement ran.
func IsServerError(err error) bool { return isAnyServerErr(err) }

func isServerErr(err error, number uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == number
}

// Start runs XA START x on c. c must be a single connection with no open
// transaction. Every statement function below takes ctx for this call only;
// note that go-sql-driver/mysql kills the connection when ctx is cancelled
// mid-statement, which rolls back an ACTIVE branch (a PREPARED one survives).
func Start(ctx context.Context, c Execer, x Xid) error { return run(ctx, c, "XA START", x, "") }

// End runs XA END x on the connection that started x.
func End(ctx context.Context, c Execer, x Xid) error { return run(ctx, c, "XA END", x, "") }

// Prepare runs XA PREPARE x on the connection that started and ended x.
// After it returns nil the branch is durable on servers that ProbeDurable
// reports as durable.
func Prepare(ctx context.Context, c Execer, x Xid) error { return run(ctx, c, "XA PREPARE", x, "") }

// Commit runs XA COMMIT x, or XA COMMIT x ONE PHASE when onePhase (then x
// must be ended but not prepared). It passes XAER_NOTA through as an error
// (test with IsNotA); to finish a prepared branch from another connection
// use CommitPrepared.
func Commit(ctx context.Context, c Execer, x Xid, onePhase bool) error {
	suffix := ""
	if onePhase {
		suffix = " ONE PHASE"
	}
	return run(ctx, c, "XA COMMIT", x, suffix)
}

// Rollback runs XA ROLLBACK x (an ended or prepared branch). Like Commit it
// does not interpret XAER_NOTA; see RollbackPrepared.
func Rollback(ctx context.Context, c Execer, x Xid) error { return run(ctx, c, "XA ROLLBACK", x, "") }

func run(ctx context.Context, c Execer, verb string, x Xid, suffix string) error {
	return runFormat(ctx, c, verb, x, FormatID, suffix)
}

func runFormat(ctx context.Context, c Execer, verb string, x Xid, format int, suffix string) error {
	lit := x.literal(format)
	if lit == "" {
		return &Error{Stmt: verb + " " + x.String(), Err: x.Validate()}
	}
	stmt := verb + " " + lit + suffix
	// No args: the statement goes over the text protocol, never prepared.
	if _, err := c.ExecContext(ctx, stmt); err != nil {
		return &Error{Stmt: stmt, Err: err}
	}
	return nil
}
