package sqlproxy

import (
	"errors"
	"fmt"
	"time"
)

// Branch modes.
const (
	// ModeLCN holds the local transaction open on its connection until the
	// decision. Works with any driver; not durable.
	ModeLCN = "lcn"
	// ModeXA uses XA START/END/PREPARE/COMMIT/ROLLBACK. Not supported yet.
	ModeXA = "xa"
	// ModeAuto picks xa where the server supports durable XA, lcn otherwise.
	// Not supported yet.
	ModeAuto = "auto"
)

// Defaults for Options fields left zero.
const (
	DefaultVoteTimeout     = 10 * time.Second
	DefaultApplyTimeout    = 30 * time.Second
	DefaultMaxIdleReleased = 8
)

// Options configure a proxied datasource. The proxy keeps a private,
// normalised copy: changing an Options value after use has no effect.
type Options struct {
	// Datasource names this datasource. It must be unique in the process:
	// the coordinator identifies a branch by (group, datasource), and the
	// proxy keeps one branch per group for it. Required.
	Datasource string

	// Mode is the branch mode: "lcn" (also ""). "xa" and "auto" are rejected
	// with ErrModeNotSupported until they are implemented.
	Mode string

	// Coordinator receives joins, votes and held branches. Set it or
	// CoordinatorFunc, not both.
	Coordinator Coordinator

	// CoordinatorFunc supplies the Coordinator lazily, at the first use of a
	// group, so that opening the database never fails because the
	// coordinator client is not initialised yet. It is called (serially)
	// until it succeeds; the result is kept.
	CoordinatorFunc func() (Coordinator, error)

	// VoteTimeout bounds each Coordinator.Join and Coordinator.Vote call, on
	// top of the caller's ctx. Default DefaultVoteTimeout.
	VoteTimeout time.Duration

	// ApplyTimeout bounds the context given to a branch's local commit or
	// rollback when the proxy applies it (the decision, or a local failure).
	// Default DefaultApplyTimeout. Drivers whose Tx.Commit takes no context
	// (all lcn branches) cannot be interrupted by it.
	ApplyTimeout time.Duration

	// MaxIdleReleased bounds the physical connections released by finished
	// branches that are kept for reuse by Connect (they never went back to
	// database/sql's pool). 0 means DefaultMaxIdleReleased; negative keeps
	// none.
	MaxIdleReleased int
}

// normalize validates o and returns the private copy with defaults applied,
// and the branch protocol of its mode.
func (o Options) normalize() (Options, branchProtocol, error) {
	if o.Datasource == "" {
		return Options{}, nil, errors.New("sqlproxy: Options.Datasource is required")
	}
	proto, err := protocolFor(o.Mode)
	if err != nil {
		return Options{}, nil, err
	}
	o.Mode = proto.mode()
	switch {
	case o.Coordinator == nil && o.CoordinatorFunc == nil:
		return Options{}, nil, fmt.Errorf("sqlproxy: datasource %q: Options.Coordinator or Options.CoordinatorFunc is required", o.Datasource)
	case o.Coordinator != nil && o.CoordinatorFunc != nil:
		return Options{}, nil, fmt.Errorf("sqlproxy: datasource %q: set only one of Options.Coordinator and Options.CoordinatorFunc", o.Datasource)
	}
	if o.VoteTimeout < 0 {
		return Options{}, nil, fmt.Errorf("sqlproxy: datasource %q: Options.VoteTimeout is negative", o.Datasource)
	}
	if o.VoteTimeout == 0 {
		o.VoteTimeout = DefaultVoteTimeout
	}
	if o.ApplyTimeout < 0 {
		return Options{}, nil, fmt.Errorf("sqlproxy: datasource %q: Options.ApplyTimeout is negative", o.Datasource)
	}
	if o.ApplyTimeout == 0 {
		o.ApplyTimeout = DefaultApplyTimeout
	}
	switch {
	case o.MaxIdleReleased == 0:
		o.MaxIdleReleased = DefaultMaxIdleReleased
	case o.MaxIdleReleased < 0:
		o.MaxIdleReleased = 0
	}
	return o, proto, nil
}
