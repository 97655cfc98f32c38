package txclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/wire"
)

const g2 = "00112233445566778899aabbccddeeff"

// countingDialer is a Config.Dialer (bound to local, if not nil) that
// counts the sockets it connects.
func countingDialer(n *atomic.Int32, local net.Addr) *net.Dialer {
	return &net.Dialer{LocalAddr: local, Control: func(string, string, syscall.RawConn) error {
		n.Add(1)
		return nil
	}}
}

// S13 "Redirect": a TxManager (or whoever controls its connection) pushes
// TX-LCN newTxManager-style redirects and other messages of unknown types.
// The client acts on none of them: it dials nowhere (0 connections to the
// redirect target, 1 dial in all: no reconnection), its held branch is not
// decided by a look-alike push, and the same session keeps serving
// requests.
func TestRedirectAndUnknownPushesIgnored(t *testing.T) {
	// The redirect target: it must never see a connection.
	evil, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var evilAccepts atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := evil.Accept()
			if err != nil {
				return // closed
			}
			evilAccepts.Add(1)
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = evil.Close(); wg.Wait() })
	evilURL := "ws://" + evil.Addr().String() + "/v1/ws"

	f := newFakeManager(t)
	var dials atomic.Int32
	c := newTestClient(t, f.url(), func(cfg *Config) {
		cfg.Dialer = countingDialer(&dials, nil)
		cfg.AskInterval = time.Minute // no queries for the held branch during the test
	})
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	c.Hold(g1, b1, h)

	pushes := []string{
		`{"v":1,"type":"newTxManager","url":%q}`,
		`{"v":1,"type":"newTxManager","manager_url":%q,"instance":"svc-1"}`,
		`{"v":1,"type":"redirect","reason":%q}`,
		`{"v":1,"type":"reconnect","reason":%q,"held":[]}`,
		// Looks like a decision for the held branch, but is no type of the protocol.
		`{"v":1,"type":"Decision","group":"` + g1 + `","branch":"` + b1 + `","commit":true,"reason":%q}`,
	}
	const n = 100
	for i := range n {
		f.sendRaw(fmt.Appendf(nil, pushes[i%len(pushes)], evilURL))
	}
	// The answer to a request sent now comes after the 100 pushes on the same
	// connection: once Begin has it, the client has read them all.
	type begun struct {
		g   *Group
		err error
	}
	done := make(chan begun, 1)
	go func() {
		_, g, err := c.Begin(context.Background())
		done <- begun{g, err}
	}()
	create := f.expect(wire.TypeCreate)
	f.send(&wire.Message{Type: wire.TypeOK, ID: create.ID, Group: g2, Deadline: time.Now().Add(time.Minute).UnixMilli()})
	b := <-done
	if b.err != nil || b.g.ID() != g2 {
		t.Fatalf("Begin after %d redirect/unknown pushes: %v, %v; want group %s", n, b.g, b.err, g2)
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("dials = %d after %d redirect/unknown pushes, want 1 (no reconnection)", got, n)
	}
	if got := len(f.accepted()); got != 1 {
		t.Errorf("the TxManager accepted %d connections, want 1", got)
	}
	if got := evilAccepts.Load(); got != 0 {
		t.Errorf("the redirect target got %d connections, want 0", got)
	}
	if cm, rb := h.counts(); cm != 0 || rb != 0 || c.Status().Held != 1 {
		t.Errorf("held branch: commits %d rollbacks %d held %d after look-alike pushes, want 0, 0, 1", cm, rb, c.Status().Held)
	}
	// A real decision on the same session is still applied.
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	if ack := f.expect(wire.TypeAck); ack.Outcome != wire.OutcomeCommitted {
		t.Fatalf("ack %+v, want committed", ack)
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("dials = %d at the end, want 1", got)
	}
}

// Config.Dialer opens the connection to the TxManager: here it binds
// the source address, which the TxManager sees.
func TestDialerChoosesSourceAddress(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	probe, err := net.ListenTCP("tcp", src)
	if err != nil {
		t.Skipf("127.0.0.2 is not a local address here (%v)", err)
	}
	_ = probe.Close()
	f := newFakeManager(t)
	var dials atomic.Int32
	newTestClient(t, f.url(), func(cfg *Config) { cfg.Dialer = countingDialer(&dials, src) })
	f.expect(wire.TypeHello)
	got := f.accepted()
	if len(got) != 1 || !strings.HasPrefix(got[0], "127.0.0.2:") {
		t.Fatalf("the TxManager saw connections from %q, want one from 127.0.0.2", got)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("Dialer connected %d sockets, want 1", n)
	}
}

// S13 "Header trust", the middleware's part: a group id read off the wire
// reaches the handler only once the TxManager answers ACTIVE. Every other
// state is refused with 409, an unknown group with 409, an unanswered
// query with 503, and the handler (which would open the local
// transaction) is not called for any of them.
func TestMiddlewareRefusesUntilConfirmedActive(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), func(cfg *Config) { cfg.RequestTimeout = 300 * time.Millisecond })
	f.expect(wire.TypeHello)
	var calls atomic.Int32
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	do := func(id string) chan int {
		code := make(chan int, 1)
		go func() {
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			req.Header.Set(Header, id)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			code <- rec.Code
		}()
		return code
	}
	for i, st := range []string{"PREPARING", "COMMITTING", "COMMITTED", "ROLLING_BACK", "ROLLED_BACK", "", "UNKNOWN_STATE"} {
		id := fmt.Sprintf("%032x", i+1)
		code := do(id)
		q := f.expect(wire.TypeQuery)
		if q.Group != id {
			t.Fatalf("queried group %s, want %s", q.Group, id)
		}
		f.send(&wire.Message{Type: wire.TypeOK, ID: q.ID, Group: id, State: st, Deadline: time.Now().Add(time.Minute).UnixMilli()})
		if got := <-code; got != http.StatusConflict {
			t.Errorf("group in state %q: status %d, want 409", st, got)
		}
	}
	// Unknown to the TxManager.
	code := do(g1)
	q := f.expect(wire.TypeQuery)
	f.send(wire.Errorf(q.ID, wire.CodeNotFound, "unknown group"))
	if got := <-code; got != http.StatusConflict {
		t.Errorf("unknown group: status %d, want 409", got)
	}
	// The TxManager does not answer: not confirmed, so not admitted.
	code = do(g2)
	f.expect(wire.TypeQuery)
	if got := <-code; got != http.StatusServiceUnavailable {
		t.Errorf("unanswered query: status %d, want 503", got)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler called %d times for unconfirmed groups, want 0", n)
	}
	// Confirmed ACTIVE: admitted.
	code = do(g2)
	q = f.expect(wire.TypeQuery)
	f.send(&wire.Message{Type: wire.TypeOK, ID: q.ID, Group: g2, State: "ACTIVE", Deadline: time.Now().Add(time.Minute).UnixMilli()})
	if got := <-code; got != http.StatusOK || calls.Load() != 1 {
		t.Fatalf("ACTIVE group: status %d, handler calls %d; want 200, 1", got, calls.Load())
	}
}
