package txclient

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is an optional set of Prometheus metrics about one process's
// participation in transaction groups: branches held by mode, votes,
// phase-2 applies by outcome, and XA recovery actions. Create it with
// NewMetrics and serve Handler (or register it in your own registry);
// every method is safe for concurrent use and is a no-op on a nil
// *Metrics, so the client calls them unconditionally.
//
// The metrics (namespace lcn, subsystem txclient):
//
//	lcn_txclient_branches_held{mode}          gauge    branches held awaiting their decision (lcn, xa)
//	lcn_txclient_votes_total{result}          counter  votes sent: ok, failed
//	lcn_txclient_applies_total{outcome}       counter  decisions applied to held branches: committed, rolled_back, lost, error
//	lcn_txclient_recovery_actions_total{action} counter  XA recovery: committed, rolled_back, asked (decision not known yet), left (not ours to decide)
type Metrics struct {
	reg        *prometheus.Registry // nil when registered elsewhere
	held       *prometheus.GaugeVec
	votes      *prometheus.CounterVec
	applies    *prometheus.CounterVec
	recoveries *prometheus.CounterVec
}

// Label values of the client metrics.
const (
	VoteOK     = "ok"
	VoteFailed = "failed"

	ApplyCommitted  = "committed"
	ApplyRolledBack = "rolled_back"
	ApplyLost       = "lost"
	ApplyError      = "error"

	RecoveryCommitted  = "committed"
	RecoveryRolledBack = "rolled_back"
	RecoveryAsked      = "asked"
	RecoveryLeft       = "left"
)

// NewMetrics creates the client metrics and registers them in reg. With a
// nil reg they get a registry of their own, which Handler serves (with the
// Go runtime and process collectors). It fails if reg already holds
// metrics of the same names (one Metrics per registry).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "lcn", Subsystem: "txclient", Name: "branches_held",
			Help: "Branches this process holds awaiting their decision, by mode."}, []string{"mode"}),
		votes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txclient", Name: "votes_total",
			Help: "Votes sent to the TxManager, by result."}, []string{"result"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txclient", Name: "applies_total",
			Help: "Decisions applied to held branches, by outcome."}, []string{"outcome"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lcn", Subsystem: "txclient", Name: "recovery_actions_total",
			Help: "XA recovery actions on prepared branches found after a restart, by action."}, []string{"action"}),
	}
	cs := []prometheus.Collector{m.held, m.votes, m.applies, m.recoveries}
	if reg == nil {
		m.reg = prometheus.NewRegistry()
		reg = m.reg
		cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every series exists from the start, at zero.
	for _, mode := range []string{"lcn", "xa"} {
		m.held.WithLabelValues(mode)
	}
	for _, r := range []string{VoteOK, VoteFailed} {
		m.votes.WithLabelValues(r)
	}
	for _, o := range []string{ApplyCommitted, ApplyRolledBack, ApplyLost, ApplyError} {
		m.applies.WithLabelValues(o)
	}
	for _, a := range []string{RecoveryCommitted, RecoveryRolledBack, RecoveryAsked, RecoveryLeft} {
		m.recoveries.WithLabelValues(a)
	}
	return m, nil
}

// Handler serves the metrics in the Prometheus text format: the metrics'
// own registry, or, when they were registered in another one, that
// registry is the caller's to serve and Handler answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil || m.reg == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// BranchHeld counts a branch now held awaiting its decision (mode "lcn"
// or "xa"). Pair each call with BranchReleased.
func (m *Metrics) BranchHeld(mode string) {
	if m != nil {
		m.held.WithLabelValues(mode).Inc()
	}
}

// BranchReleased counts a held branch whose decision was applied (or that
// was given up).
func (m *Metrics) BranchReleased(mode string) {
	if m != nil {
		m.held.WithLabelValues(mode).Dec()
	}
}

// Voted counts a vote sent to the TxManager.
func (m *Metrics) Voted(ok bool) {
	if m == nil {
		return
	}
	r := VoteOK
	if !ok {
		r = VoteFailed
	}
	m.votes.WithLabelValues(r).Inc()
}

// Applied counts a decision applied to a held branch, by outcome
// (ApplyCommitted, ApplyRolledBack, ApplyLost, ApplyError).
func (m *Metrics) Applied(outcome string) {
	if m != nil {
		m.applies.WithLabelValues(outcome).Inc()
	}
}

// Recovered counts an XA recovery action (RecoveryCommitted,
// RecoveryRolledBack, RecoveryAsked, RecoveryLeft).
func (m *Metrics) Recovered(action string) {
	if m != nil {
		m.recoveries.WithLabelValues(action).Inc()
	}
}
