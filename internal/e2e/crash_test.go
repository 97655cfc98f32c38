package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/xa"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// The crash tests of DESIGN §4 (issue "durable votes"): a participant
// process SIGKILLed between its vote and the decision, its held connection
// killed, the database SIGKILLed with prepared branches outstanding; each in
// xa mode (the branch converges to the decision without a person) and in
// lcn mode (the group ends flagged as needing attention, never as cleanly
// committed). After each: the bank invariant (money conserved, no group
// half-applied unless flagged), no golcn branch in XA RECOVER and no InnoDB
// transaction left open.

// A participant running as a child process is this test binary, run again
// with childEnv set: TestMain hands over to childMain.
const (
	childEnv      = "LCN_E2E_CHILD"
	childManager  = "LCN_E2E_MANAGER"
	childToken    = "LCN_E2E_TOKEN"
	childService  = "LCN_E2E_SERVICE"
	childDSN      = "LCN_E2E_DSN"
	childMode     = "LCN_E2E_MODE"
	childAddrFile = "LCN_E2E_ADDR_FILE"
	childDie      = "LCN_E2E_DIE" // "on-decision": SIGKILL itself when a decision reaches a held branch; "after-apply": once it applied it, before acknowledging
)

// childMain runs a bank participant (the same handler as the in-process
// ones) until SIGTERM, or until it kills itself on a decision.
func childMain() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "child participant: "+format+"\n", args...)
		return 2
	}
	client, err := txclient.New(txclient.Config{ManagerURL: os.Getenv(childManager), Service: os.Getenv(childService),
		Token: os.Getenv(childToken), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		AskInterval: 500 * time.Millisecond, RequestTimeout: 2 * time.Second})
	if err != nil {
		return fail("txclient: %v", err)
	}
	defer client.Close()
	cfg, err := mysql.ParseDSN(os.Getenv(childDSN))
	if err != nil {
		return fail("dsn: %v", err)
	}
	inner, err := mysql.NewConnector(cfg)
	if err != nil {
		return fail("connector: %v", err)
	}
	var coord sqlproxy.Coordinator = client
	switch os.Getenv(childDie) {
	case "on-decision":
		coord = dyingCoord{Client: client}
	case "after-apply":
		coord = dyingCoord{Client: client, afterApply: true}
	}
	db, err := sqlproxy.OpenDB(inner, sqlproxy.Options{Datasource: os.Getenv(childService), Mode: os.Getenv(childMode),
		Coordinator: coord, RecoveryInterval: 200 * time.Millisecond, ApplyTimeout: 5 * time.Second})
	if err != nil {
		return fail("open: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.WaitConnected(ctx); err != nil {
		return fail("connect: %v", err)
	}
	// Using the datasource starts its xa recovery.
	if err := db.PingContext(ctx); err != nil {
		return fail("ping: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /move", moveHandler(db))
	srv := &http.Server{Handler: client.Middleware(mux)}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	addrFile := os.Getenv(childAddrFile)
	if err := os.WriteFile(addrFile+".tmp", []byte("http://"+ln.Addr().String()), 0o600); err != nil {
		return fail("write address: %v", err)
	}
	if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
		return fail("write address: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}

// dyingCoord kills its own process the moment a decision reaches one of
// its held branches: the participant dies after its vote (and, in xa mode,
// its prepare) and before the decision is applied.
// With afterApply it applies the decision first and dies before the
// acknowledgement leaves.
type dyingCoord struct {
	*txclient.Client
	afterApply bool
}

func (c dyingCoord) Hold(group, branch string, h sqlproxy.Held) {
	c.Client.Hold(group, branch, dyingHeld{Held: h, afterApply: c.afterApply})
}

type dyingHeld struct {
	sqlproxy.Held
	afterApply bool
}

func (h dyingHeld) Commit(ctx context.Context) error {
	if h.afterApply {
		_ = h.Held.Commit(ctx)
	}
	return die()
}

func (h dyingHeld) Rollback(ctx context.Context) error {
	if h.afterApply {
		_ = h.Held.Rollback(ctx)
	}
	return die()
}

func die() error {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never returns
}

// child is a participant process.
type child struct {
	cmd  *exec.Cmd
	url  string
	log  string
	done chan error
}

// startChild starts a participant process for service on dsn and waits
// until it serves.
func startChild(t *testing.T, m *manager, service, dsn, mode string, dieOnDecision bool) *child {
	die := ""
	if dieOnDecision {
		die = "on-decision"
	}
	return startChildDying(t, m, service, dsn, mode, die)
}

// startChildDying is startChild with the child's way to die (childDie).
func startChildDying(t *testing.T, m *manager, service, dsn, mode, die string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &child{log: filepath.Join(dir, "child.log"), done: make(chan error, 1)}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	addrFile := filepath.Join(dir, "addr")
	c.cmd = exec.Command(exe, "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"=participant", childManager+"="+m.url(), childToken+"="+m.tokens[service],
		childService+"="+service, childDSN+"="+dsn, childMode+"="+mode, childAddrFile+"="+addrFile)
	if die != "" {
		c.cmd.Env = append(c.cmd.Env, childDie+"="+die)
	}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
		c.done <- nil // later waits return at once
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			c.url = string(b)
			return c
		}
		select {
		case err := <-c.done:
			t.Fatalf("participant process exited before serving: %v\n%s", err, c.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("participant process not serving after 30s\n%s", c.tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitKilled waits until the process died of SIGKILL.
func (c *child) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("participant process ended with %v, want SIGKILL\n%s", err, c.tail())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("participant process still alive\n%s", c.tail())
	}
}

func (c *child) tail() string {
	f, err := os.Open(c.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// crashBank is a starter, an in-process participant a and a participant b
// (in-process or a child process), each with its own schema.
type crashBank struct {
	m       *manager
	starter *txclient.Client
	hc      *http.Client
	a       *participant
	bURL    string
	bRaw    *sql.DB
	bSchema string
}

func (cb *crashBank) begin(t *testing.T, amount int) (context.Context, *txclient.Group) {
	t.Helper()
	ctx, g, err := cb.starter.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, cb.hc, moveURL(cb.a, 1, -amount, "")); err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, cb.hc, fmt.Sprintf("%s/move?acct=1&delta=%d", cb.bURL, amount)); err != nil {
		t.Fatal(err)
	}
	return ctx, g
}

// checkBank checks the bank invariant: money is conserved and the group is
// applied everywhere or nowhere (committed says which).
func (cb *crashBank) checkBank(t *testing.T, amount int, committed bool) {
	t.Helper()
	a := cb.a.balance(t, 1)
	var b int64
	if err := cb.bRaw.QueryRow(`SELECT balance FROM accounts WHERE id = 1`).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a+b != 2*initialBalance {
		t.Fatalf("money not conserved: a=%d b=%d", a, b)
	}
	wantA := int64(initialBalance)
	if committed {
		wantA -= int64(amount)
	}
	if a != wantA {
		t.Fatalf("group half-applied or wrongly applied: a=%d b=%d (committed %v)", a, b, committed)
	}
}

// checkClean checks that no golcn branch stays prepared and no InnoDB
// transaction stays open on the server (the tests of this package run one
// at a time, and their servers serve nobody else).
func checkClean(t *testing.T, raw *sql.DB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		xids, err := xa.Recover(context.Background(), raw)
		if err != nil {
			t.Fatalf("XA RECOVER: %v", err)
		}
		open := activeTrx(t, raw)
		if len(xids) == 0 && len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: prepared golcn branches %v, open transactions %q", xids, open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activeTrx lists the InnoDB transactions that are started (ACTIVE, or
// ACTIVE (PREPARED)), from SHOW ENGINE INNODB STATUS: MariaDB may keep
// information_schema.innodb_trx showing XA transactions that have ended.
func activeTrx(t *testing.T, raw *sql.DB) []string {
	t.Helper()
	var typ, name, status string
	if err := raw.QueryRow("SHOW ENGINE INNODB STATUS").Scan(&typ, &name, &status); err != nil {
		t.Fatalf("SHOW ENGINE INNODB STATUS: %v", err)
	}
	var out []string
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, "---TRANSACTION") && strings.Contains(line, "ACTIVE") {
			out = append(out, line)
		}
	}
	return out
}

// listedXids returns the golcn xids XA RECOVER lists for group.
func listedXids(t *testing.T, raw *sql.DB, group string) []xa.Xid {
	t.Helper()
	xids, err := xa.Recover(context.Background(), raw)
	if err != nil {
		t.Fatalf("XA RECOVER: %v", err)
	}
	var out []xa.Xid
	for _, x := range xids {
		if x.Group == group {
			out = append(out, x)
		}
	}
	return out
}

// branchOf returns the id of service's branch in group id.
func branchOf(t *testing.T, m *manager, id, service string) string {
	t.Helper()
	for _, b := range m.group(id).Branches {
		if b.Service == service {
			return b.ID
		}
	}
	t.Fatalf("group %s has no branch of %s", id, service)
	return ""
}

func crashConfig() txmanager.Config {
	cfg := fastConfig()
	cfg.LostAfter = 500 * time.Millisecond
	return cfg
}

// A participant process SIGKILLed after its vote and prepare, before the
// commit decision reaches it, then restarted: its branch commits. In lcn
// mode the same crash loses the branch's work and the group ends flagged.
func TestParticipantKilledBeforeDecision(t *testing.T) {
	for _, mode := range []string{sqlproxy.ModeXA, sqlproxy.ModeLCN} {
		t.Run(mode, func(t *testing.T) {
			m := newManager(t, storeRedis, crashConfig())
			mdb := testenv.SharedMariaDB(t)
			bSchema, bDSN, bRaw := bankSchema(t, mdb)
			victim := startChild(t, m, "svc-b", bDSN, mode, true)
			cb := &crashBank{m: m, starter: newClient(t, m, "starter"),
				hc: &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second},
				a:  newParticipantWith(t, m, "svc-a", partOpts{mode: mode}), bURL: victim.url, bRaw: bRaw, bSchema: bSchema}
			const amount = 17
			ctx, g := cb.begin(t, amount)
			if err := g.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			victim.waitKilled(t)

			if mode == sqlproxy.ModeLCN {
				// The held transaction died with the process: the branch
				// is lost, and the group says so.
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				out, err := g.Wait(wctx)
				if err != nil {
					t.Fatal(err)
				}
				if !out.Committed || !strings.Contains(out.Attention, "svc-b") {
					t.Fatalf("outcome %+v: want committed, flagged for the lost svc-b branch", out)
				}
				assertFlaggedPartial(t, cb, amount)
				checkClean(t, cb.a.raw)
				return
			}

			// XA RECOVER is server-wide: svc-a's branch (same server, another
			// schema) may still be listed while svc-a applies the decision.
			victimBranch, listed := branchOf(t, m, g.ID(), "svc-b"), false
			for _, x := range listedXids(t, bRaw, g.ID()) {
				listed = listed || x.Branch == victimBranch
			}
			if !listed {
				t.Fatalf("XA RECOVER does not list the dead participant's prepared branch %s (lists %v)", victimBranch, listedXids(t, bRaw, g.ID()))
			}
			rec := m.group(g.ID())
			if rec.State != txmanager.GroupCommitting {
				t.Fatalf("group %s before the restart; want COMMITTING", rec.State)
			}
			start := time.Now()
			startChild(t, m, "svc-b", bDSN, mode, false)
			rec = m.waitState(g.ID(), txmanager.GroupCommitted)
			t.Logf("FIGURE restart-to-resolved %s: %v", mode, time.Since(start).Round(time.Millisecond))
			if rec.Attention != "" {
				t.Fatalf("recovered group flagged: %q", rec.Attention)
			}
			cb.checkBank(t, amount, true)
			checkClean(t, cb.a.raw)
		})
	}
}

// assertFlaggedPartial: in lcn mode a crash after the decision loses the
// dead participant's work; the group is COMMITTED with attention and the
// balances are exactly what the flag reports (a applied, b not).
func assertFlaggedPartial(t *testing.T, cb *crashBank, amount int) {
	t.Helper()
	var b int64
	if err := cb.bRaw.QueryRow(`SELECT balance FROM accounts WHERE id = 1`).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a := cb.a.balance(t, 1); a != initialBalance-int64(amount) || b != initialBalance {
		t.Fatalf("balances a=%d b=%d: want a applied and b lost", a, b)
	}
}

// waitFlagged waits until the group is terminal and checks that it is
// flagged, never reported as cleanly committed.
func waitFlagged(t *testing.T, m *manager, id string) *txmanager.Group {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec := m.group(id)
		if rec.State.Terminal() {
			if rec.Attention == "" {
				t.Fatalf("group %s ended %s without attention after losing a branch: %+v", id, rec.State, rec)
			}
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s still %s", id, rec.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A branch's held connection killed with KILL CONNECTION. In xa mode, after
// the prepare: the commit finishes from another connection; before the
// prepare: the prepare fails and the group rolls back. In lcn mode the
// killed branch's work is gone: the group ends flagged.
func TestHeldConnectionKilled(t *testing.T) {
	type scenario struct {
		mode         string
		afterPrepare bool // kill once the decision reached the branch, else before the starter commits
	}
	for _, sc := range []scenario{
		{sqlproxy.ModeXA, true},
		{sqlproxy.ModeXA, false},
		{sqlproxy.ModeLCN, true},
	} {
		name := sc.mode + "/before-prepare"
		if sc.afterPrepare {
			name = sc.mode + "/after-vote"
		}
		t.Run(name, func(t *testing.T) {
			m := newManager(t, storeRedis, crashConfig())
			b := newParticipantWith(t, m, "svc-b", partOpts{mode: sc.mode, gate: true})
			cb := &crashBank{m: m, starter: newClient(t, m, "starter"),
				hc: &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second},
				a:  newParticipantWith(t, m, "svc-a", partOpts{mode: sc.mode}), bURL: b.url, bRaw: b.raw, bSchema: b.schema}
			const amount = 23
			ctx, g := cb.begin(t, amount)
			if !sc.afterPrepare {
				killHeldConnections(t, b)
				err := g.Commit(ctx)
				if !errors.Is(err, txclient.ErrRolledBack) {
					t.Fatalf("commit after the branch's connection was killed: %v; want ErrRolledBack", err)
				}
				close(b.gate.open)
				m.waitState(g.ID(), txmanager.GroupRolledBack)
				cb.checkBank(t, amount, false)
				checkClean(t, b.raw)
				return
			}
			if err := g.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			<-b.gate.reached // the decision is at b's held branch, not applied
			if sc.mode == sqlproxy.ModeXA {
				// (a's branch is not held back: it may be committed already.)
				if !slices.ContainsFunc(listedXids(t, b.raw, g.ID()), func(x xa.Xid) bool { return x.Branch == branchOf(t, m, g.ID(), "svc-b") }) {
					t.Fatalf("XA RECOVER does not list svc-b's branch as prepared")
				}
			}
			killHeldConnections(t, b)
			close(b.gate.open)
			if sc.mode == sqlproxy.ModeLCN {
				// The killed connection took the held work with it.
				waitFlagged(t, m, g.ID())
				assertFlaggedPartial(t, cb, amount)
			} else {
				rec := m.waitState(g.ID(), txmanager.GroupCommitted)
				if rec.Attention != "" {
					t.Fatalf("group flagged: %q", rec.Attention)
				}
				cb.checkBank(t, amount, true)
			}
			checkClean(t, b.raw)
		})
	}
}

// mariadbd SIGKILLed and restarted while both branches of a committed group
// wait for the decision: xa branches survive and commit once the server is
// back; lcn branches die with the server and the group ends flagged.
func TestDatabaseKilledWithPreparedBranches(t *testing.T) {
	for _, mode := range []string{sqlproxy.ModeXA, sqlproxy.ModeLCN} {
		t.Run(mode, func(t *testing.T) {
			mdb := testenv.StartMariaDB(t)
			m := newManager(t, storeRedis, crashConfig())
			a := newParticipantWith(t, m, "svc-a", partOpts{mode: mode, mdb: mdb, gate: true})
			b := newParticipantWith(t, m, "svc-b", partOpts{mode: mode, mdb: mdb, gate: true})
			cb := &crashBank{m: m, starter: newClient(t, m, "starter"),
				hc: &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second},
				a:  a, bURL: b.url, bRaw: b.raw, bSchema: b.schema}
			const amount = 31
			ctx, g := cb.begin(t, amount)
			if err := g.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			<-a.gate.reached
			<-b.gate.reached
			if mode == sqlproxy.ModeXA {
				if x := listedXids(t, b.raw, g.ID()); len(x) != 2 {
					t.Fatalf("XA RECOVER lists %v; want both branches prepared", x)
				}
			}
			mdb.Kill(t)
			close(a.gate.open)
			close(b.gate.open)
			// The branches cannot apply the decision while the server is
			// down; give them a few attempts against the dead server.
			time.Sleep(300 * time.Millisecond)
			mdb.Restart(t)
			if mode == sqlproxy.ModeXA {
				rec := m.waitState(g.ID(), txmanager.GroupCommitted)
				if rec.Attention != "" {
					t.Fatalf("group flagged: %q", rec.Attention)
				}
				cb.checkBank(t, amount, true)
			} else {
				rec := waitFlagged(t, m, g.ID())
				if !rec.State.Commit() {
					t.Fatalf("group %s", rec.State)
				}
				// Both branches died with the server: nothing applied, and
				// the flag says so.
				cb.checkBank(t, amount, false)
			}
			checkClean(t, b.raw)
		})
	}
}

// An xa participant that committed its prepared branch and died before its
// acknowledgement left: the database no longer lists the branch, so
// recovery finds nothing, and the dead instance never answers. The
// TxManager hands the decision to a live instance of the same service,
// which sees the branch gone from XA RECOVER (finished with the decision)
// and acknowledges: the group ends COMMITTED, not stuck in COMMITTING.
func TestParticipantKilledAfterApplyBeforeAck(t *testing.T) {
	m := newManager(t, storeRedis, crashConfig())
	mdb := testenv.SharedMariaDB(t)
	bSchema, bDSN, bRaw := bankSchema(t, mdb)
	victim := startChildDying(t, m, "svc-b", bDSN, sqlproxy.ModeXA, "after-apply")
	cb := &crashBank{m: m, starter: newClient(t, m, "starter"),
		hc: &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second},
		a:  newParticipantWith(t, m, "svc-a", partOpts{mode: sqlproxy.ModeXA}), bURL: victim.url, bRaw: bRaw, bSchema: bSchema}
	const amount = 19
	ctx, g := cb.begin(t, amount)
	if err := g.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	victim.waitKilled(t)
	if x := listedXids(t, bRaw, g.ID()); len(x) != 0 {
		t.Fatalf("XA RECOVER lists %v: the victim should have committed before dying", x)
	}
	startChild(t, m, "svc-b", bDSN, sqlproxy.ModeXA, false)
	rec := m.waitState(g.ID(), txmanager.GroupCommitted)
	if rec.Attention != "" {
		t.Fatalf("group flagged: %q", rec.Attention)
	}
	cb.checkBank(t, amount, true)
	checkClean(t, cb.a.raw)
}
