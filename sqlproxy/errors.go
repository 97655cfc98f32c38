package sqlproxy

import (
	"database/sql/driver"
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (test
// with [errors.Is]) and, where there is one, the underlying cause.
var (
	// ErrModeNotSupported is returned at construction for a branch mode this
	// version cannot run yet ("xa", "auto").
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
	ErrApplyFailed = errors.New("sqlproxy: applying the decision failed")
)

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
