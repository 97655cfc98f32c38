package adminui

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const testSecret = "correct horse battery staple 7f3a"

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
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
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fixture struct {
	ui   *UI
	h    http.Handler
	clk  *clock
	logs *syncBuffer
}

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	cfg := Config{Enabled: true, SecretSHA256: hashOf(testSecret)}
	if mod != nil {
		mod(&cfg)
	}
	logs := &syncBuffer{}
	ui, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	ui.now = clk.now
	return &fixture{ui: ui, h: ui.Handler(), clk: clk, logs: logs}
}

func (f *fixture) do(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func loginRequest(secret, remote string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader(url.Values{"secret": {secret}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if remote != "" {
		req.RemoteAddr = remote
	}
	return req
}

// login logs in and returns the session cookie and CSRF token.
func (f *fixture) login(t *testing.T) (*http.Cookie, string) {
	t.Helper()
	rec := f.do(loginRequest(testSecret, ""))
	if rec.Code != http.StatusOK {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var sv sessionView
	if err := json.Unmarshal(rec.Body.Bytes(), &sv); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != CookieName {
		t.Fatalf("login cookies: %v", cookies)
	}
	return cookies[0], sv.CSRFToken
}

func withCookie(req *http.Request, c *http.Cookie) *http.Request {
	req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	return req
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) (int, string) {
	t.Helper()
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error content type %q", ct)
	}
	return body.Error.Code, body.Error.Message
}

func TestNewRefusesMissingMalformedAndDefaultSecrets(t *testing.T) {
	cases := map[string]string{
		"empty":         "",
		"spaces":        "   ",
		"not hex":       strings.Repeat("z", 64),
		"short":         hashOf("x")[:62],
		"long":          hashOf("x") + "00",
		"empty secret":  hashOf(""),
		"admin":         hashOf("admin"),
		"ADMIN upper":   strings.ToUpper(hashOf("admin")),
		"password":      hashOf("password"),
		"changeme":      hashOf("changeme"),
		"secret":        hashOf("secret"),
		"123456":        hashOf("123456"),
		"lcn":           hashOf("lcn"),
		"golcn":         hashOf("golcn"),
		"tx-lcn":        hashOf("tx-lcn"),
		"codingapi":     hashOf("codingapi"),
		"spaced admin ": " " + hashOf("admin") + " ",
	}
	for name, h := range cases {
		if _, err := New(Config{Enabled: true, SecretSHA256: h}, nil); err == nil {
			t.Errorf("%s: New accepted secret_sha256 %q", name, h)
		} else if !strings.Contains(err.Error(), "secret_sha256") {
			t.Errorf("%s: error does not name the setting: %v", name, err)
		}
	}
	if _, err := New(Config{Enabled: true, SecretSHA256: hashOf(testSecret), SessionTTL: -time.Second}, nil); err == nil {
		t.Error("negative session TTL accepted")
	}
	if _, err := New(Config{Enabled: true, SecretSHA256: strings.ToUpper(hashOf(testSecret))}, nil); err != nil {
		t.Errorf("upper-case hex refused: %v", err)
	}
	// Disabled: no secret needed.
	if _, err := New(Config{}, nil); err != nil {
		t.Errorf("disabled UI refused: %v", err)
	}
}

func TestDisabledServesNotFoundAndAuthenticatesNobody(t *testing.T) {
	ui, err := New(Config{Enabled: false, SecretSHA256: hashOf(testSecret)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ui.Enabled() {
		t.Fatal("Enabled() true")
	}
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/admin/", nil),
		httptest.NewRequest(http.MethodGet, "/admin/static/app.js", nil),
		httptest.NewRequest(http.MethodGet, "/admin/session", nil),
		loginRequest(testSecret, ""),
	} {
		rec := httptest.NewRecorder()
		ui.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Fatalf("%s %s on a disabled UI: %d", req.Method, req.URL.Path, rec.Code)
		}
		if rec.Header().Get("Set-Cookie") != "" {
			t.Fatalf("disabled UI set a cookie")
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/v1/groups", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: "anything"})
	req.Header.Set(CSRFHeader, "anything")
	if p, ok := ui.Authenticate(req); ok || p != "" {
		t.Fatal("disabled UI authenticated a request")
	}
	if ui.CheckCSRF(req) {
		t.Fatal("disabled UI accepted a CSRF token")
	}
}

func TestLoginSuccessSetsAHardenedCookie(t *testing.T) {
	f := newFixture(t, nil)
	rec := f.do(loginRequest(testSecret, "192.0.2.1:4000"))
	if rec.Code != http.StatusOK {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var sv sessionView
	if err := json.Unmarshal(rec.Body.Bytes(), &sv); err != nil {
		t.Fatal(err)
	}
	if sv.Principal != "admin" || len(sv.CSRFToken) < 40 || !sv.Expires.Equal(f.clk.now().Add(DefaultSessionTTL)) {
		t.Fatalf("session answer %+v", sv)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("login Cache-Control %q", cc)
	}
	cs := rec.Result().Cookies()
	if len(cs) != 1 {
		t.Fatalf("cookies %v", cs)
	}
	c := cs[0]
	if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.Domain != "" {
		t.Fatalf("cookie over plain HTTP: %+v", c)
	}
	if c.MaxAge != int(DefaultSessionTTL.Seconds()) || len(c.Value) < 40 || c.Value == sv.CSRFToken {
		t.Fatalf("cookie value/max-age: %+v", c)
	}
	// The page learns the same CSRF token from /admin/session.
	rec = f.do(withCookie(httptest.NewRequest(http.MethodGet, "/admin/session", nil), c))
	var again sessionView
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &again) != nil || again.CSRFToken != sv.CSRFToken || again.Principal != "admin" {
		t.Fatalf("/admin/session: %d %s", rec.Code, rec.Body)
	}
	// The API's view of the request.
	api := withCookie(httptest.NewRequest(http.MethodPost, "/v1/compensations/x/retry", nil), c)
	if p, ok := f.ui.Authenticate(api); !ok || p != "admin" {
		t.Fatalf("Authenticate = %q, %v", p, ok)
	}
	if f.ui.CheckCSRF(api) {
		t.Fatal("CheckCSRF without the header passed")
	}
	api.Header.Set(CSRFHeader, sv.CSRFToken)
	if !f.ui.CheckCSRF(api) {
		t.Fatal("CheckCSRF with the right token failed")
	}
	// Two logins get distinct sessions and tokens.
	c2, tok2 := f.login(t)
	if c2.Value == c.Value || tok2 == sv.CSRFToken {
		t.Fatal("second login reused the session id or the CSRF token")
	}
	if !strings.Contains(f.logs.String(), "admin login") || strings.Contains(f.logs.String(), c.Value) || strings.Contains(f.logs.String(), testSecret) {
		t.Fatalf("logs leak the session id or the secret, or miss the login:\n%s", f.logs)
	}

	// Over TLS the cookie is Secure.
	req := loginRequest(testSecret, "")
	req.TLS = &tls.ConnectionState{}
	rec = f.do(req)
	if cs := rec.Result().Cookies(); rec.Code != http.StatusOK || len(cs) != 1 || !cs[0].Secure {
		t.Fatalf("cookie over TLS: %d %v", rec.Code, cs)
	}
}

func TestLoginFailure(t *testing.T) {
	f := newFixture(t, nil)
	wrong := "not-the-secret-" + testSecret
	for _, req := range []*http.Request{loginRequest(wrong, ""), loginRequest("", "")} {
		rec := f.do(req)
		if rec.Code != http.StatusUnauthorized || len(rec.Result().Cookies()) != 0 {
			t.Fatalf("wrong secret: %d cookies %v", rec.Code, rec.Result().Cookies())
		}
		if code, msg := errorBody(t, rec); code != http.StatusUnauthorized || msg == "" {
			t.Fatalf("error body %d %q", code, msg)
		}
	}
	if f.ui.Sessions() != 0 {
		t.Fatalf("%d sessions after failed logins", f.ui.Sessions())
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "admin login failed") || strings.Contains(logs, wrong) || strings.Contains(logs, testSecret) {
		t.Fatalf("failed login logs:\n%s", logs)
	}
	// A cross-site form post is refused before the secret is looked at.
	req := loginRequest(testSecret, "")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if rec := f.do(req); rec.Code != http.StatusForbidden {
		t.Fatalf("cross-site login: %d", rec.Code)
	}
	// An oversized body is refused.
	big := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader("secret="+strings.Repeat("a", 8<<10)))
	big.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if rec := f.do(big); rec.Code != http.StatusBadRequest {
		t.Fatalf("oversized login body: %d", rec.Code)
	}
	// GET is not a login.
	if rec := f.do(httptest.NewRequest(http.MethodGet, "/admin/login?secret="+url.QueryEscape(testSecret), nil)); rec.Code < 400 || len(rec.Result().Cookies()) != 0 {
		t.Fatalf("GET /admin/login: %d", rec.Code)
	}
	// A forged cookie authenticates nobody.
	forged := httptest.NewRequest(http.MethodGet, "/admin/session", nil)
	forged.AddCookie(&http.Cookie{Name: CookieName, Value: randomToken()})
	if rec := f.do(forged); rec.Code != http.StatusUnauthorized {
		t.Fatalf("forged cookie: %d", rec.Code)
	}
}

func TestSessionExpires(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SessionTTL = time.Hour })
	c, tok := f.login(t)
	req := func() *http.Request {
		r := withCookie(httptest.NewRequest(http.MethodGet, "/v1/groups", nil), c)
		r.Header.Set(CSRFHeader, tok)
		return r
	}
	f.clk.add(time.Hour - time.Second)
	if _, ok := f.ui.Authenticate(req()); !ok || !f.ui.CheckCSRF(req()) {
		t.Fatal("session dead before its TTL")
	}
	f.clk.add(time.Second)
	if _, ok := f.ui.Authenticate(req()); ok {
		t.Fatal("session alive at its TTL")
	}
	if f.ui.CheckCSRF(req()) {
		t.Fatal("CSRF token of an expired session accepted")
	}
	if rec := f.do(withCookie(httptest.NewRequest(http.MethodGet, "/admin/session", nil), c)); rec.Code != http.StatusUnauthorized {
		t.Fatalf("/admin/session after expiry: %d", rec.Code)
	}
	if n := f.ui.Sessions(); n != 0 {
		t.Fatalf("expired session still held (%d)", n)
	}
}

func TestSessionsAreBoundedAndSweptLazily(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SessionTTL = time.Minute })
	for range maxSessions {
		f.ui.newSession(f.clk.now())
	}
	f.clk.add(2 * time.Minute) // all expired
	f.ui.newSession(f.clk.now())
	if n := f.ui.Sessions(); n != 1 {
		t.Fatalf("%d sessions after the sweep, want 1", n)
	}
	for range maxSessions + 50 {
		f.clk.add(time.Millisecond)
		f.ui.newSession(f.clk.now())
	}
	if n := f.ui.Sessions(); n != maxSessions {
		t.Fatalf("%d live sessions, want the bound %d", n, maxSessions)
	}
	// The newest survives, the oldest was dropped.
	c, _ := f.login(t)
	if _, ok := f.ui.Authenticate(withCookie(httptest.NewRequest(http.MethodGet, "/", nil), c)); !ok {
		t.Fatal("newest session dropped")
	}
}

func TestLogoutNeedsCSRF(t *testing.T) {
	f := newFixture(t, nil)
	c, tok := f.login(t)
	logout := func(token, site string) *httptest.ResponseRecorder {
		r := withCookie(httptest.NewRequest(http.MethodPost, "/admin/logout", nil), c)
		if token != "" {
			r.Header.Set(CSRFHeader, token)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		return f.do(r)
	}
	for _, tc := range []struct{ token, site string }{{"", ""}, {"wrong", ""}, {tok[:len(tok)-1], ""}, {tok + "x", ""}, {tok, "cross-site"}} {
		if rec := logout(tc.token, tc.site); rec.Code != http.StatusForbidden {
			t.Fatalf("logout with token %q site %q: %d", tc.token, tc.site, rec.Code)
		}
	}
	if _, ok := f.ui.Authenticate(withCookie(httptest.NewRequest(http.MethodGet, "/", nil), c)); !ok {
		t.Fatal("a refused logout ended the session")
	}
	// Another session's token does not work either.
	_, other := f.login(t)
	if rec := logout(other, ""); rec.Code != http.StatusForbidden {
		t.Fatalf("logout with another session's token: %d", rec.Code)
	}
	rec := logout(tok, "same-origin")
	if rec.Code != http.StatusOK {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	if cs := rec.Result().Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 || cs[0].Value != "" {
		t.Fatalf("logout cookie %v", cs)
	}
	if _, ok := f.ui.Authenticate(withCookie(httptest.NewRequest(http.MethodGet, "/", nil), c)); ok {
		t.Fatal("session alive after logout")
	}
	if rec := logout(tok, ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("second logout: %d", rec.Code)
	}
	// Without a session, no request passes CheckCSRF.
	r := httptest.NewRequest(http.MethodPost, "/v1/groups/x/retry", nil)
	r.Header.Set(CSRFHeader, tok)
	if f.ui.CheckCSRF(r) {
		t.Fatal("CheckCSRF passed without a cookie")
	}
}

func TestFailedLoginsAreRateLimited(t *testing.T) {
	f := newFixture(t, nil)
	const attacker, other = "198.51.100.7:5000", "203.0.113.9:6000"
	// Successful logins are not limited.
	for i := range 3 * perClientBurst {
		if rec := f.do(loginRequest(testSecret, attacker)); rec.Code != http.StatusOK {
			t.Fatalf("successful login %d: %d", i, rec.Code)
		}
	}
	for i := range perClientBurst {
		if rec := f.do(loginRequest(fmt.Sprint("guess", i), attacker)); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, rec.Code)
		}
	}
	rec := f.do(loginRequest("one more guess", attacker))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("guess over the limit: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Limited even with the right secret: the check is not reached.
	if rec := f.do(loginRequest(testSecret, attacker)); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("right secret while limited: %d", rec.Code)
	}
	if !strings.Contains(f.logs.String(), "too many failed attempts") {
		t.Fatal("limited attempts not logged")
	}
	// Another client is not affected.
	if rec := f.do(loginRequest(testSecret, other)); rec.Code != http.StatusOK {
		t.Fatalf("other client: %d", rec.Code)
	}
	// The bucket refills.
	f.clk.add(time.Duration(float64(time.Second) / float64(perClientRate)))
	if rec := f.do(loginRequest(testSecret, attacker)); rec.Code != http.StatusOK {
		t.Fatalf("after the refill: %d", rec.Code)
	}
	// The global limit bounds guesses from many addresses.
	limited := 0
	for i := range globalBurst + 10 {
		if rec := f.do(loginRequest("guess", fmt.Sprintf("10.9.%d.%d:1", i/250, i%250))); rec.Code == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no global limit on failed logins from many addresses")
	}
}

func TestAssetsEmbeddedWithContentTypesAndCSP(t *testing.T) {
	f := newFixture(t, nil)
	page := f.do(httptest.NewRequest(http.MethodGet, "/admin/", nil))
	if page.Code != http.StatusOK || page.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /admin/: %d %q", page.Code, page.Header().Get("Content-Type"))
	}
	html := page.Body.String()
	// Every local file the page references is served with its type.
	refs := regexp.MustCompile(`(?:src|href)="(static/[^"]+)"`).FindAllStringSubmatch(html, -1)
	if len(refs) < 3 {
		t.Fatalf("page references %v", refs)
	}
	want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, m := range refs {
		rec := f.do(httptest.NewRequest(http.MethodGet, "/admin/"+m[1], nil))
		ext := m[1][strings.LastIndex(m[1], "."):]
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != want[ext] || rec.Body.Len() == 0 {
			t.Fatalf("GET %s: %d %q (%d bytes)", m[1], rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s without nosniff", m[1])
		}
		// Revalidation with the ETag.
		etag := rec.Header().Get("ETag")
		req := httptest.NewRequest(http.MethodGet, "/admin/"+m[1], nil)
		req.Header.Set("If-None-Match", etag)
		if rec := f.do(req); etag == "" || rec.Code != http.StatusNotModified {
			t.Fatalf("GET %s with If-None-Match %q: %d", m[1], etag, rec.Code)
		}
	}
	// Nothing is loaded from elsewhere, and nothing is inline.
	for name, a := range f.ui.assets {
		body := string(a.body)
		if regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).MatchString(strings.ReplaceAll(body, "http://www.w3.org/2000/svg", "")) {
			t.Errorf("%s references an external URL", name)
		}
		if name == "index.html" && (regexp.MustCompile(`<script>|<style>|\son[a-z]+=`).MatchString(body)) {
			t.Errorf("index.html has inline script, style or handler (blocked by the CSP)")
		}
		if name == "app.js" && regexp.MustCompile(`\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|eval\(|new Function`).MatchString(body) {
			t.Errorf("app.js builds HTML from strings")
		}
	}
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/admin/", nil),
		httptest.NewRequest(http.MethodGet, "/admin/index.html", nil),
		httptest.NewRequest(http.MethodGet, "/admin/static/app.js", nil),
		httptest.NewRequest(http.MethodGet, "/admin/static/nope.js", nil),
		httptest.NewRequest(http.MethodGet, "/admin/static/index.html", nil),
		httptest.NewRequest(http.MethodGet, "/admin/adminui.go", nil),
		httptest.NewRequest(http.MethodGet, "/admin/static/%2e%2e%2fadminui.go", nil),
		httptest.NewRequest(http.MethodGet, "/admin/elsewhere", nil),
		httptest.NewRequest(http.MethodGet, "/admin/session", nil),
		loginRequest("x", ""),
	} {
		rec := f.do(req)
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("%s %s: CSP %q", req.Method, req.URL.Path, csp)
		}
		switch req.URL.Path {
		case "/admin/", "/admin/index.html", "/admin/static/app.js":
		default:
			if rec.Code < 400 {
				t.Fatalf("%s %s: %d", req.Method, req.URL.Path, rec.Code)
			}
			if rec.Code == http.StatusNotFound {
				if code, _ := errorBody(t, rec); code != http.StatusNotFound {
					t.Fatalf("%s: error code %d", req.URL.Path, code)
				}
			}
		}
	}
}

// Concurrent logins, lookups, CSRF checks and logouts (run with -race).
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, nil)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				rec := f.do(loginRequest(testSecret, fmt.Sprintf("127.0.0.%d:1", i)))
				if rec.Code != http.StatusOK {
					t.Errorf("login: %d", rec.Code)
					return
				}
				c := rec.Result().Cookies()[0]
				var sv sessionView
				_ = json.Unmarshal(rec.Body.Bytes(), &sv)
				r := withCookie(httptest.NewRequest(http.MethodPost, "/admin/logout", nil), c)
				r.Header.Set(CSRFHeader, sv.CSRFToken)
				if !f.ui.CheckCSRF(r) {
					t.Error("CheckCSRF failed")
				}
				if rec := f.do(r); rec.Code != http.StatusOK {
					t.Errorf("logout: %d", rec.Code)
				}
				_ = f.do(loginRequest("wrong", fmt.Sprintf("127.0.1.%d:1", i)))
			}
		}()
	}
	wg.Wait()
	if n := f.ui.Sessions(); n != 0 {
		t.Fatalf("%d sessions left after every logout", n)
	}
}
