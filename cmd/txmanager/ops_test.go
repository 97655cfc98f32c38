package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/txmanager"
)

// runner runs the TxManager in the background until stop; stop returns
// run's error.
type runner struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startRunner(t *testing.T, args []string, logOut io.Writer) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() { r.done <- run(ctx, args, nil, logOut, nil, ready) }()
	select {
	case r.addr = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("run returned before serving: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("txmanager did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("txmanager did not stop")
		}
	})
	return r
}

// wsClient speaks the wire protocol on one websocket; answers are matched
// to requests by id, pushes are collected.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
	id uint64
}

func dialWS(t *testing.T, url, token, service, instance string) *wsClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &wsClient{t: t, ws: ws}
	if id := c.send(&wire.Message{Type: wire.TypeHello, Service: service, Instance: instance}); c.answer(id, nil).Type != wire.TypeOK {
		t.Fatal("hello refused")
	}
	return c
}

func (c *wsClient) send(m *wire.Message) uint64 {
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
	return m.ID
}

// read returns the next message, or the read error.
func (c *wsClient) read() (*wire.Message, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, frame, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	return wire.Decode(frame)
}

// answer reads until the answer to request id, passing pushes to push.
func (c *wsClient) answer(id uint64, push func(*wire.Message)) *wire.Message {
	c.t.Helper()
	for {
		m, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for the answer to %d: %v", id, err)
		}
		if m.Type == wire.TypeDecision || m.Type == wire.TypePrepare {
			if push != nil {
				push(m)
			}
			continue
		}
		if m.ID != id {
			c.t.Fatalf("answer to %d while waiting for %d: %+v", m.ID, id, m)
		}
		return m
	}
}

// SIGTERM (ctx cancelled) drains: new groups are refused on both
// transports and readiness fails, while a request in progress (a commit
// waiting for its prepare phase) completes; then sessions are closed with a
// normal close frame and run returns nil.
func TestRunDrainOnShutdown(t *testing.T) {
	const admin = "admin-token-drain-0123456789"
	cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(admin))
	logs := &syncBuffer{}
	r := startRunner(t, []string{"--config", cfg, "--store", "bolt", "--data-dir", t.TempDir(), "--log-level", "info", "--drain-timeout", "20s"}, logs)
	base := "http://" + r.addr
	c := dialWS(t, "ws://"+r.addr+"/v1/ws", "stock-"+admin, "stock", "i-1")

	g := c.answer(c.send(&wire.Message{Type: wire.TypeCreate}), nil).Group
	var branches []string
	for range 2 {
		b := c.answer(c.send(&wire.Message{Type: wire.TypeJoin, Group: g, Datasource: "db", Mode: "xa"}), nil).Branch
		if ans := c.answer(c.send(&wire.Message{Type: wire.TypeVote, Group: g, Branch: b, OK: true}), nil); ans.Type != wire.TypeOK {
			t.Fatalf("vote: %+v", ans)
		}
		branches = append(branches, b)
	}
	// The commit waits for the prepare phase: a request in progress.
	decide := c.send(&wire.Message{Type: wire.TypeDecide, Group: g, Commit: true})
	for prepares := 0; prepares < 2; {
		m, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != wire.TypePrepare {
			t.Fatalf("before the prepare requests: %+v", m)
		}
		prepares++
	}

	r.cancel() // SIGTERM
	eventually(t, "readiness to fail", func() bool { return get(t, http.DefaultClient, base+"/readyz", "") == http.StatusServiceUnavailable })
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/groups", nil)
	req.Header.Set("Authorization", "Bearer stock-"+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body["error"]["code"] != 503.0 {
		t.Errorf("REST create while draining: %d %v", resp.StatusCode, body)
	}
	if ans := c.answer(c.send(&wire.Message{Type: wire.TypeCreate}), nil); ans.Type != wire.TypeError || ans.Code != wire.CodeUnavailable {
		t.Errorf("websocket create while draining: %+v", ans)
	}

	// The in-flight commit completes.
	for _, b := range branches {
		if ans := c.answer(c.send(&wire.Message{Type: wire.TypePrepared, Group: g, Branch: b, OK: true}), nil); ans.Type != wire.TypeOK {
			t.Fatalf("prepared: %+v", ans)
		}
	}
	if ans := c.answer(decide, nil); ans.Type != wire.TypeOK || ans.State != "COMMITTING" {
		t.Fatalf("commit answered during the drain: %+v", ans)
	}
	// Then the session is closed normally.
	for {
		_, err := c.read()
		if err == nil {
			continue // decision pushes
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
			t.Fatalf("session ended with %v, want a normal close frame", err)
		}
		break
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after the drain")
	}
	for _, want := range []string{"shutting down: draining", "drained", "stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

// The admin page needs a real secret.
func TestRunRefusesAdminPageWithoutSecret(t *testing.T) {
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{[]string{"--admin-ui-enabled"}, "admin_ui.secret_sha256"},
		{[]string{"--admin-ui-enabled", "--admin-ui-secret-sha256", txmanager.HashToken("admin")}, "known default"},
		{[]string{"--admin-ui-enabled", "--admin-ui-secret-sha256", txmanager.HashToken("changeme")}, "known default"},
		{[]string{"--admin-ui-enabled", "--admin-ui-secret-sha256", "abc"}, "admin_ui.secret_sha256"},
	} {
		args := append([]string{"--auth-insecure", "--store", "memory", "--listen", "127.0.0.1:0"}, tc.extra...)
		err := run(context.Background(), args, nil, io.Discard, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want one mentioning %q", tc.extra, err, tc.want)
		}
	}
}

// Through real traffic (REST participants, operator calls, admin page
// logins, websocket sessions, over TLS, at debug level), the logs never
// show a configured secret: tokens and their hashes, the admin secret and
// its hash, the Redis password, the TLS private key.
func TestRunLogsNoSecretsUnderTraffic(t *testing.T) {
	const (
		admin       = "admin-token-Quux-0123456789"
		adminSecret = "admin-page-secret-Zork-0123456789"
		password    = "redis-pass-Grue-42"
		wrong       = "wrong-token-Xyzzy-0123456789"
	)
	pki := newTestPKI(t)
	cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(admin)+
		"redis:\n  password: "+password+"\n"+
		"admin_ui:\n  enabled: true\n  secret_sha256: "+txmanager.HashToken(adminSecret)+"\n"+
		"tls:\n  cert_file: "+pki.serverCert+"\n  key_file: "+pki.serverKey+"\n")
	logs := &syncBuffer{}
	r := startRunner(t, []string{"--config", cfg, "--log-level", "debug", "--lost-after", "100ms", "--retry-min", "20ms", "--retry-max", "50ms"}, logs)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.ca}}}
	defer hc.CloseIdleConnections()
	base := "https://" + r.addr
	call := func(method, path, token string, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %v, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	stock := "stock-" + admin
	// A committed group, and one whose branch is lost (a marker to resolve).
	for i := range 2 {
		id := call("POST", "/v1/groups", stock, "", 201)["id"].(string)
		b := call("POST", "/v1/groups/"+id+"/branches", stock, `{"datasource":"db"}`, 201)["branch"].(string)
		call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stock, `{"ok":true}`, 200)
		call("POST", "/v1/groups/"+id+"/decide", stock, `{"commit":true}`, 200)
		if i == 0 {
			call("POST", "/v1/groups/"+id+"/branches/"+b+"/ack", stock, `{"outcome":"committed"}`, 200)
			call("GET", "/v1/groups/"+id, admin, "", 200)
			continue
		}
		eventually(t, "the lost branch's marker", func() bool {
			return len(call("GET", "/v1/compensations", admin, "", 200)["compensations"].([]any)) == 1
		})
		call("POST", "/v1/compensations/"+id+"."+b+"/resolve", admin, `{"reason":"checked"}`, 200)
	}
	call("GET", "/v1/groups?attention=true", admin, "", 200)
	call("GET", "/v1/overview", wrong, "", 401)
	call("GET", "/v1/overview", stock, "", 403)
	// The admin page: a wrong secret, then the right one; the session works.
	form := func(secret string) string { return url.Values{"secret": {secret}}.Encode() }
	for _, tc := range []struct {
		secret string
		want   int
	}{{wrong, 401}, {adminSecret, 200}} {
		req, _ := http.NewRequest("POST", base+"/admin/login", strings.NewReader(form(tc.secret)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("login: %d, want %d", resp.StatusCode, tc.want)
		}
	}
	call("GET", "/v1/overview", "", "", 200)                                       // by the session cookie
	call("POST", "/v1/groups/0123456789abcdef0123456789abcdef/retry", "", "", 403) // no CSRF token
	d := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pki.ca}}
	ws, _, err := d.Dial("wss://"+r.addr+"/v1/ws", http.Header{"Authorization": {"Bearer " + stock}})
	if err != nil {
		t.Fatal(err)
	}
	frame, _ := wire.Encode(&wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-9", Token: stock})
	_ = ws.WriteMessage(websocket.TextMessage, frame)
	_, _, _ = ws.ReadMessage()
	ws.Close()
	if _, _, err := d.Dial("wss://"+r.addr+"/v1/ws", http.Header{"Authorization": {"Bearer " + wrong}}); err == nil {
		t.Error("websocket with a wrong token accepted")
	}
	r.cancel()
	<-r.done
	r.done <- nil

	out := logs.String()
	for _, want := range []string{"starting txmanager", "group decided", "admin login", "compensation marker resolved", "request refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q (level debug)", want)
		}
	}
	keyPEM, err := os.ReadFile(pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{admin, stock, wrong, adminSecret, password,
		txmanager.HashToken(admin), txmanager.HashToken(stock), txmanager.HashToken(adminSecret)}
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("logs show a secret %.12q…", s)
		}
	}
}
