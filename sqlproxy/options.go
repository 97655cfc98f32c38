package sqlproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Branch modes.
const (
	// ModeLCN holds the local transaction open on its connection until the
	// decision. Works with any driver; not durable.
	ModeLCN = "lcn"
	// ModeXA runs the branch as an XA transaction (XA START at the first
	// work, XA END + XA PREPARE in the prepare phase, XA COMMIT/ROLLBACK as
	// the outcome), in MySQL/MariaDB syntax. It needs a server that keeps
	// prepared branches across a disconnect (MariaDB 10.5.2+, MySQL
	// 5.7.7+): the proxy relies on that when it finishes a branch from
	// another connection.
	ModeXA = "xa"
	// ModeAuto is xa when the inner driver is github.com/go-sql-driver/mysql
	// and the server keeps a prepared branch across a disconnect (probed
	// once, at the first group use), lcn otherwise.
	ModeAuto = "auto"
)

// Defaults for Options fields left zero.
const (
	DefaultVoteTimeout      = 10 * time.Second
	DefaultApplyTimeout     = 30 * time.Second
	DefaultMaxIdleReleased  = 8
	DefaultRecoveryInterval = 5 * time.Second
)

// Options configure a proxied datasource. The proxy keeps a private,
// normalised copy: changing an Options value after use has no effect.
type Options struct {
	// Datasource names this datasource. It must be unique in the process:
	// the coordinator identifies a branch by (group, datasource), and the
	// proxy keeps one branch per group for it. Required.
	Datasource string

	// Mode is the branch mode: ModeLCN (also ""), ModeXA or ModeAuto. The
	// mode a branch runs in (Connector.Mode) is always lcn or xa.
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
	// rollback when the proxy applies it (the decision, or a local failure),
	// and to the XA END and XA PREPARE of Held.Prepare. For a prepared xa
	// branch whose connection failed it also bounds the attempts to finish
	// it from another connection, after which Held.Commit/Rollback return
	// ErrInDoubt. Default DefaultApplyTimeout. Drivers whose Tx.Commit takes
	// no context (all lcn branches) cannot be interrupted by it.
	ApplyTimeout time.Duration

	// MaxIdleReleased bounds the physical connections released by finished
	// branches that are kept for reuse by Connect (they never went back to
	// database/sql's pool). 0 means DefaultMaxIdleReleased; negative keeps
	// none.
	MaxIdleReleased int

	// RecoveryInterval is the period of xa recovery: the rounds that find
	// branches left prepared in the database by a crashed process, a killed
	// connection or a restarted database, and finish them as the
	// coordinator's Resolver says. 0 means DefaultRecoveryInterval; negative
	// disables recovery. It runs only for mode xa, and for mode auto over
	// go-sql-driver/mysql.
	RecoveryInterval time.Duration

	// Logger receives the proxy's rare log lines: the branch mode chosen by
	// auto, and xa recovery. nil means slog.Default().
	Logger *slog.Logger
}

// normalize validates o and returns the private copy with defaults applied.
// Its Mode is ModeLCN, ModeXA or ModeAuto.
func (o Options) normalize() (Options, error) {
	if o.Datasource == "" {
		return Options{}, errors.New("sqlproxy: Options.Datasource is required")
	}
	switch o.Mode {
	case "":
		o.Mode = ModeLCN
	case ModeLCN, ModeXA, ModeAuto:
	default:
		return Options{}, fmt.Errorf("sqlproxy: datasource %q: unknown branch mode %q (want %q, %q or %q)", o.Datasource, o.Mode, ModeLCN, ModeXA, ModeAuto)
	}
	switch {
	case o.Coordinator == nil && o.CoordinatorFunc == nil:
		return Options{}, fmt.Errorf("sqlproxy: datasource %q: Options.Coordinator or Options.CoordinatorFunc is required", o.Datasource)
	case o.Coordinator != nil && o.CoordinatorFunc != nil:
		return Options{}, fmt.Errorf("sqlproxy: datasource %q: set only one of Options.Coordinator and Options.CoordinatorFunc", o.Datasource)
	}
	if o.VoteTimeout < 0 {
		return Options{}, fmt.Errorf("sqlproxy: datasource %q: Options.VoteTimeout is negative", o.Datasource)
	}
	if o.VoteTimeout == 0 {
		o.VoteTimeout = DefaultVoteTimeout
	}
	if o.ApplyTimeout < 0 {
		return Options{}, fmt.Errorf("sqlproxy: datasource %q: Options.ApplyTimeout is negative", o.Datasource)
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
	if o.RecoveryInterval == 0 {
		o.RecoveryInterval = DefaultRecoveryInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
