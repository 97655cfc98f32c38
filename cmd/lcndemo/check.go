package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/order"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/txmanager"
)

// Check is one verdict of the summary.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// converge asks the TxManager about every group until all are terminal or
// timeout passes, and returns the last view of each (a group the TxManager
// does not know has State "UNKNOWN").
func converge(ctx context.Context, tmURL, adminToken string, ids []string, timeout time.Duration) (map[string]txmanager.GroupView, error) {
	hc := &http.Client{Transport: bearer{token: adminToken, base: &http.Transport{}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	views := make(map[string]txmanager.GroupView, len(ids))
	pending := slices.Clone(ids)
	deadline := time.Now().Add(timeout)
	for {
		var next []string
		for _, id := range pending {
			v, err := groupView(ctx, hc, tmURL, id)
			if err != nil {
				return nil, err
			}
			views[id] = v
			if v.State != txmanager.GroupCommitted.String() && v.State != txmanager.GroupRolledBack.String() {
				next = append(next, id)
			}
		}
		pending = next
		if len(pending) == 0 || time.Now().After(deadline) {
			return views, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for convergence: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	base  *http.Transport
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func (b bearer) CloseIdleConnections() { b.base.CloseIdleConnections() }

func groupView(ctx context.Context, hc *http.Client, tmURL, id string) (txmanager.GroupView, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tmURL+"/v1/groups/"+id, nil)
	if err != nil {
		return txmanager.GroupView{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return txmanager.GroupView{}, fmt.Errorf("ask the TxManager about group %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return txmanager.GroupView{ID: id, State: "UNKNOWN"}, nil
	}
	var v txmanager.GroupView
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("ask the TxManager about group %s: HTTP %d", id, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("ask the TxManager about group %s: %w", id, err)
	}
	return v, nil
}

// snapshot is the three databases' contents after the run.
type snapshot struct {
	orders    map[string]order.Order
	levels    map[string]stock.Item
	movements map[string]stock.Movement
	balances  map[string]int64
	payments  map[string]account.Payment
}

func readSnapshot(ctx context.Context, c *cluster) (s snapshot, err error) {
	if s.orders, err = order.Orders(ctx, c.orderDB); err != nil {
		return s, err
	}
	if s.levels, err = stock.Levels(ctx, c.stockDB); err != nil {
		return s, err
	}
	if s.movements, err = stock.Movements(ctx, c.stockDB); err != nil {
		return s, err
	}
	if s.balances, err = account.Balances(ctx, c.acctDB); err != nil {
		return s, err
	}
	if s.payments, err = account.Payments(ctx, c.acctDB); err != nil {
		return s, err
	}
	return s, nil
}

// checks verifies the run against the databases and the TxManager.
func checks(results []result, views map[string]txmanager.GroupView, snap snapshot, items []stock.Item, accts []account.Account) []Check {
	committed := func(id string) bool { return views[id].State == txmanager.GroupCommitted.String() }
	return []Check{
		checkOutcomes(results, views),
		checkAtomic(results, views, snap),
		checkStock(items, snap, committed),
		checkMoney(accts, snap, committed),
	}
}

// checkOutcomes: every order got a definite answer, and the TxManager agrees
// with it.
func checkOutcomes(results []result, views map[string]txmanager.GroupView) Check {
	c := Check{Name: "every order answered, and the TxManager agrees", OK: true}
	var bad []string
	for _, r := range results {
		id := r.resp.OrderID
		want := ""
		switch r.resp.Status {
		case order.StatusCommitted:
			want = txmanager.GroupCommitted.String()
		case order.StatusRolledBack:
			want = txmanager.GroupRolledBack.String()
		}
		switch {
		case r.err != nil:
			bad = append(bad, fmt.Sprintf("order %+v: %v", r.req, r.err))
		case want == "":
			bad = append(bad, fmt.Sprintf("order %s %+v: status %q: %s", id, r.req, r.resp.Status, r.resp.Message))
		case views[id].State != want:
			bad = append(bad, fmt.Sprintf("order %s answered %s but the TxManager says %s", id, r.resp.Status, views[id].State))
		}
	}
	c.Detail = fmt.Sprintf("%d orders", len(results))
	if len(bad) > 0 {
		c.OK = false
		c.Detail = fmt.Sprintf("%d of %d orders: first: %s", len(bad), len(results), bad[0])
	}
	return c
}

// checkAtomic: for every order id, the order row, the movement and the
// payment are all present or all absent, present iff the group committed,
// and agree with each other.
func checkAtomic(results []result, views map[string]txmanager.GroupView, snap snapshot) Check {
	c := Check{Name: "no order half-applied", OK: true}
	ids := make(map[string]bool)
	for _, r := range results {
		if r.resp.OrderID != "" {
			ids[r.resp.OrderID] = true
		}
	}
	for id := range snap.orders {
		ids[id] = true
	}
	for id := range snap.movements {
		ids[id] = true
	}
	for id := range snap.payments {
		ids[id] = true
	}
	var bad []string
	var all, none int
	for id := range ids {
		o, hasO := snap.orders[id]
		m, hasM := snap.movements[id]
		p, hasP := snap.payments[id]
		v, known := views[id]
		committed := known && v.State == txmanager.GroupCommitted.String()
		switch {
		case !known:
			bad = append(bad, fmt.Sprintf("order %s: rows (order %v, movement %v, payment %v) for a group the demo never saw", id, hasO, hasM, hasP))
		case hasO && hasM && hasP && committed:
			all++
			if o.SKU != m.SKU || o.Qty != m.Qty || o.User != p.User || p.Amount != m.Qty*m.UnitPrice {
				bad = append(bad, fmt.Sprintf("order %s: rows disagree: %+v %+v %+v", id, o, m, p))
			}
		case !hasO && !hasM && !hasP && !committed:
			none++
		default:
			bad = append(bad, fmt.Sprintf("order %s (group %s): order row %v, movement %v, payment %v", id, v.State, hasO, hasM, hasP))
		}
	}
	c.Detail = fmt.Sprintf("%d orders fully applied, %d not at all", all, none)
	if len(bad) > 0 {
		slices.Sort(bad)
		c.OK = false
		c.Detail = fmt.Sprintf("%d violations: first: %s", len(bad), bad[0])
	}
	return c
}

// checkStock: per SKU, initial = remaining + reserved by committed orders.
func checkStock(items []stock.Item, snap snapshot, committed func(string) bool) Check {
	c := Check{Name: "stock conserved", OK: true}
	reserved := make(map[string]int64)
	for id, m := range snap.movements {
		if committed(id) {
			reserved[m.SKU] += m.Qty
		}
	}
	var initial, remaining, total int64
	var bad []string
	for _, it := range items {
		left := snap.levels[it.SKU].Qty
		initial += it.Qty
		remaining += left
		total += reserved[it.SKU]
		if it.Qty != left+reserved[it.SKU] {
			bad = append(bad, fmt.Sprintf("%s: initial %d != remaining %d + reserved %d", it.SKU, it.Qty, left, reserved[it.SKU]))
		}
	}
	if len(snap.levels) != len(items) {
		bad = append(bad, fmt.Sprintf("%d SKUs in the database, %d seeded", len(snap.levels), len(items)))
	}
	c.Detail = fmt.Sprintf("%d SKUs: initial %d = remaining %d + reserved by committed orders %d", len(items), initial, remaining, total)
	if len(bad) > 0 {
		c.OK = false
		c.Detail = fmt.Sprintf("%d SKUs wrong: first: %s", len(bad), bad[0])
	}
	return c
}

// checkMoney: per user, initial = balance + charged by committed orders.
func checkMoney(accts []account.Account, snap snapshot, committed func(string) bool) Check {
	c := Check{Name: "money conserved", OK: true}
	charged := make(map[string]int64)
	for id, p := range snap.payments {
		if committed(id) {
			charged[p.User] += p.Amount
		}
	}
	var initial, balances, total int64
	var bad []string
	for _, a := range accts {
		bal := snap.balances[a.User]
		initial += a.Balance
		balances += bal
		total += charged[a.User]
		if a.Balance != bal+charged[a.User] {
			bad = append(bad, fmt.Sprintf("%s: initial %d != balance %d + charged %d", a.User, a.Balance, bal, charged[a.User]))
		}
	}
	if len(snap.balances) != len(accts) {
		bad = append(bad, fmt.Sprintf("%d accounts in the database, %d seeded", len(snap.balances), len(accts)))
	}
	c.Detail = fmt.Sprintf("%d users: initial %d = balances %d + charged by committed orders %d", len(accts), initial, balances, total)
	if len(bad) > 0 {
		c.OK = false
		c.Detail = fmt.Sprintf("%d users wrong: first: %s", len(bad), bad[0])
	}
	return c
}
