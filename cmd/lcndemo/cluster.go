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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/order"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// retention of terminal groups in the demo's TxManager store: long enough to
// inspect a run, short enough not to litter a shared Redis.
const retention = time.Hour

// cluster is the demo's TxManager and three services, all in this process
// and talking over real HTTP and websockets on 127.0.0.1.
type cluster struct {
	log     *slog.Logger
	dialect exdb.Dialect
	store   string                // description for the summary
	want    string                // the branch mode asked for ("": the dialect's default)
	conns   []*sqlproxy.Connector // the services' datasources, for the mode in effect

	tmURL string // http://127.0.0.1:port
	// tokens are the per-service credentials the demo's TxManager accepts
	// (made fresh for each run; only their hashes go to the TxManager).
	tokens  map[string]string
	orderDB *sql.DB
	stockDB *sql.DB
	acctDB  *sql.DB

	orderURL string
	orderTr  *http.Transport // the order service's calls to participants

	closers []func() error // run in reverse order by close
	wg      sync.WaitGroup // serving and TxManager goroutines
}

// startCluster starts the TxManager and the services. On error, everything
// already started is stopped.
func startCluster(ctx context.Context, opts Options, dir string, log *slog.Logger) (c *cluster, err error) {
	c = &cluster{log: log, dialect: exdb.SQLite, want: opts.Mode}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
			c = nil
		}
	}()
	if err := c.startTxManager(ctx, opts, dir); err != nil {
		return nil, err
	}
	dsns, err := c.databases(ctx, opts, dir)
	if err != nil {
		return nil, err
	}
	stockURL, err := c.startService(ctx, "stock", dsns["stock"], func(db *sql.DB, cl *txclient.Client) (http.Handler, error) {
		c.stockDB = db
		if err := stock.Migrate(ctx, db, c.dialect); err != nil {
			return nil, err
		}
		if _, err := stock.Seed(ctx, db, stock.DemoItems()); err != nil {
			return nil, err
		}
		return stock.New(db, cl), nil
	})
	if err != nil {
		return nil, err
	}
	accountURL, err := c.startService(ctx, "account", dsns["account"], func(db *sql.DB, cl *txclient.Client) (http.Handler, error) {
		c.acctDB = db
		if err := account.Migrate(ctx, db, c.dialect); err != nil {
			return nil, err
		}
		if _, err := account.Seed(ctx, db, account.DemoAccounts()); err != nil {
			return nil, err
		}
		return account.New(db, cl, account.Options{FailAfterWrite: opts.FailRate}), nil
	})
	if err != nil {
		return nil, err
	}
	c.orderTr = &http.Transport{MaxIdleConnsPerHost: 64}
	c.closers = append(c.closers, func() error { c.orderTr.CloseIdleConnections(); return nil })
	c.orderURL, err = c.startService(ctx, "order", dsns["order"], func(db *sql.DB, cl *txclient.Client) (http.Handler, error) {
		c.orderDB = db
		if err := order.Migrate(ctx, db, c.dialect); err != nil {
			return nil, err
		}
		return order.New(db, cl, order.Options{StockURL: stockURL, AccountURL: accountURL,
			HTTPClient: &http.Client{Transport: c.orderTr, Timeout: time.Minute}})
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// startTxManager opens the store and serves an embedded TxManager.
func (c *cluster) startTxManager(ctx context.Context, opts Options, dir string) error {
	var store txmanager.Store
	if opts.RedisAddr != "" {
		rc := redis.NewClient(&redis.Options{Addr: opts.RedisAddr})
		c.closers = append(c.closers, rc.Close)
		if err := rc.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis %s: %w", opts.RedisAddr, err)
		}
		prefix := "lcndemo:" + randomHex(6) + ":"
		store = txmanager.NewRedisStore(rc, prefix, txmanager.StoreOptions{Retention: retention})
		c.store = fmt.Sprintf("redis %s (prefix %s)", opts.RedisAddr, prefix)
	} else {
		path := filepath.Join(dir, "txmanager.db")
		bs, err := txmanager.OpenBoltStore(path, txmanager.StoreOptions{Retention: retention})
		if err != nil {
			return err
		}
		store = bs
		c.store = "bolt " + path
	}
	c.closers = append(c.closers, store.Close)
	c.tokens = make(map[string]string)
	var creds []txmanager.Credential
	for _, svc := range []string{"order", "stock", "account", adminService} {
		c.tokens[svc] = randomHex(32)
		role := txmanager.RoleService
		if svc == adminService {
			role = txmanager.RoleAdmin
		}
		creds = append(creds, txmanager.Credential{Service: svc, TokenSHA256: txmanager.HashToken(c.tokens[svc]), Role: role})
	}
	tm, err := txmanager.New(txmanager.Config{Retention: retention, Logger: c.log.With("component", "txmanager"),
		Auth: txmanager.AuthConfig{Credentials: creds}}, store)
	if err != nil {
		return err
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := tm.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Error("txmanager stopped", "err", err)
		}
	}()
	c.closers = append(c.closers, func() error { stopRun(); return tm.Close() })
	addr, err := c.serve(ctx, "txmanager", tm.Handler())
	if err != nil {
		return err
	}
	c.tmURL = "http://" + addr
	return nil
}

// databases returns each service's DSN: SQLite files in dir, or fresh
// schemas on the MySQL/MariaDB server.
func (c *cluster) databases(ctx context.Context, opts Options, dir string) (map[string]string, error) {
	names := []string{"order", "stock", "account"}
	dsns := make(map[string]string, len(names))
	if opts.MySQLDSN == "" {
		for _, n := range names {
			dsns[n] = exdb.SQLiteDSN(filepath.Join(dir, n+".db"))
		}
		return dsns, nil
	}
	c.dialect = exdb.MySQL
	base, err := mysql.ParseDSN(opts.MySQLDSN)
	if err != nil {
		return nil, fmt.Errorf("--mysql-dsn: %w", err)
	}
	admin := base.Clone()
	admin.DBName = ""
	conn, err := mysql.NewConnector(admin)
	if err != nil {
		return nil, fmt.Errorf("--mysql-dsn: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	for _, n := range names {
		schema := opts.MySQLSchemaPrefix + n
		for _, stmt := range []string{"DROP DATABASE IF EXISTS `" + schema + "`", "CREATE DATABASE `" + schema + "` CHARACTER SET utf8mb4"} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return nil, fmt.Errorf("mysql %s: %s: %w", base.Addr, stmt, err)
			}
		}
		cfg := base.Clone()
		cfg.DBName = schema
		dsns[n] = cfg.FormatDSN()
	}
	return dsns, nil
}

// mode describes the branch mode in effect ("xa", "lcn"; modes joined by
// "+" if the services differ; "auto (not decided yet)" before any group).
func (c *cluster) mode() string {
	var modes []string
	for _, cn := range c.conns {
		m := cn.Mode()
		if m == "" {
			m = "auto (not decided yet)"
		}
		if !slices.Contains(modes, m) {
			modes = append(modes, m)
		}
	}
	return strings.Join(modes, "+")
}

// startService starts one service: its TxManager session, its proxied
// database, and its HTTP server. It returns the service's base URL.
func (c *cluster) startService(ctx context.Context, name, dsn string, setup func(*sql.DB, *txclient.Client) (http.Handler, error)) (string, error) {
	cl, err := txclient.New(txclient.Config{ManagerURL: "ws" + c.tmURL[len("http"):] + "/v1/ws", Service: name, Token: c.tokens[name],
		Logger: c.log.With("component", name)})
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	c.closers = append(c.closers, cl.Close)
	db, conn, err := exdb.Open(c.dialect, dsn, name, cl, c.want)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	c.conns = append(c.conns, conn)
	c.closers = append(c.closers, db.Close)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.WaitConnected(wctx); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	h, err := setup(db, cl)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	addr, err := c.serve(ctx, name, h)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// serve serves h on a free 127.0.0.1 port until close, and returns the
// address.
func (c *cluster) serve(ctx context.Context, name string, h http.Handler) (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%s: listen: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("serve", "component", name, "err", err)
		}
	}()
	c.closers = append(c.closers, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("%s: shutdown: %w", name, err)
		}
		return nil
	})
	return ln.Addr().String(), nil
}

// close stops everything in the reverse order of starting: for each service
// its HTTP server, database and TxManager session (order first), then the
// TxManager's HTTP server, the TxManager, and its store. It waits for every
// goroutine it started.
func (c *cluster) close() error {
	var errs []error
	for i := len(c.closers) - 1; i >= 0; i-- {
		if err := c.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	c.closers = nil
	c.wg.Wait()
	return errors.Join(errs...)
}

// adminService names the demo's own operator credential, used to read
// group records from the TxManager.
const adminService = "lcndemo"

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
