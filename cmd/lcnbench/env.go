package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// Branch modes measured, and the baseline (no group at all).
const (
	modeBaseline = "baseline"
	modeLCN      = sqlproxy.ModeLCN
	modeXA       = sqlproxy.ModeXA
)

// accounts is the number of rows per participant: the spread workload uses
// them as 200 distinct pairs (row i of svc-a with row i of svc-b).
const accounts = 200

// initialBalance is every account's balance before the run.
const initialBalance = 1_000_000

// env is everything a run needs, all in this process apart from the
// database and Redis servers: a TxManager on the Redis store, two
// participant services (svc-a, svc-b) and the starter, talking over real
// HTTP and websockets on 127.0.0.1.
type env struct {
	log     *slog.Logger
	tm      *txmanager.Server
	tmAddr  string
	starter *txclient.Client
	parts   [2]*participant
	hc      *http.Client // the starter's calls to the participants

	closers []func() error // run in reverse order by close
	wg      sync.WaitGroup // serving and TxManager goroutines
}

// participant is one bank service: one schema reached through the proxy
// driver (one datasource per branch mode) and directly (the baseline).
type participant struct {
	name   string
	url    string
	client *txclient.Client
	dbs    map[string]*sql.DB // mode -> database; modeBaseline is the raw driver
}

// startEnv starts the servers it was not given, the TxManager and the
// services. On error, everything already started is stopped.
func startEnv(ctx context.Context, o Options, log *slog.Logger) (e *env, err error) {
	e = &env{log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
			e = nil
		}
	}()
	mysqlDSN, redisAddr := o.MySQLDSN, o.RedisAddr
	if mysqlDSN == "" {
		log.Info("starting a private MariaDB")
		mdb, err := testenv.StartMariaDBServer()
		if err != nil {
			return nil, fmt.Errorf("start MariaDB (or give --mysql-dsn): %w", err)
		}
		e.closers = append(e.closers, mdb.Close)
		mysqlDSN = mdb.DSN("")
	}
	if redisAddr == "" {
		log.Info("starting a private Redis")
		rds, err := testenv.StartRedisServer()
		if err != nil {
			return nil, fmt.Errorf("start Redis (or give --redis-addr): %w", err)
		}
		e.closers = append(e.closers, rds.Close)
		redisAddr = rds.Addr
	}
	tokens, err := e.startTxManager(ctx, redisAddr)
	if err != nil {
		return nil, err
	}
	for i, name := range []string{"svc-a", "svc-b"} {
		p, err := e.startParticipant(ctx, name, tokens[name], mysqlDSN, o.SchemaPrefix+strings.ReplaceAll(name, "-", "_"))
		if err != nil {
			return nil, err
		}
		e.parts[i] = p
	}
	if e.starter, err = e.newClient(ctx, "starter", tokens["starter"]); err != nil {
		return nil, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512}
	e.closers = append(e.closers, func() error { tr.CloseIdleConnections(); return nil })
	e.hc = &http.Client{Transport: txclient.Transport(tr), Timeout: time.Minute}
	return e, nil
}

// startTxManager serves a TxManager on the Redis store at addr, under a
// fresh key prefix, and returns the tokens it accepts by service.
func (e *env) startTxManager(ctx context.Context, addr string) (map[string]string, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	e.closers = append(e.closers, rc.Close)
	if err := rc.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	store := txmanager.NewRedisStore(rc, "lcnbench:"+randomHex(6), txmanager.StoreOptions{Retention: 10 * time.Minute})
	e.closers = append(e.closers, store.Close)
	tokens := make(map[string]string)
	var creds []txmanager.Credential
	for _, svc := range []string{"starter", "svc-a", "svc-b"} {
		tokens[svc] = randomHex(32)
		creds = append(creds, txmanager.Credential{Service: svc, TokenSHA256: txmanager.HashToken(tokens[svc])})
	}
	// One benchmark client plays a whole service's traffic: the per-session
	// message limit must not be what is measured.
	tm, err := txmanager.New(txmanager.Config{Logger: e.log.With("component", "txmanager"),
		Auth: txmanager.AuthConfig{Credentials: creds}, MessageRate: 1e6, MessageBurst: 1e6}, store)
	if err != nil {
		return nil, fmt.Errorf("txmanager: %w", err)
	}
	e.tm = tm
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	e.wg.Go(func() {
		if err := tm.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			e.log.Error("txmanager stopped", "err", err)
		}
	})
	e.closers = append(e.closers, func() error { stopRun(); return tm.Close() })
	if e.tmAddr, err = e.serve("txmanager", tm.Handler()); err != nil {
		return nil, err
	}
	return tokens, nil
}

// newClient connects a TxClient for service and waits for its session.
func (e *env) newClient(ctx context.Context, service, token string) (*txclient.Client, error) {
	c, err := txclient.New(txclient.Config{ManagerURL: "ws://" + e.tmAddr + "/v1/ws", Service: service, Token: token,
		Logger: e.log.With("component", service)})
	if err != nil {
		return nil, fmt.Errorf("txclient %s: %w", service, err)
	}
	e.closers = append(e.closers, c.Close)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitConnected(wctx); err != nil {
		return nil, fmt.Errorf("txclient %s: connect: %w", service, err)
	}
	return c, nil
}

// startParticipant creates schema (dropped first if it exists) with the
// user_account table, opens it raw and through the proxy in each branch
// mode, and serves POST /move.
func (e *env) startParticipant(ctx context.Context, name, token, dsn, schema string) (*participant, error) {
	base, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("--mysql-dsn: %w", err)
	}
	admin := base.Clone()
	admin.DBName = ""
	adb, err := openMySQL(admin)
	if err != nil {
		return nil, err
	}
	defer adb.Close()
	vals := make([]string, accounts)
	for i := range vals {
		vals[i] = fmt.Sprintf("(%d, %d)", i+1, initialBalance)
	}
	for _, q := range []string{
		"DROP DATABASE IF EXISTS `" + schema + "`",
		"CREATE DATABASE `" + schema + "` CHARACTER SET utf8mb4",
		"CREATE TABLE `" + schema + "`.user_account (user_id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT INTO `" + schema + "`.user_account VALUES " + strings.Join(vals, ","),
	} {
		if _, err := adb.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("mysql %s: %s: %w", base.Addr, q, err)
		}
	}
	cfg := base.Clone()
	cfg.DBName = schema
	client, err := e.newClient(ctx, name, token)
	if err != nil {
		return nil, err
	}
	p := &participant{name: name, client: client, dbs: make(map[string]*sql.DB)}
	raw, err := openMySQL(cfg)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, raw.Close)
	p.dbs[modeBaseline] = raw
	for _, mode := range []string{modeLCN, modeXA} {
		inner, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		db, err := sqlproxy.OpenDB(inner, sqlproxy.Options{Datasource: name + "-" + mode, Mode: mode,
			Coordinator: client, Logger: e.log.With("component", name+"-"+mode)})
		if err != nil {
			return nil, fmt.Errorf("%s: open proxy (%s): %w", name, mode, err)
		}
		e.closers = append(e.closers, db.Close)
		p.dbs[mode] = db
	}
	for _, db := range p.dbs {
		db.SetMaxIdleConns(64)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /move", p.move)
	addr, err := e.serve(name, client.Middleware(mux))
	if err != nil {
		return nil, err
	}
	p.url = "http://" + addr
	return p, nil
}

func openMySQL(cfg *mysql.Config) (*sql.DB, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql %s: %w", cfg.Addr, err)
	}
	return sql.OpenDB(conn), nil
}

// move adds delta to one account in a local transaction on the database of
// the given mode: in a group (lcn, xa) its Commit is the vote; outside one
// (baseline) it is a plain commit.
func (p *participant) move(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	db := p.dbs[q.Get("mode")]
	user, err1 := strconv.Atoi(q.Get("user"))
	delta, err2 := strconv.Atoi(q.Get("delta"))
	if db == nil || err1 != nil || err2 != nil {
		http.Error(w, "bad mode, user or delta", http.StatusBadRequest)
		return
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		http.Error(w, "begin: "+err.Error(), http.StatusInternalServerError)
		return
	}
	res, err := tx.ExecContext(ctx, `UPDATE user_account SET balance = balance + ? WHERE user_id = ?`, delta, user)
	if err == nil {
		if n, _ := res.RowsAffected(); n != 1 {
			err = fmt.Errorf("no account %d", user)
		}
	}
	if err != nil {
		_ = tx.Rollback()
		http.Error(w, "update: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if err := tx.Commit(); err != nil {
		http.Error(w, "commit: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serve serves h on a fresh 127.0.0.1 port until close.
func (e *env) serve(name string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%s: listen: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	e.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("serve", "service", name, "err", err)
		}
	})
	e.closers = append(e.closers, srv.Close)
	return ln.Addr().String(), nil
}

// balances returns the sum of the balances of each participant, read
// directly (not through the proxy).
func (e *env) balances(ctx context.Context) (a, b int64, err error) {
	var sums [2]int64
	for i, p := range e.parts {
		if err := p.dbs[modeBaseline].QueryRowContext(ctx, `SELECT SUM(balance) FROM user_account`).Scan(&sums[i]); err != nil {
			return 0, 0, fmt.Errorf("%s: sum balances: %w", p.name, err)
		}
	}
	return sums[0], sums[1], nil
}

// close stops everything startEnv started, newest first, and waits for the
// serving goroutines.
func (e *env) close() error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i](); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	e.closers = nil
	e.wg.Wait()
	return errors.Join(errs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
