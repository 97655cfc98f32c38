//go:build chaos

package chaos

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
)

// skipShort keeps `go test -short` to the checker's unit tests.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos scenario: skipped with -short")
	}
}

// latencies returns the p50 and p99 of completed operations.
func latencies(ops []OpResult) (p50, p99 time.Duration) {
	var d []time.Duration
	for _, o := range ops {
		if o.Result != "" {
			d = append(d, o.Complete-o.Invoke)
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

// S1 — baseline bank, no faults (RELIABILITY.md S1).
func TestS1Baseline(t *testing.T) {
	skipShort(t)
	c := newCluster(t, "S1", clusterOpts{mode: sqlproxy.ModeXA})
	start := time.Now()
	stopReader := c.startReader(true)
	target := int64(2000 * scale(t))
	if v := os.Getenv("CHAOS_S1_OPS"); v != "" {
		target, _ = strconv.ParseInt(v, 10, 64)
	}
	c.workload(context.Background(), func(n int64) bool { return n >= target })
	stopReader()
	fig, _ := c.finish(start, CheckOptions{})
	ops := Ops(c.hist.Records())
	var plain, plainOK int
	for _, o := range ops {
		if !o.Abort {
			plain++
			if o.Result == "ok" {
				plainOK++
			}
		}
	}
	p50, p99 := latencies(ops)
	t.Logf("S1 latency p50=%v p99=%v; non-abort ok %d/%d", p50.Round(time.Millisecond), p99.Round(time.Millisecond), plainOK, plain)
	if float64(plainOK) < 0.995*float64(plain) {
		t.Errorf("liveness: %d of %d non-abort transfers ok, want ≥ 99.5%%", plainOK, plain)
	}
	if fig.quiescence > 5*time.Second {
		t.Errorf("quiescence %v after the last op, want ≤ 5s", fig.quiescence)
	}
}

// S3 — the TxManager SIGKILLed at uniform 1–3 s intervals, restarted
// 500 ms later, for 90 s (× CHAOS_SCALE).
func TestS3CoordinatorCrashLoop(t *testing.T) {
	skipShort(t)
	c := newCluster(t, "S3", clusterOpts{mode: sqlproxy.ModeXA})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(scale(t))*90*time.Second)
	defer cancel()
	stopReader := c.startReader(false)
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		rng := rand.New(rand.NewPCG(c.seed, 3))
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))):
			}
			c.fault("SIGKILL tm")
			c.tm.signal(syscall.SIGKILL, true)
		}
	}()
	c.workload(ctx, func(int64) bool { return false })
	<-nemesisDone
	stopReader()
	fig, _ := c.finish(start, CheckOptions{})
	if fig.ops < 1000*scale(t) {
		t.Errorf("liveness: %d transfers attempted, want ≥ %d", fig.ops, 1000*scale(t))
	}
	if 2*fig.ok < fig.ops {
		t.Errorf("liveness: %d of %d transfers ok, want ≥ 50%%", fig.ok, fig.ops)
	}
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the last kill, want ≤ %v", fig.quiescence, tRec)
	}
}

// untilFaults runs the workload until the cluster counted want faults (or
// the time limit passed, which fails the test).
func untilFaults(t *testing.T, c *cluster, want int64, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c.workload(ctx, func(int64) bool { return c.faults.Load() >= want })
	if got := c.faults.Load(); got < want {
		t.Errorf("only %d of %d faults injected in %v", got, want, limit)
	}
}

// crashKills is the number of process kills per crash scenario: 45 in CI
// (the plan asks 300: see chaos/doc.go), × CHAOS_SCALE.
func crashKills(t *testing.T) int64 {
	if v := os.Getenv("CHAOS_KILLS"); v != "" { // a shorter run while developing
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			t.Fatalf("CHAOS_KILLS=%q: want a positive integer", v)
		}
		return n
	}
	return int64(45 * scale(t))
}

// S5 — a participant (svc-b) SIGKILLs itself after its vote (xa: after XA
// PREPARE), before applying the decision; restarted 1 s later.
func TestS5ParticipantCrashAfterVote(t *testing.T) {
	skipShort(t)
	t.Run("xa", func(t *testing.T) {
		c := newCluster(t, "S5-xa", clusterOpts{mode: sqlproxy.ModeXA, fail: map[string]string{"svc-b": FailAfterVote + ":0.3"}})
		start := time.Now()
		stopReader := c.startReader(false)
		untilFaults(t, c, crashKills(t), time.Duration(scale(t))*10*time.Minute)
		stopReader()
		fig, _ := c.finish(start, CheckOptions{})
		if fig.quiescence > tRec {
			t.Errorf("prepared branches not resolved %v after the last kill, want ≤ %v", fig.quiescence, tRec)
		}
	})
	t.Run("lcn", func(t *testing.T) {
		// lcn cannot survive the crash: the pass figure is that every
		// partial group is flagged and never reported ok.
		c := newCluster(t, "S5-lcn", clusterOpts{mode: sqlproxy.ModeLCN, lostAfter: 3 * time.Second, waitOutcome: true,
			fail: map[string]string{"svc-b": FailAfterVote + ":0.3"}})
		start := time.Now()
		stopReader := c.startReader(false)
		untilFaults(t, c, crashKills(t), time.Duration(scale(t))*10*time.Minute)
		stopReader()
		_, rep := c.finish(start, CheckOptions{FlaggedPartialsAllowed: true})
		t.Logf("S5-lcn: %d partial groups, all flagged NEEDS_ATTENTION and not reported ok", rep.FlaggedPartials)
	})
}

// S6 — (a) a participant SIGKILLs itself during its business SQL, before
// voting; (b) the initiator SIGKILLs itself after creating the group and
// running the legs, before asking for the decision. Restarted after 1 s.
func TestS6CrashBeforeVote(t *testing.T) {
	skipShort(t)
	for _, sc := range []struct {
		name string
		fail map[string]string
	}{
		{"a-participant", map[string]string{"svc-b": FailBeforeVote + ":0.05", "svc-c": FailBeforeVote + ":0.05"}},
		{"b-initiator", map[string]string{"svc-a": FailInitiatorBeforeNotify + ":0.05"}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			c := newCluster(t, "S6-"+sc.name, clusterOpts{mode: sqlproxy.ModeXA, fail: sc.fail})
			start := time.Now()
			stopReader := c.startReader(false)
			untilFaults(t, c, crashKills(t), time.Duration(scale(t))*10*time.Minute)
			stopReader()
			fig, _ := c.finishWith(start, CheckOptions{}, c.probeAccounts)
			// A branch whose owner died keeps its group ROLLING_BACK
			// until lost_after (the TxManager cannot tell a dead owner from
			// a partitioned one), so the plan's figure is about locks on
			// the participants; the whole group state must settle within
			// T_rec (I6).
			if fig.locksFree > groupTimeout+5*time.Second {
				t.Errorf("transactions or lock waits left %v after the last kill, want ≤ group timeout + 5s", fig.locksFree)
			}
			if fig.quiescence > tRec {
				t.Errorf("groups in doubt %v after the last kill, want ≤ %v", fig.quiescence, tRec)
			}
		})
	}
}
