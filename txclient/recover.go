package txclient

import (
	"context"
	"fmt"

	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/sqlproxy"
)

// Resolve implements sqlproxy.Resolver: it tells the proxy's xa recovery
// what to do with a branch it found prepared in a database (XA RECOVER) that
// no live branch of this process holds: left by a crashed process, a killed
// connection or a restarted database.
//
//   - an unknown group is rolled back (presumed abort: the TxManager forgets
//     a group only once every branch acknowledged its outcome);
//   - a branch of another service is skipped: that service recovers it;
//   - a decided group's branch gets the decision;
//   - a branch that the TxManager still waits for in the prepare phase is
//     reported prepared (it is: the database lists it), on behalf of the
//     process that prepared it; the decision follows, and a later round
//     applies it.
//
// Any other state (ACTIVE) is left for a later round.
func (c *Client) Resolve(ctx context.Context, group, branch string) (sqlproxy.Resolution, error) {
	resp, err := c.request(ctx, &wire.Message{Type: wire.TypeQuery, Group: group, Branch: branch})
	switch {
	case remoteCode(err) == wire.CodeNotFound:
		// The group is unknown (or has no such branch): it cannot commit
		// this work.
		c.cfg.Metrics.Recovered(RecoveryRolledBack)
		return sqlproxy.ResolveRollback, nil
	case err != nil:
		return sqlproxy.ResolveWait, fmt.Errorf("txclient: resolve branch %s of group %s: %w", branch, group, err)
	}
	if resp.Service != c.cfg.Service {
		c.cfg.Metrics.Recovered(RecoveryLeft)
		return sqlproxy.ResolveSkip, nil
	}
	switch resp.State {
	case "COMMITTING", "COMMITTED":
		c.cfg.Metrics.Recovered(RecoveryCommitted)
		return sqlproxy.ResolveCommit, nil
	case "ROLLING_BACK", "ROLLED_BACK":
		c.cfg.Metrics.Recovered(RecoveryRolledBack)
		return sqlproxy.ResolveRollback, nil
	case "PREPARING":
		if resp.BranchState == "READY" {
			_, err := c.request(ctx, &wire.Message{Type: wire.TypePrepared, Group: group, Branch: branch, OK: true})
			if err != nil {
				return sqlproxy.ResolveWait, fmt.Errorf("txclient: report recovered branch %s of group %s prepared: %w", branch, group, err)
			}
			c.log.Info("recovered a prepared branch during the prepare phase", "group", group, "branch", branch)
		}
	}
	c.cfg.Metrics.Recovered(RecoveryAsked)
	return sqlproxy.ResolveWait, nil
}

// Resolved implements sqlproxy.Resolver: it acknowledges the outcome of a
// recovered branch. The TxManager accepts it from any instance of the
// branch's service, and a repeated acknowledgement is a no-op.
func (c *Client) Resolved(ctx context.Context, group, branch string, committed bool) error {
	outcome := wire.OutcomeRolledBack
	if committed {
		outcome = wire.OutcomeCommitted
	}
	_, err := c.request(ctx, &wire.Message{Type: wire.TypeAck, Group: group, Branch: branch, Outcome: outcome,
		Reason: "recovered by " + c.cfg.Service + "/" + c.cfg.Instance})
	switch {
	case remoteCode(err) == wire.CodeNotFound:
		return nil // rolled back under presumed abort: nothing to acknowledge
	case err != nil:
		return fmt.Errorf("txclient: acknowledge recovered branch %s of group %s: %w", branch, group, err)
	}
	c.log.Info("recovered branch finished", "group", group, "branch", branch, "outcome", outcome)
	return nil
}

var _ sqlproxy.Resolver = (*Client)(nil)

// noteMode records the branch mode a datasource uses, for Status.
func (c *Client) noteMode(datasource, mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.modes == nil {
		c.modes = make(map[string]string)
	}
	if c.modes[datasource] != mode {
		c.modes[datasource] = mode
		c.log.Info("datasource branch mode", "datasource", datasource, "mode", mode)
	}
}
