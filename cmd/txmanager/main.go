// Command txmanager runs the golcn TxManager.
//
// It listens on :8070 (websocket for clients at /v1/ws, the REST API under
// /v1 described in docs/openapi.yaml, /healthz, /readyz and /metrics, and
// with admin_ui.enabled the admin page at /admin/) and keeps its state in
// an embedded file store under ./lcn-data. Every setting comes from defaults, a YAML
// file (--config or LCN_CONFIG), LCN_* environment variables and flags, in
// increasing priority; see docs/configuration.md or `txmanager --help`. A
// bad setting stops it with a message naming the key.
//
// It refuses to start without client credentials: list the accepted tokens
// by their SHA-256 (auth.tokens, LCN_AUTH_TOKENS or --auth-tokens, as
// service=<sha256 hex>[:role[:expires]]), or accept client certificates
// (auth.client_certs), or, for development only, run without
// authentication with --auth-insecure. So `txmanager` with no flags stops
// with an error saying exactly that; `txmanager --auth-insecure` runs a
// development TxManager.
//
//	txmanager hash-token
//
// reads a token from standard input and prints its SHA-256 in hex, the
// form auth.tokens takes (a single trailing newline is ignored).
//
// With tls.cert_file and tls.key_file it serves HTTPS and wss://.
//
// SIGHUP reloads the credentials without a restart: the configuration is
// read again (same flags and environment, the file re-read) and its auth.*
// settings replace the running ones; a configuration that does not load is
// logged and the old credentials stay. Other settings change at restart.
//
// The admin page (admin_ui.enabled) needs admin_ui.secret_sha256, the
// SHA-256 of its login secret made with hash-token; the TxManager refuses
// to start with the page enabled and no hash, or the hash of a known
// default secret.
//
// SIGINT or SIGTERM shuts it down after a drain: it refuses new groups
// (REST 503, websocket "unavailable") and answers /readyz with 503, waits
// up to drain_timeout for requests in progress and queued pushes, then
// stops accepting connections, closes client sessions with a normal close
// frame (clients reconnect to another TxManager, or to this one when it is
// back), closes the store and exits 0.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/golcn/golcn/config"
	"github.com/golcn/golcn/txmanager"
	"github.com/golcn/golcn/txmanager/adminui"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hash-token" {
		if err := hashToken(os.Stdin, os.Stdout, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "txmanager hash-token:", err)
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{})
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	err := run(ctx, os.Args[1:], os.Environ(), os.Stderr, reload, nil)
	stop()
	signal.Stop(hup)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "txmanager:", err)
		os.Exit(1)
	}
}

// hashToken prints the hex SHA-256 of the token read from in: the value of
// auth.tokens[i].token_sha256. One trailing newline (\n or \r\n) is not
// part of the token, so that `echo "$TOKEN" | txmanager hash-token` and
// `printf %s "$TOKEN" | txmanager hash-token` agree.
func hashToken(in io.Reader, out io.Writer, args []string) error {
	if len(args) > 0 {
		return errors.New("takes no arguments: it reads the token from standard input (printf %s \"$TOKEN\" | txmanager hash-token)")
	}
	b, err := io.ReadAll(io.LimitReader(in, 64<<10))
	if err != nil {
		return err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	switch {
	case len(b) == 0:
		return errors.New("no token on standard input")
	case bytes.ContainsAny(b, "\r\n"):
		return errors.New("one token, on one line, expected on standard input")
	}
	_, err = fmt.Fprintln(out, txmanager.HashToken(string(b)))
	return err
}

// run runs the TxManager until ctx is done. Its logs go to logOut. Each
// value received on reload reloads the credentials (main sends one per
// SIGHUP); reload may be nil. If ready is not nil it receives the
// listening address once the server accepts connections.
func run(ctx context.Context, args, environ []string, logOut io.Writer, reload <-chan struct{}, ready chan<- string) error {
	cfg, err := config.LoadManager(args, environ)
	if err != nil {
		return err
	}
	log := newLogger(cfg, logOut)
	cfg.Core.Logger = log
	log.Info("starting txmanager", "config", cfg)

	store, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer store.Close()

	var opts []txmanager.Option
	if cfg.AdminUI.Enabled {
		ui, err := adminui.New(adminui.Config{Enabled: true, SecretSHA256: cfg.AdminUI.SecretSHA256, SessionTTL: cfg.AdminUI.SessionTTL}, log)
		if err != nil {
			return fmt.Errorf("admin page: %w", err)
		}
		opts = append(opts, txmanager.WithAdminUI(ui))
	}
	srv, err := txmanager.New(cfg.Core, store, opts...)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
	}
	scheme := "http"
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
		scheme = "https"
	}
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	// The server's loops get their own context: they go on pushing
	// decisions during the drain, until Close.
	errc := make(chan error, 2)
	go func() { errc <- srv.Run(context.WithoutCancel(ctx)) }()
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("txmanager listening", "addr", ln.Addr().String(), "scheme", scheme, "store", cfg.Store, "admin_ui", cfg.AdminUI.Enabled)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	pending := 2
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: draining", "timeout", cfg.DrainTimeout)
			drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
			if err := srv.Drain(drainCtx); err != nil {
				log.Warn("drain incomplete: closing anyway", "err", err)
			}
			cancel()
			break loop
		case <-reload:
			reloadAuth(srv, args, environ, log)
		case err := <-errc:
			pending--
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("stopped", "err", err)
			}
			break loop
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	_ = srv.Close()
	for ; pending > 0; pending-- {
		<-errc // wait for both goroutines: nothing outlives run
	}
	log.Info("stopped")
	return nil
}

// reloadAuth loads the configuration again, as at start, and installs its
// auth.* settings. On any error the running credentials stay.
func reloadAuth(srv *txmanager.Server, args, environ []string, log *slog.Logger) {
	cfg, err := config.LoadManager(args, environ)
	if err == nil {
		err = srv.SetAuth(cfg.Core.Auth)
	}
	if err != nil {
		log.Error("credentials not reloaded: keeping the previous ones", "err", err)
		return
	}
	a := cfg.Core.Auth
	log.Info("credentials reloaded", "credentials", len(a.Credentials), "client_certs", a.ClientCerts, "insecure", a.Insecure)
	if a.Insecure {
		log.Warn("AUTHENTICATION DISABLED (auth.insecure): any client that reaches this port can decide groups; development only")
	}
}

func newLogger(cfg *config.Manager, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStore(cfg *config.Manager) (txmanager.Store, error) {
	opt := txmanager.StoreOptions{Retention: cfg.Core.Retention}
	switch cfg.Store {
	case config.StoreBolt:
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data_dir %s: %w", cfg.DataDir, err)
		}
		s, err := txmanager.OpenBoltStore(filepath.Join(cfg.DataDir, "txmanager.db"), opt)
		if err != nil {
			return nil, fmt.Errorf("data_dir %s: %w", cfg.DataDir, err)
		}
		return s, nil
	case config.StoreRedis:
		ropt := &redis.Options{Addr: cfg.Redis.Addr, Username: cfg.Redis.Username, Password: cfg.Redis.Password, DB: cfg.Redis.DB}
		if cfg.Redis.TLS {
			ropt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		client := redis.NewClient(ropt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := client.Ping(ctx).Err(); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("redis.addr %s unreachable: %w", cfg.Redis.Addr, err)
		}
		return &closingStore{RedisStore: txmanager.NewRedisStore(client, cfg.Redis.Prefix, opt), client: client}, nil
	case config.StoreMemory:
		return txmanager.NewMemoryStore(opt), nil
	}
	return nil, fmt.Errorf("store %q: unknown kind", cfg.Store)
}

// closingStore closes the Redis client the command made with the store.
type closingStore struct {
	*txmanager.RedisStore
	client *redis.Client
}

func (s *closingStore) Close() error {
	err := s.RedisStore.Close()
	return errors.Join(err, s.client.Close())
}
