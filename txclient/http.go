package txclient

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/golcn/golcn/internal/failpoint"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/groupctx"
)

// Header is the HTTP header that carries the group id between services.
const Header = "Lcn-Group-Id"

// Transport returns an http.RoundTripper that sets Header on every request
// whose context carries a group, then calls base (http.DefaultTransport if
// nil).
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base}
}

type transport struct{ base http.RoundTripper }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	g, ok := groupctx.From(req.Context())
	if !ok {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set(Header, g)
	return t.base.RoundTrip(r)
}

// Middleware returns a handler that reads Header into the request's context,
// so that database work in next joins the group. A request without the
// header passes through untouched. A malformed id is answered 400; a group
// the TxManager does not know or has already decided is answered 409 and next
// is not called (no transaction is opened); a TxManager that cannot be asked
// gives 503. A group confirmed ACTIVE is remembered until its deadline, so
// the TxManager is asked once per group per process.
func (c *Client) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values(Header)
		if len(vals) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if len(vals) > 1 {
			httpError(w, http.StatusBadRequest, "malformed "+Header+" header: sent more than once")
			return
		}
		id, err := gid.Parse(vals[0])
		if err != nil {
			httpError(w, http.StatusBadRequest, "malformed "+Header+" header: "+err.Error())
			return
		}
		if failpoint.Enabled {
			var done func()
			w, done = fpBranchDelay(w, id)
			defer done()
		}
		if !c.active.has(id, c.now()) {
			state, deadline, err := c.queryActive(r, id)
			switch {
			case errors.Is(err, ErrGroupNotActive):
				httpError(w, http.StatusConflict, "group "+id+" is not active: unknown to the TxManager")
				return
			case err != nil:
				httpError(w, http.StatusServiceUnavailable, "cannot confirm group "+id+" with the TxManager: "+err.Error())
				return
			case state != "ACTIVE":
				httpError(w, http.StatusConflict, "group "+id+" is not active: "+state)
				return
			}
			c.active.add(id, deadline)
		}
		next.ServeHTTP(w, r.WithContext(groupctx.With(r.Context(), id)))
	})
}

func (c *Client) queryActive(r *http.Request, id string) (string, time.Time, error) {
	resp, err := c.request(r.Context(), queryMsg(id))
	if remoteCode(err) == "not_found" {
		return "", time.Time{}, ErrGroupNotActive
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return resp.State, time.UnixMilli(resp.Deadline), nil
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

// activeCache remembers groups confirmed ACTIVE, until their deadline.
type activeCache struct {
	mu sync.Mutex // guards m
	m  map[string]time.Time
}

func (a *activeCache) add(id string, deadline time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = make(map[string]time.Time)
	}
	if len(a.m) > 100000 {
		a.m = make(map[string]time.Time) // bound memory; entries are only a cache
	}
	a.m[id] = deadline
}

func (a *activeCache) has(id string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	d, ok := a.m[id]
	if ok && !now.Before(d) {
		delete(a.m, id)
		return false
	}
	return ok
}

func (a *activeCache) remove(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, id)
}
