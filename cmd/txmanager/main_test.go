package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/config"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/txmanager"
)

// syncBuffer collects logs written by the TxManager's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs the TxManager in the background and returns its address; it
// is stopped, and must stop cleanly, when the test ends.
func start(t *testing.T, args, env []string, logOut io.Writer, reload <-chan struct{}) string {
	t.Helper()
	if logOut == nil {
		logOut = io.Discard
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env, logOut, reload, ready) }()
	select {
	case addr := <-ready:
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("txmanager did not shut down")
			}
		})
		return addr
	case err := <-done:
		cancel()
		t.Fatalf("run returned before serving: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("txmanager did not start")
	}
	return ""
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tokensYAML is a TxManager file accepting the given admin token.
func tokensYAML(adminToken string) string {
	return "listen: \"127.0.0.1:0\"\nstore: memory\nlog_level: error\nauth:\n  tokens:\n" +
		"    - service: ops\n      token_sha256: " + txmanager.HashToken(adminToken) + "\n      role: admin\n" +
		"    - service: stock\n      token_sha256: " + txmanager.HashToken("stock-"+adminToken) + "\n"
}

// get returns the status of GET url, with a bearer token unless token is
// "".
func get(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With --auth-insecure, a data directory and a port, the TxManager runs on
// its embedded store, answers /readyz saying it is insecure, and shuts down
// on cancel.
func TestRunEmbeddedInsecure(t *testing.T) {
	dir := t.TempDir()
	addr := start(t, []string{"--auth-insecure", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"}, nil, nil, nil)
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["status"] != "ready" || body["insecure"] != true {
		t.Fatalf("/readyz: %d %v", resp.StatusCode, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "txmanager.db")); err != nil {
		t.Fatalf("embedded store file: %v", err)
	}
	// Insecure: the operator endpoint answers anyone.
	if code := get(t, http.DefaultClient, "http://"+addr+"/v1/groups/"+gid.New(), ""); code != http.StatusNotFound {
		t.Errorf("GET group insecure: %d, want 404", code)
	}
}

// `txmanager` with no flags refuses to start, and says how to fix it.
func TestRunRefusesWithoutCredentials(t *testing.T) {
	for _, args := range [][]string{nil, {"--listen", "127.0.0.1:0", "--store", "memory"}, {"--auth-insecure=false"}} {
		err := run(context.Background(), args, nil, io.Discard, nil, nil)
		var ke *config.KeyError
		if !errors.As(err, &ke) || ke.Key != "auth.tokens" {
			t.Fatalf("args %q: err %v, want a *config.KeyError naming auth.tokens", args, err)
		}
		for _, want := range []string{"auth.tokens", "LCN_AUTH_TOKENS", "--auth-tokens", "hash-token", "auth.insecure", "--auth-insecure", "development only"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not mention %s:\n%v", want, err)
			}
		}
	}
	if _, err := os.Stat("lcn-data"); err == nil {
		t.Error("a refused start created ./lcn-data")
	}
}

// A bad setting stops the program with a message naming the key.
func TestRunBadConfigNamesKey(t *testing.T) {
	for _, tc := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"--group-timeout", "30x"}, nil, "group_timeout"},
		{nil, []string{"LCN_STORE=floppy"}, "store"},
		{[]string{"--store", "redis"}, nil, "redis.addr"},
		{nil, []string{"LCN_RETRY_MIN=1m", "LCN_RETRY_MAX=1s"}, "retry_min"},
		{[]string{"--store", "redis", "--redis-addr", "127.0.0.1:1"}, nil, "redis.addr"},
		{[]string{"--auth-tokens", "stock=nothex"}, nil, "auth.tokens[0].token_sha256"},
		{[]string{"--tls-cert-file", "/nonexistent.pem"}, nil, "tls.key_file"},
		{[]string{"--limits-message-rate", "0"}, nil, "limits.message_rate"},
	} {
		args := append([]string{"--auth-insecure", "--data-dir", t.TempDir()}, tc.args...)
		err := run(context.Background(), args, tc.env, io.Discard, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("args %v env %v: err %v, want one naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

// With tokens, the operator endpoint needs an admin token.
func TestRunTokenAuth(t *testing.T) {
	const admin = "admin-token-0123456789"
	cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(admin))
	addr := start(t, []string{"--config", cfg}, nil, nil, nil)
	url := "http://" + addr + "/v1/groups/" + gid.New()
	for _, tc := range []struct {
		token string
		want  int
	}{
		{"", http.StatusUnauthorized},
		{"wrong", http.StatusUnauthorized},
		{admin, http.StatusNotFound},
		{"stock-" + admin, http.StatusForbidden}, // role service
	} {
		if code := get(t, http.DefaultClient, url, tc.token); code != tc.want {
			t.Errorf("GET group with token %q: %d, want %d", tc.token, code, tc.want)
		}
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["insecure"] != nil {
		t.Errorf("/readyz: %d %v", resp.StatusCode, body)
	}
}

// A reload (SIGHUP in main) swaps the credentials for the file's new ones;
// a reload that fails keeps them.
func TestRunReloadCredentials(t *testing.T) {
	const tokenA, tokenB = "token-A-0123456789", "token-B-0123456789"
	cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(tokenA))
	reload := make(chan struct{})
	logs := &syncBuffer{}
	// The file says log_level: error; the flag makes the reload visible.
	addr := start(t, []string{"--config", cfg, "--log-level", "info"}, nil, logs, reload)
	url := "http://" + addr + "/v1/groups/" + gid.New()
	if code := get(t, http.DefaultClient, url, tokenA); code != http.StatusNotFound {
		t.Fatalf("token A before reload: %d", code)
	}
	if code := get(t, http.DefaultClient, url, tokenB); code != http.StatusUnauthorized {
		t.Fatalf("token B before reload: %d", code)
	}

	writeFile(t, cfg, tokensYAML(tokenB))
	reload <- struct{}{}
	eventually(t, "credentials reloaded", func() bool { return strings.Contains(logs.String(), "credentials reloaded") })
	if code := get(t, http.DefaultClient, url, tokenA); code != http.StatusUnauthorized {
		t.Errorf("token A after reload: %d, want 401", code)
	}
	if code := get(t, http.DefaultClient, url, tokenB); code != http.StatusNotFound {
		t.Errorf("token B after reload: %d, want 404", code)
	}
	if !strings.Contains(logs.String(), "credentials=2") {
		t.Errorf("reload log lacks the count:\n%s", logs)
	}

	// A file that does not load: logged, B still accepted.
	writeFile(t, cfg, tokensYAML(tokenB)+"    - service: x\n      token_sha256: "+strings.Repeat("z", 64)+"\n")
	reload <- struct{}{}
	eventually(t, "failed reload logged", func() bool { return strings.Contains(logs.String(), "credentials not reloaded") })
	if !strings.Contains(logs.String(), "auth.tokens[2].token_sha256") {
		t.Errorf("failed reload log does not name the key:\n%s", logs)
	}
	if code := get(t, http.DefaultClient, url, tokenB); code != http.StatusNotFound {
		t.Errorf("token B after a failed reload: %d, want 404", code)
	}
	for _, s := range []string{tokenA, tokenB, txmanager.HashToken(tokenA), txmanager.HashToken(tokenB)} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("logs show a token or its hash %q", s)
		}
	}
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate for service "stock", as PEM files.
type testPKI struct {
	ca                    *x509.CertPool
	caFile                string
	serverCert, serverKey string
	client                tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "golcn test CA")
	p := testPKI{ca: ca.Pool(), caFile: ca.WriteCA(t, dir, "ca.pem"), client: ca.Issue(t, "stock", false)}
	p.serverCert, p.serverKey = testenv.WriteKeyPair(t, dir, "server", ca.Issue(t, "txmanager", true))
	return p
}

// hello sends a hello over a fresh websocket and returns the answer.
func hello(t *testing.T, d *websocket.Dialer, url, token string, m *wire.Message) (*wire.Message, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := d.Dial(url, h)
	if err != nil {
		return nil, resp, err
	}
	defer conn.Close()
	frame, err := wire.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := conn.ReadMessage()
	if err != nil {
		return nil, resp, err
	}
	ans, err := wire.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return ans, resp, nil
}

// With tls.*, the TxManager serves HTTPS and wss://, still needs
// credentials at the upgrade, and accepts client certificates with
// auth.client_certs.
func TestRunTLS(t *testing.T) {
	const admin = "admin-token-tls-0123456789"
	pki := newTestPKI(t)
	cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(admin)+
		"  client_certs: true\ntls:\n  cert_file: "+pki.serverCert+"\n  key_file: "+pki.serverKey+"\n  client_ca_file: "+pki.caFile+"\n")
	addr := start(t, []string{"--config", cfg}, nil, nil, nil)

	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.ca}}}
	defer c.CloseIdleConnections()
	if code := get(t, c, "https://"+addr+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("https /healthz: %d", code)
	}
	if code := get(t, c, "https://"+addr+"/v1/groups/"+gid.New(), admin); code != http.StatusNotFound {
		t.Errorf("https GET group with admin token: %d", code)
	}
	// Plain HTTP is not served.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered on the TLS port")
		}
	}
	// An unknown CA is refused.
	if _, err := http.Get("https://" + addr + "/healthz"); err == nil {
		t.Error("https with the system roots verified a test certificate")
	}

	wsURL := "wss://" + addr + "/v1/ws"
	d := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pki.ca}, HandshakeTimeout: 10 * time.Second}
	_, resp, err := hello(t, d, wsURL, "", &wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-1"})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wss upgrade without a token: err %v, resp %v; want 401", err, resp)
	}
	ans, _, err := hello(t, d, wsURL, "stock-"+admin, &wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-1"})
	if err != nil || ans.Type != wire.TypeOK {
		t.Fatalf("wss hello with a token: %v %+v", err, ans)
	}
	// A client certificate whose CN is stock is service stock.
	dc := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pki.ca, Certificates: []tls.Certificate{pki.client}}, HandshakeTimeout: 10 * time.Second}
	ans, _, err = hello(t, dc, wsURL, "", &wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-2"})
	if err != nil || ans.Type != wire.TypeOK {
		t.Fatalf("wss hello with a client certificate: %v %+v", err, ans)
	}
}

// The logs carry no secret, even at debug level: not the Redis password,
// not a token presented to the TxManager, not a token's hash.
func TestRunLogsNoSecrets(t *testing.T) {
	const (
		password = "redis-pass-Xyzzy-42"
		admin    = "admin-token-Plugh-0123456789"
		wrong    = "wrong-token-Frotz-0123456789"
	)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			cfg := writeFile(t, filepath.Join(t.TempDir(), "lcn.yaml"), tokensYAML(admin)+
				"redis:\n  password: "+password+"\n")
			logs := &syncBuffer{}
			reload := make(chan struct{})
			addr := start(t, []string{"--config", cfg, "--log-level", "debug", "--log-format", format}, nil, logs, reload)

			url := "http://" + addr + "/v1/groups/" + gid.New()
			get(t, http.DefaultClient, url, admin)
			get(t, http.DefaultClient, url, wrong)
			get(t, http.DefaultClient, url, "stock-"+admin)
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Basic "+wrong) // malformed
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
			wsURL := "ws://" + addr + "/v1/ws"
			if _, _, err := hello(t, d, wsURL, admin, &wire.Message{Type: wire.TypeHello, ID: 1, Service: "ops", Instance: "i-1", Token: admin}); err != nil {
				t.Fatalf("hello: %v", err)
			}
			// A hello naming another service than its token's.
			_, _, _ = hello(t, d, wsURL, admin, &wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-2", Token: admin})
			_, _, _ = hello(t, d, wsURL, wrong, &wire.Message{Type: wire.TypeHello, ID: 1, Service: "stock", Instance: "i-3", Token: wrong})
			reload <- struct{}{}
			eventually(t, "reload", func() bool { return strings.Contains(logs.String(), "credentials reloaded") })

			out := logs.String()
			if !strings.Contains(out, "starting txmanager") || !strings.Contains(out, "***") || !strings.Contains(out, "request refused") {
				t.Fatalf("logs lack the expected lines (level debug):\n%s", out)
			}
			for _, s := range []string{password, admin, wrong, "stock-" + admin,
				txmanager.HashToken(admin), txmanager.HashToken("stock-" + admin)} {
				if strings.Contains(out, s) {
					t.Errorf("logs show %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestHashToken(t *testing.T) {
	want := txmanager.HashToken("s3cret")
	for _, in := range []string{"s3cret", "s3cret\n", "s3cret\r\n"} {
		var out bytes.Buffer
		if err := hashToken(strings.NewReader(in), &out, nil); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if out.String() != want+"\n" {
			t.Errorf("%q: printed %q, want %q", in, out.String(), want)
		}
	}
	for _, tc := range []struct {
		in   string
		args []string
	}{{"", nil}, {"\n", nil}, {"a\nb\n", nil}, {"s3cret\n\n", nil}, {"s3cret", []string{"s3cret"}}} {
		var out bytes.Buffer
		err := hashToken(strings.NewReader(tc.in), &out, tc.args)
		if err == nil || out.Len() > 0 {
			t.Errorf("%q %q: err %v, output %q; want an error and no output", tc.in, tc.args, err, out.String())
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") && len(tc.args) == 0 {
			t.Errorf("error shows the token: %v", err)
		}
	}
}
