package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/txmanager"
)

const (
	adminToken = "lcnctl-admin-token-0123456789"
	stockToken = "lcnctl-stock-token-0123456789"
)

// tm is a real TxManager (bolt store) served over httptest.
type tm struct {
	t   *testing.T
	srv *txmanager.Server
	url string
}

func startTM(t *testing.T, mod func(*txmanager.Config)) *tm {
	t.Helper()
	store, err := txmanager.OpenBoltStore(filepath.Join(t.TempDir(), "lcn.db"), txmanager.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := txmanager.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, LostAfter: time.Hour,
		Auth: txmanager.AuthConfig{Credentials: []txmanager.Credential{
			{Service: "ops", TokenSHA256: txmanager.HashToken(adminToken), Role: txmanager.RoleAdmin},
			{Service: "stock", TokenSHA256: txmanager.HashToken(stockToken)},
		}}}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := txmanager.New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() { hs.Close(); _ = srv.Close(); cancel(); <-done; _ = store.Close() })
	return &tm{t: t, srv: srv, url: hs.URL}
}

// rest calls the TxManager as the stock service (a participant without
// the Go client) and returns the decoded answer.
func (m *tm) rest(method, path, body string) map[string]any {
	m.t.Helper()
	req, _ := http.NewRequest(method, m.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+stockToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode/100 != 2 {
		m.t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
	}
	return out
}

// group runs a group with one branch to its decision; ack acknowledges it.
func (m *tm) group(commit, ack bool) (id, branch string) {
	m.t.Helper()
	id = m.rest("POST", "/v1/groups", "")["id"].(string)
	branch = m.rest("POST", "/v1/groups/"+id+"/branches", `{"datasource":"db"}`)["branch"].(string)
	m.rest("POST", "/v1/groups/"+id+"/branches/"+branch+"/vote", `{"ok":true}`)
	m.rest("POST", "/v1/groups/"+id+"/decide", map[bool]string{true: `{"commit":true}`, false: `{"commit":false}`}[commit])
	if ack {
		m.rest("POST", "/v1/groups/"+id+"/branches/"+branch+"/ack", map[bool]string{true: `{"outcome":"committed"}`, false: `{"outcome":"rolled_back"}`}[commit])
	}
	return id, branch
}

// ctl runs lcnctl and returns its exit status, stdout and stderr.
func ctl(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, env, &out, &errb)
	for _, s := range []string{adminToken, stockToken} {
		if strings.Contains(out.String()+errb.String(), s) {
			t.Errorf("lcnctl %v printed a token", args)
		}
	}
	return code, out.String(), errb.String()
}

func (m *tm) env() []string { return []string{"LCN_URL=" + m.url, "LCN_ADMIN_TOKEN=" + adminToken} }

func TestGroupsListAndShow(t *testing.T) {
	m := startTM(t, nil)
	committed, _ := m.group(true, true)
	rolled, _ := m.group(false, true)
	open := m.rest("POST", "/v1/groups", "")["id"].(string)

	code, out, errs := ctl(t, m.env(), "groups", "list")
	if code != 0 || errs != "" {
		t.Fatalf("groups list: %d %q", code, errs)
	}
	for _, id := range []string{committed, rolled, open} {
		if !strings.Contains(out, id) {
			t.Errorf("groups list lacks %s:\n%s", id, out)
		}
	}
	if !strings.Contains(out, "STATE") || !strings.Contains(out, "ROLLED_BACK") {
		t.Errorf("table output:\n%s", out)
	}
	code, out, _ = ctl(t, m.env(), "groups", "list", "--state", "ROLLED_BACK", "-o", "json")
	var l txmanager.GroupList
	if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil || len(l.Groups) != 1 || l.Groups[0].ID != rolled {
		t.Fatalf("json list: %d %v %s", code, err, out)
	}
	code, out, _ = ctl(t, m.env(), "groups", "list", "--limit", "2")
	if code != 0 || !strings.Contains(out, "--cursor ") {
		t.Fatalf("paged list: %d\n%s", code, out)
	}
	cursor := strings.Fields(out[strings.Index(out, "--cursor ")+len("--cursor "):])[0]
	code, out, _ = ctl(t, m.env(), "groups", "list", "--limit", "2", "--cursor", cursor)
	if code != 0 || !strings.Contains(out, committed) || strings.Contains(out, "--cursor") {
		t.Fatalf("second page: %d\n%s", code, out)
	}

	code, out, _ = ctl(t, m.env(), "groups", "show", committed)
	for _, want := range []string{"COMMITTED", "Branches:", "stock/http", "Timeline:", "created", "joined", "voted", "decided", "branch-done", "finished"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("groups show lacks %q (exit %d):\n%s", want, code, out)
		}
	}

	// Errors carry the server's message and exit 1.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"groups", "show", "0123456789abcdef0123456789abcdef"}, []string{"404 Not Found", "not found: group 0123456789abcdef0123456789abcdef"}},
		{[]string{"groups", "show", "nope"}, []string{"400 Bad Request", "parameter id"}},
		{[]string{"groups", "list", "--state", "DONE"}, []string{"400", "parameter state", "unknown state"}},
		{[]string{"groups", "list", "--created-after", "yesterday"}, []string{"parameter created_after"}},
		{[]string{"groups", "retry", committed}, []string{"409 Conflict", "nothing to retry"}},
	} {
		code, _, errs := ctl(t, m.env(), tc.args...)
		if code != 1 {
			t.Errorf("%v: exit %d, want 1", tc.args, code)
		}
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%v: stderr %q lacks %q", tc.args, errs, w)
			}
		}
	}
}

func TestCompensations(t *testing.T) {
	m := startTM(t, func(c *txmanager.Config) { c.LostAfter = 50 * time.Millisecond })
	id, b := m.group(true, false) // stock never acknowledges: its branch is lost
	mid := id + "." + b
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, out, _ := ctl(t, m.env(), "compensations", "list")
		if strings.Contains(out, mid) {
			if !strings.Contains(out, "branch_lost") || !strings.Contains(out, "open") {
				t.Fatalf("list:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no marker listed:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, errs := ctl(t, m.env(), "compensations", "resolve", mid); code != 2 || !strings.Contains(errs, "reason") {
		t.Errorf("resolve without --reason: %d %q", code, errs)
	}
	code, out, _ := ctl(t, m.env(), "compensations", "resolve", mid, "--reason", "stock fixed by hand")
	if code != 0 || !strings.Contains(out, "resolved by ops") {
		t.Fatalf("resolve: %d %q", code, out)
	}
	if code, _, errs := ctl(t, m.env(), "compensations", "resolve", mid, "--reason", "again"); code != 1 || !strings.Contains(errs, "409 Conflict") || !strings.Contains(errs, "already resolved") {
		t.Errorf("second resolve: %d %q", code, errs)
	}
	code, out, _ = ctl(t, m.env(), "compensations", "list", "--status", "resolved", "-o", "json")
	var l txmanager.CompensationList
	if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil || len(l.Compensations) != 1 ||
		l.Compensations[0].Resolution == nil || l.Compensations[0].Resolution.Reason != "stock fixed by hand" {
		t.Fatalf("resolved list: %d %v %s", code, err, out)
	}
	if code, _, errs := ctl(t, m.env(), "compensations", "list", "--status", "closed"); code != 1 || !strings.Contains(errs, "parameter status") {
		t.Errorf("bad status: %d %q", code, errs)
	}
	if code, _, errs := ctl(t, m.env(), "compensations", "retry", mid); code != 1 || !strings.Contains(errs, "409") {
		t.Errorf("retry of a finished group's marker: %d %q", code, errs)
	}
}

func TestRetryStuckGroup(t *testing.T) {
	m := startTM(t, func(c *txmanager.Config) { c.AttentionAfter = 50 * time.Millisecond })
	id, _ := m.group(false, false)
	mid := id + ".phase2"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, out, _ := ctl(t, m.env(), "compensations", "list"); strings.Contains(out, mid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no phase2_stuck marker")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out, errs := ctl(t, m.env(), "compensations", "retry", mid); code != 0 || !strings.Contains(out, "pushed again") {
		t.Errorf("compensations retry: %d %q %q", code, out, errs)
	}
	if code, out, errs := ctl(t, m.env(), "groups", "retry", id); code != 0 || !strings.Contains(out, "ROLLING_BACK") {
		t.Errorf("groups retry: %d %q %q", code, out, errs)
	}
}

func TestCredentialsAndReachability(t *testing.T) {
	m := startTM(t, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := ctl(t, []string{"LCN_URL=" + m.url, "LCN_ADMIN_TOKEN_FILE=" + tokenFile}, "groups", "list"); code != 0 {
		t.Errorf("token from LCN_ADMIN_TOKEN_FILE: %d %q", code, errs)
	}
	if code, _, errs := ctl(t, []string{"LCN_URL=" + m.url}, "--token-file", tokenFile, "groups", "list"); code != 0 {
		t.Errorf("token from --token-file: %d %q", code, errs)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{[]string{"LCN_URL=" + m.url}, []string{"groups", "list"}, 2, "LCN_ADMIN_TOKEN_FILE"},
		{[]string{"LCN_URL=" + m.url, "LCN_ADMIN_TOKEN=wrong-token"}, []string{"groups", "list"}, 1, "401 Unauthorized: invalid token"},
		{[]string{"LCN_URL=" + m.url, "LCN_ADMIN_TOKEN=" + stockToken}, []string{"groups", "list"}, 1, "403 Forbidden"},
		{[]string{"LCN_URL=" + m.url}, []string{"--token-file", "/nonexistent/token", "groups", "list"}, 1, "admin token file"},
		{m.env(), []string{"--url", "http://127.0.0.1:1", "groups", "list"}, 1, "cannot reach the TxManager at http://127.0.0.1:1"},
		{m.env(), []string{"--url", "ftp://x", "health"}, 2, "--url"},
		{m.env(), []string{"groups", "list", "-o", "yaml"}, 2, "--output"},
		{m.env(), []string{"groups", "frobnicate"}, 2, "unknown command"},
		{m.env(), []string{"compensations"}, 2, "needs a subcommand"},
		{m.env(), []string{"groups", "show"}, 2, "one group id"},
	} {
		code, _, errs := ctl(t, tc.env, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d %q; want %d with %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}

func TestHealth(t *testing.T) {
	m := startTM(t, nil)
	code, out, errs := ctl(t, []string{"LCN_URL=" + m.url}, "health") // no token needed
	if code != 0 || !strings.Contains(out, "/readyz") || !strings.Contains(out, "ready") {
		t.Fatalf("health: %d %q %q", code, out, errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errs = ctl(t, []string{"LCN_URL=" + m.url}, "health", "-o", "json")
	if code != 1 || !strings.Contains(errs, "not ready") || !strings.Contains(errs, "draining") || !strings.Contains(out, `"ok": false`) {
		t.Errorf("health while draining: %d %q %q", code, out, errs)
	}
}
