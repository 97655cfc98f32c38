package uitest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/golcn/golcn/txmanager/adminui"
)

// hostile is markup and script that must reach the page as text only.
const hostile = `<img src=x onerror="window.__pwned='img'"><script>window.__pwned='script'</script>"'&amp;`

// fakeAPI serves the REST API shapes of docs/openapi.yaml with hostile text
// in every free-text field, authenticating as the TxManager does for the
// page: the session cookie (ui.Authenticate), and ui.CheckCSRF on POSTs.
type fakeAPI struct {
	ui *adminui.UI

	mu       sync.Mutex
	resolved map[string]map[string]any
	posts    []string // "METHOD path csrf-ok"
}

const (
	fakeGroup = "0123456789abcdef0123456789abcdef"
	fakeComp  = fakeGroup + ".b1"
)

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/admin/", f.ui.Handler())
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	group := map[string]any{"id": fakeGroup, "state": "COMMITTED", "starter_service": hostile, "services": []string{hostile, "stock"},
		"branches": 1, "created": now, "deadline": now.Add(30 * time.Second), "decided": now.Add(time.Second), "finished": now.Add(2 * time.Second),
		"reason": hostile, "attention": "branch lost: " + hostile, "open_compensations": 1}
	comp := func() map[string]any {
		f.mu.Lock()
		defer f.mu.Unlock()
		c := map[string]any{"id": fakeComp, "kind": "branch_lost", "group": fakeGroup, "branch": "b1", "service": hostile,
			"instance": hostile + "/1", "detail": hostile, "created": now.Add(3 * time.Second), "status": "open"}
		if r := f.resolved[fakeComp]; r != nil {
			c["status"], c["resolution"] = "resolved", r
		}
		return c
	}
	api := func(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if _, ok := f.ui.Authenticate(r); !ok {
				apiError(w, http.StatusUnauthorized, "authentication required")
				return
			}
			if r.Method == http.MethodPost {
				ok := f.ui.CheckCSRF(r)
				f.mu.Lock()
				f.posts = append(f.posts, r.Method+" "+r.URL.Path+" csrf="+map[bool]string{true: "ok", false: "missing"}[ok])
				f.mu.Unlock()
				if !ok {
					apiError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token")
					return
				}
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /v1/overview", api(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"groups_by_state": map[string]int{"COMMITTED": 1, hostile: 2},
			"complete": true, "in_flight": 0, "needing_attention": 1,
			"decision_latency": map[string]any{"window_seconds": 300, "count": 7, "p50_ms": 1.5, "p99_ms": 12.0}})
	}))
	mux.HandleFunc("GET /v1/groups", api(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"groups": []any{group}})
	}))
	mux.HandleFunc("GET /v1/groups/{id}", api(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != fakeGroup {
			apiError(w, http.StatusNotFound, "no group "+r.PathValue("id")+" "+hostile)
			return
		}
		g := map[string]any{}
		for k, v := range group {
			g[k] = v
		}
		g["branches"] = []any{map[string]any{"id": "b1", "service": hostile, "instance": hostile, "datasource": hostile, "mode": "lcn", "state": "LOST", "reason": hostile}}
		g["timeline"] = []any{
			map[string]any{"at": now, "kind": "created", "state": "ACTIVE"},
			map[string]any{"at": now.Add(time.Second), "kind": "decided", "state": "COMMITTING", "reason": hostile},
			map[string]any{"at": now.Add(2 * time.Second), "kind": "branch-done", "branch": "b1", "state": "LOST", "reason": hostile},
		}
		g["compensations"] = []any{comp()}
		writeJSON(w, http.StatusOK, g)
	}))
	mux.HandleFunc("GET /v1/compensations", api(func(w http.ResponseWriter, r *http.Request) {
		c := comp()
		status := r.URL.Query().Get("status")
		if status == "" {
			status = "open"
		}
		list := []any{}
		if status == "all" || status == c["status"] {
			list = append(list, c)
		}
		writeJSON(w, http.StatusOK, map[string]any{"compensations": list})
	}))
	mux.HandleFunc("POST /v1/compensations/{id}/retry", api(func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusConflict, "group "+fakeGroup+" is COMMITTED: nothing to push "+hostile)
	}))
	mux.HandleFunc("POST /v1/compensations/{id}/resolve", api(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || strings.TrimSpace(body.Reason) == "" {
			apiErrorParam(w, http.StatusBadRequest, "a reason is required", "reason")
			return
		}
		f.mu.Lock()
		if f.resolved[r.PathValue("id")] != nil {
			f.mu.Unlock()
			apiError(w, http.StatusConflict, "already resolved")
			return
		}
		f.resolved[r.PathValue("id")] = map[string]any{"by": "admin", "at": now.Add(time.Hour), "reason": body.Reason}
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, comp())
	}))
	return mux
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) { apiErrorParam(w, code, msg, "") }

func apiErrorParam(w http.ResponseWriter, code int, msg, param string) {
	e := map[string]any{"code": code, "message": msg}
	if param != "" {
		e["param"] = param
	}
	writeJSON(w, code, map[string]any{"error": e})
}

// TestAdminPageRendersHostileDataAsText drives the page against a fake API
// whose every free-text field is markup and script: nothing is executed or
// parsed as HTML, the text shows literally, the API's error messages are
// shown, a wrong secret is refused, POSTs carry the CSRF token (and a POST
// without it is refused), and logging out ends the session.
func TestAdminPageRendersHostileDataAsText(t *testing.T) {
	b := newBrowser(t)
	const secret = "fake-api-admin-secret-4b1d"
	ui, err := adminui.New(adminui.Config{Enabled: true, SecretSHA256: hashHex(secret)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{ui: ui, resolved: map[string]map[string]any{}}
	hs := httptest.NewServer(f.handler())
	t.Cleanup(hs.Close)

	b.do("open the page", chromedp.Navigate(hs.URL+"/admin/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.do("wrong secret",
		chromedp.SendKeys(chromedp.ID("secret"), "not the secret"),
		chromedp.Click(chromedp.ID("login-submit")),
		waitText("#error-text", "wrong admin secret"))
	b.shot("fake login refused")
	b.do("log in",
		chromedp.SetValue(chromedp.ID("secret"), secret),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#attention-table tr[data-id]")))
	b.shot("fake overview")
	if got := b.text("#attention-table tr[data-id]"); !strings.Contains(got, hostile) {
		t.Fatalf("attention row %q does not show the reason literally", got)
	}
	if got := b.text("#card-latency"); !strings.Contains(got, "1.5 ms / 12 ms") || !strings.Contains(got, "7 decisions in the last 5 min") {
		t.Fatalf("latency card %q", got)
	}

	b.do("group detail",
		chromedp.Click(chromedp.CSS(`#attention-table a.group-link`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline li")))
	b.shot("fake group detail")
	if got := b.text("#timeline"); !strings.Contains(got, hostile) {
		t.Fatalf("timeline %q does not show the reason literally", got)
	}
	if got := b.text("#branches-table"); strings.Count(got, hostile) < 4 {
		t.Fatalf("branches table %q does not show every field literally", got)
	}

	b.do("compensations",
		chromedp.Click(chromedp.ID("nav-compensations")),
		chromedp.WaitVisible(chromedp.CSS(`#compensations-table tr[data-id="`+fakeComp+`"] button.retry`)),
		chromedp.Click(chromedp.CSS(`#compensations-table tr[data-id="`+fakeComp+`"] button.retry`)),
		waitText("#error-text", "nothing to push "+hostile))
	b.shot("fake retry refused")
	b.do("resolve without a reason",
		chromedp.Click(chromedp.CSS(`#compensations-table button.resolve`)),
		chromedp.WaitVisible(chromedp.CSS("tr.resolve-row input.reason")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("tr.resolve-row input.reason").removeAttribute("required")`),
		chromedp.Click(chromedp.CSS("tr.resolve-row button.confirm-resolve")),
		waitText("#error-text", "A reason is required"))
	b.do("resolve",
		chromedp.SendKeys(chromedp.CSS("tr.resolve-row input.reason"), "fixed by hand "+hostile),
		chromedp.Click(chromedp.CSS("tr.resolve-row button.confirm-resolve")),
		waitText(`#compensations-table tr[data-id="`+fakeComp+`"] td.status`, "Resolved by admin"))
	b.shot("fake resolved")
	if got := b.text(`#compensations-table tr[data-id="` + fakeComp + `"] td.status`); !strings.Contains(got, "fixed by hand "+hostile) {
		t.Fatalf("resolved status %q", got)
	}

	b.do("unknown group",
		chromedp.Click(chromedp.ID("nav-groups")),
		chromedp.WaitVisible(chromedp.ID("group-search")),
		chromedp.SendKeys(chromedp.ID("group-search"), "ffffffffffffffffffffffffffffffff"),
		chromedp.Click(chromedp.ID("group-search-submit")),
		waitText("#error-text", "no group ffffffffffffffffffffffffffffffff "+hostile))
	b.shot("fake unknown group")

	// Nothing hostile ran or became an element.
	if pwned := eval[string](b, `String(window.__pwned)`); pwned != "undefined" {
		t.Fatalf("injected script ran: window.__pwned = %s", pwned)
	}
	if n := eval[int](b, `document.querySelectorAll("main img, main script, #messages img, #messages script").length`); n != 0 {
		t.Fatalf("%d injected elements in the page", n)
	}
	// A POST without the CSRF header is refused; the page's POSTs had it.
	if code := eval[int](b, `fetch("../v1/compensations/x/resolve", {method: "POST", body: "{}"}).then(r => r.status)`); code != http.StatusForbidden {
		t.Fatalf("POST without X-CSRF-Token from the page: %d", code)
	}
	f.mu.Lock()
	posts := strings.Join(f.posts, "\n")
	f.mu.Unlock()
	if strings.Count(posts, "csrf=ok") != 2 || strings.Count(posts, "csrf=missing") != 1 {
		t.Fatalf("POSTs seen by the API:\n%s", posts)
	}

	b.do("log out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("login-form")))
	if code := eval[int](b, `fetch("../v1/overview").then(r => r.status)`); code != http.StatusUnauthorized {
		t.Fatalf("API after logout: %d", code)
	}
	b.shot("fake logged out")
	b.checkConsole()
}
