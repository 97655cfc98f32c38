// Package account is the example account service: a participant that
// charges a user for an order inside the caller's transaction group.
//
//	POST /charge {"order_id", "user", "amount"}
//
// The request must carry a group (the Lcn-Group-Id header, read by the
// txclient middleware). The charge debits the balance if it is sufficient and
// records a payment keyed by the order id, in one local transaction whose
// commit is the branch's vote. An insufficient balance answers 409
// insufficient_funds and votes failed.
//
// # Fault injection
//
// Options.FailAfterWrite makes a fraction of charges fail after their work
// is done and voted: the branch is prepared, and the service then answers 500
// injected_failure. The starter must roll the group back, and the TxManager
// must roll back this prepared branch with everything else. Which charges
// fail is decided by a hash of the order id, so the same order always
// behaves the same way.
package account

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"

	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/httpjson"
	"github.com/golcn/golcn/txclient"
)

// Reasons in error answers.
const (
	ReasonInsufficientFunds = "insufficient_funds"
	ReasonUnknownUser       = "unknown_user"
	ReasonInjectedFailure   = "injected_failure"
)

// ChargeRequest is the body of POST /charge.
type ChargeRequest struct {
	OrderID string `json:"order_id"`
	User    string `json:"user"`
	Amount  int64  `json:"amount"`
}

// ChargeResponse answers a successful charge.
type ChargeResponse struct {
	OrderID string `json:"order_id"`
	User    string `json:"user"`
	Amount  int64  `json:"amount"`
}

// Account is one user's balance.
type Account struct {
	User    string
	Balance int64
}

// Payment is a charge recorded for an order.
type Payment struct {
	OrderID string
	User    string
	Amount  int64
}

// DemoAccounts is the demo's users: fifty accounts with 60 to 180 each.
func DemoAccounts() []Account {
	accts := make([]Account, 0, 50)
	for k := range int64(50) {
		accts = append(accts, Account{User: fmt.Sprintf("user-%02d", k), Balance: 60 + 30*(k%5)})
	}
	return accts
}

// Options configures the service.
type Options struct {
	// FailAfterWrite is the fraction (0 to 1) of charges that do their work,
	// vote prepared, and then answer 500 injected_failure.
	FailAfterWrite float64
}

// InjectsFailure reports whether a charge for orderID fails after its write
// under the given rate. It depends on nothing but its arguments.
func InjectsFailure(orderID string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(orderID))
	return float64(h.Sum64()%1_000_000) < rate*1_000_000
}

// Migrate creates the service's tables if they do not exist.
func Migrate(ctx context.Context, db *sql.DB, d exdb.Dialect) error {
	return exdb.MigrateAll(ctx, db,
		`CREATE TABLE IF NOT EXISTS accounts (
			username VARCHAR(64) NOT NULL PRIMARY KEY,
			balance BIGINT NOT NULL CHECK (balance >= 0))`+d.TableOptions(),
		`CREATE TABLE IF NOT EXISTS payments (
			order_id CHAR(32) NOT NULL PRIMARY KEY,
			username VARCHAR(64) NOT NULL,
			amount BIGINT NOT NULL)`+d.TableOptions(),
	)
}

// Seed inserts accts if the accounts table is empty, and reports whether it
// did.
func Seed(ctx context.Context, db *sql.DB, accts []Account) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("account: seed: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts`).Scan(&n); err != nil {
		return false, fmt.Errorf("account: seed: count: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	for _, a := range accts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (username, balance) VALUES (?, ?)`, a.User, a.Balance); err != nil {
			return false, fmt.Errorf("account: seed %s: %w", a.User, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("account: seed: commit: %w", err)
	}
	return true, nil
}

// Balances returns every user's balance.
func Balances(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, `SELECT username, balance FROM accounts`)
	if err != nil {
		return nil, fmt.Errorf("account: balances: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int64)
	for rows.Next() {
		var a Account
		if err := rows.Scan(&a.User, &a.Balance); err != nil {
			return nil, fmt.Errorf("account: balances: %w", err)
		}
		out[a.User] = a.Balance
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("account: balances: %w", err)
	}
	return out, nil
}

// Payments returns every recorded charge by order id.
func Payments(ctx context.Context, db *sql.DB) (map[string]Payment, error) {
	rows, err := db.QueryContext(ctx, `SELECT order_id, username, amount FROM payments`)
	if err != nil {
		return nil, fmt.Errorf("account: payments: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Payment)
	for rows.Next() {
		var p Payment
		if err := rows.Scan(&p.OrderID, &p.User, &p.Amount); err != nil {
			return nil, fmt.Errorf("account: payments: %w", err)
		}
		out[p.OrderID] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("account: payments: %w", err)
	}
	return out, nil
}

// New returns the service's HTTP handler. db must be opened through the
// golcn proxy (exdb.Open) with client as its coordinator; client also
// confirms the group of each incoming request.
func New(db *sql.DB, client *txclient.Client, opts Options) http.Handler {
	s := &service{db: db, opts: opts}
	mux := http.NewServeMux()
	mux.Handle("POST /charge", client.Middleware(http.HandlerFunc(s.charge)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

type service struct {
	db   *sql.DB
	opts Options
}

// Business refusals: the local transaction rolls back (voting failed).
var (
	errInsufficientFunds = errors.New("insufficient funds")
	errUnknownUser       = errors.New("unknown user")
)

func (s *service) charge(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if _, ok := txclient.GroupID(ctx); !ok {
		httpjson.Fail(w, http.StatusBadRequest, "no_group", "POST /charge must be called inside a transaction group (%s header)", txclient.Header)
		return
	}
	var req ChargeRequest
	if err := httpjson.Decode(r, &req); err != nil {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	if req.OrderID == "" || req.User == "" || req.Amount <= 0 {
		httpjson.Fail(w, http.StatusBadRequest, "bad_request", "order_id, user and a positive amount are required")
		return
	}
	err := s.chargeTx(ctx, req)
	switch {
	case errors.Is(err, errInsufficientFunds):
		httpjson.Fail(w, http.StatusConflict, ReasonInsufficientFunds, "%s cannot pay %d", req.User, req.Amount)
	case errors.Is(err, errUnknownUser):
		httpjson.Fail(w, http.StatusNotFound, ReasonUnknownUser, "no user %q", req.User)
	case err != nil:
		httpjson.Fail(w, http.StatusInternalServerError, "internal", "charge %s for order %s: %v", req.User, req.OrderID, err)
	case InjectsFailure(req.OrderID, s.opts.FailAfterWrite):
		// The branch has voted prepared; failing now leaves the rollback
		// to the group.
		httpjson.Fail(w, http.StatusInternalServerError, ReasonInjectedFailure, "injected failure after charging order %s", req.OrderID)
	default:
		httpjson.Write(w, http.StatusOK, ChargeResponse(req))
	}
}

// chargeTx runs the charge in the group's branch (ctx carries the group).
// Commit is the vote.
func (s *service) chargeTx(ctx context.Context, req ChargeRequest) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // votes failed
		}
	}()
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - ? WHERE username = ? AND balance >= ?`,
		req.Amount, req.User, req.Amount)
	if err != nil {
		return fmt.Errorf("debit: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("debit: %w", err)
	}
	if n == 0 {
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE username = ?`, req.User).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			return errUnknownUser
		case err != nil:
			return fmt.Errorf("look up user: %w", err)
		}
		return errInsufficientFunds
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO payments (order_id, username, amount) VALUES (?, ?, ?)`,
		req.OrderID, req.User, req.Amount); err != nil {
		return fmt.Errorf("record payment: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit (vote): %w", err)
	}
	return nil
}
