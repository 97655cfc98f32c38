package txclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/golcn/golcn/internal/groupctx"
	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/sqlproxy"
)

// Group is a transaction group started by this process (the starter).
type Group struct {
	c        *Client
	id       string
	deadline time.Time
}

// ID returns the group id (32 lower-case hex characters).
func (g *Group) ID() string { return g.id }

// Deadline returns the time after which the TxManager rolls the group back.
func (g *Group) Deadline() time.Time { return g.deadline }

// GroupID returns the group carried by ctx, if any.
func GroupID(ctx context.Context) (string, bool) { return groupctx.From(ctx) }

// Begin starts a group and returns a context carrying it: database work done
// with that context through the golcn driver, and HTTP calls made with it
// through Transport, join the group. If the TxManager cannot be reached, Begin
// returns an error and nothing is left behind.
func (c *Client) Begin(ctx context.Context) (context.Context, *Group, error) {
	m := &wire.Message{Type: wire.TypeCreate, TimeoutMS: c.cfg.GroupTimeout.Milliseconds()}
	resp, err := c.request(ctx, m)
	if err != nil {
		return ctx, nil, fmt.Errorf("txclient: begin group: %w", err)
	}
	g := &Group{c: c, id: resp.Group, deadline: time.UnixMilli(resp.Deadline)}
	c.active.add(g.id, g.deadline)
	return groupctx.With(ctx, g.id), g, nil
}

// Commit asks the TxManager to commit the group. It returns nil once the
// commit decision is durable (branches then apply it in the background); an
// error wrapping ErrRolledBack if the group was rolled back instead (a branch
// voted failed or never voted, or the deadline passed); an error wrapping
// ErrOutcomeUnknown if the answer was lost (the outcome is still all or
// nothing: ask with Status). Calling it again returns the same answer.
func (g *Group) Commit(ctx context.Context) error {
	resp, err := g.decide(ctx, true)
	g.c.active.remove(g.id)
	if err == nil {
		return nil
	}
	if remoteCode(err) == wire.CodeConflict && resp != nil && (resp.State == "ROLLING_BACK" || resp.State == "ROLLED_BACK") {
		return fmt.Errorf("%w: group %s: %s", ErrRolledBack, g.id, resp.Reason)
	}
	if errors.Is(err, ErrNotSent) || remoteCode(err) == wire.CodeUnavailable {
		// Nothing was decided by this call; the group rolls back at its
		// deadline unless a retry commits it.
		return fmt.Errorf("txclient: commit group %s: %w", g.id, err)
	}
	return fmt.Errorf("%w: group %s: %v", ErrOutcomeUnknown, g.id, err)
}

// decide sends the decide request, and sends it again while its answer is
// lost or the TxManager cannot be reached, for up to RequestTimeout (or until
// ctx ends). Deciding is idempotent at the TxManager (a repeated request gets
// the decision already made), so a retry can never change an outcome: it only
// turns an unknown answer into a known one.
func (g *Group) decide(ctx context.Context, commit bool) (*wire.Message, error) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 20 * time.Millisecond
	bo.MaxInterval = time.Second
	// A commit of a group with xa branches waits for the prepare phase,
	// which ends at the group's deadline at the latest.
	bo.MaxElapsedTime = g.c.cfg.RequestTimeout + max(0, time.Until(g.deadline))
	var resp *wire.Message
	var err error
	_ = backoff.Retry(func() error {
		resp, err = g.c.request(ctx, &wire.Message{Type: wire.TypeDecide, Group: g.id, Commit: commit})
		if errors.Is(err, ErrNotSent) || errors.Is(err, ErrNoAnswer) || remoteCode(err) == wire.CodeUnavailable {
			return err // retry
		}
		if err == nil && resp.State == "PREPARING" {
			err = fmt.Errorf("%w: group %s still preparing", ErrNoAnswer, g.id)
			return err // the TxManager stopped waiting (its session ended): ask again
		}
		return nil
	}, backoff.WithContext(bo, ctx))
	return resp, err
}

// Rollback asks the TxManager to roll the group back. Rolling back a group
// already rolled back is a no-op; rolling back a committed group returns an
// error (the decision never changes).
func (g *Group) Rollback(ctx context.Context) error {
	resp, err := g.decide(ctx, false)
	g.c.active.remove(g.id)
	if err != nil {
		return fmt.Errorf("txclient: rollback group %s: %w", g.id, err)
	}
	if resp.State == "COMMITTING" || resp.State == "COMMITTED" {
		return fmt.Errorf("txclient: rollback group %s: already decided %s", g.id, resp.State)
	}
	return nil
}

// Status asks the TxManager for the group's state ("ACTIVE", "PREPARING", "COMMITTING",
// "COMMITTED", "ROLLING_BACK", "ROLLED_BACK"). An unknown group is reported as
// an error wrapping ErrGroupNotActive.
func (g *Group) Status(ctx context.Context) (string, error) {
	return g.c.GroupState(ctx, g.id)
}

// Outcome is a group's final state as the TxManager recorded it.
type Outcome struct {
	// Committed is true for COMMITTED, false for ROLLED_BACK.
	Committed bool
	// Attention, when not empty, says why the group needs an operator: a
	// branch could not apply the decision (in lcn mode, a participant that
	// died holding a branch of a committed group lost its work).
	Attention string
	// Reason says why the group was decided as it was.
	Reason string
}

// Wait waits until every branch of the group has applied the decision (or
// was recorded lost) and returns the outcome. It asks the TxManager with
// growing intervals until ctx ends. Use it after Commit when the caller must
// know that the work is applied everywhere, not only decided.
func (g *Group) Wait(ctx context.Context) (Outcome, error) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 20 * time.Millisecond
	bo.MaxInterval = time.Second
	bo.MaxElapsedTime = 0
	for {
		resp, err := g.c.request(ctx, queryMsg(g.id))
		switch {
		case remoteCode(err) == wire.CodeNotFound:
			return Outcome{}, fmt.Errorf("%w: group %s unknown to the TxManager (expired, or never created)", ErrGroupNotActive, g.id)
		case err == nil && (resp.State == "COMMITTED" || resp.State == "ROLLED_BACK"):
			return Outcome{Committed: resp.State == "COMMITTED", Attention: resp.Attention, Reason: resp.Reason}, nil
		case err != nil && ctx.Err() != nil:
			return Outcome{}, fmt.Errorf("txclient: wait for group %s: %w", g.id, err)
		}
		select {
		case <-ctx.Done():
			return Outcome{}, fmt.Errorf("txclient: wait for group %s: %w", g.id, ctx.Err())
		case <-time.After(bo.NextBackOff()):
		}
	}
}

// GroupState asks the TxManager for a group's state.
func (c *Client) GroupState(ctx context.Context, group string) (string, error) {
	resp, err := c.request(ctx, &wire.Message{Type: wire.TypeQuery, Group: group})
	if remoteCode(err) == wire.CodeNotFound {
		return "", fmt.Errorf("%w: group %s unknown to the TxManager", ErrGroupNotActive, group)
	}
	if err != nil {
		return "", fmt.Errorf("txclient: query group %s: %w", group, err)
	}
	return resp.State, nil
}

// Do runs fn inside a group. If ctx already carries a group (this service
// was called inside one), fn simply runs in it: the starter decides. Otherwise
// Do begins a group, runs fn with its context, and commits if fn returns nil
// or rolls back if it returns an error (returning fn's error). A panic in fn
// rolls the group back and is re-raised.
func (c *Client) Do(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if _, ok := groupctx.From(ctx); ok {
		return fn(ctx)
	}
	gctx, g, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			_ = g.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
	}()
	if err := fn(gctx); err != nil {
		if rerr := g.Rollback(context.WithoutCancel(ctx)); rerr != nil {
			c.log.Warn("rollback after failure", "group", g.id, "err", rerr)
		}
		return err
	}
	return g.Commit(ctx)
}

// Join implements sqlproxy.Coordinator.
func (c *Client) Join(ctx context.Context, group, datasource, mode string) (string, error) {
	resp, err := c.request(ctx, &wire.Message{Type: wire.TypeJoin, Group: group, Datasource: datasource, Mode: mode})
	if err != nil {
		switch remoteCode(err) {
		case wire.CodeNotFound, wire.CodeConflict:
			return "", fmt.Errorf("%w: join group %s: %v", ErrGroupNotActive, group, err)
		}
		return "", fmt.Errorf("txclient: join group %s: %w", group, err)
	}
	c.reg.join(group, resp.Branch, mode)
	c.noteMode(datasource, mode)
	return resp.Branch, nil
}

// Vote implements sqlproxy.Coordinator.
func (c *Client) Vote(ctx context.Context, group, branch string, ok bool, reason string) error {
	_, err := c.request(ctx, &wire.Message{Type: wire.TypeVote, Group: group, Branch: branch, OK: ok, Reason: reason})
	c.cfg.Metrics.Voted(ok)
	if err != nil {
		return fmt.Errorf("txclient: vote for branch %s of group %s: %w", branch, group, err)
	}
	return nil
}

// Hold implements sqlproxy.Coordinator.
func (c *Client) Hold(group, branch string, h sqlproxy.Held) { c.reg.hold(group, branch, h) }

var _ sqlproxy.Coordinator = (*Client)(nil)

func queryMsg(group string) *wire.Message { return &wire.Message{Type: wire.TypeQuery, Group: group} }
