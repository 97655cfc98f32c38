package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// Coordinator-only benchmarks: a real TxManager on a real store over real
// websockets, with in-process txclient clients and fake held branches (no
// database). They run only with -bench.
//
// The per-session message limit (MessageRate, default 2000/s) is raised so
// that it, rather than the coordinator, does not cap one benchmark client
// that plays a whole service's traffic.

// fakeHeld is a held branch with no database: done is closed when the
// decision is applied, and committed says which.
type fakeHeld struct {
	done      chan struct{}
	committed atomic.Bool
}

func newFakeHeld() *fakeHeld { return &fakeHeld{done: make(chan struct{})} }

func (h *fakeHeld) Prepare(context.Context) error { return nil }

func (h *fakeHeld) Commit(context.Context) error {
	h.committed.Store(true)
	close(h.done)
	return nil
}

func (h *fakeHeld) Rollback(context.Context) error {
	close(h.done)
	return nil
}

// benchCluster is a starter and two participants on one TxManager.
type benchCluster struct {
	m              *manager
	starter, a, bb *txclient.Client
}

// newBenchCluster starts the harness's TxManager with the per-session
// message limit raised, so that it, rather than the coordinator, does not
// cap one benchmark client that plays a whole service's traffic.
func newBenchCluster(b testing.TB, kind storeKind, mcfg txmanager.Config, ccfg txclient.Config) *benchCluster {
	mcfg.MessageRate, mcfg.MessageBurst = 1e6, 1e6
	m := newManager(b, kind, mcfg)
	mod := func(c *txclient.Config) {
		if ccfg.AskInterval != 0 {
			c.AskInterval = ccfg.AskInterval
		}
		if ccfg.RequestTimeout != 0 {
			c.RequestTimeout = ccfg.RequestTimeout
		}
		if ccfg.GroupTimeout != 0 {
			c.GroupTimeout = ccfg.GroupTimeout
		}
	}
	return &benchCluster{m: m,
		starter: newClient(b, m, "starter", mod),
		a:       newClient(b, m, "svc-a", mod),
		bb:      newClient(b, m, "svc-b", mod)}
}

// prepare begins a group and has both participants join it, vote prepared
// and hold a fake branch.
func (c *benchCluster) prepare(ctx context.Context) (*txclient.Group, [2]*fakeHeld, error) {
	var held [2]*fakeHeld
	_, g, err := c.starter.Begin(ctx)
	if err != nil {
		return nil, held, err
	}
	for i, p := range []*txclient.Client{c.a, c.bb} {
		br, err := p.Join(ctx, g.ID(), p.Service()+"-ds", "lcn")
		if err != nil {
			return g, held, fmt.Errorf("join: %w", err)
		}
		if err := p.Vote(ctx, g.ID(), br, true, ""); err != nil {
			return g, held, fmt.Errorf("vote: %w", err)
		}
		held[i] = newFakeHeld()
		p.Hold(g.ID(), br, held[i])
	}
	return g, held, nil
}

func waitHeld(ctx context.Context, held [2]*fakeHeld, wantCommit bool) error {
	for _, h := range held {
		select {
		case <-h.done:
			if h.committed.Load() != wantCommit {
				return fmt.Errorf("branch applied commit=%v, want %v", h.committed.Load(), wantCommit)
			}
		case <-ctx.Done():
			return errors.New("timed out waiting for phase 2")
		}
	}
	return nil
}

// runPool runs n jobs on conc workers; it stops early on the first error.
func runPool(n, conc int, job func() error) error {
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for first.Load() == nil && next.Add(1) <= int64(n) {
				if err := job(); err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

// BenchmarkCoordinator measures full rounds: begin, two branches join, vote
// and hold, commit, and both branches committed and acknowledged.
func BenchmarkCoordinator(b *testing.B) {
	for _, kind := range []storeKind{storeBolt, storeRedis} {
		b.Run("store="+string(kind), func(b *testing.B) {
			c := newBenchCluster(b, kind, txmanager.Config{}, txclient.Config{})
			for _, conc := range []int{1, 16, 64} {
				b.Run("conc="+strconv.Itoa(conc), func(b *testing.B) {
					round := func() error {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						g, held, err := c.prepare(ctx)
						if err != nil {
							return err
						}
						if err := g.Commit(ctx); err != nil {
							return err
						}
						return waitHeld(ctx, held, true)
					}
					cpu0, rcpu0 := processCPU(b), redisCPU(b, c.m.redis)
					b.ResetTimer()
					start := time.Now()
					err := runPool(b.N, conc, round)
					elapsed := time.Since(start)
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "groups/s")
					// CPU per group: what bounds groups/s once the cores are busy.
					b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/group")
					if c.m.redis != nil {
						b.ReportMetric(float64((redisCPU(b, c.m.redis)-rcpu0).Microseconds())/float64(b.N), "redis-cpu-µs/group")
					}
				})
			}
		})
	}
}

// BenchmarkCoordinatorInFlight10k holds 10,000 groups in flight (begun,
// both branches joined and voted prepared, undecided) on the Redis store,
// reports the process's memory (TxManager and the three clients together,
// all in this process) and that of Redis, then rolls them all back. One
// iteration is a whole cycle; run it with -benchtime 1x.
func BenchmarkCoordinatorInFlight10k(b *testing.B) {
	const groups, conc = 10000, 64
	c := newBenchCluster(b, storeRedis,
		txmanager.Config{GroupTimeout: 10 * time.Minute},
		// No asking during the measurement: we measure held state, not ask traffic.
		txclient.Config{GroupTimeout: 10 * time.Minute, AskInterval: 10 * time.Minute, RequestTimeout: 30 * time.Second})
	ctx := context.Background()
	for b.Loop() {
		heap0, rss0, redis0 := measureMem(b, c.m.redis)
		all := make([]*txclient.Group, groups)
		allHeld := make([][2]*fakeHeld, groups)
		var i atomic.Int64
		start := time.Now()
		if err := runPool(groups, conc, func() error {
			g, held, err := c.prepare(ctx)
			if err != nil {
				return err
			}
			k := i.Add(1) - 1
			all[k], allHeld[k] = g, held
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		prepareTime := time.Since(start)
		heap1, rss1, redis1 := measureMem(b, c.m.redis)

		start = time.Now()
		var j atomic.Int64
		if err := runPool(groups, conc, func() error {
			k := j.Add(1) - 1
			if err := all[k].Rollback(ctx); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return waitHeld(wctx, allHeld[k], false)
		}); err != nil {
			b.Fatal(err)
		}
		rollbackTime := time.Since(start)

		mb := func(v uint64) float64 { return float64(v) / (1 << 20) }
		b.ReportMetric(mb(heap0), "heap-base-MB")
		b.ReportMetric(mb(heap1), "heap-10k-MB")
		b.ReportMetric((float64(heap1)-float64(heap0))/groups, "heap-B/group")
		b.ReportMetric(mb(rss0), "rss-base-MB")
		b.ReportMetric(mb(rss1), "rss-10k-MB")
		b.ReportMetric((float64(redis1)-float64(redis0))/groups, "redis-B/group")
		b.ReportMetric(prepareTime.Seconds(), "prepare-s")
		b.ReportMetric(rollbackTime.Seconds(), "rollback-s")
	}
}

// measureMem returns HeapInuse after a GC, VmRSS, and Redis's used_memory.
// processCPU is the CPU time (user and system) this process has used: the
// TxManager and the three clients.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the CPU time (user and system, main thread and children)
// the Redis server behind rc has used, or 0 when rc is nil.
func redisCPU(b *testing.B, rc *redis.Client) time.Duration {
	b.Helper()
	if rc == nil {
		return 0
	}
	info, err := rc.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sec float64
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && strings.HasPrefix(k, "used_cpu_") && !strings.Contains(k, "main_thread") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("redis INFO cpu %s: %v", k, err)
			}
			sec += f
		}
	}
	return time.Duration(sec * float64(time.Second))
}

func measureMem(b *testing.B, rc *redis.Client) (heap, rss, redisUsed uint64) {
	b.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = ms.HeapInuse
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	info, err := rc.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			redisUsed, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return heap, rss, redisUsed
}
