package txclient

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/sqlproxy"
)

type branchKey struct{ group, branch string }

// heldBranch is a branch that voted prepared and waits for its decision.
type heldBranch struct {
	h         sqlproxy.Held
	mode      string // the branch mode it joined with (for metrics)
	since     time.Time
	applying  bool // a decision is being applied; guarded by registry.mu
	preparing bool // a prepare request is being run; guarded by registry.mu
}

// recentLimit bounds the outcomes remembered for answering repeated
// decisions (a TxManager that missed our acknowledgement pushes again).
const recentLimit = 4096

// registry owns the branches this process holds. Decisions arrive from the
// TxManager (pushes, or answers to the ask loop) and are applied exactly once
// per branch, each on its own goroutine with a context detached from any
// request.
type registry struct {
	c *Client

	mu     sync.Mutex // guards held, joined, recent, order
	held   map[branchKey]*heldBranch
	joined map[branchKey]joinedBranch // joined, not held yet
	recent map[branchKey]string       // outcome already applied (wire.Outcome*)
	order  []branchKey                // FIFO of recent keys, for eviction
}

// joinedBranch is a branch joined and not held yet.
type joinedBranch struct {
	at   time.Time
	mode string
}

func newRegistry(c *Client) *registry {
	return &registry{c: c, held: make(map[branchKey]*heldBranch), joined: make(map[branchKey]joinedBranch),
		recent: make(map[branchKey]string)}
}

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// refs lists the held branches, for the hello after a reconnect.
func (r *registry) refs() []wire.BranchRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]wire.BranchRef, 0, len(r.held))
	for k := range r.held {
		out = append(out, wire.BranchRef{Group: k.group, Branch: k.branch})
		if len(out) == wire.MaxHeld {
			break
		}
	}
	return out
}

// join notes a branch this process joined and has not handed over yet, so
// that a commit decision arriving between its vote and its hold is not taken
// for the decision of a branch this process lost.
func (r *registry) join(group, branch, mode string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joined[branchKey{group, branch}] = joinedBranch{at: r.c.now(), mode: mode}
}

// joinedTTL bounds how long a joined branch waits for its hold before the
// registry forgets it (its local transaction ended without a prepared vote).
const joinedTTL = 10 * time.Minute

// hold records a voted branch. Holding it again is a no-op.
func (r *registry) hold(group, branch string, h sqlproxy.Held) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := branchKey{group, branch}
	j, ok := r.joined[k]
	mode := j.mode
	if !ok || mode == "" {
		mode = "lcn"
	}
	delete(r.joined, k)
	if _, ok := r.held[k]; !ok {
		r.held[k] = &heldBranch{h: h, since: r.c.now(), mode: mode}
		r.c.cfg.Metrics.BranchHeld(mode)
	}
}

// decision applies the group's decision to the branch, once. A decision for a
// branch this process does not hold is answered from the recent outcomes, or:
// rollback is acknowledged with no write (DESIGN invariant 6); commit is
// reported lost, because the work it names is not here to commit.
func (r *registry) decision(group, branch string, commit bool) {
	k := branchKey{group, branch}
	r.mu.Lock()
	hb, ok := r.held[k]
	if ok && hb.applying {
		r.mu.Unlock()
		return // already being applied; its acknowledgement follows
	}
	if ok {
		hb.applying = true
	}
	prev, done := r.recent[k]
	_, pending := r.joined[k]
	r.mu.Unlock()
	if !ok && !done && commit && pending {
		// Voted prepared, not handed over yet: the TxManager pushes again
		// (and the ask loop asks) once it is held.
		return
	}

	r.c.wg.Add(1)
	go func() {
		defer r.c.wg.Done()
		var outcome, reason string
		switch {
		case ok:
			outcome, reason = r.apply(hb, commit)
			r.c.cfg.Metrics.Applied(orDefault(outcome, ApplyError))
			r.mu.Lock()
			if outcome == "" {
				// In doubt (a prepared xa branch that could not be finished
				// now): keep holding it; the TxManager pushes the decision
				// again and the ask loop asks.
				hb.applying = false
				r.mu.Unlock()
				return
			}
			delete(r.held, k)
			r.remember(k, outcome)
			r.mu.Unlock()
			r.c.cfg.Metrics.BranchReleased(hb.mode)
		case done:
			outcome = prev
		case !commit:
			outcome = wire.OutcomeRolledBack
		default:
			outcome, reason = wire.OutcomeLost, "branch not held by this process (restarted?)"
		}
		r.ack(group, branch, outcome, reason)
	}()
}

// orphan finishes a prepared xa branch that another process of this
// service held and left (it died, perhaps after applying the decision and
// before acknowledging it), on this process's datasource of the same name,
// and acknowledges the outcome. A branch this process holds itself takes
// the normal path. If the branch cannot be finished here (no such
// datasource, database unreachable), nothing is acknowledged: the
// TxManager asks again.
func (r *registry) orphan(group, branch, datasource string, commit bool) {
	r.mu.Lock()
	_, held := r.held[branchKey{group, branch}]
	r.mu.Unlock()
	if held {
		r.decision(group, branch, commit)
		return
	}
	r.c.wg.Add(1)
	go func() {
		defer r.c.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.c.ctx), r.c.cfg.ApplyTimeout)
		defer cancel()
		if err := sqlproxy.FinishOrphan(ctx, datasource, group, branch, commit); err != nil {
			r.c.log.Warn("cannot finish a prepared branch left by a gone instance; the TxManager will ask again",
				"group", group, "branch", branch, "datasource", datasource, "err", err)
			return
		}
		outcome := wire.OutcomeRolledBack
		if commit {
			outcome = wire.OutcomeCommitted
		}
		r.c.cfg.Metrics.Recovered(outcome)
		r.ack(group, branch, outcome, "finished for a gone instance by "+r.c.cfg.Service+"/"+r.c.cfg.Instance)
	}()
}

// prepare runs the prepare phase for a held branch (xa: XA END and XA
// PREPARE) and reports the result. A branch this process does not hold
// cannot be prepared: its work is gone with the connection that did it
// (a prepared one would be found by recovery instead).
func (r *registry) prepare(group, branch string) {
	k := branchKey{group, branch}
	r.mu.Lock()
	hb, ok := r.held[k]
	_, pending := r.joined[k]
	busy := ok && (hb.preparing || hb.applying)
	if ok && !busy {
		hb.preparing = true
	}
	r.mu.Unlock()
	if busy || (!ok && pending) {
		return // its answer follows, or the TxManager asks again once it is held
	}
	r.c.wg.Add(1)
	go func() {
		defer r.c.wg.Done()
		okVote, reason := false, "branch not held by this process (restarted?)"
		if ok {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.c.ctx), r.c.cfg.ApplyTimeout)
			err := hb.h.Prepare(ctx)
			cancel()
			r.mu.Lock()
			hb.preparing = false
			r.mu.Unlock()
			okVote, reason = err == nil, ""
			if err != nil {
				reason = err.Error()
				r.c.log.Warn("prepare of held branch failed: the group rolls back", "group", group, "branch", branch, "err", err)
			}
		}
		ctx, cancel := context.WithTimeout(r.c.ctx, r.c.cfg.RequestTimeout)
		defer cancel()
		_, err := r.c.request(ctx, &wire.Message{Type: wire.TypePrepared, Group: group, Branch: branch, OK: okVote, Reason: reason})
		if err != nil && !errors.Is(err, ErrClosed) {
			r.c.log.Warn("prepare result not delivered; the TxManager will ask again", "group", group, "branch", branch, "err", err)
		}
	}()
}

// apply runs the decision on the held branch on a detached context. An
// empty outcome means the branch is in doubt: durable, not finished yet, to
// be applied again later.
func (r *registry) apply(hb *heldBranch, commit bool) (outcome, reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.c.ctx), r.c.cfg.ApplyTimeout)
	defer cancel()
	if commit {
		if err := hb.h.Commit(ctx); err != nil {
			if errors.Is(err, sqlproxy.ErrInDoubt) {
				r.c.log.Warn("commit of a prepared branch not finished yet; will retry", "err", err)
				return "", ""
			}
			r.c.log.Error("commit of held branch failed: its work is lost", "err", err)
			return wire.OutcomeLost, err.Error()
		}
		return wire.OutcomeCommitted, ""
	}
	if err := hb.h.Rollback(ctx); err != nil {
		if errors.Is(err, sqlproxy.ErrInDoubt) {
			r.c.log.Warn("rollback of a prepared branch not finished yet; will retry", "err", err)
			return "", ""
		}
		// The transaction is not committed: a failed rollback closes the
		// connection and the database discards the work.
		r.c.log.Warn("rollback of held branch reported an error", "err", err)
		return wire.OutcomeRolledBack, err.Error()
	}
	return wire.OutcomeRolledBack, ""
}

// remember records an applied outcome; r.mu must be held.
func (r *registry) remember(k branchKey, outcome string) {
	if _, ok := r.recent[k]; ok {
		return
	}
	r.recent[k] = outcome
	r.order = append(r.order, k)
	if len(r.order) > recentLimit {
		delete(r.recent, r.order[0])
		r.order = r.order[1:]
	}
}

// ack reports an outcome to the TxManager. If it cannot, the TxManager keeps
// pushing the decision and the recent outcomes answer it.
func (r *registry) ack(group, branch, outcome, reason string) {
	ctx, cancel := context.WithTimeout(r.c.ctx, r.c.cfg.RequestTimeout)
	defer cancel()
	_, err := r.c.request(ctx, &wire.Message{Type: wire.TypeAck, Group: group, Branch: branch, Outcome: outcome, Reason: reason})
	if err != nil && !errors.Is(err, ErrClosed) {
		r.c.log.Warn("acknowledgement not delivered; the TxManager will push again", "group", group, "branch", branch, "err", err)
	}
}

// askLoop asks the TxManager for the decision of every branch held longer
// than AskInterval, and keeps asking at that interval until it learns it. A
// branch never decides by this process's clock (DESIGN invariant 3).
func (r *registry) askLoop(ctx context.Context) {
	t := time.NewTicker(r.c.cfg.AskInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := r.c.now()
		var ask []branchKey
		r.mu.Lock()
		for k, j := range r.joined {
			if now.Sub(j.at) > joinedTTL {
				delete(r.joined, k)
			}
		}
		for k, hb := range r.held {
			if !hb.applying && now.Sub(hb.since) >= r.c.cfg.AskInterval {
				ask = append(ask, k)
				hb.since = now
			}
		}
		r.mu.Unlock()
		for _, k := range ask {
			r.askOne(ctx, k)
		}
	}
}

func (r *registry) askOne(ctx context.Context, k branchKey) {
	resp, err := r.c.request(ctx, &wire.Message{Type: wire.TypeQuery, Group: k.group})
	switch {
	case err == nil:
		switch resp.State {
		case "COMMITTING", "COMMITTED":
			r.decision(k.group, k.branch, true)
		case "ROLLING_BACK", "ROLLED_BACK":
			r.decision(k.group, k.branch, false)
		case "PREPARING":
			r.prepare(k.group, k.branch) // in case the prepare request was lost
		}
	case remoteCode(err) == wire.CodeNotFound:
		r.decision(k.group, k.branch, false) // presumed abort
	default:
		r.c.log.Warn("cannot ask the TxManager for a held branch's decision; will ask again", "group", k.group, "err", err)
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
