package uitest

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/txmanager"
	"github.com/golcn/golcn/txmanager/adminui"
)

// tmEnv is a real TxManager (bolt store in a temporary directory) with the
// admin page mounted, served over httptest.
type tmEnv struct {
	t      *testing.T
	srv    *txmanager.Server
	url    string
	secret string
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
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startTxManager(t *testing.T) *tmEnv {
	t.Helper()
	e := &tmEnv{t: t, secret: "ui-test-admin-secret-" + gid.New(), tokens: map[string]string{}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := txmanager.Config{
		Logger:       log,
		ReapInterval: 50 * time.Millisecond,
		RetryMin:     50 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		LostAfter:    300 * time.Millisecond, // a participant gone this long has lost its lcn branch
		PingInterval: time.Minute,            // the test's clients answer pings only while reading
	}
	for _, svc := range []string{"orders", "stock", "payments"} {
		e.tokens[svc] = gid.New() + gid.New()
		cfg.Auth.Credentials = append(cfg.Auth.Credentials, txmanager.Credential{Service: svc, TokenSHA256: txmanager.HashToken(e.tokens[svc])})
	}
	store, err := txmanager.OpenBoltStore(filepath.Join(t.TempDir(), "lcn.db"), txmanager.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ui, err := adminui.New(adminui.Config{Enabled: true, SecretSHA256: txmanager.HashToken(e.secret)}, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := txmanager.New(cfg, store, txmanager.WithAdminUI(ui))
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	hs := httptest.NewServer(srv.Handler())
	e.url = hs.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		hs.Close()
		_ = srv.Close()
		<-done
		_ = store.Close()
	})
	return e
}

// group reads a group from the TxManager's store.
func (e *tmEnv) group(id string) *txmanager.Group {
	e.t.Helper()
	g, err := e.srv.Group(context.Background(), id)
	if err != nil {
		e.t.Fatalf("group %s: %v", id, err)
	}
	return g
}

// waitGroup waits (10s at most) until cond holds for the stored group.
func (e *tmEnv) waitGroup(id, what string, cond func(*txmanager.Group) bool) *txmanager.Group {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		g := e.group(id)
		if cond(g) {
			return g
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("group %s: %s did not happen within 10s: %+v", id, what, g)
		}
		<-tick.C
	}
}

// rolledBackGroup makes a group that orders starts, stock joins and votes
// for, and orders rolls back; stock applies and acknowledges the rollback.
func (e *tmEnv) rolledBackGroup() string {
	orders := dialWire(e.t, e.url, e.tokens["orders"], "orders", "o-1")
	stock := dialWire(e.t, e.url, e.tokens["stock"], "stock", "s-1")
	g := orders.ok(&wire.Message{Type: wire.TypeCreate}).Group
	br := stock.joinAndVote(g, "stock-db")
	orders.ok(&wire.Message{Type: wire.TypeDecide, Group: g, Commit: false})
	if d := stock.decision(g); d.Commit || d.Branch != br {
		e.t.Fatalf("rollback push: %+v", d)
	}
	stock.ok(&wire.Message{Type: wire.TypeAck, Group: g, Branch: br, Outcome: wire.OutcomeRolledBack})
	e.waitGroup(g, "rolled back", func(g *txmanager.Group) bool { return g.State == txmanager.GroupRolledBack })
	return g
}

// committedGroup makes a group that commits cleanly.
func (e *tmEnv) committedGroup() string {
	orders := dialWire(e.t, e.url, e.tokens["orders"], "orders", "o-2")
	pay := dialWire(e.t, e.url, e.tokens["payments"], "payments", "p-2")
	g := orders.ok(&wire.Message{Type: wire.TypeCreate}).Group
	br := pay.joinAndVote(g, "payments-db")
	orders.ok(&wire.Message{Type: wire.TypeDecide, Group: g, Commit: true})
	pay.decision(g)
	pay.ok(&wire.Message{Type: wire.TypeAck, Group: g, Branch: br, Outcome: wire.OutcomeCommitted})
	e.waitGroup(g, "committed", func(g *txmanager.Group) bool { return g.State == txmanager.GroupCommitted })
	return g
}

// lostBranchGroup makes a group that orders commits with two lcn branches:
// stock's session ends before it acknowledges the commit (after LostAfter
// its branch is LOST, the group needs attention and a branch_lost
// compensation marker exists); payments stays connected without
// acknowledging yet, so the group stays COMMITTING. It returns the group,
// the lost branch and the payments client with its branch.
func (e *tmEnv) lostBranchGroup() (group, lostBranch string, pay *wireClient, payBranch string) {
	orders := dialWire(e.t, e.url, e.tokens["orders"], "orders", "o-3")
	stock := dialWire(e.t, e.url, e.tokens["stock"], "stock", "s-3")
	pay = dialWire(e.t, e.url, e.tokens["payments"], "payments", "p-3")
	group = orders.ok(&wire.Message{Type: wire.TypeCreate}).Group
	lostBranch = stock.joinAndVote(group, "stock-db")
	payBranch = pay.joinAndVote(group, "payments-db")
	orders.ok(&wire.Message{Type: wire.TypeDecide, Group: group, Commit: true})
	stock.decision(group)
	_ = stock.ws.Close() // gone before acknowledging: its held transaction died with it
	pay.decision(group)
	e.waitGroup(group, "stock's branch lost", func(g *txmanager.Group) bool {
		b, ok := g.Branch(lostBranch)
		return ok && b.State == txmanager.BranchLost
	})
	return group, lostBranch, pay, payBranch
}

// TestAdminPageAgainstTxManager is deliver point 3 of the operator issue:
// chromium against a real TxManager with real groups. It logs in, finds
// the rolled-back group in the list, opens its timeline, goes to the
// compensations, retries the lost branch's marker, resolves it with a
// reason and sees it resolved, with a screenshot of each page.
func TestAdminPageAgainstTxManager(t *testing.T) {
	b := newBrowser(t)
	e := startTxManager(t)
	rolled := e.rolledBackGroup()
	committed := e.committedGroup()
	lost, lostBranch, pay, payBranch := e.lostBranchGroup()
	marker := lost + "." + lostBranch
	t.Logf("groups: rolled back %s, committed %s, lost branch %s (marker %s)", rolled, committed, lost, marker)

	// Log in.
	b.do("open the page", chromedp.Navigate(e.url+"/admin/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.shot("login")
	b.do("log in",
		chromedp.SendKeys(chromedp.ID("secret"), e.secret),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#states-table tr[data-state="ROLLED_BACK"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#attention-table tr[data-id="`+lost+`"]`)))
	b.shot("overview")
	if got := b.text(`#states-table tr[data-state="ROLLED_BACK"]`); !strings.HasSuffix(strings.TrimSpace(got), "1") {
		t.Fatalf("overview ROLLED_BACK row %q, want 1 group", got)
	}

	// Find the rolled-back group in the list.
	b.do("filter the group list",
		chromedp.Click(chromedp.ID("nav-groups")),
		chromedp.WaitVisible(chromedp.ID("filter-state")),
		chromedp.SetValue(chromedp.ID("filter-state"), "ROLLED_BACK"),
		chromedp.SendKeys(chromedp.ID("filter-service"), "orders"),
		chromedp.Click(chromedp.ID("filter-apply")),
		chromedp.WaitVisible(chromedp.CSS(`#groups-table tr[data-id="`+rolled+`"]`)))
	b.shot("groups rolled back")
	if states := eval[[]string](b, `[...document.querySelectorAll("#groups-table tbody tr[data-id]")].map(r => r.dataset.state)`); len(states) != 1 || states[0] != "ROLLED_BACK" {
		t.Fatalf("filtered list states %v, want the one rolled-back group", states)
	}

	// Open it: its branches and timeline.
	b.do("open the rolled-back group",
		chromedp.Click(chromedp.CSS(`#groups-table tr[data-id="`+rolled+`"] a.group-link`)),
		chromedp.WaitVisible(chromedp.CSS(`#group-detail[data-id="`+rolled+`"] #timeline li`)))
	b.shot("rolled back group timeline")
	kinds := eval[[]string](b, `[...document.querySelectorAll("#timeline li")].map(li => li.dataset.kind)`)
	for _, want := range []string{"created", "joined", "voted", "decided", "branch-done"} {
		if !strings.Contains(strings.Join(kinds, " "), want) {
			t.Fatalf("timeline kinds %v lack %q", kinds, want)
		}
	}
	if got := b.text("#timeline"); !strings.Contains(got, "ROLLING_BACK") || !strings.Contains(got, "ROLLED_BACK") {
		t.Fatalf("timeline %q does not show the rollback", got)
	}
	if got := b.text("#branches-table"); !strings.Contains(got, "stock") || !strings.Contains(got, "ROLLED_BACK") {
		t.Fatalf("branches %q", got)
	}

	// The lost group, opened by id.
	b.do("open the lost group by id",
		chromedp.Click(chromedp.ID("nav-groups")),
		chromedp.WaitVisible(chromedp.ID("group-search")),
		chromedp.SendKeys(chromedp.ID("group-search"), lost),
		chromedp.Click(chromedp.ID("group-search-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#group-detail[data-id="`+lost+`"] #branches-table tr[data-state="LOST"]`)),
		chromedp.WaitVisible(chromedp.ID("group-attention")))
	b.shot("lost branch group")

	// Compensations: retry the lost branch's marker (the group still has
	// payments' branch to push to), then resolve it.
	row := `#compensations-table tr[data-id="` + marker + `"]`
	b.do("compensations",
		chromedp.Click(chromedp.ID("nav-compensations")),
		chromedp.WaitVisible(chromedp.CSS(row+" button.retry")))
	b.shot("compensations open")
	b.do("retry",
		chromedp.Click(chromedp.CSS(row+" button.retry")),
		waitText("#notice-text", "pushed again for compensation "+marker))
	b.shot("compensation retried")
	// payments applies the commit the retry pushed, and acknowledges it.
	pay.decision(lost)
	pay.ok(&wire.Message{Type: wire.TypeAck, Group: lost, Branch: payBranch, Outcome: wire.OutcomeCommitted})
	g := e.waitGroup(lost, "committed", func(g *txmanager.Group) bool { return g.State == txmanager.GroupCommitted })
	if g.Attention == "" {
		t.Fatal("a group with a lost branch finished without needing attention")
	}

	const reason = "stock row re-applied by hand from the order log (ticket OPS-42)"
	b.do("resolve",
		chromedp.Click(chromedp.CSS(row+" button.resolve")),
		chromedp.WaitVisible(chromedp.CSS(`tr.resolve-row[data-for="`+marker+`"] input.reason`)),
		chromedp.SendKeys(chromedp.CSS(`tr.resolve-row[data-for="`+marker+`"] input.reason`), reason),
		chromedp.Click(chromedp.CSS(`tr.resolve-row[data-for="`+marker+`"] button.confirm-resolve`)),
		waitText(row+" td.status", "Resolved by admin"))
	b.shot("compensation resolved")
	b.do("see it among the resolved",
		chromedp.Click(chromedp.ID("tab-resolved")),
		chromedp.WaitVisible(chromedp.CSS(`#compensations[data-status="resolved"] `+row+`[data-status="resolved"]`)),
		waitText(row+" td.status", reason))
	b.shot("compensations resolved")
	if n := eval[int](b, `fetch("../v1/compensations?status=open").then(r => r.json()).then(b => b.compensations.length)`); n != 0 {
		t.Fatalf("%d open compensations after resolving", n)
	}

	// The API refuses a session POST without the CSRF token.
	if code := eval[int](b, `fetch("../v1/groups/`+rolled+`/retry", {method: "POST"}).then(r => r.status)`); code != http.StatusForbidden {
		t.Fatalf("session POST without X-CSRF-Token: HTTP %d, want 403", code)
	}

	b.do("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	if code := eval[int](b, `fetch("../v1/overview").then(r => r.status)`); code != http.StatusUnauthorized {
		t.Fatalf("API after logout: HTTP %d, want 401", code)
	}
	b.checkConsole()
	logs := e.logs.String()
	if strings.Contains(logs, e.secret) {
		t.Fatal("the admin secret appears in the TxManager's logs")
	}
	for svc, tok := range e.tokens {
		if strings.Contains(logs, tok) {
			t.Fatalf("%s's token appears in the TxManager's logs", svc)
		}
	}
}
