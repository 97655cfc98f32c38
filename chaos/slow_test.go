//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
)

// S8 — slow network and timeout races: group timeout 2 s, the client's
// timeout 1.5 s (so many outcomes are info), Toxiproxy latency on every
// service ↔ TxManager link (200 ± 150 ms) and service → MariaDB link
// (50 ± 40 ms). With the plan's latencies a group needs more than its
// 2 s (a dozen messages each way), so nearly nothing commits; a second
// phase at half the latencies puts groups on the timeout edge, where late
// commits and timeouts race. Pass: I1–I9 (0 split decisions, no ok for a
// group rolled back, no leg of a group rolled back on timeout), and the
// info rate is reported.
func TestS8SlowNetwork(t *testing.T) {
	skipShort(t)
	c := newCluster(t, "S8", clusterOpts{mode: sqlproxy.ModeXA, links: true, dbLinks: true, groupTimeout: 2 * time.Second})
	c.hc = &http.Client{Timeout: 1500 * time.Millisecond}
	start := time.Now()
	stopReader := c.startReader(false)
	phase := time.Duration(scale(t)) * 45 * time.Second
	for _, div := range []int{1, 2} {
		for _, s := range services {
			for name, l := range map[string]*link{"tm": c.links[s], "db": c.links["db-"+s]} {
				lat, jit := 200, 150
				if name == "db" {
					lat, jit = 50, 40
				}
				if div == 2 {
					_ = l.removeToxic("latency")
				}
				if err := l.toxic("latency", "latency", "downstream", fmt.Sprintf(`{"latency":%d,"jitter":%d}`, lat/div, jit/div)); err != nil {
					t.Fatal(err)
				}
			}
		}
		c.fault(fmt.Sprintf("latency 1/%d of the plan's on every link", div))
		ctx, cancel := context.WithTimeout(context.Background(), phase)
		c.workload(ctx, func(int64) bool { return false })
		cancel()
	}
	for _, s := range services {
		for _, l := range []*link{c.links[s], c.links["db-"+s]} {
			if err := l.removeToxic("latency"); err != nil {
				t.Error(err)
			}
		}
	}
	r := c.hist.Add(Record{Type: "nemesis", Fault: "latency removed"})
	c.lastT.Store(r.T)
	stopReader()
	fig, rep := c.finish(start, CheckOptions{})
	line := fmt.Sprintf("S8 info-rate=%.1f%% (info %d of %d) ok=%d", 100*float64(rep.Info)/float64(max(fig.ops, 1)), rep.Info, fig.ops, rep.OK)
	t.Log(line)
	appendSummary(line)
	if rep.OK == 0 {
		t.Error("liveness: nothing committed under latency")
	}
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the latency ended, want ≤ %v", fig.quiescence, tRec)
	}
}
