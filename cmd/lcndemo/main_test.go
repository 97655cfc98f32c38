package main

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The fail rate is high so that, with 60 orders, some charge fails after
// its write in practice every run (the chance of none is about 1e-5); the
// other two refusals are guaranteed by the order plan.
const testFailRate = 0.25

func TestDemoSQLite(t *testing.T) {
	sum := runDemo(t, Options{Orders: 60, Concurrency: 8, Seed: 1, FailRate: testFailRate, Dir: t.TempDir()})
	assertSummary(t, sum)
}

func TestDemoMariaDBRedis(t *testing.T) {
	mdb := testenv.SharedMariaDB(t)
	rds := testenv.SharedRedis(t)
	sum := runDemo(t, Options{Orders: 60, Concurrency: 8, Seed: 2, FailRate: testFailRate, Dir: t.TempDir(),
		MySQLDSN: mdb.DSN(""), MySQLSchemaPrefix: "lcndemo_test_", RedisAddr: rds.Addr})
	assertSummary(t, sum)
}

func TestPlanGuaranteesRefusals(t *testing.T) {
	items, accts := stock.DemoItems(), account.DemoAccounts()
	reqs, err := plan(40, 7, items, accts)
	if err != nil {
		t.Fatal(err)
	}
	var maxStock, maxBalance int64
	price := map[string]int64{}
	for _, it := range items {
		maxStock = max(maxStock, it.Qty)
		price[it.SKU] = it.Price
	}
	for _, a := range accts {
		maxBalance = max(maxBalance, a.Balance)
	}
	var bulk, unaffordable int
	for _, r := range reqs {
		if r.Qty > maxStock {
			bulk++
		}
		if r.Qty*price[r.SKU] > maxBalance && r.Qty <= maxStock {
			unaffordable++
		}
	}
	if bulk < 2 || unaffordable < 2 {
		t.Fatalf("plan of 40 orders: %d larger than any stock, %d nobody can afford; want at least 2 of each", bulk, unaffordable)
	}
}

// runDemo runs the demo, logs its output, and checks that it left no
// goroutine behind.
func runDemo(t *testing.T, opts Options) Summary {
	t.Helper()
	opts.LogLevel = slog.LevelWarn
	before := runtime.NumGoroutine()
	var stdout bytes.Buffer
	logs := &testWriter{t: t}
	sum, err := run(context.Background(), opts, &stdout, logs)
	sum.print(&stdout)
	t.Logf("demo output:\n%s", stdout.String())
	logs.stop()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkNoGoroutineLeft(t, before)
	return sum
}

func assertSummary(t *testing.T, sum Summary) {
	t.Helper()
	for _, c := range sum.Checks {
		if !c.OK {
			t.Errorf("check %q failed: %s", c.Name, c.Detail)
		}
	}
	if len(sum.Checks) != 4 {
		t.Errorf("got %d checks, want 4", len(sum.Checks))
	}
	if sum.Committed == 0 {
		t.Error("no order committed")
	}
	for _, reason := range []string{stock.ReasonOutOfStock, account.ReasonInsufficientFunds, account.ReasonInjectedFailure} {
		if sum.RolledBack[reason] == 0 {
			t.Errorf("no order rolled back for %s; rolled back: %v", reason, sum.RolledBack)
		}
	}
	if sum.NeedsAttention != 0 || sum.NotTerminal != 0 {
		t.Errorf("needs attention %d, not terminal %d: %v", sum.NeedsAttention, sum.NotTerminal, sum.FirstAttentions)
	}
	if sum.Other != 0 {
		t.Errorf("%d orders got no definite answer", sum.Other)
	}
	if !sum.OK() {
		t.Error("summary not OK")
	}
}

// checkNoGoroutineLeft waits up to 5 s for the goroutine count to fall back
// to before, and fails with a dump of the goroutines if it does not.
func checkNoGoroutineLeft(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left running (had %d before):\n%s", runtime.NumGoroutine(), before, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testWriter sends the demo's logs to t.Log, line by line, until stop.
type testWriter struct {
	t       *testing.T
	mu      sync.Mutex // guards buf, stopped
	buf     []byte
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Log(string(w.buf))
	}
	w.stopped = true
}
