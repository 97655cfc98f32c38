package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain()) // this process is a participant of a crash test
	}
	testenv.Main(m)
}

// quietLogger drops logs below warnings, keeping test output readable.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// storeKind names a TxManager store under test.
type storeKind string

const (
	storeBolt  storeKind = "bolt"
	storeRedis storeKind = "redis"
)

// forEachStore runs fn as a subtest against each real store.
func forEachStore(t *testing.T, fn func(t *testing.T, k storeKind)) {
	for _, k := range []storeKind{storeBolt, storeRedis} {
		t.Run(string(k), func(t *testing.T) { fn(t, k) })
	}
}

// manager is a TxManager served on a fixed 127.0.0.1 port, restartable on
// the same port and store.
type manager struct {
	t      testing.TB
	kind   storeKind
	cfg    txmanager.Config
	addr   string
	tokens map[string]string // service -> token accepted by the TxManager
	path   string            // bolt file
	redis  *redis.Client     // redis store client
	prefix string

	srv    *txmanager.Server
	store  txmanager.Store
	http   *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func newManager(t testing.TB, kind storeKind, cfg txmanager.Config) *manager {
	t.Helper()
	m := &manager{t: t, kind: kind, cfg: cfg, tokens: make(map[string]string)}
	if m.cfg.Logger == nil {
		m.cfg.Logger = quietLogger()
	}
	// Per-service tokens, as in production: the TxManager keeps hashes.
	for _, svc := range testServices {
		m.tokens[svc] = gid.New() + gid.New()
		m.cfg.Auth.Credentials = append(m.cfg.Auth.Credentials,
			txmanager.Credential{Service: svc, TokenSHA256: txmanager.HashToken(m.tokens[svc])})
	}
	switch kind {
	case storeBolt:
		m.path = filepath.Join(t.TempDir(), "txmanager.db")
	case storeRedis:
		r := testenv.SharedRedis(t)
		m.redis = redis.NewClient(&redis.Options{Addr: r.Addr})
		m.prefix = "e2e" + gid.New()[:8]
		t.Cleanup(func() { _ = m.redis.Close() })
	}
	m.addr = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *manager) url() string { return "ws://" + m.addr + "/v1/ws" }

// start opens the store and serves the TxManager on m.addr.
func (m *manager) start() {
	t := m.t
	t.Helper()
	opt := txmanager.StoreOptions{Retention: time.Hour}
	switch m.kind {
	case storeBolt:
		s, err := txmanager.OpenBoltStore(m.path, opt)
		if err != nil {
			t.Fatalf("open bolt store: %v", err)
		}
		m.store = s
	case storeRedis:
		m.store = txmanager.NewRedisStore(m.redis, m.prefix, opt)
	}
	srv, err := txmanager.New(m.cfg, m.store)
	if err != nil {
		t.Fatalf("txmanager.New: %v", err)
	}
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", m.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener's port is being released
	}
	if err != nil {
		t.Fatalf("listen %s: %v", m.addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.srv, m.cancel, m.done = srv, cancel, make(chan struct{})
	m.http = &http.Server{Handler: srv.Handler()}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = m.http.Serve(ln) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	go func() { wg.Wait(); close(m.done) }()
}

// stop shuts the TxManager down (as a crash would, from the clients' view:
// their sessions drop) and closes its store. Safe to call twice.
func (m *manager) stop() {
	if m.srv == nil {
		return
	}
	m.cancel()
	_ = m.http.Close()
	_ = m.srv.Close()
	<-m.done
	_ = m.store.Close()
	m.srv = nil
}

func (m *manager) restart() {
	m.stop()
	m.start()
}

// group reads a group's record from the running TxManager.
func (m *manager) group(id string) *txmanager.Group {
	m.t.Helper()
	g, err := m.srv.Group(context.Background(), id)
	if err != nil {
		m.t.Fatalf("group %s: %v", id, err)
	}
	return g
}

// waitState waits until group id reaches state (the TxManager's retries and
// the clients' acknowledgements are asynchronous) and returns the record.
func (m *manager) waitState(id string, want txmanager.GroupState) *txmanager.Group {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, err := m.srv.Group(context.Background(), id)
		if err == nil && g.State == want {
			return g
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("group %s: want state %s, have %+v (err %v)", id, want, g, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testServices are the services the end-to-end tests run.
var testServices = []string{"starter", "svc-a", "svc-b", "good"}

// newClient connects a TxClient for service to m; mod, if given, adjusts
// its configuration first.
func newClient(t testing.TB, m *manager, service string, mod ...func(*txclient.Config)) *txclient.Client {
	t.Helper()
	cfg := txclient.Config{ManagerURL: m.url(), Service: service, Token: m.tokens[service], Logger: quietLogger(),
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, AskInterval: 500 * time.Millisecond,
		RequestTimeout: 2 * time.Second}
	for _, f := range mod {
		f(&cfg)
	}
	c, err := txclient.New(cfg)
	if err != nil {
		t.Fatalf("txclient.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("connect %s: %v", service, err)
	}
	return c
}

// participant is a bank service: one MariaDB schema through the proxy
// driver, an HTTP endpoint that moves money on one account.
type participant struct {
	name   string
	schema string
	dsn    string
	mode   string
	client *txclient.Client
	db     *sql.DB // through the proxy
	raw    *sql.DB // direct, for checks
	url    string
	gate   *gate // non-nil: decisions wait at the gate
}

const initialBalance = 1000

// partOpts adjust newParticipantWith.
type partOpts struct {
	mode string           // branch mode ("": lcn)
	mdb  *testenv.MariaDB // nil: the shared server
	gate bool             // hold every decision at a gate the test opens
}

func newParticipant(t *testing.T, m *manager, name string) *participant {
	return newParticipantWith(t, m, name, partOpts{})
}

// bankSchema creates the accounts table of a fresh schema on mdb.
func bankSchema(t testing.TB, mdb *testenv.MariaDB) (schema, dsn string, raw *sql.DB) {
	t.Helper()
	schema, dsn = mdb.CreateDatabase(t)
	raw, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	for _, q := range []string{
		`CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB`,
		`INSERT INTO accounts VALUES (1, 1000), (2, 1000)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return schema, dsn, raw
}

func newParticipantWith(t testing.TB, m *manager, name string, o partOpts) *participant {
	t.Helper()
	mdb := o.mdb
	if mdb == nil {
		mdb = testenv.SharedMariaDB(t)
	}
	schema, dsn, raw := bankSchema(t, mdb)
	p := &participant{name: name, schema: schema, dsn: dsn, mode: o.mode, client: newClient(t, m, name), raw: raw}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var coord sqlproxy.Coordinator = p.client
	if o.gate {
		p.gate = newGate()
		coord = gatedCoord{Client: p.client, g: p.gate}
	}
	p.db, err = sqlproxy.OpenDB(inner, sqlproxy.Options{Datasource: name, Mode: o.mode, Coordinator: coord,
		RecoveryInterval: 200 * time.Millisecond, ApplyTimeout: 5 * time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.db.Close() })

	mux := http.NewServeMux()
	mux.HandleFunc("POST /move", moveHandler(p.db))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p.client.Middleware(mux)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.url = "http://" + ln.Addr().String()
	return p
}

// moveHandler adds delta to an account inside the request's group.
// fail=after makes it fail after its write (the local transaction rolls
// back).
func moveHandler(db *sql.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		acct, _ := strconv.Atoi(r.URL.Query().Get("acct"))
		delta, _ := strconv.Atoi(r.URL.Query().Get("delta"))
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			http.Error(w, "begin: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, delta, acct); err != nil {
			_ = tx.Rollback()
			http.Error(w, "update: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if r.URL.Query().Get("fail") == "after" {
			_ = tx.Rollback()
			http.Error(w, "failing by request after the write", http.StatusInternalServerError)
			return
		}
		if err := tx.Commit(); err != nil {
			http.Error(w, "commit (vote): "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// gate holds the decisions of a participant's branches until the test
// opens it: reached is closed when the first decision arrives.
type gate struct {
	reachedOnce sync.Once
	reached     chan struct{}
	open        chan struct{}
}

func newGate() *gate { return &gate{reached: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) pass(ctx context.Context) error {
	g.reachedOnce.Do(func() { close(g.reached) })
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatedCoord is a participant's coordinator whose held branches wait at the
// gate before applying a decision. It keeps the client's other methods
// (Resolver included).
type gatedCoord struct {
	*txclient.Client
	g *gate
}

func (c gatedCoord) Hold(group, branch string, h sqlproxy.Held) {
	c.Client.Hold(group, branch, gatedHeld{Held: h, g: c.g})
}

type gatedHeld struct {
	sqlproxy.Held
	g *gate
}

func (h gatedHeld) Commit(ctx context.Context) error {
	if err := h.g.pass(ctx); err != nil {
		return fmt.Errorf("%w: gate: %v", sqlproxy.ErrInDoubt, err)
	}
	return h.Held.Commit(ctx)
}

func (h gatedHeld) Rollback(ctx context.Context) error {
	if err := h.g.pass(ctx); err != nil {
		return fmt.Errorf("%w: gate: %v", sqlproxy.ErrInDoubt, err)
	}
	return h.Held.Rollback(ctx)
}

func (p *participant) balance(t *testing.T, acct int) int64 {
	t.Helper()
	var b int64
	if err := p.raw.QueryRow(`SELECT balance FROM accounts WHERE id = ?`, acct).Scan(&b); err != nil {
		t.Fatalf("%s balance: %v", p.name, err)
	}
	return b
}

// openTrx counts InnoDB transactions open on connections to the given
// schemas (the shared server also serves other tests' schemas).
func openTrx(t *testing.T, db *sql.DB, schemas ...string) int {
	t.Helper()
	var n int
	q := `SELECT COUNT(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p
		ON p.ID = t.trx_mysql_thread_id WHERE p.DB IN (?, ?)`
	if err := db.QueryRow(q, schemas[0], schemas[len(schemas)-1]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// call makes an HTTP call from the starter inside ctx's group.
func call(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
	}
	return nil
}

func moveURL(p *participant, acct, delta int, extra string) string {
	return fmt.Sprintf("%s/move?acct=%d&delta=%d%s", p.url, acct, delta, extra)
}

// bank is a starter and two participants on one TxManager.
type bank struct {
	m       *manager
	starter *txclient.Client
	hc      *http.Client
	a, b    *participant
}

func newBank(t *testing.T, kind storeKind, cfg txmanager.Config) *bank {
	t.Helper()
	m := newManager(t, kind, cfg)
	return &bank{
		m:       m,
		starter: newClient(t, m, "starter"),
		hc:      &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second},
		a:       newParticipant(t, m, "svc-a"),
		b:       newParticipant(t, m, "svc-b"),
	}
}

// transfer moves amount from a's account 1 to b's account 1 in a group
// and returns the group id and Do's error.
func (bk *bank) transfer(ctx context.Context, amount int, failB bool) (string, error) {
	var id string
	err := bk.starter.Do(ctx, func(ctx context.Context) error {
		id, _ = txclient.GroupID(ctx)
		if err := call(ctx, bk.hc, moveURL(bk.a, 1, -amount, "")); err != nil {
			return err
		}
		extra := ""
		if failB {
			extra = "&fail=after"
		}
		return call(ctx, bk.hc, moveURL(bk.b, 1, amount, extra))
	})
	return id, err
}

func isRolledBack(err error) bool { return errors.Is(err, txclient.ErrRolledBack) }

// decode reads a JSON error body.
func decodeError(t *testing.T, r io.Reader) string {
	t.Helper()
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(r).Decode(&body); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	return body.Error.Message
}
