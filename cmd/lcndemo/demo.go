package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/order"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/txmanager"
)

// Options configures a demo run.
type Options struct {
	Orders      int     // orders to place
	Concurrency int     // orders in flight at once
	Seed        uint64  // seeds the order mix
	FailRate    float64 // fraction of charges that fail after their write
	// MySQLDSN, if set, runs the services on schemas of this MySQL/MariaDB
	// server (dropped and re-created) instead of SQLite files.
	MySQLDSN          string
	MySQLSchemaPrefix string
	// Mode is the services' branch mode: "xa", "lcn" or "auto" ("": lcn on
	// SQLite, auto on MySQL).
	Mode string
	// RedisAddr, if set, makes the TxManager use the Redis store.
	RedisAddr string
	// Dir is where the temporary directory is made (default os.TempDir()).
	Dir string
	// Keep leaves the temporary directory in place.
	Keep bool
	// ConvergeTimeout bounds the wait for every group to become terminal.
	ConvergeTimeout time.Duration
	// Progress shows a progress bar on stderr.
	Progress bool
	// LogLevel is the level of the TxManager's and clients' logs on stderr.
	LogLevel slog.Level
}

// Summary is the outcome of a run.
type Summary struct {
	Backend         string // databases and TxManager store
	Orders          int    // orders placed
	Committed       int
	RolledBack      map[string]int // by reason
	Other           int            // no definite answer (unknown outcome, not started, transport error)
	NeedsAttention  int            // groups the TxManager flags
	NotTerminal     int            // groups not COMMITTED/ROLLED_BACK after the convergence wait
	Setup, Load     time.Duration
	Converge        time.Duration
	Shutdown        time.Duration
	Throughput      float64 // orders per second during the load
	P50, P99        time.Duration
	Checks          []Check
	FirstAttentions []string // up to 5 "group: attention" lines
}

// OK reports whether every check passed and no group needs attention.
func (s Summary) OK() bool {
	for _, c := range s.Checks {
		if !c.OK {
			return false
		}
	}
	return s.NeedsAttention == 0 && s.NotTerminal == 0
}

// run starts the TxManager and the services, places the orders, waits for
// every group to converge, checks the databases, and stops everything. The
// summary is returned whether or not the checks pass; an error means the
// run itself could not be carried out.
func run(ctx context.Context, opts Options, stdout, stderr io.Writer) (sum Summary, err error) {
	if opts.Orders < 0 || opts.Concurrency < 1 {
		return sum, fmt.Errorf("need orders >= 0 and concurrency >= 1, got %d and %d", opts.Orders, opts.Concurrency)
	}
	if opts.ConvergeTimeout <= 0 {
		opts.ConvergeTimeout = 30 * time.Second
	}
	if opts.MySQLSchemaPrefix == "" {
		opts.MySQLSchemaPrefix = "lcndemo_"
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.LogLevel}))
	items, accts := stock.DemoItems(), account.DemoAccounts()
	reqs, err := plan(opts.Orders, opts.Seed, items, accts)
	if err != nil {
		return sum, err
	}

	dir, err := os.MkdirTemp(opts.Dir, "lcndemo-")
	if err != nil {
		return sum, fmt.Errorf("temp dir: %w", err)
	}
	defer func() {
		if opts.Keep {
			fmt.Fprintf(stderr, "kept %s\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove temp dir: %w", rerr))
		}
	}()

	began := time.Now()
	c, err := startCluster(ctx, opts, dir, log)
	if err != nil {
		return sum, fmt.Errorf("start: %w", err)
	}
	defer func() {
		began := time.Now()
		if cerr := c.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("shut down: %w", cerr))
		}
		sum.Shutdown = time.Since(began)
	}()
	sum.Setup = time.Since(began)
	sum.Backend = backend(opts, c)
	fmt.Fprintf(stdout, "golcn demo: %d orders, concurrency %d, fail-after-write rate %.2f\n  %s\n", opts.Orders, opts.Concurrency, opts.FailRate, sum.Backend)

	bar := progressbar.NewOptions(len(reqs), progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("orders"),
		progressbar.OptionShowCount(), progressbar.OptionSetVisibility(opts.Progress), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish())
	began = time.Now()
	results := placeOrders(ctx, c.orderURL, reqs, opts.Concurrency, bar)
	sum.Load = time.Since(began)
	_ = bar.Finish()
	results = slices.DeleteFunc(results, func(r result) bool { return r.latency == 0 }) // never placed (interrupted)
	tally(&sum, results)

	// Converge even if ctx ended: the groups in flight must be settled
	// before the services stop.
	cctx := context.WithoutCancel(ctx)
	began = time.Now()
	var ids []string
	for _, r := range results {
		if r.resp.OrderID != "" {
			ids = append(ids, r.resp.OrderID)
		}
	}
	views, err := converge(cctx, c.tmURL, c.tokens[adminService], ids, opts.ConvergeTimeout)
	if err != nil {
		return sum, err
	}
	sum.Converge = time.Since(began)
	for _, id := range ids {
		v := views[id]
		if v.Attention != "" {
			sum.NeedsAttention++
			if len(sum.FirstAttentions) < 5 {
				sum.FirstAttentions = append(sum.FirstAttentions, id+": "+v.Attention)
			}
		}
		if v.State != txmanager.GroupCommitted.String() && v.State != txmanager.GroupRolledBack.String() {
			sum.NotTerminal++
		}
	}
	snap, err := readSnapshot(cctx, c)
	if err != nil {
		return sum, err
	}
	sum.Checks = checks(results, views, snap, items, accts)
	return sum, nil
}

func backend(opts Options, c *cluster) string {
	db := "sqlite files in the temp dir"
	if opts.MySQLDSN != "" {
		db = "mysql schemas " + opts.MySQLSchemaPrefix + "{order,stock,account}"
	}
	return fmt.Sprintf("databases: %s (branch mode %s); txmanager store: %s", db, c.mode(), c.store)
}

// tally counts outcomes and computes throughput and latency percentiles.
func tally(sum *Summary, results []result) {
	sum.Orders = len(results)
	sum.RolledBack = make(map[string]int)
	lat := make([]time.Duration, 0, len(results))
	for _, r := range results {
		lat = append(lat, r.latency)
		switch {
		case r.err != nil:
			sum.Other++
		case r.resp.Status == order.StatusCommitted:
			sum.Committed++
		case r.resp.Status == order.StatusRolledBack:
			sum.RolledBack[r.resp.Reason]++
		default:
			sum.Other++
		}
	}
	if sum.Load > 0 {
		sum.Throughput = float64(len(results)) / sum.Load.Seconds()
	}
	slices.Sort(lat)
	sum.P50, sum.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
}

// percentile returns the p-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// knownReasons are the refusals the demo provokes, in the order printed.
var knownReasons = []struct{ reason, label string }{
	{stock.ReasonOutOfStock, "out of stock"},
	{account.ReasonInsufficientFunds, "insufficient funds"},
	{account.ReasonInjectedFailure, "injected failure"},
}

// print writes the summary for people.
func (s Summary) print(w io.Writer) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-22s%s\n", label, fmt.Sprintf(format, args...))
	}
	rolledBack := 0
	for _, n := range s.RolledBack {
		rolledBack += n
	}
	line("orders", "%d in %v (%.1f orders/s), latency p50 %v, p99 %v", s.Orders,
		s.Load.Round(time.Millisecond), s.Throughput, s.P50.Round(time.Millisecond/10), s.P99.Round(time.Millisecond/10))
	line("committed", "%d", s.Committed)
	line("rolled back", "%d", rolledBack)
	var others []string
	for r := range s.RolledBack {
		if !slices.ContainsFunc(knownReasons, func(k struct{ reason, label string }) bool { return k.reason == r }) {
			others = append(others, r)
		}
	}
	slices.Sort(others)
	for _, k := range knownReasons {
		line("  "+k.label, "%d", s.RolledBack[k.reason])
	}
	for _, r := range others {
		line("  "+r, "%d", s.RolledBack[r])
	}
	line("no definite answer", "%d", s.Other)
	line("needs attention", "%d (not terminal after %v: %d)", s.NeedsAttention, s.Converge.Round(time.Millisecond), s.NotTerminal)
	for _, a := range s.FirstAttentions {
		fmt.Fprintf(w, "  %s\n", a)
	}
	line("timings", "setup %v, load %v, convergence %v, shutdown %v", s.Setup.Round(time.Millisecond),
		s.Load.Round(time.Millisecond), s.Converge.Round(time.Millisecond), s.Shutdown.Round(time.Millisecond))
	fmt.Fprintln(w, "checks")
	for _, c := range s.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	if s.OK() {
		fmt.Fprintln(w, "result: PASS")
	} else {
		fmt.Fprintln(w, "result: FAIL")
	}
}
