// Package svcmain runs one example service as its own process: flags, the
// TxManager session, the proxied database, the HTTP server and a graceful
// shutdown on SIGINT/SIGTERM.
package svcmain

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/txclient"
)

// Service describes one example service to Main.
type Service struct {
	Name string // service and datasource name, e.g. "stock"
	// Flags is the service's own flag set; Main adds the common flags.
	Flags *pflag.FlagSet
	// Setup migrates (and may seed) db and returns the service's handler.
	Setup func(ctx context.Context, db *sql.DB, d exdb.Dialect, c *txclient.Client) (http.Handler, error)
}

// Main parses os.Args, runs the service until a signal, and exits.
func Main(s Service) {
	fs := s.Flags
	listen := fs.String("listen", "127.0.0.1:0", "address to serve HTTP on")
	dialect := fs.String("dialect", string(exdb.SQLite), "database dialect: sqlite or mysql")
	dsn := fs.String("dsn", "", "database DSN (sqlite: a file path or file: URI; mysql: a go-sql-driver DSN); default ./<service>.db")
	manager := fs.String("manager-url", "ws://127.0.0.1:8070/v1/ws", "TxManager websocket URL")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, s, *listen, *dialect, *dsn, *manager); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s Service, listen, dialect, dsn, manager string) error {
	d, err := exdb.ParseDialect(dialect)
	if err != nil {
		return err
	}
	if dsn == "" && d == exdb.SQLite {
		dsn = s.Name + ".db"
	}
	if d == exdb.SQLite && !strings.HasPrefix(dsn, "file:") {
		dsn = exdb.SQLiteDSN(dsn) // a plain path gets the demo's pragmas
	}
	log := slog.Default().With("service", s.Name)
	// The token comes from the environment, never from a flag (flags show
	// up in process listings).
	client, err := txclient.New(txclient.Config{ManagerURL: manager, Service: s.Name, Token: os.Getenv("LCN_CLIENT_TOKEN")})
	if err != nil {
		return err
	}
	defer client.Close()
	db, conn, err := exdb.Open(d, dsn, s.Name, client, "")
	if err != nil {
		return err
	}
	defer db.Close()
	h, err := s.Setup(ctx, db, d, client)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	log.Info("serving", "addr", "http://"+ln.Addr().String(), "manager", manager, "branch_mode", conn.Mode())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
