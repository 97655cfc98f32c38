//go:build chaos

package chaos

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/txmanager"
)

func TestMain(m *testing.M) {
	if os.Getenv(RoleEnv) != "" {
		os.Exit(RunNode()) // this process is a TxManager or a bank service of a scenario
	}
	testenv.Main(m)
}

// Knobs (RELIABILITY.md A.3 defaults).
const (
	groupTimeout  = 5 * time.Second
	tRec          = 30 * time.Second
	clientTimeout = 8 * time.Second
	workers       = 8
	visibilityB   = time.Second // I7 bound: phase 2 is asynchronous
)

var services = []string{"svc-a", "svc-b", "svc-c"}

// scale is CHAOS_SCALE (default 1: the CI figures; 10: the nightly ones).
func scale(t *testing.T) int {
	t.Helper()
	v := os.Getenv("CHAOS_SCALE")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("CHAOS_SCALE=%q: want a positive integer", v)
	}
	return n
}

// seed is CHAOS_SEED, or a fresh one; every run prints it.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
		return s
	}
	return rand.Uint64()
}

// node is a child process (the test binary re-run with RoleEnv set) in its
// own process group, restarted by its supervisor whenever it dies.
type node struct {
	name    string
	addr    string
	health  string
	env     []string
	logPath string
	delay   time.Duration // restart delay after a death
	armed   bool          // a failpoint may kill it at any time, even while starting

	mu       sync.Mutex
	onDeath  func() // run by the supervisor after each death, before the restart
	pid      int
	done     chan struct{} // closed when the current process exited
	byHarnes bool          // the current process was killed by the nemesis
}

func (n *node) start(stop <-chan struct{}) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "-test.run=^$")
	n.mu.Lock()
	cmd.Env = append(os.Environ(), n.env...)
	n.mu.Unlock()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.pid, n.done, n.byHarnes = cmd.Process.Pid, done, false
	n.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get("http://" + n.addr + n.health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("%s %w (log %s)", n.name, errExited, n.logPath)
		case <-stop:
			return nil
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving after 60s (log %s)", n.name, n.logPath)
		}
	}
}

// errExited: the node died before its health check answered.
var errExited = errors.New("exited before serving")

// signal sends sig to the node's process group.
func (n *node) signal(sig syscall.Signal, byHarness bool) {
	n.mu.Lock()
	pid := n.pid
	if byHarness && sig == syscall.SIGKILL {
		n.byHarnes = true
	}
	n.mu.Unlock()
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// setEnv replaces the environment variable name=value of the node's next
// start (appending it if it was not set).
func (n *node) setEnv(name, value string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, kv := range n.env {
		if strings.HasPrefix(kv, name+"=") {
			n.env[i] = name + "=" + value
			return
		}
	}
	n.env = append(n.env, name+"="+value)
}

// setOnDeath sets the function the supervisor runs after each death of the
// node, before restarting it.
func (n *node) setOnDeath(f func()) {
	n.mu.Lock()
	n.onDeath = f
	n.mu.Unlock()
}

func (n *node) current() (chan struct{}, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done, n.byHarnes
}

// cluster is the A.1 topology: private MariaDB (three schemas, one
// least-privilege user each) and Redis, a TxManager and three bank
// services as supervised child processes, a JSONL history and counters.
type cluster struct {
	t       *testing.T
	name    string
	seed    uint64
	dir     string
	mdb     *testenv.MariaDB
	rds     *testenv.Redis
	root    *sql.DB
	rc      *redis.Client
	store   txmanager.Store
	hist    *History
	tm      *node
	svcs    map[string]*node
	schemas []string
	hc      *http.Client

	stop     chan struct{}
	wg       sync.WaitGroup
	faults   atomic.Int64
	lastT    atomic.Int64 // history time of the last fault
	errMu    sync.Mutex
	errs     []error
	readerMu sync.Mutex
	reader   []Violation
	acks     map[string]ack // ok ops not yet seen whole by the reader (I7)
	links    map[string]*link
}

type ack struct {
	at   time.Duration
	legs int
}

// clusterOpts configure a scenario's cluster.
type clusterOpts struct {
	mode        string            // branch mode of every service
	lostAfter   time.Duration     // TxManager lost_after
	fail        map[string]string // service -> CHAOS_FAIL
	waitOutcome bool              // the initiator waits for the applied outcome (lcn)
	// ownAddrs gives each service its own loopback address (svc-a
	// 127.0.0.2, svc-b 127.0.0.3, svc-c 127.0.0.4): it serves there and its
	// connections to the TxManager and to its peers leave from there (S12
	// tells them apart by address). The TxManager, MariaDB, Redis and the
	// harness stay on 127.0.0.1.
	ownAddrs bool
	// tmEnv is added to the TxManager's environment (e.g. TXM_FAILPOINT);
	// with it the TxManager counts as armed (it may die while starting)
	// and restarts 1 s after each death (RELIABILITY.md S4).
	tmEnv []string
	// links puts the connections through the embedded Toxiproxy
	// (toxi_test.go): the TxManager reaches Redis through link "redis",
	// and each service reaches the TxManager through link "<service>"
	// (cluster.links).
	links bool
	// dbLinks puts each service's connections to MariaDB through link
	// "db-<service>" too.
	dbLinks bool
	// svcEnv is added to every service's environment.
	svcEnv []string
	// groupTimeout replaces the TxManager's group timeout (default 5 s).
	groupTimeout time.Duration
}

// svcIP is the loopback address of the i-th service under ownAddrs.
func svcIP(i int) string { return "127.0.0." + strconv.Itoa(2+i) }

func newCluster(t *testing.T, name string, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, name: name, seed: seed(t), svcs: map[string]*node{}, stop: make(chan struct{}),
		hc: &http.Client{Timeout: clientTimeout}, acks: map[string]ack{}}
	t.Logf("SEED %s: CHAOS_SEED=%d", name, c.seed)
	var err error
	if out := os.Getenv("CHAOS_OUT"); out != "" {
		c.dir = filepath.Join(out, name)
		err = os.MkdirAll(c.dir, 0o755)
	} else {
		c.dir, err = os.MkdirTemp("", "golcn-chaos-"+name+"-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("CHAOS_OUT") == "" {
			_ = os.RemoveAll(c.dir)
		}
	})
	c.hist, err = OpenHistory(filepath.Join(c.dir, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("HISTORY %s: %s (node logs alongside; kept on failure or with CHAOS_OUT)", name, c.hist.Path)

	c.mdb = testenv.StartMariaDB(t)
	c.rds = testenv.StartRedis(t)
	c.root, err = sql.Open("mysql", c.mdb.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.root.Close() })
	c.rc = redis.NewClient(&redis.Options{Addr: c.rds.Addr})
	prefix := "chaos"
	c.store = txmanager.NewRedisStore(c.rc, prefix, txmanager.StoreOptions{Retention: time.Hour})
	t.Cleanup(func() { _ = c.store.Close(); _ = c.rc.Close() })

	tokens := map[string]string{}
	var creds []string
	for _, s := range services {
		tokens[s] = gid.New() + gid.New()
		creds = append(creds, s+"="+txmanager.HashToken(tokens[s]))
	}
	lost := o.lostAfter
	if lost == 0 {
		lost = 10 * time.Second
	}
	tmAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	redisAddr, tmURL := c.rds.Addr, map[string]string{}
	for _, s := range services {
		tmURL[s] = "ws://" + tmAddr + "/v1/ws"
	}
	var tl *links
	if o.links || o.dbLinks {
		tl = newLinks(t)
		c.links = map[string]*link{}
	}
	if o.links {
		c.links["redis"] = tl.add(t, "redis", c.rds.Addr)
		redisAddr = c.links["redis"].Addr()
		for _, s := range services {
			c.links[s] = tl.add(t, s, tmAddr)
			tmURL[s] = "ws://" + c.links[s].Addr() + "/v1/ws"
		}
	}
	c.tm = &node{name: "tm", addr: tmAddr, health: "/healthz", logPath: filepath.Join(c.dir, "tm.log"), delay: 500 * time.Millisecond,
		env: []string{RoleEnv + "=tm", envListen + "=" + tmAddr, envRedis + "=" + redisAddr, envPrefix + "=" + prefix,
			envCreds + "=" + strings.Join(creds, ","), envGroupTO + "=" + cmp.Or(o.groupTimeout, groupTimeout).String(), envLostAfter + "=" + lost.String()}}
	if len(o.tmEnv) > 0 {
		c.tm.env = append(c.tm.env, o.tmEnv...)
		c.tm.armed, c.tm.delay = true, time.Second
	}

	addrs := map[string]string{}
	var peers []string
	for i, s := range services {
		ip := "127.0.0.1"
		if o.ownAddrs {
			ip = svcIP(i)
		}
		addrs[s] = ip + ":" + strconv.Itoa(testenv.FreePort(t))
		peers = append(peers, s+"=http://"+addrs[s])
	}
	for i, s := range services {
		schema := "bank_" + strings.TrimPrefix(s, "svc-")
		c.schemas = append(c.schemas, schema)
		dsn := c.createSchema(schema)
		if o.dbLinks {
			c.links["db-"+s] = tl.add(t, "db-"+s, c.mdb.Addr)
			cfg, err := mysql.ParseDSN(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Addr = c.links["db-"+s].Addr()
			dsn = cfg.FormatDSN()
		}
		env := []string{RoleEnv + "=svc", envListen + "=" + addrs[s], envService + "=" + s, envToken + "=" + tokens[s],
			envTMURL + "=" + tmURL[s], envDSN + "=" + dsn, envMode + "=" + o.mode,
			envPeers + "=" + strings.Join(peers, ","), envSeed + "=" + strconv.FormatUint(c.seed+uint64(i), 10)}
		if f := o.fail[s]; f != "" {
			env = append(env, envFail+"="+f)
		}
		if o.waitOutcome {
			env = append(env, envWaitOutcom+"=1")
		}
		env = append(env, o.svcEnv...)
		if o.ownAddrs {
			env = append(env, envBind+"="+svcIP(i))
		}
		c.svcs[s] = &node{name: s, addr: addrs[s], health: "/healthz", logPath: filepath.Join(c.dir, s+".log"), delay: time.Second, env: env, armed: o.fail[s] != ""}
	}
	t.Cleanup(c.shutdown)
	for _, n := range append([]*node{c.tm}, c.svcs["svc-a"], c.svcs["svc-b"], c.svcs["svc-c"]) {
		if err := n.start(c.stop); err != nil {
			t.Fatal(err)
		}
		c.wg.Add(1)
		go c.supervise(n)
	}
	return c
}

// createSchema makes the A.2 bank schema and its least-privilege user and
// returns the user's DSN.
func (c *cluster) createSchema(schema string) string {
	c.t.Helper()
	user, pw := "u_"+schema, gid.New()
	stmts := []string{
		"CREATE DATABASE " + schema,
		"CREATE TABLE " + schema + ".accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, CHECK (balance >= 0)) ENGINE=InnoDB",
		// op (the client's operation id) maps an op whose answer was lost to its group.
		"CREATE TABLE " + schema + ".ledger (group_id CHAR(32) NOT NULL, leg TINYINT NOT NULL, account_id INT NOT NULL, delta BIGINT NOT NULL, op VARCHAR(32) NOT NULL, PRIMARY KEY (group_id, leg), KEY (op)) ENGINE=InnoDB",
		"CREATE TABLE " + schema + ".tx_marker (group_id CHAR(32) NOT NULL, unit_id CHAR(32) NOT NULL, PRIMARY KEY (group_id, unit_id)) ENGINE=InnoDB",
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, pw),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON %s.* TO '%s'@'%%'", schema, user),
	}
	var vals []string
	for i := 1; i <= AccountsPerSchema; i++ {
		vals = append(vals, fmt.Sprintf("(%d, %d)", i, InitialBalance))
	}
	stmts = append(stmts, "INSERT INTO "+schema+".accounts VALUES "+strings.Join(vals, ","))
	for _, q := range stmts {
		if _, err := c.root.Exec(q); err != nil {
			c.t.Fatalf("%s: %v", q, err)
		}
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, pw, "tcp", c.mdb.Addr, schema
	cfg.Params = map[string]string{"innodb_lock_wait_timeout": "10"}
	return cfg.FormatDSN()
}

// supervise restarts n after each death (its own, or the nemesis's kill)
// until the cluster stops; a death the nemesis did not cause is a
// failpoint firing and counts as a fault.
func (c *cluster) supervise(n *node) {
	defer c.wg.Done()
	for {
		done, _ := n.current()
		select {
		case <-c.stop:
			return
		case <-done:
		}
		if _, byHarness := n.current(); !byHarness {
			c.fault(n.name + " died (failpoint)")
		}
		n.mu.Lock()
		onDeath := n.onDeath
		n.mu.Unlock()
		if onDeath != nil {
			onDeath()
		}
		select {
		case <-c.stop:
			return
		case <-time.After(n.delay):
		}
		for {
			err := n.start(c.stop)
			if err == nil {
				break
			}
			if n.armed && errors.Is(err, errExited) {
				// Served, took a request and hit its failpoint before the
				// health check saw it: one more failpoint death.
				c.fault(n.name + " died (failpoint, while starting)")
			} else {
				c.errorf("restart %s: %w", n.name, err)
			}
			select {
			case <-c.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (c *cluster) errorf(format string, args ...any) {
	c.errMu.Lock()
	c.errs = append(c.errs, fmt.Errorf(format, args...))
	c.errMu.Unlock()
}

// fault counts and records an injected fault.
func (c *cluster) fault(what string) {
	c.faults.Add(1)
	r := c.hist.Add(Record{Type: "nemesis", Fault: what})
	c.lastT.Store(r.T)
}

// shutdown stops the supervisors and SIGKILLs every node's process group.
func (c *cluster) shutdown() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
	for _, n := range append([]*node{c.tm}, c.svcs["svc-a"], c.svcs["svc-b"], c.svcs["svc-c"]) {
		n.signal(syscall.SIGKILL, true)
		if done, _ := n.current(); done != nil {
			<-done
		}
	}
	_ = c.hist.Close()
}

// background runs the workload in the background, with the I8 reader, for
// scenarios whose nemesis needs the test goroutine. The returned stop ends
// the workload, waits for its operations and stops the reader; it may be
// called more than once.
func (c *cluster) background() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopReader := c.startReader(false)
	done := make(chan struct{})
	go func() { defer close(done); c.workload(ctx, func(int64) bool { return false }) }()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done; stopReader() }) }
}

// workload runs the bank workload: workers transfer until ctx ends or
// until enough() says stop. 2- and 3-leg transfers, amounts 1–50, 5%
// designed aborts; legs run in service order, so that groups take row
// locks in one global order (no distributed deadlock).
func (c *cluster) workload(ctx context.Context, enough func(done int64) bool) {
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := 1; w <= workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(c.seed, uint64(w)))
			for i := 0; ctx.Err() == nil && !enough(n.Load()); i++ {
				c.transfer(ctx, w, fmt.Sprintf("w%d-%d", w, i), rng)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
}

// plan draws a transfer's legs.
func plan(rng *rand.Rand) (legs []Leg, abort bool) {
	amount := int64(1 + rng.IntN(50))
	svcs := []string{"svc-a", "svc-b", "svc-c"}
	if rng.IntN(2) == 0 { // 2 legs: drop one service
		drop := rng.IntN(3)
		svcs = append(svcs[:drop:drop], svcs[drop+1:]...)
	}
	deltas := []int64{-amount, amount}
	if len(svcs) == 3 {
		fee := int64(1 + rng.IntN(5))
		deltas = []int64{-(amount + fee), amount, fee}
	}
	rng.Shuffle(len(deltas), func(i, j int) { deltas[i], deltas[j] = deltas[j], deltas[i] })
	for i, s := range svcs {
		legs = append(legs, Leg{Leg: i, Svc: s, Acct: 1 + rng.IntN(AccountsPerSchema), Delta: deltas[i]})
	}
	if rng.IntN(100) < 5 {
		legs[len(legs)-1].Acct = FrozenAccount
		abort = true
	}
	return legs, abort
}

func (c *cluster) transfer(ctx context.Context, worker int, op string, rng *rand.Rand) {
	legs, abort := plan(rng)
	c.send(ctx, worker, op, legs, abort)
}

// send runs one transfer through the initiator, records it in the history
// and returns its outcome (ok, fail or info).
func (c *cluster) send(ctx context.Context, worker int, op string, legs []Leg, abort bool) (outcome string) {
	c.hist.Add(Record{Type: "invoke", Op: op, Worker: worker, Legs: legs, Abort: abort})
	body, _ := json.Marshal(TransferRequest{Op: op, Legs: legs})
	result := func(typ, group, msg string) {
		outcome = typ
		r := c.hist.Add(Record{Type: typ, Op: op, Worker: worker, Group: group, Error: msg})
		if typ == "ok" {
			c.readerMu.Lock()
			c.acks[op] = ack{at: time.Duration(r.T), legs: len(legs)}
			c.readerMu.Unlock()
		}
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, "http://"+c.svcs["svc-a"].addr+"/transfer", bytes.NewReader(body))
	if err != nil {
		result("fail", "", err.Error())
		return
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			result("fail", "", err.Error()) // never reached the initiator
			// The initiator is down (restarting): pace the retries
			// instead of spinning on refused connections.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		} else {
			result("info", "", err.Error())
		}
		return
	}
	defer resp.Body.Close()
	var tr TransferResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || (tr.Outcome != "ok" && tr.Outcome != "fail" && tr.Outcome != "info") {
		result("info", tr.Group, fmt.Sprintf("status %d, undecodable answer (%v)", resp.StatusCode, err))
		return
	}
	result(tr.Outcome, tr.Group, tr.Error)
	return outcome
}

// startReader starts the I7/I8 reader: a consistent snapshot over the
// three schemas every 300ms; every group acked ok at least B before the
// snapshot must be wholly visible, and no balance may be negative. With
// checkI7 false only I8 is checked (the faults may hold phase 2 up beyond
// B; final visibility is then I5's). The returned func stops it and waits.
func (c *cluster) startReader(checkI7 bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
			if err := c.readOnce(ctx, checkI7); err != nil && ctx.Err() == nil {
				c.hist.Add(Record{Type: "note", Fault: "reader error: " + err.Error()})
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (c *cluster) readOnce(ctx context.Context, checkI7 bool) error {
	conn, err := c.root.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	at := c.hist.Since()
	if _, err := conn.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck
	visible := map[string]int{}
	for _, s := range c.schemas {
		var neg int
		if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+s+"`.accounts WHERE balance < 0").Scan(&neg); err != nil {
			return err
		}
		if neg > 0 {
			c.readerMu.Lock()
			c.reader = append(c.reader, Violation{Inv: "I8", Detail: fmt.Sprintf("%s: %d negative balances in a snapshot", s, neg), Severity: severity["I8"], At: at})
			c.readerMu.Unlock()
		}
		if !checkI7 {
			continue
		}
		rows, err := conn.QueryContext(ctx, "SELECT op, COUNT(*) FROM `"+s+"`.ledger GROUP BY op")
		if err != nil {
			return err
		}
		for rows.Next() {
			var op string
			var n int
			if err := rows.Scan(&op, &n); err != nil {
				rows.Close()
				return err
			}
			visible[op] += n
		}
		if err := rows.Close(); err != nil {
			return err
		}
	}
	if !checkI7 {
		return nil
	}
	c.readerMu.Lock()
	defer c.readerMu.Unlock()
	for op, a := range c.acks {
		if visible[op] == a.legs {
			delete(c.acks, op)
			continue
		}
		if a.at+visibilityB < at {
			c.reader = append(c.reader, Violation{Inv: "I7", Op: op, Severity: severity["I7"], At: at,
				Detail: fmt.Sprintf("acked ok at %v, snapshot at %v sees %d of %d legs", a.at.Round(time.Millisecond), at.Round(time.Millisecond), visible[op], a.legs)})
			delete(c.acks, op)
		}
	}
	return nil
}

// quiesce waits (polling, deadline T_rec) until nothing is in doubt: no
// non-terminal group in the store, XA RECOVER empty, no started InnoDB
// transaction, no lock wait. It returns the history time at which the
// databases were last seen becoming clean (no prepared branch, no started
// transaction, no lock wait: what a participant's locks need) and the
// time at which everything was, each zero if never reached.
func (c *cluster) quiesce() (dbClean, all time.Duration) {
	start := time.Now()
	ctx := context.Background()
	for time.Since(start) < tRec {
		at := c.hist.Since()
		prep, act, waits, err2 := Leftovers(ctx, c.root)
		clean := err2 == nil && len(prep) == 0 && len(act) == 0 && waits == 0
		if os.Getenv("CHAOS_DEBUG") != "" && !clean {
			c.t.Logf("DEBUG at %v: prepared %v active %v waits %d err %v", at, prep, act, waits, err2)
		}
		switch {
		case !clean:
			dbClean = 0
		case dbClean == 0:
			dbClean = at
		}
		if clean {
			if nt, err1 := NonTerminalGroups(ctx, c.store, 1); err1 == nil && len(nt) == 0 {
				return dbClean, at
			}
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	return dbClean, 0
}

// figures is one scenario's line of the report.
type figures struct {
	ops, ok, fail, info int
	faults              int64
	violations          int
	quiescence          time.Duration // last fault or end of workload (the later) to nothing in doubt; tRec+ if never
	locksFree           time.Duration // last fault or end of workload (the later) to no started transaction, prepared branch or lock wait
	wall                time.Duration
}

// finish stops the faults' aftermath, waits for quiescence, gathers the
// facts, runs the checker and reports. It fails the test on any violation.
func (c *cluster) finish(start time.Time, opt CheckOptions) (figures, Report) {
	c.t.Helper()
	return c.finishWith(start, opt, nil)
}

// finishWith is finish, with afterQuiesce (if not nil) run once the
// cluster is quiescent and before the facts are gathered, so that what it
// does is checked too.
func (c *cluster) finishWith(start time.Time, opt CheckOptions, afterQuiesce func()) (figures, Report) {
	c.t.Helper()
	end := c.hist.Since()
	dbClean, all := c.quiesce()
	// Measured from the last fault or the end of the workload, whichever
	// came later (the time the cluster needs to settle once nothing
	// disturbs it); never reached counts as the whole window and more.
	from := max(end, time.Duration(c.lastT.Load()))
	since := func(at time.Duration) time.Duration {
		if at == 0 {
			return c.hist.Since() - from + time.Millisecond
		}
		return max(at-from, 0)
	}
	q, locks := since(all), since(dbClean)
	// The same from the last fault alone (it includes the workload that
	// still ran after it): "-" without faults.
	afterFault := "-"
	if lf := time.Duration(c.lastT.Load()); lf > 0 {
		d := c.hist.Since() - lf + time.Millisecond // never reached
		if all != 0 {
			d = max(all-lf, 0)
		}
		afterFault = d.Round(time.Millisecond).String()
	}
	if afterQuiesce != nil {
		afterQuiesce()
	}
	ops := Ops(c.hist.Records())
	c.readerMu.Lock()
	reader := append([]Violation(nil), c.reader...)
	c.readerMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	facts, err := Gather(ctx, c.root, c.schemas, c.store, ops, reader)
	if err != nil {
		c.t.Fatalf("gather facts: %v", err)
	}
	rep := Check(facts, opt)
	// The nodes are this test binary, built with -race: a race report in a
	// node's log fails the scenario like one in the test process.
	for _, n := range append([]*node{c.tm}, c.svcs["svc-a"], c.svcs["svc-b"], c.svcs["svc-c"]) {
		if b, err := os.ReadFile(n.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			c.t.Errorf("data race reported in %s's log %s", n.name, n.logPath)
		}
	}
	c.errMu.Lock()
	for _, e := range c.errs {
		c.t.Errorf("harness: %v", e)
	}
	c.errMu.Unlock()
	fig := figures{ops: len(ops), ok: rep.OK, fail: rep.Fail, info: rep.Info, faults: c.faults.Load(), violations: len(rep.Violations), quiescence: q, locksFree: locks, wall: time.Since(start)}
	line := fmt.Sprintf("FIGURES %-10s ops=%d (ok %d, fail %d, info %d) faults=%d violations=%d quiescence=%v locks-free=%v after-last-fault=%s wall=%v seed=%d",
		c.name, fig.ops, fig.ok, fig.fail, fig.info, fig.faults, fig.violations, fig.quiescence.Round(time.Millisecond), fig.locksFree.Round(time.Millisecond), afterFault, fig.wall.Round(time.Second), c.seed)
	c.t.Log(line)
	appendSummary(line)
	for i, v := range rep.Violations {
		if i == 50 {
			c.t.Logf("... %d more", len(rep.Violations)-i)
			break
		}
		c.t.Logf("violation: %s", v)
	}
	if len(rep.Violations) > 0 {
		c.t.Errorf("%s: %s\n(history %s; rerun with CHAOS_SEED=%d)", c.name, rep.Summary(), c.hist.Path, c.seed)
	} else {
		c.t.Logf("%s: %s", c.name, rep.Summary())
	}
	return fig, rep
}

// appendSummary adds a figures line to $CHAOS_OUT/figures.txt, if set.
func appendSummary(line string) {
	out := os.Getenv("CHAOS_OUT")
	if out == "" {
		return
	}
	f, err := os.OpenFile(filepath.Join(out, "figures.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// probeAccounts checks that no lock was left behind: right after
// quiescence, every account of every schema takes part in one transfer (a
// credit of 1, debited from the richest account of the next service),
// which must come back ok within 10 s (RELIABILITY.md S6: each affected
// account sees a successful later transfer within 10 s of release).
// Probe operations are exempt from the node failpoints.
func (c *cluster) probeAccounts() {
	c.t.Helper()
	ctx := context.Background()
	var failed []string
	for i, s := range services {
		other := services[(i+1)%len(services)]
		for acct := 1; acct <= AccountsPerSchema; acct++ {
			var rich int
			schema := "bank_" + strings.TrimPrefix(other, "svc-")
			if err := c.root.QueryRowContext(ctx, "SELECT id FROM `"+schema+"`.accounts ORDER BY balance DESC, id LIMIT 1").Scan(&rich); err != nil {
				c.t.Fatalf("probe: richest account of %s: %v", schema, err)
			}
			legs := []Leg{{Svc: s, Acct: acct, Delta: 1}, {Svc: other, Acct: rich, Delta: -1}}
			if other < s { // service order: one global lock order
				legs[0], legs[1] = legs[1], legs[0]
			}
			legs[0].Leg, legs[1].Leg = 0, 1
			op := fmt.Sprintf("%s%s-%d", ProbePrefix, s, acct)
			began := time.Now()
			if out := c.send(ctx, 0, op, legs, false); out != "ok" || time.Since(began) > 10*time.Second {
				failed = append(failed, fmt.Sprintf("%s: %s after %v", op, out, time.Since(began).Round(time.Millisecond)))
			}
		}
	}
	if len(failed) > 0 {
		c.t.Errorf("stuck locks: %d of %d probe transfers not ok within 10s: %v", len(failed), len(services)*AccountsPerSchema, failed)
	}
}
