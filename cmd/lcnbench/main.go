// Command lcnbench measures what golcn costs per transaction: the transfer
// workload in each branch mode against a baseline of plain local
// transactions, in one run.
//
// It starts, in this process, a TxManager on the Redis store, two
// participant services (svc-a, svc-b: each one MariaDB schema with a
// user_account table, reached through the golcn proxy driver) and the
// starter, all talking over real HTTP and websockets on 127.0.0.1. A
// transfer is: the starter, which has no database work of its own, begins a
// group and calls svc-a (UPDATE user_account SET balance = balance - 1 WHERE
// user_id = ?) and svc-b (... + 1 ...), each in its own branch, then
// commits; the transfer's latency ends when the commit decision is durable.
// The baseline makes the same two HTTP calls, each committing its UPDATE as
// a plain local transaction with no group.
//
// Rows are hot (every transfer between the same two accounts) or spread
// (200 distinct pairs). For each rows choice and concurrency, the modes are
// measured back to back, and the whole sequence is repeated --rounds times
// (interleaved, so drift on a shared machine hits every mode alike); TPS is
// the median over rounds, p50/p99 are over every transfer measured. The tax
// is 1 - TPS/baseline TPS at the same rows and concurrency. At the end it
// checks that the money is conserved (after each cell it waits until phase
// 2 has applied every committed transfer).
//
// With no --mysql-dsn or --redis-addr it starts private mariadbd and
// redis-server instances (fresh directories, free ports; InnoDB with
// innodb_flush_log_at_trx_commit=1, Redis with appendfsync always), removed
// at exit.
//
//	go run ./cmd/lcnbench                       # full run, about 4 minutes
//	go run ./cmd/lcnbench --quick               # a few seconds
//	go run ./cmd/lcnbench --json out.json --svg out.svg
//
// The exit status is 1 if a check failed or a transfer failed.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

func main() { os.Exit(lcnbench()) }

// Options configure a run.
type Options struct {
	MySQLDSN     string // "": start a private MariaDB
	RedisAddr    string // "": start a private Redis
	SchemaPrefix string // schemas <prefix>svc_a and <prefix>svc_b are dropped and re-created

	Modes       []string // baseline, lcn, xa
	Rows        []string // hot, spread
	Concurrency []int
	Warmup      time.Duration // per cell and round, not measured
	Duration    time.Duration // measured, per cell and round
	Rounds      int

	JSONPath string // "": no JSON
	SVGPath  string // "": no chart
}

// quickOptions shrink o to a run of a few seconds. The measured window
// stays long enough (1 s) for transfers to begin and end inside it on a
// loaded machine, where one hot-row xa transfer at concurrency 8 can take
// a few hundred milliseconds.
func quickOptions(o Options) Options {
	o.Concurrency = []int{1, 8}
	o.Warmup, o.Duration, o.Rounds = 100*time.Millisecond, time.Second, 1
	return o
}

func lcnbench() int {
	o := Options{Modes: []string{modeBaseline, modeLCN, modeXA}, Rows: []string{rowsHot, rowsSpread}}
	var quick, verbose bool
	var cpuProfile string
	fs := pflag.NewFlagSet("lcnbench", pflag.ContinueOnError)
	fs.StringVar(&o.MySQLDSN, "mysql-dsn", os.Getenv("LCN_BENCH_MYSQL_DSN"), "MySQL/MariaDB server to use (default: start a private MariaDB); env LCN_BENCH_MYSQL_DSN")
	fs.StringVar(&o.RedisAddr, "redis-addr", os.Getenv("LCN_BENCH_REDIS_ADDR"), "Redis for the TxManager's store (default: start a private Redis); env LCN_BENCH_REDIS_ADDR")
	fs.StringVar(&o.SchemaPrefix, "schema-prefix", "lcnbench_", "schemas <prefix>svc_a and <prefix>svc_b are dropped and re-created")
	fs.StringSliceVar(&o.Modes, "modes", o.Modes, "modes to measure (baseline, lcn, xa)")
	fs.StringSliceVar(&o.Rows, "rows", o.Rows, "row choices (hot, spread)")
	fs.IntSliceVar(&o.Concurrency, "concurrency", []int{1, 8, 16}, "transfers in flight at once")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured warm-up per cell and round")
	fs.DurationVar(&o.Duration, "duration", 3*time.Second, "measured time per cell and round")
	fs.IntVar(&o.Rounds, "rounds", 3, "interleaved rounds; TPS is the median over rounds")
	fs.StringVar(&o.JSONPath, "json", "lcnbench.json", "write the results as JSON here (\"\": don't)")
	fs.StringVar(&o.SVGPath, "svg", "lcnbench.svg", "draw throughput against concurrency as SVG here (\"\": don't)")
	fs.BoolVar(&quick, "quick", false, "a run of a few seconds (concurrency 1 and 8, one short round): checks the command works")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole process (all services) here")
	fs.BoolVar(&verbose, "verbose", false, "show the services' info logs")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	if quick {
		o = quickOptions(o)
	}
	level := slog.LevelError
	if verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "lcnbench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "lcnbench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := run(ctx, o, log, os.Stderr)
	if rep != nil {
		rep.printTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lcnbench: %v\n", err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// run starts the environment, measures every cell and writes the JSON and
// the chart. The report is returned even with an error if anything was
// measured.
func run(ctx context.Context, o Options, log *slog.Logger, progress io.Writer) (rep *Report, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	e, err := startEnv(ctx, o, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := e.close(); cerr != nil && err == nil {
			err = fmt.Errorf("shut down: %w", cerr)
		}
	}()
	fmt.Fprintf(progress, "lcnbench: services up in %v; %d rounds of %d cells, %v each\n",
		time.Since(began).Round(time.Millisecond), o.Rounds, len(o.Modes)*len(o.Rows)*len(o.Concurrency), o.Warmup+o.Duration)

	rep = newReport(o)
	var led ledger
	for round := 1; round <= o.Rounds; round++ {
		for _, rows := range o.Rows {
			for _, conc := range o.Concurrency {
				for _, mode := range o.Modes {
					c := cell{mode: mode, rows: rows, conc: conc}
					s := e.measure(ctx, c, o.Warmup, o.Duration, &led)
					if err := ctx.Err(); err != nil {
						return rep, err
					}
					rep.add(c, s)
					fmt.Fprintf(progress, "round %d  %-8s %-6s conc %2d  %8.1f transfers/s  errors %d\n", round, mode, rows, conc, s.tps, s.errors)
					if s.firstErr != nil {
						fmt.Fprintf(progress, "  first error: %v\n", s.firstErr)
					}
					// Phase 2 runs after the decision: wait until it has
					// applied everything so that the next cell starts clean.
					if err := e.settle(ctx, &led, time.Minute); err != nil {
						rep.Conserved = false
						return rep, err
					}
				}
			}
		}
	}
	rep.Conserved = true
	rep.finish()
	if o.JSONPath != "" {
		if err := rep.writeJSON(o.JSONPath); err != nil {
			return rep, err
		}
	}
	if o.SVGPath != "" {
		if err := os.WriteFile(o.SVGPath, rep.svg(), 0o644); err != nil {
			return rep, fmt.Errorf("write chart: %w", err)
		}
	}
	return rep, nil
}

func (o Options) validate() error {
	for _, m := range o.Modes {
		if m != modeBaseline && m != modeLCN && m != modeXA {
			return fmt.Errorf("--modes: unknown mode %q (baseline, lcn, xa)", m)
		}
	}
	for _, r := range o.Rows {
		if r != rowsHot && r != rowsSpread {
			return fmt.Errorf("--rows: unknown rows %q (hot, spread)", r)
		}
	}
	for _, c := range o.Concurrency {
		if c < 1 {
			return fmt.Errorf("--concurrency: %d is not positive", c)
		}
	}
	if o.Duration <= 0 || o.Warmup < 0 || o.Rounds < 1 {
		return fmt.Errorf("--duration must be positive, --warmup not negative, --rounds at least 1")
	}
	if len(o.Modes) == 0 || len(o.Rows) == 0 || len(o.Concurrency) == 0 {
		return fmt.Errorf("nothing to measure: --modes, --rows and --concurrency must not be empty")
	}
	return nil
}
