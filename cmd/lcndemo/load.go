package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/order"
	"github.com/golcn/golcn/examples/stock"
)

// result is what one order got.
type result struct {
	req     order.Request
	code    int // HTTP status; 0 if no answer
	resp    order.Response
	err     error // transport or decoding failure
	latency time.Duration
}

// plan returns n orders drawn from a generator seeded with seed. Besides
// random small orders over the ordinary SKUs, it guarantees each kind of
// business refusal whatever the interleaving:
//   - every 20th order (from the 8th) asks for more of a SKU than was ever
//     in stock: out of stock;
//   - every 20th order (from the 14th) buys a SKU whose price exceeds every
//     balance: insufficient funds (its stock is never used up, since no
//     charge for it can succeed).
func plan(n int, seed uint64, items []stock.Item, accts []account.Account) ([]order.Request, error) {
	var maxQty, maxBalance int64
	for _, it := range items {
		maxQty = max(maxQty, it.Qty)
	}
	for _, a := range accts {
		maxBalance = max(maxBalance, a.Balance)
	}
	var ordinary []stock.Item
	var luxury *stock.Item
	for i, it := range items {
		switch {
		case it.Price > maxBalance:
			luxury = &items[i]
		default:
			ordinary = append(ordinary, it)
		}
	}
	if luxury == nil || len(ordinary) == 0 || len(accts) == 0 {
		return nil, fmt.Errorf("demo data: need ordinary SKUs, users, and one SKU nobody can afford")
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c636e64656d6f)) // "lcndemo"
	reqs := make([]order.Request, n)
	for i := range reqs {
		user := accts[rng.IntN(len(accts))].User
		it := ordinary[rng.IntN(len(ordinary))]
		qty := 1 + rng.Int64N(3)
		switch i % 20 {
		case 7:
			qty = maxQty + 1
		case 13:
			it, qty = *luxury, 1
		}
		reqs[i] = order.Request{User: user, SKU: it.SKU, Qty: qty}
	}
	return reqs, nil
}

// placeOrders posts reqs to the order service with the given concurrency
// and returns the results in plan order. When ctx ends it places no more
// orders (leaving their results empty) but lets those in flight finish, so
// that every order placed has a known answer.
func placeOrders(ctx context.Context, orderURL string, reqs []order.Request, concurrency int, bar *progressbar.ProgressBar) []result {
	reqCtx := context.WithoutCancel(ctx)
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	results := make([]result, len(reqs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = placeOrder(reqCtx, hc, orderURL, reqs[i])
				_ = bar.Add(1)
			}
		}()
	}
feed:
	for i := range reqs {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return results
}

func placeOrder(ctx context.Context, hc *http.Client, orderURL string, req order.Request) (r result) {
	r.req = req
	start := time.Now()
	defer func() { r.latency = time.Since(start) }()
	body, err := json.Marshal(req)
	if err != nil {
		r.err = err
		return r
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, orderURL+"/orders", bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.code = resp.StatusCode
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err == nil {
		err = json.Unmarshal(data, &r.resp)
	}
	if err != nil {
		r.err = fmt.Errorf("order answer (HTTP %d): %w", resp.StatusCode, err)
	}
	return r
}
