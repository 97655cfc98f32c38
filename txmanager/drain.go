package txmanager

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// errDraining refuses new groups while the server drains.
var errDraining = errors.New("txmanager: draining for shutdown: not accepting new groups")

// Drain prepares a shutdown: from now on the server refuses new groups
// (REST 503, websocket error code unavailable) and /readyz answers 503,
// while everything else goes on: requests in progress, votes, decisions,
// acknowledgements, phase-2 pushes. Drain waits until no request (REST or
// websocket) is in progress and every open session has written the pushes
// queued for it, or until ctx ends (then it returns an error saying what
// it was waiting for). Close then ends the sessions, with a normal close
// frame. Safe to call more than once and concurrently with requests.
func (s *Server) Drain(ctx context.Context) error {
	if !s.draining.Swap(true) {
		s.log.Info("draining: new groups refused", "sessions", s.Sessions(), "requests", s.requests.count())
	}
	if err := s.requests.wait(ctx); err != nil {
		return fmt.Errorf("txmanager: drain: %d requests still in progress: %w", s.requests.count(), err)
	}
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		if err := ss.flush(ctx); err != nil {
			return fmt.Errorf("txmanager: drain: pushes to %s not written: %w", ss.id, err)
		}
	}
	s.log.Info("drained")
	return nil
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// tracker counts requests in progress and lets Drain wait for none.
// Safe for concurrent use.
type tracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n is 0
}

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.idle)
		t.idle = nil
	}
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// wait returns when no request is in progress, or ctx.Err().
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
