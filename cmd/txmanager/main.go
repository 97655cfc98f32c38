// Command txmanager runs the golcn TxManager.
//
// With no flags it keeps its state in an embedded file store under
// ./lcn-data and listens on :8070 (websocket for clients at /v1/ws, group
// lookup at /v1/groups/{id}, /healthz and /readyz). Every setting comes from
// defaults, a YAML file (--config or LCN_CONFIG), LCN_* environment
// variables and flags, in increasing priority; see docs/configuration.md or
// `txmanager --help`. A bad setting stops it with a message naming the key.
//
// SIGINT or SIGTERM shuts it down: it stops accepting connections, closes
// client sessions (clients reconnect to another TxManager or to this one
// when it is back) and closes the store.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), nil)
	stop()
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "txmanager:", err)
		os.Exit(1)
	}
}

// run runs the TxManager until ctx is done. If ready is not nil it receives
// the listening address once the server accepts connections.
func run(ctx context.Context, args, environ []string, ready chan<- string) error {
	cfg, err := config.LoadManager(args, environ)
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	cfg.Core.Logger = log
	log.Info("starting txmanager", "config", cfg)

	store, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer store.Close()

	srv, err := txmanager.New(cfg.Core, store)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- srv.Run(ctx) }()
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("txmanager listening", "addr", ln.Addr().String(), "store", cfg.Store)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	pending := 2
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		pending--
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("stopped", "err", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	_ = srv.Close()
	for ; pending > 0; pending-- {
		<-errc // wait for both goroutines: nothing outlives run
	}
	return nil
}

func newLogger(cfg *config.Manager) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
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
