package txmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/gid"
)

// Tokens of the API tests.
const (
	adminToken = "admin-token-for-api-tests-0123456789"
	stockToken = "stock-token-for-api-tests-0123456789"
	orderToken = "order-token-for-api-tests-0123456789"
)

func testAuth() AuthConfig {
	return AuthConfig{Credentials: []Credential{
		{Service: "ops", TokenSHA256: HashToken(adminToken), Role: RoleAdmin},
		{Service: "stock", TokenSHA256: HashToken(stockToken)},
		{Service: "order", TokenSHA256: HashToken(orderToken)},
	}}
}

// newTestServer returns a server on a memory store (not run, not served).
func newTestServer(t *testing.T, cfg Config, opts ...Option) *Server {
	t.Helper()
	if cfg.Auth.Credentials == nil {
		cfg.Auth = testAuth()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(cfg, NewMemoryStore(StoreOptions{}), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// apiEnv is a running TxManager served over httptest.
type apiEnv struct {
	t    *testing.T
	srv  *Server
	hs   *httptest.Server
	logs *syncBuffer
}

// newAPIEnv runs a TxManager on store with fast timings (adjusted by mod).
func newAPIEnv(t *testing.T, store Store, mod func(*Config), opts ...Option) *apiEnv {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{Auth: testAuth(), Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ReapInterval: 50 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, LostAfter: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{t: t, srv: srv, hs: httptest.NewServer(srv.Handler()), logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		e.hs.Close()
		_ = srv.Close()
		cancel()
		<-done
	})
	return e
}

// call does method path with token (and body, JSON-encoded unless it is a
// string) and decodes the JSON answer, failing unless the status is want.
func (e *apiEnv) call(method, path, token string, body any, want int) map[string]any {
	e.t.Helper()
	code, out := e.try(method, path, token, body, nil)
	if code != want {
		e.t.Fatalf("%s %s: %d %v, want %d", method, path, code, out, want)
	}
	return out
}

func (e *apiEnv) try(method, path, token string, body any, hdr http.Header) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: content type %q, body %q", method, path, ct, raw)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: %d, body %q is not a JSON object: %v", method, path, resp.StatusCode, raw, err)
	}
	if resp.StatusCode >= 400 {
		checkErrorShape(e.t, resp.StatusCode, out)
	}
	return resp.StatusCode, out
}

// checkErrorShape holds every error answer to one shape.
func checkErrorShape(t *testing.T, code int, body map[string]any) {
	t.Helper()
	inner, ok := body["error"].(map[string]any)
	if !ok || len(body) != 1 {
		t.Fatalf("error body %v: want {\"error\": {...}}", body)
	}
	if c, _ := inner["code"].(float64); int(c) != code {
		t.Errorf("error code %v, status %d", inner["code"], code)
	}
	if m, _ := inner["message"].(string); m == "" {
		t.Errorf("error without a message: %v", body)
	}
	for k := range inner {
		if !slices.Contains([]string{"code", "message", "param", "state"}, k) {
			t.Errorf("error field %q outside the shape", k)
		}
	}
}

func errParam(body map[string]any) string {
	p, _ := body["error"].(map[string]any)["param"].(string)
	return p
}

// stores runs fn against the bolt store and the Redis store.
func stores(t *testing.T, fn func(t *testing.T, s Store)) {
	t.Run("bolt", func(t *testing.T) { fn(t, openBolt(t, filepath.Join(t.TempDir(), "lcn.db"), StoreOptions{})) })
	t.Run("redis", func(t *testing.T) { fn(t, NewRedisStore(redisClient(t), uniquePrefix(), StoreOptions{})) })
}

// A service without the Go client runs a whole group over REST, and the
// operator sees it with its timeline.
func TestAPIParticipantGroup(t *testing.T) {
	stores(t, func(t *testing.T, s Store) {
		e := newAPIEnv(t, s, nil)
		g := e.call("POST", "/v1/groups", orderToken, map[string]any{"timeout_ms": 60000}, 201)
		id := g["id"].(string)
		if _, err := gid.Parse(id); err != nil || g["deadline"] == nil {
			t.Fatalf("create: %v", g)
		}
		b := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "stockdb"}, 201)["branch"].(string)
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stockToken, map[string]any{"ok": true}, 200)
		// Only the starter decides, only the owner votes.
		e.call("POST", "/v1/groups/"+id+"/decide", stockToken, map[string]any{"commit": true}, 403)
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", orderToken, map[string]any{"ok": false}, 403)
		if st := e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)["state"]; st != "COMMITTING" {
			t.Fatalf("decide: %v", st)
		}
		st := e.call("GET", "/v1/groups/"+id+"/branches/"+b, stockToken, nil, 200)
		if st["group_state"] != "COMMITTING" || st["branch_state"] != "PREPARED" {
			t.Fatalf("branch status %v", st)
		}
		e.call("GET", "/v1/groups/"+id+"/branches/"+b, orderToken, nil, 403) // another service's branch
		if st := e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/ack", stockToken, map[string]any{"outcome": "committed"}, 200)["state"]; st != "COMMITTED" {
			t.Fatalf("ack: %v", st)
		}
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/ack", stockToken, map[string]any{"outcome": "committed"}, 200) // duplicate: no-op
		// A late join is refused with the state.
		if r := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "x"}, 409); r["error"].(map[string]any)["state"] != "COMMITTED" {
			t.Errorf("late join: %v", r)
		}

		d := e.call("GET", "/v1/groups/"+id, adminToken, nil, 200)
		if d["state"] != "COMMITTED" || d["starter_service"] != "order" {
			t.Fatalf("group %v", d)
		}
		br := d["branches"].([]any)[0].(map[string]any)
		if br["instance"] != "stock/http" || br["mode"] != "lcn" || br["state"] != "COMMITTED" {
			t.Errorf("branch %v", br)
		}
		var kinds []string
		for _, ev := range d["timeline"].([]any) {
			kinds = append(kinds, ev.(map[string]any)["kind"].(string))
		}
		if want := []string{"created", "joined", "voted", "decided", "branch-done", "finished"}; !slices.Equal(kinds, want) {
			t.Errorf("timeline %q, want %q", kinds, want)
		}
		if c := d["compensations"].([]any); len(c) != 0 {
			t.Errorf("compensations %v", c)
		}
		// Rolled back by the starter; a failed vote.
		id2 := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
		b2 := e.call("POST", "/v1/groups/"+id2+"/branches", stockToken, map[string]any{"datasource": "stockdb", "mode": "lcn"}, 201)["branch"].(string)
		if st := e.call("POST", "/v1/groups/"+id2+"/branches/"+b2+"/vote", stockToken, map[string]any{"ok": false, "reason": "out of stock"}, 200)["state"]; st != "ROLLING_BACK" {
			t.Errorf("failed vote: %v", st)
		}
		e.call("POST", "/v1/groups/"+id2+"/decide", orderToken, map[string]any{"commit": true}, 409)
		e.call("POST", "/v1/groups/"+gid.New()+"/decide", orderToken, map[string]any{"commit": true}, 404)
	})
}

// Bad input: one error shape, 400 naming the parameter, 404, 405, 413, and
// nothing changed.
func TestAPIBadInput(t *testing.T) {
	e := newAPIEnv(t, NewMemoryStore(StoreOptions{}), func(c *Config) { c.MaxBodyBytes = 1024 })
	id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
	for _, tc := range []struct {
		method, path string
		body         any
		code         int
		param        string
	}{
		{"GET", "/v1/groups?state=NOPE", nil, 400, "state"},
		{"GET", "/v1/groups?created_after=yesterday", nil, 400, "created_after"},
		{"GET", "/v1/groups?created_before=2026-13-01T00:00:00Z", nil, 400, "created_before"},
		{"GET", "/v1/groups?attention=maybe", nil, 400, "attention"},
		{"GET", "/v1/groups?limit=0", nil, 400, "limit"},
		{"GET", "/v1/groups?limit=501", nil, 400, "limit"},
		{"GET", "/v1/groups?cursor=bm9wZQ", nil, 400, "cursor"},
		{"GET", "/v1/groups?colour=red", nil, 400, "colour"},
		{"GET", "/v1/groups?state=ACTIVE&state=COMMITTED", nil, 400, "state"},
		{"GET", "/v1/compensations?status=closed", nil, 400, "status"},
		{"GET", "/v1/groups/not-an-id", nil, 400, "id"},
		{"GET", "/v1/groups/" + gid.New(), nil, 404, ""},
		{"POST", "/v1/groups/" + gid.New() + "/retry", nil, 404, ""},
		{"POST", "/v1/groups/" + id + "/retry", nil, 409, ""}, // ACTIVE: nothing to push
		{"POST", "/v1/compensations/nodot/resolve", map[string]any{"reason": "x"}, 400, "id"},
		{"POST", "/v1/compensations/" + id + ".b/resolve", map[string]any{"reason": "x"}, 404, ""},
		{"POST", "/v1/compensations/" + id + ".b/resolve", map[string]any{}, 400, "reason"},
		{"POST", "/v1/compensations/" + id + ".b/resolve", map[string]any{"reason": "  "}, 400, "reason"},
		{"POST", "/v1/compensations/" + id + ".b/resolve", map[string]any{"reason": "x", "by": "me"}, 400, "by"},
		{"POST", "/v1/compensations/" + id + ".b/retry", nil, 404, ""},
		{"POST", "/v1/groups", map[string]any{"timeout_ms": "soon"}, 400, "timeout_ms"},
		{"POST", "/v1/groups", map[string]any{"timeout_ms": -1}, 400, "timeout_ms"},
		{"POST", "/v1/groups", map[string]any{"timeout": 1}, 400, "timeout"},
		{"POST", "/v1/groups", `{"timeout_ms": 1} {}`, 400, ""},
		{"POST", "/v1/groups", `{"timeout_ms": `, 400, ""},
		{"POST", "/v1/groups", `{"pad": "` + strings.Repeat("x", 2048) + `"}`, 413, ""},
		{"POST", "/v1/groups/" + id + "/branches", map[string]any{}, 400, "datasource"},
		{"POST", "/v1/groups/" + id + "/branches", map[string]any{"datasource": "d", "mode": "xa"}, 400, "mode"},
		{"POST", "/v1/groups/" + id + "/decide", map[string]any{}, 400, "commit"},
		{"POST", "/v1/groups/" + id + "/decide", nil, 400, ""},
		{"POST", "/v1/groups/" + id + "/branches/b/vote", map[string]any{"reason": "x"}, 400, "ok"},
		{"POST", "/v1/groups/" + id + "/branches/b/ack", map[string]any{"outcome": "done"}, 400, "outcome"},
		{"POST", "/v1/groups/" + id + "/branches/b/vote", map[string]any{"ok": true}, 404, ""},
		{"DELETE", "/v1/groups", nil, 405, ""},
		{"GET", "/v1/nothing", nil, 404, ""},
	} {
		token := adminToken
		if strings.HasPrefix(tc.path, "/v1/groups") && tc.method == "POST" && !strings.HasSuffix(tc.path, "/retry") {
			token = orderToken
		}
		code, body := e.try(tc.method, tc.path, token, tc.body, nil)
		if code != tc.code || errParam(body) != tc.param {
			t.Errorf("%s %s %v: %d param %q (%v); want %d param %q", tc.method, tc.path, tc.body, code, errParam(body), body, tc.code, tc.param)
		}
	}
	// Nothing changed: the group is still ACTIVE with no branch, alone.
	d := e.call("GET", "/v1/groups/"+id, adminToken, nil, 200)
	if d["state"] != "ACTIVE" || len(d["branches"].([]any)) != 0 {
		t.Errorf("after bad input: %v", d)
	}
	if l := e.call("GET", "/v1/groups", adminToken, nil, 200)["groups"].([]any); len(l) != 1 {
		t.Errorf("%d groups after bad input, want 1", len(l))
	}
	// Roles: operator endpoints need admin; no credentials is 401.
	e.call("GET", "/v1/groups", stockToken, nil, 403)
	e.call("GET", "/v1/overview", "", nil, 401)
	e.call("POST", "/v1/groups", "", nil, 401)
}

// A branch whose owner stays away past lost_after is LOST: the group ends
// with attention and a branch_lost marker, which an operator resolves
// once (with a reason, recorded with who resolved it), and which keeps the
// group listed.
func TestAPILostBranchMarker(t *testing.T) {
	stores(t, func(t *testing.T, s Store) {
		e := newAPIEnv(t, s, func(c *Config) { c.LostAfter = 100 * time.Millisecond })
		id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
		b := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "stockdb"}, 201)["branch"].(string)
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stockToken, map[string]any{"ok": true}, 200)
		e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)
		// stock never polls again: the retrier finds it gone.
		var marker map[string]any
		eventually(t, "a branch_lost marker", func() bool {
			ms := e.call("GET", "/v1/compensations", adminToken, nil, 200)["compensations"].([]any)
			if len(ms) == 1 {
				marker = ms[0].(map[string]any)
			}
			return marker != nil
		})
		mid := id + "." + b
		if marker["id"] != mid || marker["kind"] != "branch_lost" || marker["status"] != "open" || marker["service"] != "stock" ||
			marker["instance"] != "stock/http" || marker["group"] != id || marker["branch"] != b {
			t.Fatalf("marker %v", marker)
		}
		d := e.call("GET", "/v1/groups/"+id, adminToken, nil, 200)
		if d["state"] != "COMMITTED" || d["attention"] == "" || len(d["compensations"].([]any)) != 1 {
			t.Fatalf("group %v", d)
		}
		l := e.call("GET", "/v1/groups?attention=true", adminToken, nil, 200)["groups"].([]any)
		if len(l) != 1 || l[0].(map[string]any)["id"] != id || l[0].(map[string]any)["open_compensations"] != 1.0 {
			t.Errorf("attention list %v", l)
		}
		ov := e.call("GET", "/v1/overview", adminToken, nil, 200)
		if ov["needing_attention"] != 1.0 || ov["groups_by_state"].(map[string]any)["COMMITTED"] != 1.0 {
			t.Errorf("overview %v", ov)
		}
		// Nothing to retry for a finished group.
		e.call("POST", "/v1/compensations/"+mid+"/retry", adminToken, nil, 409)
		e.call("POST", "/v1/groups/"+id+"/retry", adminToken, nil, 409)

		e.call("POST", "/v1/compensations/"+mid+"/resolve", adminToken, map[string]any{}, 400)
		r := e.call("POST", "/v1/compensations/"+mid+"/resolve", adminToken, map[string]any{"reason": "stock re-applied by hand"}, 200)
		res := r["resolution"].(map[string]any)
		if r["status"] != "resolved" || res["by"] != "ops" || res["reason"] != "stock re-applied by hand" || res["at"] == nil {
			t.Fatalf("resolved %v", r)
		}
		e.call("POST", "/v1/compensations/"+mid+"/resolve", adminToken, map[string]any{"reason": "again"}, 409)
		if ms := e.call("GET", "/v1/compensations", adminToken, nil, 200)["compensations"].([]any); len(ms) != 0 {
			t.Errorf("open after resolve: %v", ms)
		}
		if ms := e.call("GET", "/v1/compensations?status=resolved", adminToken, nil, 200)["compensations"].([]any); len(ms) != 1 {
			t.Errorf("resolved list %v", ms)
		}
		if !strings.Contains(e.logs.String(), "group="+id) {
			t.Errorf("logs do not name the group:\n%s", e.logs)
		}
	})
}

// An HTTP participant that keeps polling is not presumed gone, however
// long phase 2 takes: its branch is never LOST while it polls more often
// than lost_after.
func TestAPIPollingParticipantNotLost(t *testing.T) {
	e := newAPIEnv(t, NewMemoryStore(StoreOptions{}), func(c *Config) { c.LostAfter = 150 * time.Millisecond })
	id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
	b := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "stockdb"}, 201)["branch"].(string)
	e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stockToken, map[string]any{"ok": true}, 200)
	e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)
	// Poll (as a participant does) across several lost_after periods while
	// the retrier runs every 20-100ms.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(30 * time.Millisecond) {
		if st := e.call("GET", "/v1/groups/"+id+"/branches/"+b, stockToken, nil, 200); st["branch_state"] != "PREPARED" {
			t.Fatalf("polling participant's branch became %v", st)
		}
	}
	if st := e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/ack", stockToken, map[string]any{"outcome": "committed"}, 200)["state"]; st != "COMMITTED" {
		t.Fatalf("ack: %v", st)
	}
	if d := e.call("GET", "/v1/groups/"+id, adminToken, nil, 200); d["attention"] != nil {
		t.Errorf("attention on a cleanly committed group: %v", d["attention"])
	}
	// The websocket endpoint answers a plain request in the error shape.
	e.call("GET", "/v1/ws", stockToken, nil, http.StatusUpgradeRequired)
}

// Phase 2 retried past attention_after gets one phase2_stuck marker; an
// operator's retry pushes again; when the participant finally acknowledges,
// the TxManager resolves the marker itself.
func TestAPIPhase2StuckMarker(t *testing.T) {
	stores(t, func(t *testing.T, s Store) {
		e := newAPIEnv(t, s, func(c *Config) { c.AttentionAfter = 100 * time.Millisecond })
		id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
		b := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "stockdb"}, 201)["branch"].(string)
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stockToken, map[string]any{"ok": true}, 200)
		e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": false}, 200)
		eventually(t, "a phase2_stuck marker", func() bool {
			return len(e.call("GET", "/v1/compensations", adminToken, nil, 200)["compensations"].([]any)) == 1
		})
		mid := id + ".phase2"
		m := e.call("POST", "/v1/compensations/"+mid+"/retry", adminToken, nil, 200)
		if m["kind"] != "phase2_stuck" || m["status"] != "open" || !strings.Contains(m["detail"].(string), b) {
			t.Fatalf("retried marker %v", m)
		}
		if g := e.call("POST", "/v1/groups/"+id+"/retry", adminToken, nil, 200); g["state"] != "ROLLING_BACK" {
			t.Fatalf("retried group %v", g)
		}
		// Still one marker, however many retries.
		if ms := e.call("GET", "/v1/compensations?status=all", adminToken, nil, 200)["compensations"].([]any); len(ms) != 1 {
			t.Fatalf("markers %v", ms)
		}
		if st := e.call("GET", "/v1/groups/"+id+"/branches/"+b, stockToken, nil, 200); st["group_state"] != "ROLLING_BACK" {
			t.Fatalf("poll %v", st)
		}
		e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/ack", stockToken, map[string]any{"outcome": "rolled_back"}, 200)
		ms := e.call("GET", "/v1/compensations?status=resolved", adminToken, nil, 200)["compensations"].([]any)
		if len(ms) != 1 || ms[0].(map[string]any)["resolution"].(map[string]any)["by"] != ResolvedBySystem {
			t.Fatalf("after the ack: %v", ms)
		}
		e.call("POST", "/v1/compensations/"+mid+"/resolve", adminToken, map[string]any{"reason": "late"}, 409)
		e.call("POST", "/v1/compensations/"+mid+"/retry", adminToken, nil, 409)
	})
}

// GET /v1/groups filters and pages; the cursor walks every group once.
func TestAPIListGroups(t *testing.T) {
	stores(t, func(t *testing.T, s Store) {
		e := newAPIEnv(t, s, nil)
		var ids []string
		for i := range 7 {
			token := orderToken
			if i%2 == 1 {
				token = stockToken
			}
			ids = append(ids, e.call("POST", "/v1/groups", token, nil, 201)["id"].(string))
		}
		e.call("POST", "/v1/groups/"+ids[0]+"/decide", orderToken, map[string]any{"commit": false}, 200)
		seen := map[string]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			l := e.call("GET", "/v1/groups?limit=3&cursor="+url.QueryEscape(cursor), adminToken, nil, 200)
			for _, g := range l["groups"].([]any) {
				id := g.(map[string]any)["id"].(string)
				if seen[id] {
					t.Fatalf("group %s listed twice", id)
				}
				seen[id] = true
			}
			next, _ := l["next_cursor"].(string)
			if next == "" {
				break
			}
			cursor = next
			if pages > 5 {
				t.Fatal("no end of pages")
			}
		}
		if len(seen) != 7 {
			t.Errorf("%d groups listed, want 7", len(seen))
		}
		if l := e.call("GET", "/v1/groups?service=stock", adminToken, nil, 200)["groups"].([]any); len(l) != 3 {
			t.Errorf("service=stock: %d groups, want 3", len(l))
		}
		if l := e.call("GET", "/v1/groups?state=rolled_back", adminToken, nil, 200)["groups"].([]any); len(l) != 1 || l[0].(map[string]any)["id"] != ids[0] {
			t.Errorf("state=rolled_back: %v", l)
		}
		future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		if l := e.call("GET", "/v1/groups?created_after="+future, adminToken, nil, 200)["groups"].([]any); len(l) != 0 {
			t.Errorf("created_after the future: %v", l)
		}
		if l := e.call("GET", "/v1/groups?created_before="+future+"&attention=false", adminToken, nil, 200)["groups"].([]any); len(l) != 7 {
			t.Errorf("created_before the future: %d", len(l))
		}
	})
}

// Every server has its own metrics registry, served at /metrics.
func TestAPIMetrics(t *testing.T) {
	a := newAPIEnv(t, NewMemoryStore(StoreOptions{}), nil)
	b := newAPIEnv(t, NewMemoryStore(StoreOptions{}), nil)
	id := a.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
	a.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)
	scrape := func(e *apiEnv) string {
		resp, err := http.Get(e.hs.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return string(raw)
	}
	ma, mb := scrape(a), scrape(b)
	for _, want := range []string{
		"lcn_txmanager_groups_started_total 1",
		`lcn_txmanager_groups_finished_total{outcome="committed"} 1`,
		`lcn_txmanager_groups_finished_total{outcome="attention"} 0`,
		"lcn_txmanager_decision_latency_seconds_count 1",
		"lcn_txmanager_group_duration_seconds_count 1",
		"lcn_txmanager_groups_in_flight 0",
		"lcn_txmanager_groups_needing_attention 0",
		"lcn_txmanager_sessions 0",
		"lcn_txmanager_phase2_retries_total",
		`lcn_txmanager_store_operation_seconds_count{op="create"} 1`,
		`lcn_txmanager_store_operation_seconds_count{op="apply"} 1`,
	} {
		if !strings.Contains(ma, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(mb, "lcn_txmanager_groups_started_total 0") {
		t.Errorf("the second server counts the first's groups")
	}
	ov := a.call("GET", "/v1/overview", adminToken, nil, 200)
	if lat := ov["decision_latency"].(map[string]any); lat["count"] != 1.0 {
		t.Errorf("overview latency %v", lat)
	}
}

// fakeUI is an admin page for the session tests: a request with cookie
// "s=ok" is session "alice"; header X-CSRF-Token "good" passes the check.
type fakeUI struct{}

func (fakeUI) Authenticate(r *http.Request) (string, bool) {
	c, err := r.Cookie("s")
	return "alice", err == nil && c.Value == "ok"
}
func (fakeUI) CheckCSRF(r *http.Request) bool { return r.Header.Get("X-CSRF-Token") == "good" }
func (fakeUI) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"page": r.URL.Path})
	})
}

// The operator endpoints accept the admin page's session; a POST needs
// its CSRF token; the participant endpoints refuse sessions.
func TestAPIAdminSession(t *testing.T) {
	e := newAPIEnv(t, NewMemoryStore(StoreOptions{}), func(c *Config) { c.LostAfter = 50 * time.Millisecond }, WithAdminUI(fakeUI{}))
	session := http.Header{"Cookie": {"s=ok"}}
	withCSRF := http.Header{"Cookie": {"s=ok"}, "X-Csrf-Token": {"good"}}
	if code, body := e.try("GET", "/admin/groups", "", nil, nil); code != 200 || body["page"] != "/admin/groups" {
		t.Errorf("admin page: %d %v", code, body)
	}
	if code, _ := e.try("GET", "/v1/overview", "", nil, session); code != 200 {
		t.Errorf("overview with a session: %d", code)
	}
	if code, _ := e.try("GET", "/v1/overview", "", nil, http.Header{"Cookie": {"s=bad"}}); code != 401 {
		t.Errorf("overview with a bad session: %d", code)
	}
	if code, _ := e.try("POST", "/v1/groups", "", nil, withCSRF); code != 403 {
		t.Errorf("create with a session: %d, want 403", code)
	}

	// A lost branch to resolve.
	id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
	b := e.call("POST", "/v1/groups/"+id+"/branches", stockToken, map[string]any{"datasource": "d"}, 201)["branch"].(string)
	e.call("POST", "/v1/groups/"+id+"/branches/"+b+"/vote", stockToken, map[string]any{"ok": true}, 200)
	e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)
	eventually(t, "the marker", func() bool {
		return len(e.call("GET", "/v1/compensations", adminToken, nil, 200)["compensations"].([]any)) == 1
	})
	path := "/v1/compensations/" + id + "." + b + "/resolve"
	if code, _ := e.try("POST", path, "", map[string]any{"reason": "x"}, session); code != 403 {
		t.Errorf("resolve with a session and no CSRF token: %d, want 403", code)
	}
	if code, _ := e.try("POST", path, "", map[string]any{"reason": "x"}, http.Header{"Cookie": {"s=ok"}, "X-Csrf-Token": {"bad"}}); code != 403 {
		t.Errorf("resolve with a wrong CSRF token: %d, want 403", code)
	}
	code, body := e.try("POST", path, "", map[string]any{"reason": "checked"}, withCSRF)
	if code != 200 || body["resolution"].(map[string]any)["by"] != "alice" {
		t.Errorf("resolve with a session: %d %v", code, body)
	}
}

// Drain refuses new groups (REST 503, websocket unavailable) and readiness,
// while the rest goes on.
func TestDrainRefusesNewGroups(t *testing.T) {
	e := newAPIEnv(t, NewMemoryStore(StoreOptions{}), nil)
	id := e.call("POST", "/v1/groups", orderToken, nil, 201)["id"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	e.call("POST", "/v1/groups", orderToken, nil, 503)
	e.call("GET", "/readyz", "", nil, 503)
	e.call("GET", "/healthz", "", nil, 200)
	// The group in flight still finishes.
	if st := e.call("POST", "/v1/groups/"+id+"/decide", orderToken, map[string]any{"commit": true}, 200)["state"]; st != "COMMITTED" {
		t.Errorf("decide while draining: %v", st)
	}
	if !strings.Contains(e.logs.String(), "draining") {
		t.Errorf("no drain log")
	}
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

var _ = fmt.Sprint
