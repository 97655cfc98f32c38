// Package adminui is the TxManager's admin web page: a single page served
// from files embedded in the binary (no CDN, no external fonts or scripts:
// it works offline), a login with the admin secret, and browser sessions
// that the TxManager's REST API accepts in place of a bearer token.
//
// # Mounting
//
// Handler serves every path under /admin/ and expects the full request path
// (mount it with mux.Handle("/admin/", ui.Handler()), not behind
// http.StripPrefix). The page calls the REST API at ../v1/ relative to
// itself, so the API must be served by the same origin.
//
// With Config.Enabled false, New returns a UI whose Handler answers 404 to
// every request and whose Authenticate and CheckCSRF refuse everything, so
// a server may mount it unconditionally.
//
// # Authentication and CSRF
//
// POST /admin/login takes the form field "secret". Its SHA-256 is compared in
// constant time with Config.SecretSHA256 (only the hash is configured; make
// it with `txmanager hash-token`). Success creates a session: a 256-bit id
// from crypto/rand in an HttpOnly, SameSite=Strict, Path=/ cookie (Secure
// when the request came over TLS), an absolute expiry of Config.SessionTTL,
// and a random per-session CSRF token. The page reads the token from
// GET /admin/session and sends it as the X-CSRF-Token header on every POST;
// the API checks it with CheckCSRF. Sessions live in memory (a restart logs
// everybody out), at most maxSessions of them; expired ones are swept lazily.
// The map is keyed by the SHA-256 of the session id, so the ids themselves
// are never stored.
//
// Failed logins are rate-limited per client address and globally; a limited
// attempt is answered 429 with Retry-After, without checking the secret.
// Logins are logged with the client address, never with the secret or the
// session id.
//
// Every response carries a Content-Security-Policy (default-src 'self',
// nothing inline), X-Content-Type-Options: nosniff and
// frame-ancestors 'none'; the page builds its DOM with textContent only, so
// data from the API is never parsed as HTML.
package adminui

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures the admin page.
type Config struct {
	// Enabled turns the page on. When it is on, SecretSHA256 is required.
	Enabled bool
	// SecretSHA256 is the hex SHA-256 of the admin secret (made with
	// `txmanager hash-token`). New refuses an empty or malformed value and
	// the hash of a known default secret.
	SecretSHA256 string
	// SessionTTL is how long a login lasts (absolute, not sliding).
	// Default 8h.
	SessionTTL time.Duration
}

// DefaultSessionTTL is the session lifetime when Config.SessionTTL is zero.
const DefaultSessionTTL = 8 * time.Hour

// Principal is the identity of every admin session.
const Principal = "admin"

// CookieName is the session cookie's name.
const CookieName = "lcn_admin_session"

// CSRFHeader is the request header that carries the session's CSRF token.
const CSRFHeader = "X-CSRF-Token"

// ContentSecurityPolicy is sent with every response of the page.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

const (
	maxSessions  = 1000    // live sessions kept at once; the oldest is dropped beyond
	maxLimiters  = 10000   // client addresses whose failed logins are tracked
	maxLoginBody = 4 << 10 // bytes of a login request body
	// Failed logins: 5 per client address (an IPv6 address counts by its
	// /64), then one per 10s; from all clients together 100, then 2/s.
	// The global bucket bounds a guessing botnet; its price is that such
	// a botnet can also keep the admin out while it lasts.
	perClientRate  = rate.Limit(1.0 / 10)
	perClientBurst = 5
	globalRate     = rate.Limit(2)
	globalBurst    = 100
)

// knownDefaultSecrets are secrets shipped as defaults by coordinators and
// admin consoles, or simply guessed first; New refuses their hashes.
var knownDefaultSecrets = []string{
	"", "admin", "administrator", "password", "passw0rd", "changeme", "change-me", "secret", "123456",
	"12345678", "123456789", "qwerty", "letmein", "root", "toor", "default", "test", "lcn", "golcn",
	"tx-lcn", "txlcn", "codingapi", "seata", "dtm", "admin123", "password123",
}

//go:embed static
var staticFiles embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// loadAssets reads the embedded files once, with their content types (set
// here rather than taken from the system's MIME table, which varies) and
// strong ETags.
func loadAssets() (map[string]asset, error) {
	out := make(map[string]asset)
	err := fs.WalkDir(staticFiles, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("adminui: embedded file %s has no known content type", p)
		}
		body, err := staticFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		out[strings.TrimPrefix(p, "static/")] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out, err
}

// UI is the admin page. Its methods are safe for concurrent use.
type UI struct {
	enabled bool
	secret  [sha256.Size]byte
	ttl     time.Duration
	log     *slog.Logger
	assets  map[string]asset
	now     func() time.Time // tests replace it

	mu       sync.Mutex // guards sessions, limiters
	sessions map[[sha256.Size]byte]*session
	limiters map[string]*rate.Limiter // failed logins by client address
	global   *rate.Limiter            // failed logins from anywhere
}

type session struct {
	csrf    string
	expires time.Time
}

// New returns the admin page for cfg. It fails when the page is enabled and
// SecretSHA256 is missing, malformed or the hash of a known default secret.
func New(cfg Config, log *slog.Logger) (*UI, error) {
	if log == nil {
		log = slog.Default()
	}
	u := &UI{enabled: cfg.Enabled, log: log, now: time.Now, ttl: cfg.SessionTTL}
	if !cfg.Enabled {
		return u, nil
	}
	if u.ttl == 0 {
		u.ttl = DefaultSessionTTL
	}
	if u.ttl < 0 {
		return nil, fmt.Errorf("adminui: admin_ui.session_ttl must be positive, got %s", cfg.SessionTTL)
	}
	h := strings.ToLower(strings.TrimSpace(cfg.SecretSHA256))
	if h == "" {
		return nil, errors.New("adminui: admin_ui.secret_sha256 is required when the admin page is enabled " +
			"(make one with `txmanager hash-token`)")
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("adminui: admin_ui.secret_sha256 must be 64 hex characters (the SHA-256 of the admin secret)")
	}
	for _, weak := range knownDefaultSecrets {
		if sum := sha256.Sum256([]byte(weak)); bytes.Equal(sum[:], b) {
			return nil, errors.New("adminui: admin_ui.secret_sha256 is the hash of a known default or empty secret; choose a long random secret")
		}
	}
	copy(u.secret[:], b)
	if u.assets, err = loadAssets(); err != nil {
		return nil, err
	}
	u.sessions = make(map[[sha256.Size]byte]*session)
	u.limiters = make(map[string]*rate.Limiter)
	u.global = rate.NewLimiter(globalRate, globalBurst)
	return u, nil
}

// Enabled reports whether the page is on.
func (u *UI) Enabled() bool { return u.enabled }

// Handler serves the page, its assets and the session endpoints under
// /admin/:
//
//	GET  /admin/                the page
//	GET  /admin/static/<file>   its scripts, styles and icon
//	POST /admin/login           form field "secret"; answers the session (JSON)
//	GET  /admin/session         {"principal","csrf_token","expires"} or 401
//	POST /admin/logout          needs X-CSRF-Token; ends the session
//
// Errors are JSON: {"error":{"code":<status>,"message":"..."}}. A disabled
// UI answers 404 to everything.
func (u *UI) Handler() http.Handler {
	if !u.enabled {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "the admin page is disabled (set admin_ui.enabled and admin_ui.secret_sha256)")
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/{$}", u.servePage)
	mux.HandleFunc("GET /admin/index.html", u.servePage)
	mux.HandleFunc("GET /admin/static/{file}", u.serveAsset)
	mux.HandleFunc("POST /admin/login", u.serveLogin)
	mux.HandleFunc("GET /admin/session", u.serveSession)
	mux.HandleFunc("POST /admin/logout", u.serveLogout)
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin page: "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		mux.ServeHTTP(w, r)
	})
}

func (u *UI) servePage(w http.ResponseWriter, r *http.Request) {
	u.writeAsset(w, r, u.assets["index.html"])
}

func (u *UI) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	a, ok := u.assets[name]
	if !ok || name == "index.html" {
		writeError(w, http.StatusNotFound, "no such asset: "+name)
		return
	}
	u.writeAsset(w, r, a)
}

func (u *UI) writeAsset(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: a new binary serves new files
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// sessionView is the JSON answer of /admin/session and /admin/login.
type sessionView struct {
	Principal string    `json:"principal"`
	CSRFToken string    `json:"csrf_token"`
	Expires   time.Time `json:"expires"`
}

func (u *UI) serveLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		writeError(w, http.StatusForbidden, "cross-site login refused")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "login: want a form with the field secret")
		return
	}
	secret := r.PostForm.Get("secret")
	client := clientAddr(r)
	now := u.now()
	// Take a token for a failed attempt up front, so concurrent guesses
	// cannot all pass the check; give it back if the secret was right.
	perClient, global := u.reserve(client, now)
	if d := max(perClient.DelayFrom(now), global.DelayFrom(now)); d > 0 {
		perClient.CancelAt(now)
		global.CancelAt(now)
		u.log.Warn("admin login refused: too many failed attempts", "remote", client)
		w.Header().Set("Retry-After", strconv.Itoa(int(d.Seconds()+0.999)))
		writeError(w, http.StatusTooManyRequests, "too many failed logins; try again later")
		return
	}
	sum := sha256.Sum256([]byte(secret))
	if secret == "" || subtle.ConstantTimeCompare(sum[:], u.secret[:]) != 1 {
		u.log.Warn("admin login failed", "remote", client)
		writeError(w, http.StatusUnauthorized, "wrong admin secret")
		return
	}
	perClient.CancelAt(now)
	global.CancelAt(now)
	id, sess := u.newSession(now)
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    id,
		Path:     "/",
		Expires:  sess.expires,
		MaxAge:   int(u.ttl.Seconds()),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	u.log.Info("admin login", "remote", client, "session", fingerprint(id), "expires", sess.expires.UTC().Format(time.RFC3339))
	writeJSON(w, http.StatusOK, sessionView{Principal: Principal, CSRFToken: sess.csrf, Expires: sess.expires.UTC()})
}

// reserve takes a failed-login token from the client's limiter and the
// global one.
func (u *UI) reserve(client string, now time.Time) (perClient, global *rate.Reservation) {
	u.mu.Lock()
	defer u.mu.Unlock()
	lim := u.limiters[client]
	if lim == nil {
		if len(u.limiters) >= maxLimiters {
			// Forget the clients whose bucket has refilled; if none has,
			// start over (the global limiter still bounds the rate).
			for k, l := range u.limiters {
				if l.TokensAt(now) >= perClientBurst {
					delete(u.limiters, k)
				}
			}
			if len(u.limiters) >= maxLimiters {
				clear(u.limiters)
			}
		}
		lim = rate.NewLimiter(perClientRate, perClientBurst)
		u.limiters[client] = lim
	}
	return lim.ReserveN(now, 1), u.global.ReserveN(now, 1)
}

func (u *UI) serveSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	_, sess, ok := u.lookup(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	writeJSON(w, http.StatusOK, sessionView{Principal: Principal, CSRFToken: sess.csrf, Expires: sess.expires.UTC()})
}

func (u *UI) serveLogout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	key, _, ok := u.lookup(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	if !u.CheckCSRF(r) {
		writeError(w, http.StatusForbidden, "missing or wrong "+CSRFHeader+" header")
		return
	}
	u.mu.Lock()
	delete(u.sessions, key)
	u.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	u.log.Info("admin logout", "remote", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

// Authenticate reports whether r carries a valid, unexpired session cookie,
// and its principal ("admin").
func (u *UI) Authenticate(r *http.Request) (principal string, ok bool) {
	if _, _, ok := u.lookup(r); !ok {
		return "", false
	}
	return Principal, true
}

// CheckCSRF reports whether r carries a valid session and an X-CSRF-Token
// header equal to that session's token (compared in constant time). A
// request a browser marks as cross-site (Sec-Fetch-Site) is refused too.
func (u *UI) CheckCSRF(r *http.Request) bool {
	_, sess, ok := u.lookup(r)
	if !ok {
		return false
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	got := r.Header.Get(CSRFHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}

// lookup returns the live session of r's cookie. An expired session is
// removed.
func (u *UI) lookup(r *http.Request) ([sha256.Size]byte, session, bool) {
	var key [sha256.Size]byte
	if !u.enabled {
		return key, session{}, false
	}
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return key, session{}, false
	}
	key = sha256.Sum256([]byte(c.Value))
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sessions[key]
	if s == nil {
		return key, session{}, false
	}
	if !now.Before(s.expires) {
		delete(u.sessions, key)
		return key, session{}, false
	}
	return key, *s, true
}

// newSession records a new session and returns its id (the cookie value).
func (u *UI) newSession(now time.Time) (string, session) {
	id, csrf := randomToken(), randomToken()
	s := &session{csrf: csrf, expires: now.Add(u.ttl)}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.sessions) >= maxSessions {
		u.sweepLocked(now)
	}
	if len(u.sessions) >= maxSessions {
		// Still full of live sessions: drop the one that expires first.
		var oldest [sha256.Size]byte
		var first time.Time
		for k, v := range u.sessions {
			if first.IsZero() || v.expires.Before(first) {
				oldest, first = k, v.expires
			}
		}
		delete(u.sessions, oldest)
	}
	u.sessions[sha256.Sum256([]byte(id))] = s
	return id, *s
}

// sweepLocked removes expired sessions; u.mu must be held.
func (u *UI) sweepLocked(now time.Time) {
	for k, s := range u.sessions {
		if !now.Before(s.expires) {
			delete(u.sessions, k)
		}
	}
}

// Sessions returns the number of sessions held (expired ones not yet swept
// included).
func (u *UI) Sessions() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sessions)
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("adminui: crypto/rand failed: " + err.Error()) // never returns an error on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// fingerprint names a session in logs without revealing its id.
func fingerprint(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}

// clientAddr is the client's IP address (without the port; an IPv6 address
// as its /64), the key of the per-client login limiter. Forwarding headers
// are not trusted.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}
