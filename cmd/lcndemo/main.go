// Command lcndemo runs the golcn example services end to end and checks
// that every order was applied all or nothing.
//
// With no flags it starts, in this process, an embedded TxManager (bolt
// store in a temporary directory) and the order, stock and account services,
// each with its own SQLite database and its own TxManager session; they talk
// over real HTTP and websockets on 127.0.0.1. It then places orders
// concurrently, waits for every group to be settled, and prints a summary:
// outcomes by reason, groups needing attention, throughput and latency, and
// the conservation checks. The exit status is 1 if a check fails or a group
// needs attention.
//
//	go run ./cmd/lcndemo --orders 300 --concurrency 16
//	go run ./cmd/lcndemo --mysql-dsn 'root@tcp(127.0.0.1:3306)/' --redis-addr 127.0.0.1:6379
//
// LCN_DEMO_MYSQL_DSN and LCN_DEMO_REDIS_ADDR give the defaults of
// --mysql-dsn and --redis-addr.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

func main() { os.Exit(lcndemo()) }

// lcndemo runs the demo and returns the exit status.
func lcndemo() int {
	var opts Options
	var verbose bool
	fs := pflag.NewFlagSet("lcndemo", pflag.ContinueOnError)
	fs.IntVar(&opts.Orders, "orders", 300, "orders to place")
	fs.IntVar(&opts.Concurrency, "concurrency", 16, "orders in flight at once")
	fs.Uint64Var(&opts.Seed, "seed", 1, "seed of the order mix")
	fs.Float64Var(&opts.FailRate, "fail-rate", 0.05, "fraction of charges that fail after their write (chosen by order id hash)")
	fs.StringVar(&opts.MySQLDSN, "mysql-dsn", os.Getenv("LCN_DEMO_MYSQL_DSN"), "run the services on MySQL/MariaDB schemas lcndemo_{order,stock,account} of this server (dropped and re-created); env LCN_DEMO_MYSQL_DSN")
	fs.StringVar(&opts.Mode, "mode", "", "branch mode of the services' databases: xa, lcn or auto (default: lcn on SQLite, auto on MySQL)")
	fs.StringVar(&opts.RedisAddr, "redis-addr", os.Getenv("LCN_DEMO_REDIS_ADDR"), "use the Redis store at this address for the TxManager; env LCN_DEMO_REDIS_ADDR")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the temporary directory (SQLite files, bolt store)")
	fs.DurationVar(&opts.ConvergeTimeout, "converge-timeout", 30*time.Second, "how long to wait for every group to be settled")
	fs.BoolVar(&verbose, "verbose", false, "show the TxManager's and clients' info logs")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	opts.Progress = true
	opts.LogLevel = slog.LevelWarn
	if verbose {
		opts.LogLevel = slog.LevelInfo
	}

	// The first signal stops the load (the groups in flight are still
	// settled and checked); a second one kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	sum, err := run(ctx, opts, os.Stdout, os.Stderr)
	if sum.Orders > 0 || len(sum.Checks) > 0 {
		sum.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lcndemo: %v\n", err)
		return 1
	}
	if !sum.OK() {
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "lcndemo: interrupted: placed %d of %d orders\n", sum.Orders, opts.Orders)
		return 130
	}
	return 0
}
