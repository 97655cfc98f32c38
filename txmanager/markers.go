package txmanager

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// markIfStuck gives g a phase2_stuck marker when its phase 2 has gone on
// for Config.AttentionAfter since the decision without finishing. The
// retrier calls it after each push; the store makes it idempotent (one
// marker per group), and the server remembers the groups it marked so as
// not to ask again.
func (s *Server) markIfStuck(ctx context.Context, g *Group) {
	if g == nil || !g.State.Decided() || g.State.Terminal() {
		return
	}
	since := msDuration(s.nowMS() - g.DecidedMS)
	if since < s.cfg.AttentionAfter {
		return
	}
	s.mu.Lock()
	done := s.stuck[g.ID]
	s.mu.Unlock()
	if done {
		return
	}
	var waiting []string
	for _, b := range g.Branches {
		if !b.State.Done() {
			waiting = append(waiting, fmt.Sprintf("%s (service %s, instance %s)", b.ID, b.Service, b.Instance))
		}
	}
	m := Marker{ID: MarkerID(g.ID, phase2Suffix), Kind: MarkerPhase2Stuck, Group: g.ID, CreatedMS: s.nowMS(),
		Detail: fmt.Sprintf("%s decided %s ago; phase 2 still unacknowledged by %d branch(es): %v",
			g.State, since.Round(time.Second), len(waiting), waiting)}
	created, err := s.store.AddMarker(ctx, m)
	switch {
	case errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound):
		return // finished (or gone) in the meantime
	case err != nil:
		s.log.Warn("retrier: add compensation marker", "group", g.ID, "err", err)
		return
	case created:
		s.metrics.markersCreated.WithLabelValues(string(MarkerPhase2Stuck)).Inc()
		s.log.Warn("phase 2 stuck: compensation marker created", "group", g.ID, "marker", m.ID, "decided_ago", since.Round(time.Second))
	}
	s.mu.Lock()
	s.stuck[g.ID] = true
	s.mu.Unlock()
}

// retryNow pushes phase 2 of group id again at once and restarts its
// backoff (the operator's retry). It refuses (ErrConflict) a group that is
// not decided, or is terminal: nothing to push.
func (s *Server) retryNow(ctx context.Context, id string) (*Group, error) {
	g, err := s.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !g.State.Decided() || g.State.Terminal() {
		return nil, conflict(g, "nothing to retry: phase 2 runs only for a decided group that is not finished")
	}
	s.mu.Lock()
	s.retry[id] = retryState{next: s.now().Add(s.cfg.RetryMin), backoff: s.cfg.RetryMin}
	s.mu.Unlock()
	s.metrics.retries.Inc()
	s.log.Info("phase 2 retry asked by an operator", "group", id)
	_, after, err := s.stepGroup(ctx, Event{Kind: EvRetry, Group: id})
	if err != nil {
		return nil, err
	}
	if after == nil {
		return nil, errGroupNotFound(id)
	}
	return after, nil
}
