package txmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	seed  maphash.Seed

	mu       sync.Mutex // guards sessions, retry, gone, waiters
	sessions map[string]*session
	waiters  map[string]*decisionWaiters // PREPARING groups whose starter waits for the decision
	retry    map[string]retryState       // decided groups awaiting acks: next push time
	gone     map[string]time.Time        // session id -> when its last session ended
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
		closed:   make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
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

// errUnavailable marks store failures: the request may be retried.
var errUnavailable = errors.New("txmanager: store unavailable")

// step runs the core for ev under the group's lock: load, step, persist each
// transition (compare-and-set), and only then push the decisions. A lost
// compare-and-set (another TxManager, or the reaper, got there first) reloads
// and steps again.
func (s *Server) step(ctx context.Context, ev Event) (Reply, error) {
	mu := s.lockFor(ev.Group)
	mu.Lock()
	defer mu.Unlock()
	const attempts = 8
	for range attempts {
		g, err := s.store.Get(ctx, ev.Group)
		if errors.Is(err, ErrNotFound) {
			g = nil
		} else if err != nil {
			return Reply{}, fmt.Errorf("%w: load group %s: %v", errUnavailable, ev.Group, err)
		}
		ev.NowMS = s.nowMS()
		if ev.Kind == EvRetry && g != nil {
			ev.Absent = s.absentOwners(g)
		}
		res := Step(g, ev)
		raced := false
		for _, t := range res.Transitions {
			if _, err := s.store.Apply(ctx, t); err != nil {
				if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
					raced = true
					break
				}
				return Reply{}, fmt.Errorf("%w: %s group %s: %v", errUnavailable, t.Kind, ev.Group, err)
			}
			if t.Kind == TransDecide {
				if t.GroupTo == GroupPreparing {
					s.log.Debug("group preparing", "group", t.Group, "reason", t.Reason)
				} else {
					s.log.Info("group decided", "group", t.Group, "state", t.GroupTo, "reason", t.Reason)
					defer s.notifyDecided(t.Group) // after the pushes below
				}
				s.scheduleRetry(t.Group)
			}
		}
		if raced {
			continue
		}
		s.dispatch(res.Sends)
		return res.Reply, nil
	}
	return Reply{}, fmt.Errorf("%w: group %s: %d compare-and-set conflicts in a row", errUnavailable, ev.Group, attempts)
}

// create records a new group started by sess.
func (s *Server) create(ctx context.Context, sess *session, timeout time.Duration) (*Group, error) {
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
		StarterService: sess.service,
		Starter:        sess.id,
		CreatedMS:      now,
		DeadlineMS:     now + timeout.Milliseconds(),
	}
	if err := s.store.Create(ctx, g); err != nil {
		return nil, fmt.Errorf("%w: create group: %v", errUnavailable, err)
	}
	s.log.Debug("group created", "group", g.ID, "service", sess.service, "deadline_ms", g.DeadlineMS)
	return g, nil
}

// dispatch pushes decisions to the sessions that own the branches. A branch
// whose owner is not connected, or whose push is lost, is reached by the
// retrier or by the owner's resync when it reconnects.
func (s *Server) dispatch(sends []Send) {
	for _, d := range sends {
		s.mu.Lock()
		ss := s.sessions[d.Instance]
		s.mu.Unlock()
		if ss == nil {
			continue
		}
		if d.Prepare {
			ss.push(&wire.Message{Type: wire.TypePrepare, Group: d.Group, Branch: d.Branch})
			continue
		}
		ss.push(&wire.Message{Type: wire.TypeDecision, Group: d.Group, Branch: d.Branch, Commit: d.Commit})
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
		}
	}
	s.mu.Unlock()
	for _, id := range due {
		if _, err := s.step(ctx, Event{Kind: EvRetry, Group: id}); err != nil {
			s.log.Warn("retrier: push decision", "group", id, "err", err)
		}
	}
}

// Handler returns the TxManager's HTTP handler: the client websocket at
// /v1/ws, GET /v1/groups/{id} (admin role), /healthz and /readyz (no
// credentials needed). Every other request is authenticated with the
// current credentials; request bodies are bounded by MaxBodyBytes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	mux.Handle("GET /v1/groups/{id}", s.requireRole(RoleAdmin, http.HandlerFunc(s.serveGroup)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, "store unreachable: "+err.Error())
			return
		}
		body := map[string]any{"status": "ready"}
		if s.auth.Load().cfg.Insecure {
			body["insecure"] = true
			body["warning"] = "authentication disabled (auth.insecure)"
		}
		writeJSON(w, http.StatusOK, body)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		mux.ServeHTTP(w, r)
	})
}

// requireRole authenticates the request and refuses callers without role.
func (s *Server) requireRole(role Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.auth.Load().authenticate(r, s.now())
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		if p.role < role {
			s.log.Warn("request refused: role", "service", p.service, "role", p.role, "need", role, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "this endpoint needs the "+role.String()+" role")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers an authentication failure and logs it (never the
// credential itself).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusUnauthorized
	var ae *errAuth
	if errors.As(err, &ae) {
		code = ae.status
	}
	s.log.Warn("request refused: authentication", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", err.Error())
	writeError(w, code, err.Error())
}

// Group returns the store's record of a group (for operators and tests).
func (s *Server) Group(ctx context.Context, id string) (*Group, error) {
	return s.store.Get(ctx, id)
}

// GroupView is the JSON shape of a group in the HTTP API.
type GroupView struct {
	ID             string       `json:"id"`
	State          string       `json:"state"`
	StarterService string       `json:"starter_service"`
	Created        time.Time    `json:"created"`
	Deadline       time.Time    `json:"deadline"`
	Decided        *time.Time   `json:"decided,omitempty"`
	Finished       *time.Time   `json:"finished,omitempty"`
	Reason         string       `json:"reason,omitempty"`
	Attention      string       `json:"attention,omitempty"`
	Branches       []BranchView `json:"branches"`
}

// BranchView is the JSON shape of a branch in the HTTP API.
type BranchView struct {
	ID         string `json:"id"`
	Service    string `json:"service"`
	Instance   string `json:"instance"`
	Datasource string `json:"datasource"`
	Mode       string `json:"mode,omitempty"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
}

// View returns g's HTTP API shape.
func (g *Group) View() GroupView {
	ms := func(v int64) *time.Time {
		if v == 0 {
			return nil
		}
		t := time.UnixMilli(v).UTC()
		return &t
	}
	v := GroupView{ID: g.ID, State: g.State.String(), StarterService: g.StarterService,
		Created: time.UnixMilli(g.CreatedMS).UTC(), Deadline: time.UnixMilli(g.DeadlineMS).UTC(),
		Decided: ms(g.DecidedMS), Finished: ms(g.FinishedMS), Reason: g.Reason, Attention: g.Attention,
		Branches: make([]BranchView, 0, len(g.Branches))}
	for _, b := range g.Branches {
		v.Branches = append(v.Branches, BranchView{ID: b.ID, Service: b.Service, Instance: b.Instance,
			Datasource: b.Datasource, Mode: b.Mode, State: b.State.String(), Reason: b.Reason})
	}
	return v
}

func (s *Server) serveGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := gid.Parse(id); err != nil {
		writeError(w, http.StatusBadRequest, "group id: "+err.Error())
		return
	}
	g, err := s.store.Get(r.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "no group "+id)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "store: "+err.Error())
	default:
		writeJSON(w, http.StatusOK, g.View())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}
