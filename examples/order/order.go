// Package order is the example order service: the starter of a transaction
// group that spans three databases.
//
//	POST /orders {"user", "sku", "qty"}
//
// Each order runs in one group (txclient.Client.Do), and the order id is the
// group id. Inside it the service records the order in its own database,
// asks the stock service to reserve the goods, and asks the account service
// to charge the user; any refusal or failure rolls the whole group back, so
// either all three records exist or none does.
//
// Answers: 201 {"order_id", "status": "committed", "amount"}; 409
// {"status": "rolled_back", "reason"} for a business refusal (out_of_stock,
// insufficient_funds); 500 {"status": "rolled_back" | "unknown", "reason"}
// for failures; 503 {"status": "not_started"} when no group could be begun.
package order

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/httpjson"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/txclient"
)

// Statuses in answers.
const (
	StatusCommitted  = "committed"
	StatusRolledBack = "rolled_back"
	StatusUnknown    = "unknown"     // the commit's answer was lost; the group is all or nothing
	StatusNotStarted = "not_started" // no group was begun; nothing happened
)

// Reasons for a roll back that did not come from a participant's answer.
const (
	ReasonTxManager = "txmanager_rolled_back" // the TxManager refused the commit (a vote failed or the deadline passed)
	ReasonInternal  = "internal"
)

// Request is the body of POST /orders.
type Request struct {
	User string `json:"user"`
	SKU  string `json:"sku"`
	Qty  int64  `json:"qty"`
}

// Response answers POST /orders.
type Response struct {
	OrderID string `json:"order_id,omitempty"`
	Status  string `json:"status"`
	Amount  int64  `json:"amount,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Order is a recorded order.
type Order struct {
	ID   string
	User string
	SKU  string
	Qty  int64
}

// Options configures the service.
type Options struct {
	// StockURL and AccountURL are the participants' base URLs, for example
	// "http://127.0.0.1:8081". Required.
	StockURL, AccountURL string
	// HTTPClient calls the participants. Its Transport is wrapped with
	// txclient.Transport so that the group travels with every call. Default:
	// a client over http.DefaultTransport with a 30 s timeout.
	HTTPClient *http.Client
}

// Migrate creates the service's table if it does not exist.
func Migrate(ctx context.Context, db *sql.DB, d exdb.Dialect) error {
	return exdb.MigrateAll(ctx, db,
		`CREATE TABLE IF NOT EXISTS orders (
			id CHAR(32) NOT NULL PRIMARY KEY,
			username VARCHAR(64) NOT NULL,
			sku VARCHAR(64) NOT NULL,
			qty BIGINT NOT NULL)`+d.TableOptions(),
	)
}

// Orders returns every recorded order by id.
func Orders(ctx context.Context, db *sql.DB) (map[string]Order, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, username, sku, qty FROM orders`)
	if err != nil {
		return nil, fmt.Errorf("order: list: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Order)
	for rows.Next() {
		var o Order
		if err := rows.Scan(&o.ID, &o.User, &o.SKU, &o.Qty); err != nil {
			return nil, fmt.Errorf("order: list: %w", err)
		}
		out[o.ID] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("order: list: %w", err)
	}
	return out, nil
}

// New returns the service's HTTP handler. db must be opened through the
// golcn proxy (exdb.Open) with client as its coordinator.
func New(db *sql.DB, client *txclient.Client, opts Options) (http.Handler, error) {
	if opts.StockURL == "" || opts.AccountURL == "" {
		return nil, errors.New("order: StockURL and AccountURL are required")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient
		hc = &c
	}
	hc.Transport = txclient.Transport(hc.Transport)
	s := &service{db: db, client: client, http: hc,
		stockURL: strings.TrimSuffix(opts.StockURL, "/"), accountURL: strings.TrimSuffix(opts.AccountURL, "/")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.create)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux, nil
}

type service struct {
	db                   *sql.DB
	client               *txclient.Client
	http                 *http.Client
	stockURL, accountURL string
}

func (s *service) create(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := httpjson.Decode(r, &req); err != nil {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	if req.User == "" || req.SKU == "" || req.Qty <= 0 {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "user, sku and a positive qty are required")
		return
	}
	var (
		orderID string
		amount  int64
	)
	err := s.client.Do(r.Context(), func(ctx context.Context) error {
		orderID, _ = txclient.GroupID(ctx)
		var err error
		amount, err = s.place(ctx, orderID, req)
		return err
	})
	code, resp := answer(orderID, err)
	if resp.Status == StatusCommitted {
		resp.Amount = amount
	}
	httpjson.Write(w, code, resp)
}

// place does the order's work inside its group (ctx carries it) and returns
// the amount charged.
func (s *service) place(ctx context.Context, orderID string, req Request) (int64, error) {
	if err := s.record(ctx, orderID, req); err != nil {
		return 0, err
	}
	var res stock.ReserveResponse
	if err := s.call(ctx, "stock", s.stockURL+"/reserve", stock.ReserveRequest{OrderID: orderID, SKU: req.SKU, Qty: req.Qty}, &res); err != nil {
		return 0, err
	}
	amount := res.UnitPrice * req.Qty
	var charged account.ChargeResponse
	if err := s.call(ctx, "account", s.accountURL+"/charge", account.ChargeRequest{OrderID: orderID, User: req.User, Amount: amount}, &charged); err != nil {
		return 0, err
	}
	return amount, nil
}

// record inserts the order row in the group's branch of the order database;
// Commit votes and holds the transaction until the group is decided.
func (s *service) record(ctx context.Context, orderID string, req Request) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("order: begin: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, username, sku, qty) VALUES (?, ?, ?, ?)`,
		orderID, req.User, req.SKU, req.Qty); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("order: insert: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("order: commit (vote): %w", err)
	}
	return nil
}

// CallError is a participant's refusal or failure.
type CallError struct {
	Service string
	Status  int    // HTTP status, 0 if no answer came
	Reason  string // the participant's reason, or a description of the failure
	Message string
}

func (e *CallError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("order: call %s: %s: %s", e.Service, e.Reason, e.Message)
	}
	return fmt.Sprintf("order: call %s: %d %s: %s", e.Service, e.Status, e.Reason, e.Message)
}

// call POSTs in as JSON with ctx (carrying the group) and decodes a 2xx
// answer into out. Any other outcome is a *CallError.
func (s *service) call(ctx context.Context, svc, url string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("order: encode %s request: %w", svc, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("order: %s request: %w", svc, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return &CallError{Service: svc, Reason: svc + "_unreachable", Message: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return &CallError{Service: svc, Status: resp.StatusCode, Reason: svc + "_unreachable", Message: "read answer: " + err.Error()}
	}
	if resp.StatusCode/100 != 2 {
		var e httpjson.Error
		if json.Unmarshal(data, &e) != nil || e.Reason == "" {
			e = httpjson.Error{Reason: fmt.Sprintf("%s_http_%d", svc, resp.StatusCode), Message: strings.TrimSpace(string(data))}
		}
		return &CallError{Service: svc, Status: resp.StatusCode, Reason: e.Reason, Message: e.Message}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("order: decode %s answer: %w", svc, err)
	}
	return nil
}

// answer maps the outcome of a group to the HTTP answer.
func answer(orderID string, err error) (int, Response) {
	var ce *CallError
	switch {
	case err == nil:
		return http.StatusCreated, Response{OrderID: orderID, Status: StatusCommitted}
	case orderID == "":
		return http.StatusServiceUnavailable, Response{Status: StatusNotStarted, Reason: "txmanager_unavailable", Message: err.Error()}
	case errors.As(err, &ce):
		code := http.StatusInternalServerError
		if ce.Status == http.StatusConflict || ce.Status == http.StatusNotFound {
			code = http.StatusConflict // the participant refused: a business outcome
		}
		return code, Response{OrderID: orderID, Status: StatusRolledBack, Reason: ce.Reason, Message: ce.Error()}
	case errors.Is(err, txclient.ErrRolledBack):
		return http.StatusConflict, Response{OrderID: orderID, Status: StatusRolledBack, Reason: ReasonTxManager, Message: err.Error()}
	case errors.Is(err, txclient.ErrOutcomeUnknown):
		return http.StatusInternalServerError, Response{OrderID: orderID, Status: StatusUnknown, Reason: "outcome_unknown", Message: err.Error()}
	default:
		// fn failed before any participant answered (or the commit request
		// was never sent): the group is rolled back or expires.
		return http.StatusInternalServerError, Response{OrderID: orderID, Status: StatusRolledBack, Reason: ReasonInternal, Message: err.Error()}
	}
}
