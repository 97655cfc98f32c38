package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// Environment of a node process (the test binary run again, or any binary
// calling RunNode). RoleEnv selects the role; the others configure it.
const (
	RoleEnv       = "CHAOS_ROLE"         // "tm" or "svc"
	envListen     = "CHAOS_LISTEN"       // 127.0.0.1:port to serve on
	envRedis      = "CHAOS_REDIS"        // tm: Redis address
	envPrefix     = "CHAOS_PREFIX"       // tm: Redis key prefix
	envCreds      = "CHAOS_CREDS"        // tm: service=sha256,... accepted tokens
	envGroupTO    = "CHAOS_GROUP_TO"     // tm: group timeout
	envLostAfter  = "CHAOS_LOST_AFTER"   // tm: lost_after
	envService    = "CHAOS_SERVICE"      // svc: service name
	envToken      = "CHAOS_TOKEN"        // svc: bearer token
	envTMURL      = "CHAOS_TM_URL"       // svc: ws:// URL of the TxManager
	envDSN        = "CHAOS_DSN"          // svc: MariaDB DSN of its schema
	envMode       = "CHAOS_MODE"         // svc: branch mode
	envPeers      = "CHAOS_PEERS"        // svc: service=http://addr,... (initiator)
	envFail       = "CHAOS_FAIL"         // svc: failpoint name:probability
	envSeed       = "CHAOS_SEED"         // svc: seed of the failpoint draws
	envWaitOutcom = "CHAOS_WAIT_OUTCOME" // svc: "1": the initiator waits for the applied outcome
	envBind       = "CHAOS_BIND"         // svc: source IP of its connections to the TxManager and its peers ("": the system's choice)
)

// Node failpoints: a participant or initiator process SIGKILLs itself at an
// exact point of the protocol, with the probability given in CHAOS_FAIL.
const (
	// FailAfterVote: a held branch dies when the decision reaches it: after
	// its vote and (xa) its XA PREPARE, before it applies the decision (S5).
	FailAfterVote = "after.vote"
	// FailBeforeVote: a participant dies during its business SQL, before
	// voting (S6a).
	FailBeforeVote = "before.vote"
	// FailInitiatorBeforeNotify: the initiator dies after its group was
	// created and its legs ran, before it asks the TxManager to decide (S6b).
	FailInitiatorBeforeNotify = "initiator.before.notify"
)

// FrozenAccount is the account id a designed abort debits or credits: the
// participant refuses it with a business error (HTTP 422).
const FrozenAccount = 13

// Leg is one account movement of a transfer, applied by one service.
type Leg struct {
	Leg   int    `json:"leg"`
	Svc   string `json:"svc"`
	Acct  int    `json:"acct"`
	Delta int64  `json:"delta"`
}

// TransferRequest is the body of the initiator's POST /transfer.
type TransferRequest struct {
	Op   string `json:"op"`
	Legs []Leg  `json:"legs"`
}

// TransferResponse is the initiator's answer. Outcome is "ok" (committed),
// "fail" (rolled back, or nothing started) or "info" (unknown, or needs
// attention).
type TransferResponse struct {
	Group   string `json:"group,omitempty"`
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}

type legRequest struct {
	Op  string `json:"op"`
	Leg Leg    `json:"leg"`
}

// RunNode runs the node role named by CHAOS_ROLE until SIGTERM (or until a
// failpoint kills it) and returns the process exit code.
func RunNode() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role := os.Getenv(RoleEnv); role {
	case "tm":
		err = runTM(ctx, log)
	case "svc":
		err = runSvc(ctx, log)
	default:
		err = fmt.Errorf("unknown %s %q", RoleEnv, role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos node %s: %v\n", os.Getenv(RoleEnv), err)
		return 2
	}
	return 0
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", name, v, err)
	}
	return d, nil
}

// runTM serves a TxManager on the Redis store until ctx ends.
func runTM(ctx context.Context, log *slog.Logger) error {
	groupTO, err := envDuration(envGroupTO, 5*time.Second)
	if err != nil {
		return err
	}
	lostAfter, err := envDuration(envLostAfter, 10*time.Second)
	if err != nil {
		return err
	}
	cfg := txmanager.Config{GroupTimeout: groupTO, RetryMin: 200 * time.Millisecond, RetryMax: 2 * time.Second,
		Retention: time.Hour, PingInterval: 2 * time.Second, LostAfter: lostAfter, Logger: log}
	for _, kv := range strings.Split(os.Getenv(envCreds), ",") {
		svc, hash, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%s: bad entry %q", envCreds, kv)
		}
		cfg.Auth.Credentials = append(cfg.Auth.Credentials, txmanager.Credential{Service: svc, TokenSHA256: hash})
	}
	rc := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rc.Close()
	store := txmanager.NewRedisStore(rc, os.Getenv(envPrefix), txmanager.StoreOptions{Retention: cfg.Retention})
	defer store.Close()
	srv, err := txmanager.New(cfg, store)
	if err != nil {
		return fmt.Errorf("txmanager.New: %w", err)
	}
	ln, err := net.Listen("tcp", os.Getenv(envListen))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	runCtx, cancel := context.WithCancel(ctx)
	go func() { defer wg.Done(); _ = srv.Run(runCtx) }()
	go func() { defer wg.Done(); _ = hs.Serve(ln) }()
	<-ctx.Done()
	cancel()
	_ = hs.Close()
	_ = srv.Close()
	wg.Wait()
	return nil
}

// failpoint is a node failpoint armed from CHAOS_FAIL ("name:probability").
type failpoint struct {
	name string
	p    float64
	mu   sync.Mutex
	rnd  *rand.Rand
}

func newFailpoint() (*failpoint, error) {
	fp := &failpoint{}
	v := os.Getenv(envFail)
	if v == "" {
		return fp, nil
	}
	name, ps, _ := strings.Cut(v, ":")
	p, err := strconv.ParseFloat(ps, 64)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", envFail, v, err)
	}
	seed, _ := strconv.ParseUint(os.Getenv(envSeed), 10, 64)
	fp.name, fp.p, fp.rnd = name, p, rand.New(rand.NewPCG(seed, uint64(os.Getpid())))
	return fp, nil
}

// ProbePrefix starts the operation id of a probe transfer: failpoints never
// fire for it (a probe checks that the cluster serves again after faults).
const ProbePrefix = "probe-"

// hit SIGKILLs the process (and never returns) if the failpoint name is
// armed, op (when known) is not a probe, and the draw falls under the
// probability.
func (fp *failpoint) hit(name, op string) {
	if fp.name != name || strings.HasPrefix(op, ProbePrefix) {
		return
	}
	fp.mu.Lock()
	die := fp.rnd.Float64() < fp.p
	fp.mu.Unlock()
	if die {
		fmt.Fprintf(os.Stderr, "failpoint %s: SIGKILL\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

// dyingCoord wraps every held branch of the datasource: it arms
// FailAfterVote, and it writes an audit line before each commit (S7's rule
// that a participant commits only after the TxManager decided commit).
type dyingCoord struct {
	*txclient.Client
	fp *failpoint
}

func (c dyingCoord) Hold(group, branch string, h sqlproxy.Held) {
	c.Client.Hold(group, branch, dyingHeld{Held: h, fp: c.fp, group: group, branch: branch})
}

type dyingHeld struct {
	sqlproxy.Held
	fp            *failpoint
	group, branch string
}

// AuditPrefix starts the line a service writes to its log (stderr) right
// before it commits a held branch: "audit: commit group=<id> branch=<id>
// ms=<unix milliseconds>".
const AuditPrefix = "audit: commit "

func (h dyingHeld) Commit(ctx context.Context) error {
	h.fp.hit(FailAfterVote, "")
	fmt.Fprintf(os.Stderr, "%sgroup=%s branch=%s ms=%d\n", AuditPrefix, h.group, h.branch, time.Now().UnixMilli())
	return h.Held.Commit(ctx)
}

func (h dyingHeld) Rollback(ctx context.Context) error {
	h.fp.hit(FailAfterVote, "")
	return h.Held.Rollback(ctx)
}

// svc is a bank participant service (and, with peers, the initiator).
type svc struct {
	name   string
	db     *sql.DB
	client *txclient.Client
	hc     *http.Client
	peers  map[string]string
	fp     *failpoint
	wait   bool
	log    *slog.Logger
}

func runSvc(ctx context.Context, log *slog.Logger) error {
	fp, err := newFailpoint()
	if err != nil {
		return err
	}
	// With CHAOS_BIND the service's own connections (to the TxManager and
	// to its peers) leave from that address, so that a partition (S12) can
	// tell the services apart on one loopback interface.
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	var base http.RoundTripper
	if b := os.Getenv(envBind); b != "" {
		ip := net.ParseIP(b)
		if ip == nil {
			return fmt.Errorf("%s=%q: not an IP address", envBind, b)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = dialer.DialContext
		base = tr
	}
	s := &svc{name: os.Getenv(envService), peers: map[string]string{}, fp: fp, wait: os.Getenv(envWaitOutcom) == "1", log: log,
		hc: &http.Client{Transport: txclient.Transport(base), Timeout: 6 * time.Second}}
	for _, kv := range strings.Split(os.Getenv(envPeers), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			s.peers[k] = v
		}
	}
	client, err := txclient.New(txclient.Config{ManagerURL: os.Getenv(envTMURL), Service: s.name, Token: os.Getenv(envToken),
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond, AskInterval: time.Second,
		RequestTimeout: 3 * time.Second, Dialer: dialer, Logger: log})
	if err != nil {
		return fmt.Errorf("txclient: %w", err)
	}
	defer client.Close()
	s.client = client
	mcfg, err := mysql.ParseDSN(os.Getenv(envDSN))
	if err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	inner, err := mysql.NewConnector(mcfg)
	if err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	coord := dyingCoord{Client: client, fp: fp}
	s.db, err = sqlproxy.OpenDB(inner, sqlproxy.Options{Datasource: s.name, Mode: os.Getenv(envMode), Coordinator: coord,
		RecoveryInterval: 500 * time.Millisecond, ApplyTimeout: 5 * time.Second, Logger: log})
	if err != nil {
		return fmt.Errorf("open db: %w", err)
	}
	defer s.db.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := client.WaitConnected(wctx); err != nil {
		return fmt.Errorf("connect to the TxManager: %w", err)
	}
	if err := s.db.PingContext(wctx); err != nil { // starts xa recovery
		return fmt.Errorf("ping db: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /leg", s.handleLeg)
	mux.HandleFunc("POST /transfer", s.handleTransfer)
	ln, err := net.Listen("tcp", os.Getenv(envListen))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: client.Middleware(mux), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	<-ctx.Done()
	_ = hs.Close()
	<-done
	return nil
}

// errBusiness is a refused leg (frozen account, insufficient funds).
var errBusiness = errors.New("business error")

// applyLeg runs one leg in the group carried by ctx and votes.
func (s *svc) applyLeg(ctx context.Context, op string, l Leg) error {
	group, ok := txclient.GroupID(ctx)
	if !ok {
		return errors.New("no group in the request")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if l.Acct == FrozenAccount {
		return fmt.Errorf("%w: account %d is frozen", errBusiness, l.Acct)
	}
	if l.Delta < 0 {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?`, -l.Delta, l.Acct, -l.Delta)
		if err != nil {
			return fmt.Errorf("debit: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: insufficient funds on %d (%v)", errBusiness, l.Acct, err)
		}
	} else if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, l.Delta, l.Acct); err != nil {
		return fmt.Errorf("credit: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO ledger (group_id, leg, account_id, delta, op) VALUES (?, ?, ?, ?, ?)`,
		group, l.Leg, l.Acct, l.Delta, op); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO tx_marker (group_id, unit_id) VALUES (?, ?)`, group, s.name+"-"+strconv.Itoa(l.Leg)); err != nil {
		return fmt.Errorf("marker: %w", err)
	}
	s.fp.hit(FailBeforeVote, op)
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("vote: %w", err)
	}
	return nil
}

func (s *svc) handleLeg(w http.ResponseWriter, r *http.Request) {
	var req legRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.applyLeg(r.Context(), req.Op, req.Leg); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, errBusiness) {
			code = http.StatusUnprocessableEntity
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *svc) callLeg(ctx context.Context, op string, l Leg) error {
	if l.Svc == s.name {
		return s.applyLeg(ctx, op, l)
	}
	url, ok := s.peers[l.Svc]
	if !ok {
		return fmt.Errorf("unknown service %q", l.Svc)
	}
	body, _ := json.Marshal(legRequest{Op: op, Leg: l})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/leg", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("leg %d at %s: %w", l.Leg, l.Svc, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("leg %d at %s: %d %s", l.Leg, l.Svc, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// handleTransfer starts a group, runs the legs in order and decides. Its
// answer is exact about what it knows: ok only once the commit decision is
// durable (and, with CHAOS_WAIT_OUTCOME, applied without attention), fail
// only when the group cannot commit, info otherwise.
func (s *svc) handleTransfer(w http.ResponseWriter, r *http.Request) {
	var req TransferRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply := func(code int, resp TransferResponse) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(resp)
	}
	ctx := r.Context()
	gctx, g, err := s.client.Begin(ctx)
	if err != nil {
		// No group id was handed out: nobody can have joined.
		reply(http.StatusServiceUnavailable, TransferResponse{Outcome: "fail", Error: err.Error()})
		return
	}
	for _, l := range req.Legs {
		if err := s.callLeg(gctx, req.Op, l); err != nil {
			// The starter never asks to commit: the group rolls back (now,
			// or at its deadline if this rollback request is lost).
			if rerr := g.Rollback(context.WithoutCancel(ctx)); rerr != nil {
				s.log.Warn("rollback after a failed leg", "group", g.ID(), "err", rerr)
			}
			reply(http.StatusConflict, TransferResponse{Group: g.ID(), Outcome: "fail", Error: err.Error()})
			return
		}
	}
	s.fp.hit(FailInitiatorBeforeNotify, req.Op)
	err = g.Commit(context.WithoutCancel(ctx))
	switch {
	case errors.Is(err, txclient.ErrRolledBack):
		reply(http.StatusConflict, TransferResponse{Group: g.ID(), Outcome: "fail", Error: err.Error()})
		return
	case err != nil:
		reply(http.StatusServiceUnavailable, TransferResponse{Group: g.ID(), Outcome: "info", Error: err.Error()})
		return
	}
	if s.wait {
		wctx, cancel := context.WithTimeout(ctx, 6*time.Second)
		out, err := g.Wait(wctx)
		cancel()
		switch {
		case err != nil:
			reply(http.StatusServiceUnavailable, TransferResponse{Group: g.ID(), Outcome: "info", Error: "committed, not known applied: " + err.Error()})
			return
		case out.Attention != "":
			reply(http.StatusServiceUnavailable, TransferResponse{Group: g.ID(), Outcome: "info", Error: "needs attention: " + out.Attention})
			return
		}
	}
	reply(http.StatusOK, TransferResponse{Group: g.ID(), Outcome: "ok"})
}
