//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txmanager"
)

// auditCommits checks S7's audit rule on the services' logs: every commit
// of a held branch (the line AuditPrefix) belongs to a group the TxManager
// decided to commit (COMMITTED in the store), and happened no earlier than
// that decision (the record's DecidedMS; one clock, one machine). It
// returns how many commits it audited.
func (c *cluster) auditCommits() int {
	c.t.Helper()
	ctx := context.Background()
	audited, bad := 0, 0
	for _, s := range services {
		f, err := os.Open(c.svcs[s].logPath)
		if err != nil {
			c.t.Fatalf("audit: %v", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), AuditPrefix)
			if !ok {
				continue
			}
			var group, branch string
			var ms int64
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "group":
					group = v
				case "branch":
					branch = v
				case "ms":
					ms, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			audited++
			g, err := c.store.Get(ctx, group)
			switch {
			case err != nil:
				bad++
				c.t.Errorf("audit: %s committed branch %s of group %s, which the TxManager does not know (%v)", s, branch, group, err)
			case g.State != txmanager.GroupCommitted:
				bad++
				c.t.Errorf("audit: %s committed branch %s of group %s, which the TxManager ended %s", s, branch, group, g.State)
			case ms < g.DecidedMS:
				bad++
				c.t.Errorf("audit: %s committed branch %s of group %s at %d ms, before the TxManager decided (%d ms)", s, branch, group, ms, g.DecidedMS)
			}
			if bad > 5 {
				break
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			c.t.Errorf("audit: read %s: %v", c.svcs[s].logPath, err)
		}
	}
	return audited
}

// s7Window is one fault kind of S7 on a TxManager ↔ service link.
type s7Window struct {
	kind  string
	start func(k *link, rng *rand.Rand) error
	stop  func(k *link) error
}

var s7Windows = []s7Window{
	{"blackhole", func(k *link, _ *rand.Rand) error { return k.blackhole() }, func(k *link) error { return k.unblackhole() }},
	{"limit_data", func(k *link, rng *rand.Rand) error {
		// The connection is closed after a few bytes of the TxManager's
		// frames: mid-frame; every reconnection in the window too.
		return k.toxic("cut", "limit_data", "downstream", fmt.Sprintf(`{"bytes":%d}`, 1+rng.IntN(300)))
	}, func(k *link) error { return k.removeToxic("cut") }},
	{"reset_peer", func(k *link, _ *rand.Rand) error {
		return k.toxic("reset", "reset_peer", "downstream", `{"timeout":0}`)
	}, func(k *link) error { return k.removeToxic("reset") }},
}

// S7 — lost notifies: on one randomly chosen service's link to the
// TxManager, windows of 1–8 s (half longer than the group timeout) of a
// blackhole, a cut mid-frame (limit_data) or reset_peer, with slicer (tiny
// TCP segments) on every link the rest of the time. Pass: I1–I9, every
// commit of a participant preceded by the TxManager's commit decision for
// its group (audit), quiescence ≤ T_rec after the last heal.
func TestS7LostNotify(t *testing.T) {
	skipShort(t)
	windows := 30 * scale(t) // the plan: 60 (CI); see chaos/doc.go
	c := newCluster(t, "S7", clusterOpts{mode: sqlproxy.ModeXA, links: true})
	start := time.Now()
	slice := func(k *link, on bool) error {
		if on {
			for _, st := range []string{"upstream", "downstream"} {
				if err := k.toxic("slicer-"+st, "slicer", st, `{"average_size":16,"size_variation":12,"delay":0}`); err != nil {
					return err
				}
			}
			return nil
		}
		for _, st := range []string{"upstream", "downstream"} {
			if err := k.removeToxic("slicer-" + st); err != nil {
				return err
			}
		}
		return nil
	}
	for _, s := range services {
		if err := slice(c.links[s], true); err != nil {
			t.Fatal(err)
		}
	}
	stopWorkload := c.background()
	defer stopWorkload()
	rng := rand.New(rand.NewPCG(c.seed, 7))
	kinds := map[string]int{}
	var longer int
	for i := 0; i < windows && !t.Failed(); i++ {
		time.Sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))) // the schedule: healthy time between windows
		svc := services[rng.IntN(len(services))]
		w := s7Windows[rng.IntN(len(s7Windows))]
		d := time.Second + time.Duration(rng.Int64N(int64(4*time.Second))) // 1–5 s
		if i%2 == 1 {
			d = groupTimeout + time.Duration(rng.Int64N(int64(3*time.Second))) // 5–8 s: longer than the group timeout
			longer++
		}
		k := c.links[svc]
		c.fault(fmt.Sprintf("%s on %s for %v", w.kind, svc, d.Round(time.Millisecond)))
		if err := slice(k, false); err != nil {
			t.Error(err)
			break
		}
		if err := w.start(k, rng); err != nil {
			t.Error(err)
			break
		}
		time.Sleep(d) // the window's length
		if err := w.stop(k); err != nil {
			t.Error(err)
			break
		}
		if err := slice(k, true); err != nil {
			t.Error(err)
			break
		}
		r := c.hist.Add(Record{Type: "nemesis", Fault: "healed " + svc})
		c.lastT.Store(r.T)
		kinds[w.kind]++
	}
	for _, s := range services {
		if err := slice(c.links[s], false); err != nil {
			t.Error(err)
		}
	}
	stopWorkload()
	fig, _ := c.finish(start, CheckOptions{})
	audited := c.auditCommits()
	line := fmt.Sprintf("S7 windows=%d (blackhole %d, limit_data %d, reset_peer %d; %d longer than the group timeout) audited-commits=%d",
		kinds["blackhole"]+kinds["limit_data"]+kinds["reset_peer"], kinds["blackhole"], kinds["limit_data"], kinds["reset_peer"], longer, audited)
	t.Log(line)
	appendSummary(line)
	if audited == 0 {
		t.Error("audit: no commit audited")
	}
	if fig.ops < 1000*scale(t) {
		t.Errorf("liveness: %d transfers, want ≥ %d", fig.ops, 1000*scale(t))
	}
	if fig.quiescence > tRec {
		t.Errorf("not converged %v after the last heal, want ≤ %v", fig.quiescence, tRec)
	}
}
