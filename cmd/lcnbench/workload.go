package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Row choices.
const (
	rowsHot    = "hot"    // every transfer between account 1 of svc-a and account 1 of svc-b
	rowsSpread = "spread" // transfer i between account i%200+1 of svc-a and of svc-b
)

// cell is one measured combination.
type cell struct {
	mode, rows string
	conc       int
}

// sample is what one measurement of a cell produced.
type sample struct {
	tps       float64
	latencies []time.Duration // of the transfers inside the measured window
	errors    int
	firstErr  error
}

// ledger counts the transfers whose outcome moved money, for the
// conservation check: committed transfers moved 1 from svc-a to svc-b;
// unknown ones may or may not have.
type ledger struct {
	committed atomic.Int64
	unknown   atomic.Int64
}

// measure runs c's workload with c.conc workers for warmup+d and returns
// the throughput and latencies of the transfers that began and ended inside
// the last d.
func (e *env) measure(ctx context.Context, c cell, warmup, d time.Duration, led *ledger) sample {
	var seq atomic.Int64
	begin := time.Now()
	from, until := begin.Add(warmup), begin.Add(warmup+d)
	var mu sync.Mutex
	var s sample
	var wg sync.WaitGroup
	for range c.conc {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			var firstErr error
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				user := 1
				if c.rows == rowsSpread {
					user = int(seq.Add(1)%accounts) + 1
				}
				err := e.transfer(ctx, c.mode, user)
				t1 := time.Now()
				switch {
				case err == nil:
					led.committed.Add(1)
				case c.mode == modeBaseline || !errors.Is(err, errRolledBack):
					led.unknown.Add(1)
				}
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				if !t0.Before(from) && !t1.After(until) {
					lat = append(lat, t1.Sub(t0))
				}
			}
			mu.Lock()
			s.latencies = append(s.latencies, lat...)
			s.errors += errs
			if s.firstErr == nil {
				s.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	s.tps = float64(len(s.latencies)) / d.Seconds()
	return s
}

// errRolledBack marks a transfer whose group was rolled back: no money moved.
var errRolledBack = errors.New("rolled back")

// transfer moves 1 from svc-a's account user to svc-b's: in a group (lcn,
// xa), or as two independent local transactions (baseline). For a group,
// it returns when the commit decision is durable.
func (e *env) transfer(ctx context.Context, mode string, user int) error {
	u := strconv.Itoa(user)
	a := e.parts[0].url + "/move?mode=" + mode + "&user=" + u + "&delta=-1"
	b := e.parts[1].url + "/move?mode=" + mode + "&user=" + u + "&delta=1"
	if mode == modeBaseline {
		if err := e.call(ctx, a); err != nil {
			return err
		}
		return e.call(ctx, b)
	}
	var called bool
	err := e.starter.Do(ctx, func(ctx context.Context) error {
		if err := e.call(ctx, a); err != nil {
			return err
		}
		called = true
		return e.call(ctx, b)
	})
	if err != nil && !called {
		return fmt.Errorf("%w: %w", errRolledBack, err)
	}
	return err
}

// call POSTs to url (inside ctx's group, if any) and expects a 2xx.
func (e *env) call(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// settle waits until every committed transfer is applied in both databases
// (phase 2 is asynchronous) and checks that no money was created or lost.
// With unknown outcomes (failed baseline calls, lost answers) only the
// bounds can be checked.
func (e *env) settle(ctx context.Context, led *ledger, timeout time.Duration) error {
	const total = 2 * accounts * initialBalance
	deadline := time.Now().Add(timeout)
	for {
		a, b, err := e.balances(ctx)
		if err != nil {
			return err
		}
		moved := int64(accounts*initialBalance) - a
		c, u := led.committed.Load(), led.unknown.Load()
		switch {
		case u == 0 && a+b == total && moved == c:
			return nil
		case u > 0 && moved >= c && moved <= c+u && a+b <= total && a+b >= total-u:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("money not conserved after %v: svc-a %d + svc-b %d = %d, want %d; moved %d, committed transfers %d (%d unknown)",
				timeout, a, b, a+b, int64(total), moved, c, u)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// percentile returns the p-th percentile (0 < p < 1) of sorted ds, or 0.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// median returns the median of vs (not modified), or 0.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
