package sqlproxy

import (
	"database/sql/driver"
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (test
// with [errors.Is]) and, where there is one, the underlying cause.
var (
	// ErrModeNotSupported is no longer returned: every mode ("lcn", "xa",
	// "auto") is supported. It is kept so that code testing for it still
	// compiles.
	//
	// Deprecated: nothing returns it.
	ErrModeNotSupported = errors.New("sqlproxy: branch mode not supported yet")

	// ErrNoCoordinator means Options.CoordinatorFunc failed or returned nil.
	// Work outside a group is unaffected; the next group use tries again.
	ErrNoCoordinator = errors.New("sqlproxy: coordinator not available")

	// ErrJoinFailed means Coordinator.Join failed: the local transaction did
	// not start and nothing was left behind.
	ErrJoinFailed = errors.New("sqlproxy: could not join the transaction group")

	// ErrVoteFailed is returned by Tx.Commit (or an autocommit statement) in a
	// group when the prepared vote may not have been recorded. The work was
	// rolled back locally and the group will not commit it.
	ErrVoteFailed = errors.New("sqlproxy: vote not recorded")

	// ErrLocalTxFailed is returned by Tx.Commit in a group when a statement of
	// the local transaction failed: the proxy voted failed and rolled back.
	ErrLocalTxFailed = errors.New("sqlproxy: local transaction had a failed statement")

	// ErrBranchEnded means the group's branch on this datasource is finishing
	// or finished (the decision arrived, or it was rolled back locally), so it
	// takes no more work.
	ErrBranchEnded = errors.New("sqlproxy: branch ended")

	// ErrBranchBroken means the branch's physical connection failed
	// (driver.ErrBadConn). Its local transaction is lost. It deliberately does
	// not wrap driver.ErrBadConn: database/sql must not retry the statement on
	// another connection, outside the branch.
	ErrBranchBroken = errors.New("sqlproxy: branch connection broken")

	// ErrIncompatibleTx means a local transaction asked for options (isolation
	// level, read-only) that the group's existing branch on this datasource
	// cannot honour.
	ErrIncompatibleTx = errors.New("sqlproxy: transaction options incompatible with the group's branch")

	// ErrConnDetached is returned for work outside a group on a proxy
	// connection whose physical connection now serves a branch. It wraps
	// driver.ErrBadConn (nothing was sent), so database/sql drops the
	// connection and retries elsewhere where it can.
	ErrConnDetached = fmt.Errorf("sqlproxy: connection detached: its physical connection serves a branch: %w", driver.ErrBadConn)

	// ErrAlreadyDecided is returned by a second Held.Commit or Held.Rollback
	// call; the second call does nothing.
	ErrAlreadyDecided = errors.New("sqlproxy: decision already delivered to this branch")

	// ErrApplyPending is the ambiguous outcome of Held.Commit or Held.Rollback:
	// its ctx ended while local work of the group still used the branch. The
	// decision is recorded and is applied as soon as that work lets go of the
	// branch, but the caller cannot know the result.
	ErrApplyPending = errors.New("sqlproxy: decision recorded but not applied yet")

	// ErrBranchLost is returned by Held.Commit when the branch's local
	// transaction no longer exists (rolled back locally, connection lost): the
	// commit decision cannot be honoured on this datasource.
	ErrBranchLost = errors.New("sqlproxy: branch lost")

	// ErrApplyFailed means committing or rolling back the held local
	// transaction returned an error; its physical connection was closed.
	// The outcome may be unknown (an lcn commit, or an xa one-phase commit
	// whose connection died during XA COMMIT ... ONE PHASE): the error says
	// so, and the coordinator must report the branch as needing attention.
	ErrApplyFailed = errors.New("sqlproxy: applying the decision failed")

	// ErrBranchPrepared is returned for local work of a group whose xa
	// branch on this datasource is prepared (or preparing): the group is
	// committing, so it takes no more work.
	ErrBranchPrepared = errors.New("sqlproxy: branch prepared: the group is committing")

	// ErrInDoubt is returned by Held.Commit or Held.Rollback of a prepared
	// xa branch that could not be finished now: its own connection failed
	// and finishing it from another connection failed too (for example the
	// database is down). The branch stays prepared and durable, with its
	// locks; delivering the same decision again retries. It is never lost.
	ErrInDoubt = errors.New("sqlproxy: prepared branch in doubt: decision not applied yet")

	// ErrForbiddenInXA is wrapped by the error of a statement that cannot
	// run inside an xa branch (DDL and other statements that commit
	// implicitly, transaction control, LOCK TABLES...). The statement was
	// not sent; it counts as a failed statement of the local transaction.
	ErrForbiddenInXA = errors.New("sqlproxy: statement not allowed in an xa branch")
)

// forbiddenError is the error of a statement refused in an xa branch.
type forbiddenError struct {
	datasource, stmt string
}

func (e *forbiddenError) Error() string {
	return fmt.Sprintf("sqlproxy: datasource %q: %s cannot run in an %s branch (it commits implicitly or XA forbids it); run it outside the group",
		e.datasource, e.stmt, ModeXA)
}

func (e *forbiddenError) Is(target error) bool { return target == ErrForbiddenInXA }

// notBadConn returns err unchanged unless it is driver.ErrBadConn, which it
// replaces by ErrBranchBroken carrying the original text. A branch's physical
// connection cannot be swapped for another one, so database/sql must not see
// ErrBadConn from it (it would retry outside the branch).
func notBadConn(err error) error {
	if err != nil && errors.Is(err, driver.ErrBadConn) {
		return fmt.Errorf("%w: %v", ErrBranchBroken, err)
	}
	return err
}
