package txclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/wire"
)

// fakeManager is a scripted TxManager over a real websocket: each accepted
// connection's frames are delivered to the test on recv, and the test
// answers with send. It checks nothing by itself; tests assert on what
// arrives.
type fakeManager struct {
	t     *testing.T
	srv   *httptest.Server
	recv  chan *wire.Message
	conns chan *websocket.Conn

	mu      sync.Mutex // guards cur, remotes
	cur     *websocket.Conn
	remotes []string   // RemoteAddr of every accepted connection
	wmu     sync.Mutex // serialises writes to cur
	wg      sync.WaitGroup
}

func newFakeManager(t *testing.T) *fakeManager {
	f := &fakeManager{t: t, recv: make(chan *wire.Message, 100), conns: make(chan *websocket.Conn, 10)}
	up := websocket.Upgrader{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.cur = ws
		f.remotes = append(f.remotes, r.RemoteAddr)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				_, frame, err := ws.ReadMessage()
				if err != nil {
					return
				}
				m, err := wire.Decode(frame)
				if err != nil {
					f.t.Errorf("client sent a malformed frame: %v", err)
					return
				}
				if m.Type == wire.TypeHello {
					f.send(&wire.Message{Type: wire.TypeOK, ID: m.ID})
				}
				f.recv <- m
			}
		}()
	}))
	t.Cleanup(func() {
		f.dropConn()
		f.srv.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeManager) url() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/v1/ws" }

func (f *fakeManager) send(m *wire.Message) {
	frame, err := wire.Encode(m)
	if err != nil {
		f.t.Fatal(err)
	}
	f.sendRaw(frame)
}

// sendRaw writes frame as it is on the current connection.
func (f *fakeManager) sendRaw(frame []byte) {
	f.mu.Lock()
	ws := f.cur
	f.mu.Unlock()
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		f.t.Logf("fake manager write: %v", err)
	}
}

// accepted returns the remote addresses of the connections accepted so far.
func (f *fakeManager) accepted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.remotes...)
}

// dropConn cuts the current connection, as a crashed TxManager would.
func (f *fakeManager) dropConn() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil {
		_ = f.cur.Close()
	}
}

// expect waits for the next frame of type typ (frames of other types fail).
func (f *fakeManager) expect(typ wire.Type) *wire.Message {
	f.t.Helper()
	select {
	case m := <-f.recv:
		if m.Type != typ {
			f.t.Fatalf("fake manager got %s %+v, want %s", m.Type, m, typ)
		}
		return m
	case <-time.After(10 * time.Second):
		f.t.Fatalf("fake manager: no %s frame", typ)
		return nil
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestClient(t *testing.T, url string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{ManagerURL: url, Service: "svc", Instance: "svc-1", Logger: quiet(),
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond, RequestTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fakeHeld records what the registry applied.
type fakeHeld struct {
	mu         sync.Mutex
	prepares   int
	commits    int
	rollbacks  int
	err        error // returned by Commit
	prepareErr error // returned by Prepare
	applied    chan struct{}
}

func newFakeHeld() *fakeHeld { return &fakeHeld{applied: make(chan struct{}, 10)} }

func (h *fakeHeld) Prepare(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prepares++
	return h.prepareErr
}

func (h *fakeHeld) Commit(ctx context.Context) error {
	h.mu.Lock()
	h.commits++
	err := h.err
	h.mu.Unlock()
	h.applied <- struct{}{}
	return err
}

func (h *fakeHeld) Rollback(ctx context.Context) error {
	h.mu.Lock()
	h.rollbacks++
	h.mu.Unlock()
	h.applied <- struct{}{}
	return nil
}

func (h *fakeHeld) counts() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.commits, h.rollbacks
}

const (
	g1 = "0123456789abcdef0123456789abcdef"
	b1 = "fedcba9876543210fedcba9876543210"
)

func TestDecisionAppliedOnceAndAcked(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	c.Hold(g1, b1, h)
	c.Hold(g1, b1, newFakeHeld()) // holding again is a no-op

	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	ack := f.expect(wire.TypeAck)
	if ack.Outcome != wire.OutcomeCommitted || ack.Group != g1 || ack.Branch != b1 {
		t.Fatalf("ack %+v", ack)
	}
	f.send(&wire.Message{Type: wire.TypeOK, ID: ack.ID})
	// The TxManager missed the ack and pushes again: answered from memory,
	// not applied twice.
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	ack = f.expect(wire.TypeAck)
	if ack.Outcome != wire.OutcomeCommitted {
		t.Fatalf("repeated ack %+v", ack)
	}
	if cm, rb := h.counts(); cm != 1 || rb != 0 {
		t.Fatalf("commits %d rollbacks %d, want 1 and 0", cm, rb)
	}
	if c.Status().Held != 0 {
		t.Fatal("applied branch still held")
	}
}

func TestDecisionForUnknownBranch(t *testing.T) {
	f := newFakeManager(t)
	newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	// Rollback of a branch this process never held: acknowledged, no write.
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: false})
	if ack := f.expect(wire.TypeAck); ack.Outcome != wire.OutcomeRolledBack {
		t.Fatalf("ack %+v, want rolled_back", ack)
	}
	// Commit of a branch this process does not hold cannot be applied: lost.
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	if ack := f.expect(wire.TypeAck); ack.Outcome != wire.OutcomeLost {
		t.Fatalf("ack %+v, want lost", ack)
	}
}

func TestFailedCommitReportedLost(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	h.err = errors.New("connection gone")
	c.Hold(g1, b1, h)
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	ack := f.expect(wire.TypeAck)
	if ack.Outcome != wire.OutcomeLost || !strings.Contains(ack.Reason, "connection gone") {
		t.Fatalf("ack %+v, want lost with the cause", ack)
	}
}

func TestReconnectResyncsHeldBranches(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	c.Hold(g1, b1, h)
	f.dropConn()
	hello := f.expect(wire.TypeHello)
	if len(hello.Held) != 1 || hello.Held[0] != (wire.BranchRef{Group: g1, Branch: b1}) {
		t.Fatalf("hello after reconnect lists %+v, want the held branch", hello.Held)
	}
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: false})
	f.expect(wire.TypeAck)
	if cm, rb := h.counts(); cm != 0 || rb != 1 {
		t.Fatalf("commits %d rollbacks %d", cm, rb)
	}
}

func TestAskLoopPresumedAbort(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), func(c *Config) { c.AskInterval = 50 * time.Millisecond })
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	c.Hold(g1, b1, h)
	// No decision comes: the client asks, and keeps asking while the answer
	// says the group is still active.
	q := f.expect(wire.TypeQuery)
	f.send(&wire.Message{Type: wire.TypeOK, ID: q.ID, Group: g1, State: "ACTIVE"})
	q = f.expect(wire.TypeQuery)
	if cm, rb := h.counts(); cm+rb != 0 {
		t.Fatal("applied while the group was active")
	}
	f.send(wire.Errorf(q.ID, wire.CodeNotFound, "unknown group"))
	if ack := f.expect(wire.TypeAck); ack.Outcome != wire.OutcomeRolledBack {
		t.Fatalf("ack %+v", ack)
	}
	if cm, rb := h.counts(); cm != 0 || rb != 1 {
		t.Fatalf("commits %d rollbacks %d, want presumed abort", cm, rb)
	}
}

func TestCommitOutcomes(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	ctx := context.Background()

	begin := func() *Group {
		done := make(chan *Group)
		go func() {
			_, g, err := c.Begin(ctx)
			if err != nil {
				t.Error(err)
			}
			done <- g
		}()
		m := f.expect(wire.TypeCreate)
		f.send(&wire.Message{Type: wire.TypeOK, ID: m.ID, Group: g1, Deadline: time.Now().Add(time.Minute).UnixMilli()})
		return <-done
	}
	g := begin()
	errc := make(chan error)
	go func() { errc <- g.Commit(ctx) }()
	m := f.expect(wire.TypeDecide)
	if !m.Commit || m.Group != g1 {
		t.Fatalf("decide %+v", m)
	}
	e := wire.Errorf(m.ID, wire.CodeConflict, "branch failed")
	e.State = "ROLLING_BACK"
	f.send(e)
	if err := <-errc; !errors.Is(err, ErrRolledBack) {
		t.Fatalf("commit answered rolling back: %v", err)
	}

	// The session drops after the commit was sent: the client reconnects
	// and asks again (deciding is idempotent), and learns the outcome.
	go func() { errc <- g.Commit(ctx) }()
	f.expect(wire.TypeDecide)
	f.dropConn()
	f.expect(wire.TypeHello)
	m = f.expect(wire.TypeDecide)
	f.send(&wire.Message{Type: wire.TypeOK, ID: m.ID, Group: g1, State: "COMMITTING"})
	if err := <-errc; err != nil {
		t.Fatalf("commit retried after a lost answer: %v", err)
	}

	// No answer ever comes: the outcome is unknown, and said so.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	go func() { errc <- g.Commit(short) }()
	f.expect(wire.TypeDecide)
	if err := <-errc; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("commit with no answer: %v", err)
	}
}

func TestMiddleware(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	var seen []string
	var mu sync.Mutex
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g, _ := GroupID(r.Context())
		mu.Lock()
		seen = append(seen, g)
		mu.Unlock()
	}))
	do := func(hdr string, set bool) int {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		if set {
			req.Header.Set(Header, hdr)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := do("", false); code != 200 {
		t.Fatalf("no header: %d", code)
	}
	if code := do("NOT-AN-ID", true); code != http.StatusBadRequest {
		t.Fatalf("malformed header: %d", code)
	}
	// Unknown group: 409, handler not called.
	codec := make(chan int)
	go func() { codec <- do(g1, true) }()
	q := f.expect(wire.TypeQuery)
	f.send(wire.Errorf(q.ID, wire.CodeNotFound, "unknown"))
	if code := <-codec; code != http.StatusConflict {
		t.Fatalf("unknown group: %d", code)
	}
	// Active group: confirmed once, then remembered.
	go func() { codec <- do(g1, true) }()
	q = f.expect(wire.TypeQuery)
	f.send(&wire.Message{Type: wire.TypeOK, ID: q.ID, Group: g1, State: "ACTIVE", Deadline: time.Now().Add(time.Minute).UnixMilli()})
	if code := <-codec; code != 200 {
		t.Fatalf("active group: %d", code)
	}
	if code := do(g1, true); code != 200 {
		t.Fatalf("second request: %d", code)
	}
	select {
	case m := <-f.recv:
		t.Fatalf("second request of the group asked the TxManager again: %+v", m)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[0] != "" || seen[1] != g1 || seen[2] != g1 {
		t.Fatalf("handler saw groups %q", seen)
	}
}

func TestTransportSetsHeader(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get(Header))
	}))
	defer srv.Close()
	hc := &http.Client{Transport: Transport(nil)}
	for _, ctx := range []context.Context{context.Background(), withGroup(context.Background(), g1)} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get(Header) != "" {
			t.Fatal("transport modified the caller's request")
		}
	}
	if len(got) != 2 || got[0] != "" || got[1] != g1 {
		t.Fatalf("server saw headers %q", got)
	}
}

func TestBeginUnreachable(t *testing.T) {
	c := newTestClient(t, "ws://127.0.0.1:1/v1/ws", func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
	_, g, err := c.Begin(context.Background())
	if !errors.Is(err, ErrNotSent) || g != nil {
		t.Fatalf("Begin: %v %v", g, err)
	}
}

func TestConfigValidateNamesKeys(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Service: "s"}, "manager_url"},
		{Config{ManagerURL: "http://x", Service: "s"}, "manager_url"},
		{Config{ManagerURL: "ws://x/v1/ws"}, "service"},
		{Config{ManagerURL: "ws://x/v1/ws", Service: "a/b"}, "'/'"},
		{Config{ManagerURL: "ws://x/v1/ws", Service: "s", AskInterval: -1}, "ask_interval"},
		{Config{ManagerURL: "ws://x/v1/ws", Service: "s", ReconnectMin: time.Hour}, "reconnect_min"},
	} {
		err := tc.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want one naming %s", tc.cfg, err, tc.want)
		}
	}
}

// A commit decision that arrives after the branch voted but before the
// proxy handed it over is not reported lost: the client waits for the hold
// and the TxManager's next push.
func TestCommitBeforeHoldIsNotLost(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	joined := make(chan string)
	go func() {
		b, err := c.Join(context.Background(), g1, "ds", "lcn")
		if err != nil {
			t.Error(err)
		}
		joined <- b
	}()
	j := f.expect(wire.TypeJoin)
	f.send(&wire.Message{Type: wire.TypeOK, ID: j.ID, Group: g1, Branch: b1})
	<-joined
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	h := newFakeHeld()
	// The push raced ahead of Hold; no ack may claim the branch lost. The
	// next push, after Hold, applies it.
	c.Hold(g1, b1, h)
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	ack := f.expect(wire.TypeAck)
	if ack.Outcome != wire.OutcomeCommitted {
		t.Fatalf("ack %+v, want committed", ack)
	}
	if cm, _ := h.counts(); cm != 1 {
		t.Fatalf("commits %d", cm)
	}
}

func TestConfigNeverPrintsToken(t *testing.T) {
	cfg := Config{ManagerURL: "ws://x/v1/ws", Service: "s", Token: "s3cr3t-token"}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg)} {
		if strings.Contains(out, "s3cr3t-token") {
			t.Fatalf("token printed: %s", out)
		}
	}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
	if strings.Contains(buf.String(), "s3cr3t-token") || !strings.Contains(buf.String(), "***") {
		t.Fatalf("token in logs: %s", buf.String())
	}
}
