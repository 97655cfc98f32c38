package order

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/golcn/golcn/txclient"
)

func TestAnswer(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name       string
		orderID    string
		err        error
		code       int
		status     string
		wantReason string
	}{
		{"committed", id, nil, http.StatusCreated, StatusCommitted, ""},
		{"no group", "", errors.New("txclient: begin group: no session"), http.StatusServiceUnavailable, StatusNotStarted, "txmanager_unavailable"},
		{"out of stock", id, &CallError{Service: "stock", Status: 409, Reason: "out_of_stock"}, http.StatusConflict, StatusRolledBack, "out_of_stock"},
		{"injected", id, fmt.Errorf("wrapped: %w", &CallError{Service: "account", Status: 500, Reason: "injected_failure"}), http.StatusInternalServerError, StatusRolledBack, "injected_failure"},
		{"unreachable", id, &CallError{Service: "stock", Reason: "stock_unreachable"}, http.StatusInternalServerError, StatusRolledBack, "stock_unreachable"},
		{"tm rolled back", id, fmt.Errorf("%w: group %s: deadline", txclient.ErrRolledBack, id), http.StatusConflict, StatusRolledBack, ReasonTxManager},
		{"unknown", id, fmt.Errorf("%w: group %s", txclient.ErrOutcomeUnknown, id), http.StatusInternalServerError, StatusUnknown, "outcome_unknown"},
		{"local failure", id, errors.New("order: insert: disk full"), http.StatusInternalServerError, StatusRolledBack, ReasonInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := answer(tc.orderID, tc.err)
			if code != tc.code || resp.Status != tc.status || resp.Reason != tc.wantReason || resp.OrderID != tc.orderID {
				t.Errorf("answer = %d %+v; want %d, status %s, reason %q, order %q", code, resp, tc.code, tc.status, tc.wantReason, tc.orderID)
			}
		})
	}
}
