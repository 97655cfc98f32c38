package txmanager

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golcn/golcn/internal/failpoint"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/wire"
)

// Server is a TxManager: it owns the client sessions, runs the coordinator
// core against the Store, pushes decisions and retries them until every
// branch acknowledges, and rolls back groups past their deadline.
//
// Create one with New, serve Handler on an HTTP listener, and call Run to
// start the reaper and the phase-2 retrier; Close stops everything. Handler
// may be served before Run is called.
type Server struct {
	cfg   Config
	store Store
	auth  atomic.Pointer[authenticator]
	log   *slog.Logger
	now   func() time.Time

	locks [256]sync.Mutex // per-group serialisation, striped by id
	cache *groupCache     // open groups' records as this server last wrote them (cache.go)
	fp    fpState         // the fault suite's message failpoints (failpoint builds)
	seed  maphash.Seed

	metrics  *metrics
	ui       AdminUI       // nil: no admin page
	draining atomic.Bool   // Drain was called: no new groups
	requests tracker       // REST and websocket requests in progress (Drain waits)
	snap     snapshotCache // store counts for the gauges

	mu       sync.Mutex // guards sessions, retry, gone, waiters, stuck
	sessions map[string]*session
	waiters  map[string]*decisionWaiters // PREPARING groups whose starter waits for the decision
	retry    map[string]retryState       // decided groups awaiting acks: next push time
	gone     map[string]time.Time        // session id -> when its last session ended (HTTP owners: their last request)
	stuck    map[string]bool             // groups given a phase2_stuck marker by this server
	started  time.Time                   // owners never seen by this server count as gone since then

	wg        sync.WaitGroup // every goroutine the server starts
	closeOnce sync.Once
	closed    chan struct{}
}

type retryState struct {
	next    time.Time
	backoff time.Duration
}

// Option adjusts a Server at construction.
type Option func(*Server)

// WithClock makes the server read time from now (tests).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// SessionAuthenticator authenticates requests by a browser session (the
// admin page's) instead of a bearer token.
type SessionAuthenticator interface {
	// Authenticate returns the principal of r's session, if r carries a
	// valid one. It must not write to r.
	Authenticate(r *http.Request) (principal string, ok bool)
	// CheckCSRF reports whether r carries its session's CSRF token. Every
	// state-changing request authenticated by a session must.
	CheckCSRF(r *http.Request) bool
}

// AdminUI is the admin web page: its handler, mounted at /admin/ (it gets
// the full request path), and the sessions it creates, which the REST
// API's operator endpoints accept. Package adminui implements it.
type AdminUI interface {
	SessionAuthenticator
	Handler() http.Handler
}

// WithAdminUI mounts ui at /admin/ and accepts its sessions on the
// operator endpoints (admin role; a POST needs the session's CSRF token).
// A nil ui is no admin page.
func WithAdminUI(ui AdminUI) Option { return func(s *Server) { s.ui = ui } }

// New returns a TxManager over store. cfg is completed with defaults and
// validated; the error names the first bad setting.
func New(cfg Config, store Store, opts ...Option) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("txmanager: nil store")
	}
	s := &Server{
		cfg:      cfg,
		store:    store,
		log:      cfg.Logger,
		now:      time.Now,
		seed:     maphash.MakeSeed(),
		sessions: make(map[string]*session),
		retry:    make(map[string]retryState),
		gone:     make(map[string]time.Time),
		waiters:  make(map[string]*decisionWaiters),
		stuck:    make(map[string]bool),
		closed:   make(chan struct{}),
		cache:    newGroupCache(groupCacheMax),
	}
	for _, o := range opts {
		o(s)
	}
	s.metrics = newMetrics(s)
	s.store = timedStore{Store: store, h: s.metrics.storeLat}
	s.started = s.now()
	if err := s.SetAuth(cfg.Auth); err != nil {
		return nil, err
	}
	if cfg.Auth.Insecure {
		s.log.Warn("AUTHENTICATION DISABLED (auth.insecure): any client that reaches this port can decide groups; development only")
	}
	return s, nil
}

// SetAuth replaces the accepted credentials while the server runs (token
// rotation: sessions already open stay open; new handshakes and REST calls
// use the new table). It refuses a configuration New would refuse.
func (s *Server) SetAuth(cfg AuthConfig) error {
	a, err := newAuthenticator(cfg)
	if err != nil {
		return fmt.Errorf("txmanager: invalid config: %w", err)
	}
	s.auth.Store(a)
	return nil
}

// Sessions returns the number of open client sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Run runs the reaper and the phase-2 retrier until ctx is done or Close is
// called. It returns nil after a Close, ctx.Err() otherwise.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Register the loops under mu, where Close marks the server closed, so
	// that Close's Wait never races this Add.
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return nil
	default:
	}
	s.wg.Add(2)
	s.mu.Unlock()
	go func() { defer s.wg.Done(); s.reapLoop(ctx) }()
	go func() { defer s.wg.Done(); s.retryLoop(ctx) }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return nil
	}
}

// Close closes every client session and stops the background loops, waiting
// for all of them. It does not close the store. Safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.closed)
		sessions := make([]*session, 0, len(s.sessions))
		for _, ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		// Outside s.mu: closing a session takes s.mu to unregister it.
		for _, ss := range sessions {
			ss.close("txmanager shutting down")
		}
	})
	s.wg.Wait()
	return nil
}

func (s *Server) nowMS() int64 { return s.now().UnixMilli() }

func (s *Server) lockFor(id string) *sync.Mutex {
	return &s.locks[maphash.String(s.seed, id)%uint64(len(s.locks))]
}

// groupCacheMax bounds the open groups whose records the server keeps
// (about 1 KiB each).
const groupCacheMax = 1 << 16

// errUnavailable marks store failures: the request may be retried.
var errUnavailable = errors.New("txmanager: store unavailable")

// step runs the core for ev under the group's lock: load, step, persist each
// transition (compare-and-set), and only then push the decisions. A lost
// compare-and-set (another TxManager, or the reaper, got there first) reloads
// and steps again.
func (s *Server) step(ctx context.Context, ev Event) (Reply, error) {
	r, _, err := s.stepGroup(ctx, ev)
	return r, err
}

// stepGroup is step that also returns the group after the event (nil if
// the store does not know it).
func (s *Server) stepGroup(ctx context.Context, ev Event) (Reply, *Group, error) {
	mu := s.lockFor(ev.Group)
	mu.Lock()
	defer mu.Unlock()
	const attempts = 8
	cached := cacheable(ev.Kind)
	for range attempts {
		var g *Group
		fromCache := false
		if cached {
			g = s.cache.get(ev.Group)
			fromCache = g != nil
		}
		if !fromCache {
			var err error
			g, err = s.store.Get(ctx, ev.Group)
			if errors.Is(err, ErrNotFound) {
				g = nil
			} else if err != nil {
				return Reply{}, nil, fmt.Errorf("%w: load group %s: %v", errUnavailable, ev.Group, err)
			}
		}
		ev.NowMS = s.nowMS()
		if ev.Kind == EvRetry && g != nil {
			ev.Absent = s.absentOwners(g)
		}
		res := Step(g, ev)
		if fromCache && len(res.Transitions) == 0 {
			// Nothing to change: answer from the store's record, not the copy.
			cached = false
			continue
		}
		raced, committed := false, false
		for _, t := range res.Transitions {
			if t.Kind == TransDecide && t.GroupTo == GroupCommitting {
				failpoint.Hit(failpoint.BeforeCommitDecide, "group="+t.Group)
			}
			if fromCache {
				t.CheckVersion, t.IfVersion = true, g.Version
			}
			after, err := s.store.Apply(ctx, t)
			if err != nil {
				s.cache.drop(ev.Group)
				if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
					raced = true
					break
				}
				return Reply{}, nil, fmt.Errorf("%w: %s group %s: %v", errUnavailable, t.Kind, ev.Group, err)
			}
			g = after
			s.cache.put(after)
			s.metrics.observeTransition(t, after, s.now())
			s.logTransition(t, after)
			if t.Kind == TransDecide {
				committed = committed || t.GroupTo == GroupCommitting
				if t.GroupTo != GroupPreparing {
					defer s.notifyDecided(t.Group) // after the pushes below
				}
				s.scheduleRetry(t.Group)
			}
		}
		if raced {
			continue
		}
		if committed {
			failpoint.Hit(failpoint.AfterCommitDecide, "group="+ev.Group)
		}
		s.dispatch(res.Sends)
		if committed {
			failpoint.Hit(failpoint.AfterCommitNotify, "group="+ev.Group)
		}
		return res.Reply, g, nil
	}
	return Reply{}, nil, fmt.Errorf("%w: group %s: %d compare-and-set conflicts in a row", errUnavailable, ev.Group, attempts)
}

// logTransition logs a persisted transition (the group after it is g).
func (s *Server) logTransition(t Transition, g *Group) {
	switch {
	case t.Kind == TransDecide && t.GroupTo == GroupPreparing:
		s.log.Debug("group preparing", "group", t.Group, "reason", t.Reason)
	case t.Kind == TransDecide:
		s.log.Info("group decided", "group", t.Group, "state", t.GroupTo, "reason", t.Reason)
	case t.Kind == TransBranchDone && t.BranchTo == BranchLost:
		s.log.Warn("branch lost: compensation marker created", "group", t.Group, "branch", t.BranchID,
			"marker", MarkerID(t.Group, t.BranchID), "reason", t.Reason)
	default:
		s.log.Debug("group "+t.Kind.String(), "group", t.Group, "branch", t.BranchID, "reason", t.Reason)
	}
	if g.State.Terminal() {
		if g.Attention != "" {
			s.log.Warn("group finished: needs attention", "group", g.ID, "state", g.State, "attention", g.Attention)
		} else {
			s.log.Debug("group finished", "group", g.ID, "state", g.State)
		}
	}
}

// create records a new group started by instance, a client of service
// (a websocket session's id, or "<service>/http" for a REST caller). It
// refuses while the server drains (errDraining).
func (s *Server) create(ctx context.Context, service, instance string, timeout time.Duration) (*Group, error) {
	if s.draining.Load() {
		return nil, errDraining
	}
	if timeout <= 0 {
		timeout = s.cfg.GroupTimeout
	}
	if timeout > s.cfg.MaxGroupTimeout {
		timeout = s.cfg.MaxGroupTimeout
	}
	now := s.nowMS()
	g := &Group{
		ID:             gid.New(),
		State:          GroupActive,
		StarterService: service,
		Starter:        instance,
		CreatedMS:      now,
		DeadlineMS:     now + timeout.Milliseconds(),
	}
	if err := s.store.Create(ctx, g); err != nil {
		return nil, fmt.Errorf("%w: create group: %v", errUnavailable, err)
	}
	s.cache.put(g)
	s.metrics.started.Inc()
	s.log.Debug("group created", "group", g.ID, "service", service, "deadline_ms", g.DeadlineMS)
	return g, nil
}

// dispatch pushes decisions to the sessions that own the branches. A branch
// whose owner is not connected, or whose push is lost, is reached by the
// retrier or by the owner's resync when it reconnects.
func (s *Server) dispatch(sends []Send) {
	for i, d := range sends {
		if i == 1 && !d.Prepare { // one decision push handed over, others to go
			if d.Commit {
				failpoint.Hit(failpoint.MidCommitNotify, "group="+d.Group)
			} else {
				failpoint.Hit(failpoint.MidRollbackNotify, "group="+d.Group)
			}
		}
		s.mu.Lock()
		ss := s.sessions[d.Instance]
		if d.Orphan {
			ss = s.sessionOfServiceLocked(d.Service)
		}
		s.mu.Unlock()
		if ss == nil {
			continue
		}
		if d.Orphan {
			ss.push(&wire.Message{Type: wire.TypeDecision, Group: d.Group, Branch: d.Branch, Commit: d.Commit,
				Mode: "xa", Datasource: d.Datasource})
			continue
		}
		if d.Prepare {
			ss.push(&wire.Message{Type: wire.TypePrepare, Group: d.Group, Branch: d.Branch})
			continue
		}
		m := &wire.Message{Type: wire.TypeDecision, Group: d.Group, Branch: d.Branch, Commit: d.Commit}
		ss.push(m)
		if failpoint.Enabled {
			s.fpAfterPush(ss, m)
		}
	}
}

// awaitDecision waits until the PREPARING group of a commit request ev is
// decided and answers ev again (the answer is then the decision). It wakes
// when this server persists the decision and, in case another TxManager
// sharing the store made it, looks at the store every decisionPoll. It
// gives up, answering PREPARING, when ctx ends: the client asks again.
func (s *Server) awaitDecision(ctx context.Context, ev Event) (Reply, error) {
	const decisionPoll = 250 * time.Millisecond
	t := time.NewTicker(decisionPoll)
	defer t.Stop()
	for {
		ch := s.decidedChan(ev.Group)
		r, err := s.step(ctx, ev)
		if err != nil || r.Code != ReplyOK || r.State != GroupPreparing {
			s.releaseDecidedChan(ev.Group, ch)
			return r, err
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			s.releaseDecidedChan(ev.Group, ch)
			return r, nil
		case <-s.closed:
			s.releaseDecidedChan(ev.Group, ch)
			return r, nil
		}
		s.releaseDecidedChan(ev.Group, ch)
	}
}

// decidedChan returns a channel closed when this server next persists a
// decision (or a PREPARING group's end) for group. Every call must be
// paired with releaseDecidedChan.
func (s *Server) decidedChan(group string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiters[group]
	if w == nil {
		w = &decisionWaiters{ch: make(chan struct{})}
		s.waiters[group] = w
	}
	w.n++
	return w.ch
}

func (s *Server) releaseDecidedChan(group string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.waiters[group]; w != nil && w.ch == ch {
		if w.n--; w.n == 0 {
			delete(s.waiters, group)
		}
	}
}

// notifyDecided wakes the waiters of group.
func (s *Server) notifyDecided(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.waiters[group]; w != nil {
		close(w.ch)
		delete(s.waiters, group)
	}
}

type decisionWaiters struct {
	ch chan struct{}
	n  int
}

// sessionOfServiceLocked returns a live session of service, or nil; s.mu
// must be held.
func (s *Server) sessionOfServiceLocked(service string) *session {
	for _, ss := range s.sessions {
		if ss.service == service {
			return ss
		}
	}
	return nil
}

// absentOwners lists the owners of g's branches not done that have had no
// session for longer than LostAfter (never connected to this server counts
// from its start).
func (s *Server) absentOwners(g *Group) []string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range g.Branches {
		if b.State.Done() || s.sessions[b.Instance] != nil || slices.Contains(out, b.Instance) {
			continue
		}
		since, ok := s.gone[b.Instance]
		if !ok {
			since = s.started
		}
		if now.Sub(since) >= s.cfg.LostAfter {
			out = append(out, b.Instance)
		}
	}
	return out
}

// sessionEnded records when id's session ended (for absentOwners); s.mu
// must be held.
func (s *Server) sessionEndedLocked(id string) {
	s.gone[id] = s.now()
	if len(s.gone) > 100000 {
		// Bound memory: forget the oldest half (they count as gone since
		// the server started, which is earlier still).
		cut := s.now().Add(-s.cfg.LostAfter)
		for k, t := range s.gone {
			if t.Before(cut) {
				delete(s.gone, k)
			}
		}
	}
}

func (s *Server) scheduleRetry(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.retry[group]; !ok {
		s.retry[group] = retryState{next: s.now().Add(s.cfg.RetryMin), backoff: s.cfg.RetryMin}
	}
}

// reapLoop rolls back ACTIVE groups past their deadline (presumed abort) and
// purges terminal groups past their retention.
func (s *Server) reapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	lastPurge := s.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		case <-t.C:
		}
		s.reapOnce(ctx)
		if s.now().Sub(lastPurge) >= time.Minute {
			lastPurge = s.now()
			if n, err := s.store.Purge(ctx, lastPurge); err != nil {
				s.log.Warn("purge failed", "err", err)
			} else if n > 0 {
				s.log.Debug("purged terminal groups", "count", n)
			}
		}
	}
}

func (s *Server) reapOnce(ctx context.Context) {
	ids, err := s.store.Expired(ctx, s.now(), 1000)
	if err != nil {
		s.log.Warn("reaper: list expired groups", "err", err)
		return
	}
	for _, id := range ids {
		if _, err := s.step(ctx, Event{Kind: EvTick, Group: id}); err != nil {
			s.log.Warn("reaper: roll back expired group", "group", id, "err", err)
		}
	}
}

// retryLoop pushes decisions again to branches that have not acknowledged,
// with exponential backoff per group, until the group is terminal. After a
// restart it learns the undone groups from the store.
func (s *Server) retryLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetryMin)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		case <-t.C:
		}
		s.retryOnce(ctx)
	}
}

func (s *Server) retryOnce(ctx context.Context) {
	ids, err := s.store.Undone(ctx, 10000)
	if err != nil {
		s.log.Warn("retrier: list undone groups", "err", err)
		return
	}
	now := s.now()
	live := make(map[string]bool, len(ids))
	var due []string
	s.mu.Lock()
	for _, id := range ids {
		live[id] = true
		st, ok := s.retry[id]
		if !ok {
			// Not known here (decided before a restart, or by another
			// TxManager): push now.
			st = retryState{next: now, backoff: s.cfg.RetryMin}
		}
		if !now.Before(st.next) {
			due = append(due, id)
			st.next = now.Add(st.backoff)
			st.backoff = min(2*st.backoff, s.cfg.RetryMax)
		}
		s.retry[id] = st
	}
	for id := range s.retry {
		if !live[id] {
			delete(s.retry, id)
			delete(s.stuck, id)
		}
	}
	s.mu.Unlock()
	for _, id := range due {
		s.metrics.retries.Inc()
		_, g, err := s.stepGroup(ctx, Event{Kind: EvRetry, Group: id})
		if err != nil {
			s.log.Warn("retrier: push decision", "group", id, "err", err)
			continue
		}
		s.markIfStuck(ctx, g)
	}
}

// Group returns the store's record of a group (for operators and tests).
func (s *Server) Group(ctx context.Context, id string) (*Group, error) {
	return s.store.Get(ctx, id)
}
