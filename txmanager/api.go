package txmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The HTTP API: routes, authentication, and the one JSON error shape. The
// endpoints are documented in docs/openapi.yaml; TestOpenAPIMatchesRoutes
// holds the two together.

// route is one endpoint of Handler.
type route struct {
	method string // "" for every method
	path   string // a net/http ServeMux path pattern
	// role is what the caller needs: 0 no credentials, RoleService, or
	// RoleAdmin (which an admin page session also has).
	role Role
	// counted requests are requests in progress for Drain.
	counted bool
	// documented routes are in docs/openapi.yaml (the admin page's own
	// routes are documented in docs/operations.md).
	documented bool
	h          http.HandlerFunc
}

// routes lists every endpoint Handler serves. It is the one list: Handler
// registers exactly these, and the OpenAPI test walks them.
func (s *Server) routes() []route {
	op := func(method, path string, h http.HandlerFunc) route {
		return route{method: method, path: path, role: RoleAdmin, counted: true, documented: true, h: h}
	}
	svc := func(method, path string, h http.HandlerFunc) route {
		return route{method: method, path: path, role: RoleService, counted: true, documented: true, h: h}
	}
	rs := []route{
		{method: http.MethodGet, path: "/healthz", documented: true, h: s.serveHealthz},
		{method: http.MethodGet, path: "/readyz", documented: true, h: s.serveReadyz},
		{method: http.MethodGet, path: "/metrics", documented: true,
			h: promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{s}}).ServeHTTP},
		{method: http.MethodGet, path: "/v1/ws", documented: true, h: s.serveWS}, // authenticates itself
		op(http.MethodGet, "/v1/overview", s.serveOverview),
		op(http.MethodGet, "/v1/groups", s.serveListGroups),
		op(http.MethodGet, "/v1/groups/{id}", s.serveGroup),
		op(http.MethodPost, "/v1/groups/{id}/retry", s.serveRetryGroup),
		op(http.MethodGet, "/v1/compensations", s.serveCompensations),
		op(http.MethodPost, "/v1/compensations/{id}/retry", s.serveRetryCompensation),
		op(http.MethodPost, "/v1/compensations/{id}/resolve", s.serveResolve),
		svc(http.MethodPost, "/v1/groups", s.serveCreate),
		svc(http.MethodPost, "/v1/groups/{id}/decide", s.serveDecide),
		svc(http.MethodPost, "/v1/groups/{id}/branches", s.serveJoin),
		svc(http.MethodGet, "/v1/groups/{id}/branches/{branch}", s.serveBranch),
		svc(http.MethodPost, "/v1/groups/{id}/branches/{branch}/vote", s.serveVote),
		svc(http.MethodPost, "/v1/groups/{id}/branches/{branch}/ack", s.serveAck),
	}
	if s.ui != nil {
		rs = append(rs, route{path: "/admin/", h: s.ui.Handler().ServeHTTP})
	}
	return rs
}

// Handler returns the TxManager's HTTP handler: the client websocket at
// /v1/ws, the REST API under /v1 (docs/openapi.yaml), /healthz, /readyz
// and /metrics (no credentials), and the admin page at /admin/ when
// configured (WithAdminUI). Every other request is authenticated with the
// current credentials; request bodies are bounded by MaxBodyBytes; every
// error is answered with the JSON error shape, unknown paths (404) and
// methods (405) included.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	methods := map[string][]string{}
	for _, rt := range s.routes() {
		h := http.Handler(rt.h)
		if rt.role != 0 {
			h = s.requireRole(rt.role, h)
		}
		if rt.counted {
			h = s.counting(h)
		}
		if rt.method == "" {
			mux.Handle(rt.path, h)
			continue
		}
		mux.Handle(rt.method+" "+rt.path, h)
		methods[rt.path] = append(methods[rt.path], rt.method)
	}
	for path, ms := range methods {
		allow := strings.Join(ms, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, path, allow))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path+" (see docs/openapi.yaml)")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		mux.ServeHTTP(w, r)
	})
}

// counting counts the request as in progress for Drain.
func (s *Server) counting(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.add()
		defer s.requests.done()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, http.StatusServiceUnavailable, "draining for shutdown")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unreachable: "+err.Error())
		return
	}
	body := map[string]any{"status": "ready"}
	if s.auth.Load().cfg.Insecure {
		body["insecure"] = true
		body["warning"] = "authentication disabled (auth.insecure)"
	}
	writeJSON(w, http.StatusOK, body)
}

// principalKey is the request context key of the authenticated principal.
type principalKey struct{}

// principalOf returns the principal requireRole put in r's context.
func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// requireRole authenticates the request (bearer token, client
// certificate, or, without an Authorization header, an admin page
// session) and refuses callers without role. A session has the admin role
// but acts as no service, and a state-changing request it authenticates
// needs its CSRF token.
func (s *Server) requireRole(role Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		switch {
		case p.session && role != RoleAdmin:
			writeError(w, http.StatusForbidden, "an admin page session may use the operator endpoints only; services use a token")
			return
		case p.session && r.Method != http.MethodGet && r.Method != http.MethodHead && !s.ui.CheckCSRF(r):
			s.log.Warn("request refused: CSRF token missing or wrong", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "CSRF token missing or wrong (header X-CSRF-Token)")
			return
		case p.role < role:
			s.log.Warn("request refused: role", "service", p.service, "role", p.role, "need", role, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "this endpoint needs the "+role.String()+" role")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// authenticate identifies the caller of a REST request.
func (s *Server) authenticate(r *http.Request) (principal, error) {
	if s.ui != nil && r.Header.Get("Authorization") == "" {
		if name, ok := s.ui.Authenticate(r); ok {
			return principal{name: name, role: RoleAdmin, session: true}, nil
		}
	}
	return s.auth.Load().authenticate(r, s.now())
}

// refuse answers an authentication failure and logs it (never the
// credential itself).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusUnauthorized
	var ae *errAuth
	if errors.As(err, &ae) {
		code = ae.status
	}
	s.log.Warn("request refused: authentication", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", err.Error())
	writeError(w, code, err.Error())
}

// apiError is an error answer: the HTTP status, a message, and the
// parameter at fault (400) or the group's state (409).
type apiError struct {
	code  int
	msg   string
	param string
	state string
}

func (e *apiError) Error() string { return e.msg }

func badParam(param, format string, args ...any) *apiError {
	return &apiError{code: http.StatusBadRequest, msg: param + ": " + fmt.Sprintf(format, args...), param: param}
}

// storeError answers an error of the store or the core: 404 for unknown
// groups and markers, 409 (with the group's state) for a refusal, 503
// otherwise.
func storeError(err error) *apiError {
	var ce *ConflictError
	switch {
	case errors.Is(err, ErrNotFound):
		return &apiError{code: http.StatusNotFound, msg: err.Error()}
	case errors.As(err, &ce):
		return &apiError{code: http.StatusConflict, msg: err.Error(), state: ce.Group.String()}
	case errors.Is(err, ErrConflict):
		return &apiError{code: http.StatusConflict, msg: err.Error()}
	case errors.Is(err, errDraining):
		return &apiError{code: http.StatusServiceUnavailable, msg: err.Error()}
	}
	return &apiError{code: http.StatusServiceUnavailable, msg: "store unavailable: " + err.Error()}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the one error shape:
// {"error": {"code": code, "message": msg}}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeAPIError(w, &apiError{code: code, msg: msg})
}

// errorBody is the JSON error shape.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	State   string `json:"state,omitempty"`
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.code, errorBody{errorDetail{Code: e.code, Message: e.msg, Param: e.param, State: e.state}})
}

// decodeBody reads r's JSON body into v, refusing unknown fields, a second
// value, and a body over MaxBodyBytes (413). An empty body is {} when
// optional.
func decodeBody(r *http.Request, v any, optional bool) *apiError {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && optional:
		return nil
	case errors.Is(err, io.EOF):
		return &apiError{code: http.StatusBadRequest, msg: "empty body: want a JSON object"}
	case errors.As(err, &mbe):
		return &apiError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body exceeds %d bytes", mbe.Limit)}
	case errors.As(err, &ute):
		return badParam(ute.Field, "want a JSON %s, got %s", ute.Type, ute.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badParam(field, "unknown field")
	default:
		return &apiError{code: http.StatusBadRequest, msg: "body is not valid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &apiError{code: http.StatusBadRequest, msg: "body holds more than one JSON value"}
	}
	return nil
}

// checkQuery refuses query parameters other than known (400 naming the
// first unknown one) and repeated ones.
func checkQuery(r *http.Request, known ...string) *apiError {
	q := r.URL.Query()
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !slices.Contains(known, k) {
			return badParam(k, "unknown parameter (known: %s)", strings.Join(known, ", "))
		}
		if len(q[k]) > 1 {
			return badParam(k, "given %d times", len(q[k]))
		}
	}
	return nil
}

// slogErrorLog passes promhttp's errors to the server's logger.
type slogErrorLog struct{ s *Server }

func (l slogErrorLog) Println(v ...any) { l.s.log.Warn("metrics: " + fmt.Sprint(v...)) }
