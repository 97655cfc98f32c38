// Package stock is the example stock service: a participant that reserves
// goods for an order inside the caller's transaction group.
//
//	POST /reserve {"order_id", "sku", "qty"}
//
// The request must carry a group (the Lcn-Group-Id header, read by the
// txclient middleware). The reservation decrements the SKU's quantity if
// enough is left and records a movement keyed by the order id, in one local
// transaction whose commit is the branch's vote: it becomes visible only if
// the whole group commits. Not enough stock answers 409 out_of_stock and
// votes failed, so the group rolls back.
package stock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/httpjson"
	"github.com/golcn/golcn/txclient"
)

// Reasons in error answers.
const (
	ReasonOutOfStock = "out_of_stock"
	ReasonUnknownSKU = "unknown_sku"
)

// ReserveRequest is the body of POST /reserve.
type ReserveRequest struct {
	OrderID string `json:"order_id"`
	SKU     string `json:"sku"`
	Qty     int64  `json:"qty"`
}

// ReserveResponse answers a successful reservation.
type ReserveResponse struct {
	OrderID   string `json:"order_id"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	UnitPrice int64  `json:"unit_price"`
}

// Item is one SKU's stock level and unit price.
type Item struct {
	SKU   string
	Qty   int64
	Price int64
}

// Movement is a reservation recorded for an order.
type Movement struct {
	OrderID   string
	SKU       string
	Qty       int64
	UnitPrice int64
}

// DemoItems is the demo catalogue: nine SKUs in short supply and one (a
// yacht) that no demo account can afford.
func DemoItems() []Item {
	items := make([]Item, 0, 10)
	for k := range int64(9) {
		items = append(items, Item{SKU: fmt.Sprintf("sku-%02d", k), Qty: 20 + 8*k, Price: 3 + 2*k})
	}
	return append(items, Item{SKU: "sku-yacht", Qty: 2, Price: 1_000_000})
}

// Migrate creates the service's tables if they do not exist.
func Migrate(ctx context.Context, db *sql.DB, d exdb.Dialect) error {
	return exdb.MigrateAll(ctx, db,
		`CREATE TABLE IF NOT EXISTS stock (
			sku VARCHAR(64) NOT NULL PRIMARY KEY,
			qty BIGINT NOT NULL CHECK (qty >= 0),
			price BIGINT NOT NULL CHECK (price > 0))`+d.TableOptions(),
		`CREATE TABLE IF NOT EXISTS movements (
			order_id CHAR(32) NOT NULL PRIMARY KEY,
			sku VARCHAR(64) NOT NULL,
			qty BIGINT NOT NULL,
			unit_price BIGINT NOT NULL)`+d.TableOptions(),
	)
}

// Seed inserts items if the stock table is empty, and reports whether it
// did.
func Seed(ctx context.Context, db *sql.DB, items []Item) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("stock: seed: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM stock`).Scan(&n); err != nil {
		return false, fmt.Errorf("stock: seed: count: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	for _, it := range items {
		if _, err := tx.ExecContext(ctx, `INSERT INTO stock (sku, qty, price) VALUES (?, ?, ?)`, it.SKU, it.Qty, it.Price); err != nil {
			return false, fmt.Errorf("stock: seed %s: %w", it.SKU, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("stock: seed: commit: %w", err)
	}
	return true, nil
}

// Levels returns every SKU's current stock.
func Levels(ctx context.Context, db *sql.DB) (map[string]Item, error) {
	rows, err := db.QueryContext(ctx, `SELECT sku, qty, price FROM stock`)
	if err != nil {
		return nil, fmt.Errorf("stock: levels: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Item)
	for rows.Next() {
		var it Item
		if err := rows.Scan(&it.SKU, &it.Qty, &it.Price); err != nil {
			return nil, fmt.Errorf("stock: levels: %w", err)
		}
		out[it.SKU] = it
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stock: levels: %w", err)
	}
	return out, nil
}

// Movements returns every recorded reservation by order id.
func Movements(ctx context.Context, db *sql.DB) (map[string]Movement, error) {
	rows, err := db.QueryContext(ctx, `SELECT order_id, sku, qty, unit_price FROM movements`)
	if err != nil {
		return nil, fmt.Errorf("stock: movements: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Movement)
	for rows.Next() {
		var m Movement
		if err := rows.Scan(&m.OrderID, &m.SKU, &m.Qty, &m.UnitPrice); err != nil {
			return nil, fmt.Errorf("stock: movements: %w", err)
		}
		out[m.OrderID] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stock: movements: %w", err)
	}
	return out, nil
}

// New returns the service's HTTP handler. db must be opened through the
// golcn proxy (exdb.Open) with client as its coordinator; client also
// confirms the group of each incoming request.
func New(db *sql.DB, client *txclient.Client) http.Handler {
	s := &service{db: db}
	mux := http.NewServeMux()
	mux.Handle("POST /reserve", client.Middleware(http.HandlerFunc(s.reserve)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

type service struct{ db *sql.DB }

// errOutOfStock and errUnknownSKU are business refusals: the local
// transaction rolls back (voting failed).
var (
	errOutOfStock = errors.New("not enough stock")
	errUnknownSKU = errors.New("unknown sku")
)

func (s *service) reserve(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if _, ok := txclient.GroupID(ctx); !ok {
		httpjson.Fail(w, http.StatusBadRequest, "no_group", "POST /reserve must be called inside a transaction group (%s header)", txclient.Header)
		return
	}
	var req ReserveRequest
	if err := httpjson.Decode(r, &req); err != nil {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	if req.OrderID == "" || req.SKU == "" || req.Qty <= 0 {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "order_id, sku and a positive qty are required")
		return
	}
	price, err := s.reserveTx(ctx, req)
	switch {
	case errors.Is(err, errOutOfStock):
		httpjson.Fail(w, http.StatusConflict, ReasonOutOfStock, "%s: fewer than %d left", req.SKU, req.Qty)
	case errors.Is(err, errUnknownSKU):
		httpjson.Fail(w, http.StatusNotFound, ReasonUnknownSKU, "no sku %q", req.SKU)
	case err != nil:
		httpjson.Fail(w, http.StatusInternalServerError, "internal", "reserve %s for order %s: %v", req.SKU, req.OrderID, err)
	default:
		httpjson.Write(w, http.StatusOK, ReserveResponse{OrderID: req.OrderID, SKU: req.SKU, Qty: req.Qty, UnitPrice: price})
	}
}

// reserveTx runs the reservation in the group's branch (ctx carries the
// group). Commit is the vote: it returns once the TxManager has recorded
// the branch as prepared, and the work stays invisible until the decision.
func (s *service) reserveTx(ctx context.Context, req ReserveRequest) (price int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // votes failed
		}
	}()
	res, err := tx.ExecContext(ctx, `UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?`, req.Qty, req.SKU, req.Qty)
	if err != nil {
		return 0, fmt.Errorf("update stock: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("update stock: %w", err)
	}
	// Read the price in the same transaction: it also tells an unknown SKU
	// from one that ran out.
	switch err := tx.QueryRowContext(ctx, `SELECT price FROM stock WHERE sku = ?`, req.SKU).Scan(&price); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, errUnknownSKU
	case err != nil:
		return 0, fmt.Errorf("read price: %w", err)
	}
	if n == 0 {
		return 0, errOutOfStock
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO movements (order_id, sku, qty, unit_price) VALUES (?, ?, ?, ?)`,
		req.OrderID, req.SKU, req.Qty, price); err != nil {
		return 0, fmt.Errorf("record movement: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit (vote): %w", err)
	}
	return price, nil
}
