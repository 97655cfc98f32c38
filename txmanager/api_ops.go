package txmanager

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golcn/golcn/internal/gid"
)

// The operator endpoints (admin role).

// overviewMax bounds the groups Count reads for the overview and gauges.
const overviewMax = 100000

// latencyWindow is the overview's decision latency window.
const latencyWindow = 5 * time.Minute

// maxMarkersListed bounds GET /v1/compensations.
const maxMarkersListed = 1000

// groupID reads and checks the path's group id.
func groupID(r *http.Request) (string, *apiError) {
	id := r.PathValue("id")
	if _, err := gid.Parse(id); err != nil {
		return "", badParam("id", "%v", err)
	}
	return id, nil
}

func (s *Server) serveGroup(w http.ResponseWriter, r *http.Request) {
	id, aerr := groupID(r)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	d, err := s.groupDetail(r.Context(), id)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// groupDetail reads a group with its timeline and markers.
func (s *Server) groupDetail(ctx context.Context, id string) (GroupDetail, error) {
	g, err := s.store.Get(ctx, id)
	if err != nil {
		return GroupDetail{}, err
	}
	events, err := s.store.Events(ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) { // gone since the Get: show what was read
		return GroupDetail{}, err
	}
	markers, err := s.store.GroupMarkers(ctx, id)
	if err != nil {
		return GroupDetail{}, err
	}
	return detailView(g, events, markers), nil
}

// parseListQuery reads GET /v1/groups's filters; the error names the bad
// parameter.
func parseListQuery(r *http.Request) (ListQuery, *apiError) {
	if e := checkQuery(r, "state", "service", "created_after", "created_before", "attention", "limit", "cursor"); e != nil {
		return ListQuery{}, e
	}
	v := r.URL.Query()
	var q ListQuery
	if st := v.Get("state"); st != "" {
		gs, err := ParseGroupState(strings.ToUpper(st))
		if err != nil {
			return q, badParam("state", "unknown state %q (want ACTIVE, PREPARING, COMMITTING, COMMITTED, ROLLING_BACK or ROLLED_BACK)", st)
		}
		q.State = gs
	}
	q.Service = v.Get("service")
	for _, b := range []struct {
		name string
		dst  *int64
	}{{"created_after", &q.CreatedAfterMS}, {"created_before", &q.CreatedBeforeMS}} {
		if raw := v.Get(b.name); raw != "" {
			t, err := time.Parse(time.RFC3339, raw)
			if err != nil {
				return q, badParam(b.name, "want an RFC 3339 time such as 2026-01-02T15:04:05Z, got %q", raw)
			}
			*b.dst = t.UnixMilli()
		}
	}
	if raw := v.Get("attention"); raw != "" {
		on, err := strconv.ParseBool(raw)
		if err != nil {
			return q, badParam("attention", "want true or false, got %q", raw)
		}
		q.Attention = &on
	}
	if raw := v.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > MaxListLimit {
			return q, badParam("limit", "want an integer from 1 to %d, got %q", MaxListLimit, raw)
		}
		q.Limit = n
	}
	q.Cursor = v.Get("cursor")
	return q, nil
}

func (s *Server) serveListGroups(w http.ResponseWriter, r *http.Request) {
	q, aerr := parseListQuery(r)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	page, err := s.store.List(r.Context(), q)
	if errors.Is(err, ErrBadCursor) {
		writeAPIError(w, badParam("cursor", "not a cursor this API returned"))
		return
	}
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	out := GroupList{Groups: make([]GroupSummary, 0, len(page.Groups)), NextCursor: page.Next}
	for _, l := range page.Groups {
		out.Groups = append(out.Groups, summaryView(l))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveOverview(w http.ResponseWriter, r *http.Request) {
	if e := checkQuery(r); e != nil {
		writeAPIError(w, e)
		return
	}
	c, err := s.store.Count(r.Context(), overviewMax)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	open, err := s.store.Markers(r.Context(), MarkersOpen, overviewMax)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	o := Overview{GroupsByState: map[string]int{}, Complete: c.Complete, InFlight: c.InFlight(), NeedingAttention: len(open)}
	for st := GroupActive; st <= GroupPreparing; st++ {
		o.GroupsByState[st.String()] = c.ByState[st]
	}
	n, p50, p99 := s.metrics.recent.percentiles(s.now().Add(-latencyWindow))
	o.DecisionLatency = LatencyView{WindowSeconds: int(latencyWindow.Seconds()), Count: n,
		P50MS: float64(p50.Microseconds()) / 1000, P99MS: float64(p99.Microseconds()) / 1000}
	writeJSON(w, http.StatusOK, o)
}

func (s *Server) serveCompensations(w http.ResponseWriter, r *http.Request) {
	if e := checkQuery(r, "status"); e != nil {
		writeAPIError(w, e)
		return
	}
	status := MarkersOpen
	if raw := r.URL.Query().Get("status"); raw != "" {
		st, err := ParseMarkerStatus(raw)
		if err != nil {
			writeAPIError(w, badParam("status", "want open, resolved or all, got %q", raw))
			return
		}
		status = st
	}
	ms, err := s.store.Markers(r.Context(), status, maxMarkersListed)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	out := CompensationList{Compensations: make([]MarkerView, 0, len(ms))}
	for _, m := range ms {
		out.Compensations = append(out.Compensations, markerView(m))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveRetryGroup(w http.ResponseWriter, r *http.Request) {
	id, aerr := groupID(r)
	if aerr == nil {
		aerr = decodeBody(r, &struct{}{}, true)
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	g, err := s.retryNow(r.Context(), id)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	d, err := s.groupDetail(r.Context(), g.ID)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// markerParam reads the path's marker id.
func markerParam(r *http.Request) (string, *apiError) {
	id := r.PathValue("id")
	if _, ok := markerGroup(id); !ok {
		return "", badParam("id", "%q is not a compensation marker id (<group id>.<branch id or phase2>)", id)
	}
	return id, nil
}

func (s *Server) serveRetryCompensation(w http.ResponseWriter, r *http.Request) {
	id, aerr := markerParam(r)
	if aerr == nil {
		aerr = decodeBody(r, &struct{}{}, true)
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	m, err := s.store.Marker(r.Context(), id)
	if err == nil {
		_, err = s.retryNow(r.Context(), m.Group)
	}
	if err == nil {
		m, err = s.store.Marker(r.Context(), id) // the retry may have finished the group
	}
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, markerView(m))
}

// resolveRequest is POST /v1/compensations/{id}/resolve's body.
type resolveRequest struct {
	Reason string `json:"reason"`
}

// maxReasonBytes bounds a resolution's reason.
const maxReasonBytes = 4096

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request) {
	id, aerr := markerParam(r)
	var req resolveRequest
	if aerr == nil {
		aerr = decodeBody(r, &req, false)
	}
	if aerr == nil {
		req.Reason = strings.TrimSpace(req.Reason)
		switch {
		case req.Reason == "":
			aerr = badParam("reason", "required: say why the marker is resolved (kept as an audit record)")
		case len(req.Reason) > maxReasonBytes:
			aerr = badParam("reason", "longer than %d bytes", maxReasonBytes)
		}
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	p := principalOf(r)
	m, err := s.store.Resolve(r.Context(), id, Resolution{By: p.name, AtMS: s.nowMS(), Reason: req.Reason})
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	s.log.Info("compensation marker resolved", "group", m.Group, "marker", m.ID, "by", p.name, "reason", req.Reason)
	writeJSON(w, http.StatusOK, markerView(m))
}

// snapshotCache keeps the store counts behind the in-flight and attention
// gauges, so that a scrape does not read the store more than every
// snapshotTTL. Safe for concurrent use.
type snapshotCache struct {
	mu        sync.Mutex
	at        time.Time
	inFlight  int
	attention int
}

const snapshotTTL = 10 * time.Second

type snapshot struct{ inFlight, attention int }

// snapshotForMetrics returns the counts, refreshed if older than
// snapshotTTL (on a store error the previous ones stay).
func (s *Server) snapshotForMetrics() snapshot {
	c := &s.snap
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < snapshotTTL {
		return snapshot{c.inFlight, c.attention}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := s.store.Count(ctx, overviewMax)
	if err == nil {
		var open []Marker
		if open, err = s.store.Markers(ctx, MarkersOpen, overviewMax); err == nil {
			c.at, c.inFlight, c.attention = time.Now(), counts.InFlight(), len(open)
		}
	}
	if err != nil {
		s.log.Warn("metrics: read store counts", "err", err)
	}
	return snapshot{c.inFlight, c.attention}
}
