package txmanager

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/golcn/golcn/internal/batchconn"
	"github.com/golcn/golcn/internal/failpoint"
	"github.com/golcn/golcn/internal/wire"
)

// helloTimeout bounds the wait for a new connection's hello.
const helloTimeout = 10 * time.Second

// maxInflight bounds the requests one session has in progress at once.
const maxInflight = 128

// writeWait bounds one frame write.
const writeWait = 10 * time.Second

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
	// The Origin header is checked against auth.allowed_origins, with the
	// credentials, before the upgrade (authenticator.authenticate).
	CheckOrigin: func(r *http.Request) bool { return true },
}

// session is one client's websocket. It has exactly one reader goroutine
// (readLoop, which also dispatches requests to bounded handler goroutines)
// and one writer goroutine (writeLoop, fed by out), owned by the session and
// waited for by the server.
type session struct {
	srv      *Server
	conn     *websocket.Conn
	held     *batchconn.Conn // conn's network connection: the writer holds a batch of frames in it
	service  string
	instance string
	// id is the session's identity in the core and the store:
	// "<service>/<instance>", where service is the authenticated one, so a
	// client can never speak for a branch of another service.
	id      string
	log     *slog.Logger
	limiter *rate.Limiter

	out       chan outItem
	done      chan struct{} // closed by close()
	closeOnce sync.Once
	closeMsg  []byte // close frame sent by the writer, set before done is closed
	sem       chan struct{}
	ctx       context.Context // the session's lifetime: cancelled when it ends
	cancel    context.CancelFunc
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closed:
		writeError(w, http.StatusServiceUnavailable, "txmanager shutting down")
		return
	default:
	}
	who, err := s.auth.Load().authenticate(r, s.now())
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "this endpoint is the client websocket: send a websocket upgrade")
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	conn, err := upgrader.Upgrade(hw, r, nil)
	if err != nil {
		s.log.Info("websocket upgrade refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	conn.SetReadLimit(wire.MaxFrame)
	sess, err := s.handshake(conn, hw.held, who)
	if err != nil {
		s.log.Info("handshake failed", "remote", r.RemoteAddr, "err", err)
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.ClosePolicyViolation, truncate(err.Error())), time.Now().Add(time.Second))
		_ = conn.Close()
		return
	}
	// handshake counted these two goroutines in s.wg.
	go func() { defer s.wg.Done(); sess.writeLoop() }()
	go func() { defer s.wg.Done(); sess.readLoop() }()
}

// handshake reads the hello, registers the session (replacing an older one of
// the same instance) and answers it.
func (s *Server) handshake(conn *websocket.Conn, held *batchconn.Conn, who principal) (*session, error) {
	_ = conn.SetReadDeadline(time.Now().Add(helloTimeout))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	m, err := wire.Decode(frame)
	if err != nil {
		return nil, err
	}
	if m.Type != wire.TypeHello {
		return nil, fmt.Errorf("first message is %q, want hello", m.Type)
	}
	if who.service != "" && m.Service != who.service {
		return nil, fmt.Errorf("hello names service %q but the credentials are for service %q", m.Service, who.service)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{
		srv: s, conn: conn, held: held, service: m.Service, instance: m.Instance, id: m.Service + "/" + m.Instance,
		limiter: rate.NewLimiter(rate.Limit(s.cfg.MessageRate), s.cfg.MessageBurst),
		log:     s.log.With("service", m.Service, "instance", m.Instance),
		out:     make(chan outItem, 1024),
		done:    make(chan struct{}),
		sem:     make(chan struct{}, maxInflight),
		ctx:     ctx, cancel: cancel,
	}
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		cancel()
		return nil, errors.New("txmanager shutting down")
	default:
	}
	old := s.sessions[sess.id]
	s.sessions[sess.id] = sess
	s.wg.Add(2) // the session's reader and writer, started by serveWS
	s.mu.Unlock()
	if old != nil {
		old.close("replaced by a new connection of the same instance")
	}
	sess.push(&wire.Message{Type: wire.TypeOK, ID: m.ID})
	sess.log.Info("client connected", "held", len(m.Held))
	// Resync: tell the client the decision of every branch it still holds.
	if len(m.Held) > 0 {
		held := m.Held
		sess.spawn(func() {
			for _, h := range held {
				if _, err := s.step(sess.ctx, Event{Kind: EvResync, Group: h.Group, Instance: sess.id, BranchID: h.Branch}); err != nil {
					sess.log.Warn("resync", "group", h.Group, "branch", h.Branch, "err", err)
				}
			}
		})
	}
	return sess, nil
}

// spawn runs f on a goroutine the server waits for, bounded by the session's
// in-flight limit, and counted as a request in progress (Drain). It blocks
// while the session is at its limit.
func (ss *session) spawn(f func()) {
	select {
	case ss.sem <- struct{}{}:
	case <-ss.done:
		return
	}
	ss.srv.wg.Add(1)
	ss.srv.requests.add()
	go func() {
		defer ss.srv.wg.Done()
		defer ss.srv.requests.done()
		defer func() { <-ss.sem }()
		f()
	}()
}

// outItem is one entry of a session's send queue: a message, or (flushed
// set) a barrier the writer closes when it reaches it.
type outItem struct {
	m       *wire.Message
	flushed chan struct{}
}

// push queues m for the writer. It never blocks: if the session is closed or
// its queue is full the message is dropped, which is safe because every push
// is retried (decisions) or answered by a client timeout (replies).
func (ss *session) push(m *wire.Message) {
	select {
	case <-ss.done:
	case ss.out <- outItem{m: m}:
	default:
		ss.log.Warn("send queue full: closing slow session")
		ss.close("send queue full")
	}
}

// flush returns once the writer has written everything queued before the
// call, or the session ended (nothing more will be written: nil), or ctx
// ended (its error).
func (ss *session) flush(ctx context.Context) error {
	barrier := make(chan struct{})
	select {
	case ss.out <- outItem{flushed: barrier}:
	case <-ss.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-barrier:
		return nil
	case <-ss.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close ends the session normally with reason. Safe to call more than
// once, from any goroutine.
func (ss *session) close(reason string) { ss.closeWith(websocket.CloseNormalClosure, reason) }

// closeWith ends the session; the writer sends a close frame with code and
// reason. The first call wins.
func (ss *session) closeWith(code int, reason string) {
	ss.closeOnce.Do(func() {
		ss.closeMsg = websocket.FormatCloseMessage(code, truncate(reason))
		close(ss.done)
		ss.cancel()
		ss.srv.mu.Lock()
		if ss.srv.sessions[ss.id] == ss {
			delete(ss.srv.sessions, ss.id)
			ss.srv.sessionEndedLocked(ss.id)
		}
		ss.srv.mu.Unlock()
	})
}

// truncate keeps a close reason within the 123 bytes a close frame allows.
func truncate(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

func (ss *session) writeLoop() {
	ping := time.NewTicker(ss.srv.cfg.PingInterval)
	defer ping.Stop()
	defer ss.conn.Close()
	for {
		select {
		case <-ss.done:
			_ = ss.conn.WriteControl(websocket.CloseMessage, ss.closeMsg, time.Now().Add(time.Second))
			return
		case it := <-ss.out:
			if err := ss.writeBatch(it); err != nil {
				ss.close("write failed: " + err.Error())
				return
			}
		case <-ping.C:
			if err := ss.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				ss.close("ping failed: " + err.Error())
				return
			}
		}
	}
}

// writeBatch writes first and whatever else is already queued (up to
// batchconn.MaxBatch items) as one frame each, sent together
// (batchconn.WriteQueued). A flush barrier among them is closed once the
// frames before it are sent.
func (ss *session) writeBatch(first outItem) error {
	var barriers []chan struct{}
	_ = ss.conn.SetWriteDeadline(time.Now().Add(writeWait))
	err := batchconn.WriteQueued(ss.held, ss.out, first, batchconn.MaxBatch, func(it outItem) error {
		if it.flushed != nil {
			barriers = append(barriers, it.flushed)
			return nil
		}
		frame, err := wire.Encode(it.m)
		if err != nil {
			ss.log.Error("encode", "err", err)
			return nil
		}
		return ss.conn.WriteMessage(websocket.TextMessage, frame)
	})
	if err != nil {
		return err
	}
	for _, b := range barriers {
		close(b)
	}
	return nil
}

// hijackWriter hands the websocket upgrader the request's connection
// wrapped in a batchconn.Conn (held, once hijacked).
type hijackWriter struct {
	http.ResponseWriter
	held *batchconn.Conn
}

// Hijack implements http.Hijacker through http.ResponseController, so a
// ResponseWriter wrapped by middleware that unwraps still hijacks.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.held = batchconn.New(nc)
	return h.held, brw, nil
}

func (ss *session) readLoop() {
	defer ss.log.Info("client disconnected")
	// A live client answers each ping within a round trip; one that has
	// answered nothing for one and a half intervals is gone or half-open,
	// so it is closed within two intervals of its last sign of life.
	idle := ss.srv.cfg.PingInterval * 3 / 2
	_ = ss.conn.SetReadDeadline(time.Now().Add(idle))
	ss.conn.SetPongHandler(func(string) error { return ss.conn.SetReadDeadline(time.Now().Add(idle)) })
	for {
		_, frame, err := ss.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				ss.closeWith(websocket.CloseMessageTooBig, "frame exceeds read limit")
			} else {
				ss.close("read: " + err.Error())
			}
			return
		}
		_ = ss.conn.SetReadDeadline(time.Now().Add(idle))
		// A client sending faster than its limit is throttled here: its own
		// reads stall, nobody else's do.
		if err := ss.limiter.Wait(ss.ctx); err != nil {
			return
		}
		m, err := wire.Decode(frame)
		if err != nil {
			ss.log.Warn("malformed frame: closing session", "err", err)
			ss.closeWith(websocket.CloseInvalidFramePayloadData, err.Error())
			return
		}
		if m.Type == wire.TypeHello || m.Type == wire.TypeOK || m.Type == wire.TypeError || m.Type == wire.TypeDecision || m.Type == wire.TypePrepare {
			ss.closeWith(websocket.ClosePolicyViolation, fmt.Sprintf("unexpected %s message", m.Type))
			return
		}
		ss.spawn(func() { ss.push(ss.handle(m)) })
	}
}

// handle answers one request.
func (ss *session) handle(m *wire.Message) *wire.Message {
	s := ss.srv
	ctx := ss.ctx
	var ev Event
	switch m.Type {
	case wire.TypeCreate:
		g, err := s.create(ctx, ss.service, ss.id, time.Duration(m.TimeoutMS)*time.Millisecond)
		if err != nil {
			return wire.Errorf(m.ID, wire.CodeUnavailable, "%v", err)
		}
		return &wire.Message{Type: wire.TypeOK, ID: m.ID, Group: g.ID, Deadline: g.DeadlineMS, State: g.State.String()}
	case wire.TypeQuery:
		// A participant confirming a group (no branch named) that this
		// server holds ACTIVE is answered from the cache: confirming is
		// only a hint (the join that follows is checked against the store).
		g := s.cachedActive(m.Group, m.Branch)
		var err error
		if g == nil {
			g, err = s.store.Get(ctx, m.Group)
		}
		if errors.Is(err, ErrNotFound) {
			return wire.Errorf(m.ID, wire.CodeNotFound, "unknown group %s: presumed rolled back", m.Group)
		} else if err != nil {
			return wire.Errorf(m.ID, wire.CodeUnavailable, "%v", err)
		}
		resp := &wire.Message{Type: wire.TypeOK, ID: m.ID, Group: g.ID, State: g.State.String(), Deadline: g.DeadlineMS,
			Reason: g.Reason, Attention: g.Attention}
		if m.Branch != "" {
			b, ok := g.Branch(m.Branch)
			if !ok {
				return wire.Errorf(m.ID, wire.CodeNotFound, "group %s has no branch %s", m.Group, m.Branch)
			}
			resp.Branch, resp.Service, resp.Mode, resp.BranchState = b.ID, b.Service, b.Mode, b.State.String()
		}
		return resp
	case wire.TypeJoin:
		ev = Event{Kind: EvJoin, Branch: Branch{ID: newBranchID(), Service: ss.service, Datasource: m.Datasource, Mode: m.Mode}}
	case wire.TypeVote:
		ev = Event{Kind: EvVote, BranchID: m.Branch, OK: m.OK, Reason: m.Reason}
	case wire.TypePrepared:
		ev = Event{Kind: EvPrepared, BranchID: m.Branch, OK: m.OK, Reason: m.Reason}
	case wire.TypeDecide:
		ev = Event{Kind: EvDecide, Commit: m.Commit}
	case wire.TypeAck:
		if failpoint.Enabled {
			s.fpAcked(m)
		}
		ev = Event{Kind: EvAck, BranchID: m.Branch, Reason: m.Reason}
		switch m.Outcome {
		case wire.OutcomeCommitted:
			ev.Outcome = BranchCommitted
		case wire.OutcomeRolledBack:
			ev.Outcome = BranchRolledBack
		default:
			ev.Outcome = BranchLost
		}
	default:
		return wire.Errorf(m.ID, wire.CodeBadRequest, "unexpected %s request", m.Type)
	}
	ev.Group, ev.Instance = m.Group, ss.id
	r, err := s.step(ctx, ev)
	if err == nil && ev.Kind == EvDecide && ev.Commit && r.Code == ReplyOK && r.State == GroupPreparing {
		// The answer to a commit is the decision: wait for the prepare
		// phase to end (the last branch prepared, one failed, or the
		// deadline passed).
		r, err = s.awaitDecision(ctx, ev)
	}
	if err != nil {
		ss.log.Warn("request failed", "type", m.Type, "group", m.Group, "err", err)
		return wire.Errorf(m.ID, wire.CodeUnavailable, "%v", err)
	}
	switch r.Code {
	case ReplyOK:
		resp := &wire.Message{Type: wire.TypeOK, ID: m.ID, Group: m.Group, Reason: r.Reason}
		if r.State != 0 {
			resp.State = r.State.String()
		}
		if m.Type == wire.TypeJoin {
			resp.Branch = ev.Branch.ID
		}
		return resp
	case ReplyNotFound:
		return wire.Errorf(m.ID, wire.CodeNotFound, "%s", orDefault(r.Reason, "not found"))
	case ReplyForbidden:
		ss.log.Warn("forbidden request", "type", m.Type, "group", m.Group, "branch", m.Branch, "reason", r.Reason)
		return wire.Errorf(m.ID, wire.CodeForbidden, "%s", r.Reason)
	default:
		e := wire.Errorf(m.ID, wire.CodeConflict, "%s", r.Reason)
		if r.State != 0 {
			e.State = r.State.String()
		}
		e.Group = m.Group
		return e
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
