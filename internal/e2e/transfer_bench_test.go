package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
)

// BenchmarkTransfer measures the bank transfer workload end to end in each
// branch mode, in one run: a starter with no database work calls two
// participants over HTTP, one subtracts, the other adds, each in its own
// branch on the shared MariaDB; the TxManager uses the Redis store. Each
// transfer uses one of 200 account pairs, so transfers rarely wait on each
// other's row locks. It reports transfers per second and the p50 and p99
// latency of a whole transfer (begin to commit decided), and checks at the
// end that the money is conserved.
//
//	go test -run '^$' -bench BenchmarkTransfer -benchtime 2000x ./internal/e2e
func BenchmarkTransfer(b *testing.B) {
	const conc = 8
	for _, mode := range []string{sqlproxy.ModeLCN, sqlproxy.ModeXA} {
		b.Run("mode="+mode, func(b *testing.B) {
			cfg := fastConfig()
			cfg.MessageRate, cfg.MessageBurst = 1e6, 1e6
			m := newManager(b, storeRedis, cfg)
			starter := newClient(b, m, "starter")
			pa := newParticipantWith(b, m, "svc-a", partOpts{mode: mode})
			pb := newParticipantWith(b, m, "svc-b", partOpts{mode: mode})
			const accounts = 200
			for _, p := range []*participant{pa, pb} {
				var vals []string
				for i := 3; i <= accounts; i++ {
					vals = append(vals, fmt.Sprintf("(%d, %d)", i, initialBalance))
				}
				if _, err := p.raw.Exec(`INSERT INTO accounts VALUES ` + strings.Join(vals, ",")); err != nil {
					b.Fatal(err)
				}
			}
			hc := &http.Client{Transport: txclient.Transport(&http.Transport{MaxIdleConnsPerHost: 2 * conc}), Timeout: 20 * time.Second}
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var seq int
			b.ResetTimer()
			start := time.Now()
			err := runPool(b.N, conc, func() error {
				mu.Lock()
				seq++
				acct := seq%accounts + 1
				mu.Unlock()
				t0 := time.Now()
				err := starter.Do(context.Background(), func(ctx context.Context) error {
					if err := call(ctx, hc, moveURL(pa, acct, -1, "")); err != nil {
						return err
					}
					return call(ctx, hc, moveURL(pb, acct, 1, ""))
				})
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				return err
			})
			elapsed := time.Since(start)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "transfers/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
			// Money is conserved once every branch applied the decision.
			deadline := time.Now().Add(30 * time.Second)
			for {
				var sa, sb int64
				if err := pa.raw.QueryRow(`SELECT SUM(balance) FROM accounts`).Scan(&sa); err != nil {
					b.Fatal(err)
				}
				if err := pb.raw.QueryRow(`SELECT SUM(balance) FROM accounts`).Scan(&sb); err != nil {
					b.Fatal(err)
				}
				if sa+sb == 2*accounts*initialBalance && sa == accounts*initialBalance-int64(b.N) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("money: a=%d b=%d after %d transfers", sa, sb, b.N)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
