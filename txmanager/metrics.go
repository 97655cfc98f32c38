package txmanager

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Server's Prometheus metrics, in a registry of its own (a
// process may run several servers: tests do). Served at /metrics.
type metrics struct {
	reg *prometheus.Registry

	started        prometheus.Counter
	finished       *prometheus.CounterVec // outcome: committed, rolled_back, attention
	decisionLat    prometheus.Histogram
	endToEnd       prometheus.Histogram
	retries        prometheus.Counter
	markersCreated *prometheus.CounterVec // kind
	storeLat       *prometheus.HistogramVec

	recent latencyRing // decision latencies for the overview
}

// Finished outcomes.
const (
	outcomeCommitted  = "committed"
	outcomeRolledBack = "rolled_back"
	outcomeAttention  = "attention"
)

// latencyBuckets (seconds) span a fast local commit to a long group.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "groups_started_total", Help: "Groups created by this TxManager."}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "groups_finished_total", Help: "Groups this TxManager saw become terminal, by outcome (attention: terminal with a lost branch)."},
			[]string{"outcome"}),
		decisionLat: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "decision_latency_seconds", Help: "From a group's creation to its decision (commit or rollback).", Buckets: latencyBuckets}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "group_duration_seconds", Help: "From a group's creation to its end (every branch acknowledged).", Buckets: latencyBuckets}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "phase2_retries_total", Help: "Pushes of a decision (or prepare request) again to branches that had not answered."}),
		markersCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "compensations_created_total", Help: "Compensation markers this TxManager created, by kind."}, []string{"kind"}),
		storeLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "store_operation_seconds", Help: "Latency of store operations, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}}, []string{"op"}),
	}
	m.reg.MustRegister(m.started, m.finished, m.decisionLat, m.endToEnd, m.retries, m.markersCreated, m.storeLat,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "sessions", Help: "Open client websocket sessions."}, func() float64 { return float64(s.Sessions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "groups_in_flight", Help: "Groups in the store not terminal (from a snapshot at most 10s old)."},
			func() float64 { return float64(s.snapshotForMetrics().inFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "lcn", Subsystem: "txmanager",
			Name: "groups_needing_attention", Help: "Open compensation markers (from a snapshot at most 10s old)."},
			func() float64 { return float64(s.snapshotForMetrics().attention) }),
	)
	for _, o := range []string{outcomeCommitted, outcomeRolledBack, outcomeAttention} {
		m.finished.WithLabelValues(o)
	}
	for _, k := range []MarkerKind{MarkerBranchLost, MarkerPhase2Stuck} {
		m.markersCreated.WithLabelValues(string(k))
	}
	return m
}

// observeTransition counts what a persisted transition (the group after it
// is g) means for the metrics.
func (m *metrics) observeTransition(t Transition, g *Group, now time.Time) {
	if t.Kind == TransDecide && g.State.Decided() {
		d := msDuration(g.DecidedMS - g.CreatedMS)
		m.decisionLat.Observe(d.Seconds())
		m.recent.add(now, d)
	}
	if t.Kind == TransBranchDone && t.BranchTo == BranchLost {
		m.markersCreated.WithLabelValues(string(MarkerBranchLost)).Inc()
	}
	if !g.State.Terminal() {
		return
	}
	// A transition on a terminal group is refused: this one ended it.
	outcome := outcomeRolledBack
	switch {
	case g.Attention != "":
		outcome = outcomeAttention
	case g.State == GroupCommitted:
		outcome = outcomeCommitted
	}
	m.finished.WithLabelValues(outcome).Inc()
	m.endToEnd.Observe(msDuration(g.FinishedMS - g.CreatedMS).Seconds())
}

func msDuration(ms int64) time.Duration { return time.Duration(max(ms, 0)) * time.Millisecond }

// latencyRing keeps the latest decision latencies for percentiles over a
// recent window. Safe for concurrent use.
type latencyRing struct {
	mu   sync.Mutex
	at   [1024]time.Time
	lat  [1024]time.Duration
	next int
	n    int
}

func (r *latencyRing) add(at time.Time, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at[r.next], r.lat[r.next] = at, d
	r.next = (r.next + 1) % len(r.at)
	r.n = min(r.n+1, len(r.at))
}

// percentiles returns how many latencies were recorded since from and
// their p50 and p99 (nearest rank).
func (r *latencyRing) percentiles(from time.Time) (n int, p50, p99 time.Duration) {
	r.mu.Lock()
	var ds []time.Duration
	for i := range r.n {
		if !r.at[i].Before(from) {
			ds = append(ds, r.lat[i])
		}
	}
	r.mu.Unlock()
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return len(ds), rank(0.50), rank(0.99)
}

// timedStore measures every operation of a Store in metrics.storeLat.
type timedStore struct {
	Store
	h *prometheus.HistogramVec
}

func (t timedStore) time(op string) func() {
	o := t.h.WithLabelValues(op)
	began := time.Now()
	return func() { o.Observe(time.Since(began).Seconds()) }
}

func (t timedStore) Create(ctx context.Context, g *Group) error {
	defer t.time("create")()
	return t.Store.Create(ctx, g)
}

func (t timedStore) Get(ctx context.Context, id string) (*Group, error) {
	defer t.time("get")()
	return t.Store.Get(ctx, id)
}

func (t timedStore) Apply(ctx context.Context, tr Transition) (*Group, error) {
	defer t.time("apply")()
	return t.Store.Apply(ctx, tr)
}

func (t timedStore) Expired(ctx context.Context, now time.Time, limit int) ([]string, error) {
	defer t.time("expired")()
	return t.Store.Expired(ctx, now, limit)
}

func (t timedStore) Undone(ctx context.Context, limit int) ([]string, error) {
	defer t.time("undone")()
	return t.Store.Undone(ctx, limit)
}

func (t timedStore) Purge(ctx context.Context, now time.Time) (int, error) {
	defer t.time("purge")()
	return t.Store.Purge(ctx, now)
}

func (t timedStore) Ping(ctx context.Context) error {
	defer t.time("ping")()
	return t.Store.Ping(ctx)
}

func (t timedStore) Events(ctx context.Context, id string) ([]TimelineEvent, error) {
	defer t.time("events")()
	return t.Store.Events(ctx, id)
}

func (t timedStore) List(ctx context.Context, q ListQuery) (ListPage, error) {
	defer t.time("list")()
	return t.Store.List(ctx, q)
}

func (t timedStore) Count(ctx context.Context, limit int) (Counts, error) {
	defer t.time("count")()
	return t.Store.Count(ctx, limit)
}

func (t timedStore) AddMarker(ctx context.Context, m Marker) (bool, error) {
	defer t.time("add_marker")()
	return t.Store.AddMarker(ctx, m)
}

func (t timedStore) Marker(ctx context.Context, id string) (Marker, error) {
	defer t.time("marker")()
	return t.Store.Marker(ctx, id)
}

func (t timedStore) Markers(ctx context.Context, status MarkerStatus, limit int) ([]Marker, error) {
	defer t.time("markers")()
	return t.Store.Markers(ctx, status, limit)
}

func (t timedStore) GroupMarkers(ctx context.Context, group string) ([]Marker, error) {
	defer t.time("group_markers")()
	return t.Store.GroupMarkers(ctx, group)
}

func (t timedStore) Resolve(ctx context.Context, id string, r Resolution) (Marker, error) {
	defer t.time("resolve")()
	return t.Store.Resolve(ctx, id, r)
}
