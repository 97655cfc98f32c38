// Package httpjson holds the JSON request and response helpers shared by the
// example services.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxBody bounds every request body the examples read.
const maxBody = 1 << 16

// Error is the body of every error answer: a machine-readable reason (for
// example "out_of_stock") and a message for people.
type Error struct {
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Write answers code with v as JSON.
func Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Fail answers code with an Error body.
func Fail(w http.ResponseWriter, code int, reason, format string, args ...any) {
	Write(w, code, Error{Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// Decode reads a JSON request body into v, rejecting unknown fields and
// trailing data.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	if dec.More() {
		return errors.New("decode request body: trailing data")
	}
	return nil
}
