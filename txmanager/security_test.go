package txmanager

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/wire"
)

// secureServer is a TxManager with per-service tokens, served over
// httptest, its logs captured.
type secureServer struct {
	srv    *Server
	hs     *httptest.Server
	tokens map[string]string
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newSecureServer(t *testing.T, mod func(*Config)) *secureServer {
	t.Helper()
	ss := &secureServer{tokens: map[string]string{}, logs: &syncBuffer{}}
	cfg := Config{Logger: slog.New(slog.NewTextHandler(ss.logs, nil)), ReapInterval: 50 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	for _, svc := range []string{"svc-a", "svc-b", "ops"} {
		ss.tokens[svc] = gid.New() + gid.New()
		role := RoleService
		if svc == "ops" {
			role = RoleAdmin
		}
		cfg.Auth.Credentials = append(cfg.Auth.Credentials, Credential{Service: svc, TokenSHA256: HashToken(ss.tokens[svc]), Role: role})
	}
	ss.tokens["expired"] = gid.New()
	cfg.Auth.Credentials = append(cfg.Auth.Credentials, Credential{Service: "svc-a", TokenSHA256: HashToken(ss.tokens["expired"]),
		Expires: time.Now().Add(-time.Minute)})
	cfg.Auth.AllowedOrigins = []string{"https://admin.example"}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg, NewMemoryStore(StoreOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	ss.srv = srv
	ss.hs = httptest.NewServer(srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); ss.hs.Close(); _ = srv.Close() })
	return ss
}

func (ss *secureServer) wsURL() string {
	return "ws" + strings.TrimPrefix(ss.hs.URL, "http") + "/v1/ws"
}

// rawClient is a websocket speaking the wire protocol directly.
type rawClient struct {
	t  *testing.T
	ws *websocket.Conn
	id uint64
}

func (ss *secureServer) dial(t *testing.T, service, instance string) *rawClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(ss.wsURL(), http.Header{"Authorization": {"Bearer " + ss.tokens[service]}})
	if err != nil {
		t.Fatalf("dial as %s: %v", service, err)
	}
	c := &rawClient{t: t, ws: ws}
	t.Cleanup(func() { _ = ws.Close() })
	if r := c.call(&wire.Message{Type: wire.TypeHello, Service: service, Instance: instance}); r.Type != wire.TypeOK {
		t.Fatalf("hello as %s: %+v", service, r)
	}
	return c
}

func (c *rawClient) send(m *wire.Message) {
	c.t.Helper()
	c.id++
	m.ID = c.id
	frame, err := wire.Encode(m)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.t.Fatal(err)
	}
}

// call sends m and returns its answer, skipping decision pushes.
func (c *rawClient) call(m *wire.Message) *wire.Message {
	c.t.Helper()
	c.send(m)
	for {
		r := c.read()
		if r.Type != wire.TypeDecision {
			if r.ID != m.ID {
				c.t.Fatalf("answer id %d for request %d", r.ID, m.ID)
			}
			return r
		}
	}
}

func (c *rawClient) read() *wire.Message {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, frame, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	m, err := wire.Decode(frame)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// S13 "Auth at handshake": 100 upgrades each with no credentials, a wrong
// token, an expired token, a token of another service than the hello
// names, and a browser Origin not allowed: all refused, no session created.
// An allowlisted Origin with a valid token is accepted.
func TestHandshakeRejectsBadCredentials(t *testing.T) {
	ss := newSecureServer(t, nil)
	cases := []struct {
		name   string
		header http.Header
		hello  string // service named in the hello, when the upgrade passes
		want   int    // HTTP status of a refused upgrade, 0: refused after the upgrade
	}{
		{"no credentials", http.Header{}, "", http.StatusUnauthorized},
		{"wrong token", http.Header{"Authorization": {"Bearer " + gid.New()}}, "", http.StatusUnauthorized},
		{"not bearer", http.Header{"Authorization": {"Basic " + ss.tokens["svc-a"]}}, "", http.StatusUnauthorized},
		{"expired token", http.Header{"Authorization": {"Bearer " + ss.tokens["expired"]}}, "", http.StatusUnauthorized},
		{"origin not allowed", http.Header{"Authorization": {"Bearer " + ss.tokens["svc-a"]}, "Origin": {"https://evil.example"}}, "", http.StatusForbidden},
		{"hello for another service", http.Header{"Authorization": {"Bearer " + ss.tokens["svc-a"]}}, "svc-b", 0},
	}
	for _, tc := range cases {
		refused := 0
		for i := range 100 {
			ws, resp, err := websocket.DefaultDialer.Dial(ss.wsURL(), tc.header)
			if tc.want != 0 {
				if err == nil {
					ws.Close()
					t.Fatalf("%s: upgrade %d accepted", tc.name, i)
				}
				if resp == nil || resp.StatusCode != tc.want {
					t.Fatalf("%s: got %v, want HTTP %d", tc.name, resp, tc.want)
				}
				refused++
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			hello, _ := wire.Encode(&wire.Message{Type: wire.TypeHello, ID: 1, Service: tc.hello, Instance: "x"})
			_ = ws.WriteMessage(websocket.TextMessage, hello)
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = ws.ReadMessage()
			if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
				t.Fatalf("%s: hello answered with %v, want a policy-violation close", tc.name, err)
			}
			ws.Close()
			refused++
		}
		if refused != 100 {
			t.Fatalf("%s: %d of 100 refused", tc.name, refused)
		}
		if n := ss.srv.Sessions(); n != 0 {
			t.Fatalf("%s: %d sessions created", tc.name, n)
		}
	}
	// The allowlisted origin, with credentials, gets in.
	ws, resp, err := websocket.DefaultDialer.Dial(ss.wsURL(), http.Header{"Authorization": {"Bearer " + ss.tokens["svc-a"]}, "Origin": {"https://admin.example"}})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("allowlisted origin: %v %v", resp, err)
	}
	ws.Close()
	if strings.Contains(ss.logs.String(), ss.tokens["svc-a"]) || strings.Contains(ss.logs.String(), ss.tokens["expired"]) {
		t.Fatal("a token appears in the logs")
	}
}

// S13 "Forged decisions" and "Replay": client A sends 1,000 commit,
// rollback, vote and ack messages for a group and branch owned by B; every
// one is refused and logged with A's identity, and B's group commits as B
// decides. A replayed commit after the group ended changes nothing.
func TestForgedDecisionsHaveNoEffect(t *testing.T) {
	ss := newSecureServer(t, nil)
	b := ss.dial(t, "svc-b", "b-1")
	a := ss.dial(t, "svc-a", "a-1")
	created := b.call(&wire.Message{Type: wire.TypeCreate})
	g := created.Group
	joined := b.call(&wire.Message{Type: wire.TypeJoin, Group: g, Datasource: "db"})
	br := joined.Branch
	if r := b.call(&wire.Message{Type: wire.TypeVote, Group: g, Branch: br, OK: true}); r.Type != wire.TypeOK {
		t.Fatalf("vote: %+v", r)
	}
	forged := []*wire.Message{
		{Type: wire.TypeDecide, Group: g, Commit: false},
		{Type: wire.TypeDecide, Group: g, Commit: true},
		{Type: wire.TypeVote, Group: g, Branch: br, OK: false, Reason: "forged"},
		{Type: wire.TypeAck, Group: g, Branch: br, Outcome: wire.OutcomeLost},
	}
	rejected := 0
	for i := range 1000 {
		m := *forged[i%len(forged)]
		if r := a.call(&m); r.Type == wire.TypeError && r.Code == wire.CodeForbidden {
			rejected++
		} else {
			t.Fatalf("forged %s answered %+v", m.Type, r)
		}
	}
	if rejected != 1000 {
		t.Fatalf("%d of 1000 forged messages rejected", rejected)
	}
	if n := strings.Count(ss.logs.String(), "forbidden request"); n < 1000 {
		t.Fatalf("%d forbidden requests logged, want 1000", n)
	}
	for _, line := range strings.Split(strings.TrimSpace(ss.logs.String()), "\n") {
		if strings.Contains(line, "forbidden request") && !strings.Contains(line, "service=svc-a") {
			t.Fatalf("refusal logged without the caller's identity: %s", line)
		}
	}
	grp, _ := ss.srv.Group(context.Background(), g)
	if grp.State != GroupActive || grp.Branches[0].State != BranchPrepared {
		t.Fatalf("forged messages changed B's group: %+v", grp)
	}
	if r := b.call(&wire.Message{Type: wire.TypeDecide, Group: g, Commit: true}); r.Type != wire.TypeOK || r.State != "COMMITTING" {
		t.Fatalf("B's commit: %+v", r)
	}
	push := b.read()
	if push.Type != wire.TypeDecision || !push.Commit {
		t.Fatalf("push %+v", push)
	}
	b.call(&wire.Message{Type: wire.TypeAck, Group: g, Branch: br, Outcome: wire.OutcomeCommitted})
	done, _ := ss.srv.Group(context.Background(), g)
	if done.State != GroupCommitted || done.Attention != "" {
		t.Fatalf("B's group after commit: %+v", done)
	}
	// Replays of B's own messages after the end: no effect.
	for _, m := range []*wire.Message{
		{Type: wire.TypeDecide, Group: g, Commit: false},
		{Type: wire.TypeDecide, Group: g, Commit: true},
		{Type: wire.TypeAck, Group: g, Branch: br, Outcome: wire.OutcomeLost},
		{Type: wire.TypeVote, Group: g, Branch: br, OK: false},
		{Type: wire.TypeJoin, Group: g, Datasource: "db"},
	} {
		b.call(m)
	}
	after, _ := ss.srv.Group(context.Background(), g)
	if after.State != GroupCommitted || after.Attention != "" || len(after.Branches) != 1 || after.Branches[0].State != BranchCommitted {
		t.Fatalf("replay changed the ended group: %+v", after)
	}
}

// S13 "Group-ID guessing": 100,000 random ids and 10,000 neighbours of a
// live id join nothing.
func TestGuessedGroupIDsJoinNothing(t *testing.T) {
	ss := newSecureServer(t, nil)
	b := ss.dial(t, "svc-b", "b-1")
	live := b.call(&wire.Message{Type: wire.TypeCreate}).Group
	ctx := context.Background()
	try := func(id string) {
		r, err := ss.srv.step(ctx, Event{Kind: EvJoin, Group: id, Instance: "svc-a/a-1", Branch: Branch{ID: gid.New(), Service: "svc-a", Datasource: "db"}})
		if err != nil || r.Code != ReplyNotFound {
			t.Fatalf("join of guessed id %s: %+v %v", id, r, err)
		}
	}
	for range 100000 {
		try(gid.New())
	}
	n := 0
	for i := range len(live) {
		for _, c := range "0123456789abcdef" {
			if n == 10000 {
				break
			}
			if byte(c) == live[i] {
				continue
			}
			try(live[:i] + string(c) + live[i+1:])
			n++
		}
	}
	for n < 10000 { // numeric neighbours beyond single-character changes
		var x big.Int
		x.SetString(live, 16)
		x.Add(&x, big.NewInt(int64(n-479)))
		id := fmt.Sprintf("%032x", &x)
		if id != live {
			try(id)
		}
		n++
	}
	g, _ := ss.srv.Group(ctx, live)
	if len(g.Branches) != 0 {
		t.Fatalf("guessed ids joined the live group: %+v", g.Branches)
	}
}

// S13 "Idle/half-open": connections that stop answering pings are reaped
// within two ping intervals of their last sign of life.
func TestIdleConnectionsReaped(t *testing.T) {
	const interval = time.Second // long enough that a loaded 2-core machine's scheduling delays stay small beside it
	ss := newSecureServer(t, func(c *Config) { c.PingInterval = interval })
	const n = 1000
	lives := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, _, err := websocket.DefaultDialer.Dial(ss.wsURL(), http.Header{"Authorization": {"Bearer " + ss.tokens["svc-a"]}})
			if err != nil {
				t.Error(err)
				return
			}
			defer ws.Close()
			// Half-open: read (to see the close) but never answer a ping.
			ws.SetPingHandler(func(string) error { return nil })
			hello, _ := wire.Encode(&wire.Message{Type: wire.TypeHello, ID: 1, Service: "svc-a", Instance: fmt.Sprint("idle-", i)})
			_ = ws.WriteMessage(websocket.TextMessage, hello)
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := ws.ReadMessage(); err != nil { // the hello's answer: the last sign of life
				t.Error(err)
				return
			}
			start := time.Now()
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					lives[i] = time.Since(start)
					return
				}
			}
		}()
	}
	wg.Wait()
	worst := slices.Max(lives)
	t.Logf("%d half-open sessions reaped, the slowest %s after its last message (ping interval %s)", n, worst.Round(time.Millisecond), interval)
	if worst == 0 || worst > 2*interval+250*time.Millisecond {
		t.Fatalf("slowest half-open session closed after %s, want within 2 x %s (+250ms scheduling)", worst, interval)
	}
	// The server forgets a session after its connection is closed, a moment
	// after the client sees the close: the sessions must all go, promptly.
	for deadline := time.Now().Add(2 * time.Second); ss.srv.Sessions() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still registered 2s after every connection was closed", ss.srv.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// S13 "Flood": a client sending far over its message rate is throttled,
// and another client's median latency stays within twice its normal value.
func TestFloodingClientThrottled(t *testing.T) {
	const rateLimit = 500 // above what the good client sends (400 messages: its burst covers them), far below the flood
	ss := newSecureServer(t, func(c *Config) { c.MessageRate, c.MessageBurst = rateLimit, rateLimit })
	good := ss.dial(t, "svc-b", "good")
	measure := func() time.Duration {
		var ds []time.Duration
		for range 100 {
			start := time.Now()
			g := good.call(&wire.Message{Type: wire.TypeCreate}).Group
			good.call(&wire.Message{Type: wire.TypeDecide, Group: g, Commit: true})
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	normal := measure()

	flooder := ss.dial(t, "svc-a", "flood")
	probe := gid.New()
	stop := make(chan struct{})
	var sent int
	var wg sync.WaitGroup
	wg.Add(2)
	// The token bucket starts full: by any time t after the flood starts,
	// the server can have answered at most burst + rate*t (+1 for the
	// hello) of the flooder's messages. Answers are counted on arrival,
	// which is never earlier than the server's grant.
	const window = 2 * time.Second
	floodStart := time.Now()
	go func() { // writer: as fast as the socket takes it
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			frame, _ := wire.Encode(&wire.Message{Type: wire.TypeQuery, ID: uint64(sent + 1), Group: probe})
			_ = flooder.ws.SetWriteDeadline(time.Now().Add(time.Second))
			if err := flooder.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
				return
			}
			sent++
		}
	}()
	answeredc := make(chan int, 1)
	go func() { // reader: count answers that arrive within the window
		defer wg.Done()
		answered := 0
		for {
			_ = flooder.ws.SetReadDeadline(floodStart.Add(window))
			if _, _, err := flooder.ws.ReadMessage(); err != nil {
				answeredc <- answered
				return
			}
			if time.Since(floodStart) <= window {
				answered++
			}
		}
	}()
	during := measure()
	answered := <-answeredc
	close(stop)
	_ = flooder.ws.Close()
	wg.Wait()
	bound := rateLimit + int(rateLimit*window.Seconds()) + 1
	t.Logf("median create+commit latency: normal %s, during a flood %s; flooder sent %d and was answered %d in %s (bound %d)",
		normal, during, sent, answered, window, bound)
	if answered > bound {
		t.Fatalf("flooder answered %d messages in %s, more than burst+rate allow (%d)", answered, window, bound)
	}
	if sent <= bound {
		t.Fatalf("the flood (%d messages) never exceeded the limit (%d): the test proves nothing", sent, bound)
	}
	if during > 2*normal+2*time.Millisecond {
		t.Fatalf("good client's median latency %s during the flood, normal %s: over 2x", during, normal)
	}
}

// S13 "Admin UI" (the operator endpoints so far): no credentials 401, a
// service token 403, the admin role passes; the TxManager refuses known
// default secrets and starting with no credentials.
func TestOperatorEndpointsNeedAdmin(t *testing.T) {
	ss := newSecureServer(t, nil)
	url := ss.hs.URL + "/v1/groups/" + gid.New()
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {gid.New(), http.StatusUnauthorized}, {ss.tokens["svc-a"], http.StatusForbidden}, {ss.tokens["ops"], http.StatusNotFound}} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("token set %v: status %d, want %d", tc.token != "", resp.StatusCode, tc.want)
		}
	}
	for _, weak := range []string{"codingapi", "seata"} {
		_, err := New(Config{Auth: AuthConfig{Credentials: []Credential{{Service: "x", TokenSHA256: HashToken(weak)}}}}, NewMemoryStore(StoreOptions{}))
		if err == nil || !strings.Contains(err.Error(), "known default") {
			t.Fatalf("default secret %q accepted: %v", weak, err)
		}
	}
	_, err := New(Config{}, NewMemoryStore(StoreOptions{}))
	if err == nil || !strings.Contains(err.Error(), "auth.tokens") || !strings.Contains(err.Error(), "auth.insecure") {
		t.Fatalf("started with no credentials: %v", err)
	}
	// Insecure mode says so on /readyz.
	ins := newSecureServer(t, func(c *Config) { c.Auth = AuthConfig{Insecure: true} })
	resp, err := http.Get(ins.hs.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `"insecure":true`) {
		t.Fatalf("/readyz in insecure mode: %s", body.String())
	}
}

// Rotation: credentials replaced while running take effect for new
// handshakes without a restart.
func TestCredentialRotation(t *testing.T) {
	ss := newSecureServer(t, nil)
	newToken := gid.New() + gid.New()
	if err := ss.srv.SetAuth(AuthConfig{Credentials: []Credential{{Service: "svc-a", TokenSHA256: HashToken(newToken)}}}); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(ss.wsURL(), http.Header{"Authorization": {"Bearer " + ss.tokens["svc-a"]}}); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old token after rotation: %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(ss.wsURL(), http.Header{"Authorization": {"Bearer " + newToken}})
	if err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
	ws.Close()
	if err := ss.srv.SetAuth(AuthConfig{}); err == nil {
		t.Fatal("rotation to no credentials accepted")
	}
}

// Mutual TLS: a client certificate signed by the trusted CA authenticates
// its common name as the service; one from another CA fails the TLS
// handshake, 100 times out of 100.
func TestClientCertificates(t *testing.T) {
	ca := testenv.NewCA(t, "golcn test CA")
	rogue := testenv.NewCA(t, "rogue CA")
	srvCert := ca.Issue(t, "127.0.0.1", true)
	good := ca.Issue(t, "svc-cert", false)
	bad := rogue.Issue(t, "svc-cert", false)

	srv, err := New(Config{Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil)), Auth: AuthConfig{ClientCerts: true}}, NewMemoryStore(StoreOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	hs.StartTLS()
	t.Cleanup(func() { hs.Close(); _ = srv.Close() })
	url := "wss" + strings.TrimPrefix(hs.URL, "https") + "/v1/ws"
	dialer := func(cert tls.Certificate) *websocket.Dialer {
		return &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, HandshakeTimeout: 5 * time.Second}
	}
	for i := range 100 {
		if ws, _, err := dialer(bad).Dial(url, nil); err == nil {
			ws.Close()
			t.Fatalf("untrusted client certificate accepted (attempt %d)", i)
		}
	}
	if _, resp, err := (&websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}).Dial(url, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no certificate and no token: %v %v", resp, err)
	}
	ws, _, err := dialer(good).Dial(url, nil)
	if err != nil {
		t.Fatalf("trusted client certificate: %v", err)
	}
	defer ws.Close()
	c := &rawClient{t: t, ws: ws}
	if r := c.call(&wire.Message{Type: wire.TypeHello, Service: "svc-cert", Instance: "c1"}); r.Type != wire.TypeOK {
		t.Fatalf("hello with certificate: %+v", r)
	}
	if srv.Sessions() != 1 {
		t.Fatalf("sessions %d", srv.Sessions())
	}
}

// S13 "Redis hardening": the Redis store works with an ACL user denied
// FLUSHALL, FLUSHDB and CONFIG, and that user cannot flush.
func TestRedisStoreLeastPrivilege(t *testing.T) {
	r := testenv.SharedRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer admin.Close()
	ctx := context.Background()
	prefix := "acl" + gid.New()[:8]
	pass := gid.New()
	if err := admin.Do(ctx, "ACL", "SETUSER", prefix, "on", ">"+pass, "~"+prefix+":*", "+@all", "-flushall", "-flushdb", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Do(ctx, "ACL", "DELUSER", prefix) })
	limited := redis.NewClient(&redis.Options{Addr: r.Addr, Username: prefix, Password: pass})
	defer limited.Close()
	if err := limited.FlushAll(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("FLUSHALL by the limited user: %v", err)
	}
	store := NewRedisStore(limited, prefix, StoreOptions{})
	g := &Group{ID: gid.New(), State: GroupActive, Starter: "s/1", CreatedMS: 1, DeadlineMS: time.Now().Add(time.Minute).UnixMilli()}
	if err := store.Create(ctx, g); err != nil {
		t.Fatalf("create as limited user: %v", err)
	}
	bid := gid.New()
	for _, tr := range []Transition{
		{Kind: TransJoin, Group: g.ID, Branch: Branch{ID: bid, Service: "s", Instance: "s/1", State: BranchRegistered}},
		{Kind: TransVote, Group: g.ID, BranchID: bid, BranchTo: BranchPrepared},
		{Kind: TransDecide, Group: g.ID, GroupTo: GroupCommitting, AtMS: 2},
		{Kind: TransBranchDone, Group: g.ID, BranchID: bid, BranchTo: BranchCommitted, AtMS: 3},
	} {
		if _, err := store.Apply(ctx, tr); err != nil {
			t.Fatalf("%s as limited user: %v", tr.Kind, err)
		}
	}
	if got, err := store.Get(ctx, g.ID); err != nil || got.State != GroupCommitted {
		t.Fatalf("group after lifecycle: %+v %v", got, err)
	}
	if _, err := store.Undone(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Expired(ctx, time.Now(), 10); err != nil {
		t.Fatal(err)
	}
	if err := store.Ping(ctx); err != nil {
		t.Fatalf("ping as limited user: %v", err)
	}
}

// S13 "Frame size": a frame one byte over the read limit, and a frame
// header declaring 2^63-1 bytes, close the session with 1009 without the
// TxManager allocating for them.
func TestOversizedFramesClosed(t *testing.T) {
	ss := newSecureServer(t, nil)
	over := ss.dial(t, "svc-a", "over")
	big := bytes.Repeat([]byte("a"), wire.MaxFrame+1)
	_ = over.ws.WriteMessage(websocket.TextMessage, big)
	_ = over.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := over.ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("frame of read limit + 1: %v, want close 1009", err)
	}

	huge := ss.dial(t, "svc-a", "huge")
	// A masked text frame whose 64-bit length is 2^63-1, and no payload.
	header := []byte{0x81, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}
	if _, err := huge.ws.NetConn().Write(header); err != nil {
		t.Fatal(err)
	}
	_ = huge.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := huge.ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("frame declaring 2^63-1 bytes: %v, want close 1009", err)
	}
	// The server is still serving.
	ok := ss.dial(t, "svc-b", "after")
	if r := ok.call(&wire.Message{Type: wire.TypeCreate}); r.Type != wire.TypeOK {
		t.Fatalf("create after oversized frames: %+v", r)
	}
}
