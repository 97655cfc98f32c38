package txmanager

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config holds the TxManager's settings. The config package fills it from
// files, environment and flags; the zero value of a field means its default.
type Config struct {
	// GroupTimeout is the deadline given to a group whose starter asks for
	// none. Default 30s.
	GroupTimeout time.Duration
	// MaxGroupTimeout bounds the deadline a starter may ask for. Default 10m.
	MaxGroupTimeout time.Duration
	// ReapInterval is how often the reaper looks for ACTIVE groups past their
	// deadline (presumed abort). Default 500ms.
	ReapInterval time.Duration
	// RetryMin and RetryMax bound the phase-2 retry backoff: a decision not
	// acknowledged is pushed again after RetryMin, doubling up to RetryMax.
	// Defaults 200ms and 10s.
	RetryMin, RetryMax time.Duration
	// Retention is how long a terminal group's record is kept. Default 24h.
	Retention time.Duration
	// PingInterval is how often the TxManager pings each client session; a
	// session that answers nothing for 1.5 intervals is closed. Default 10s.
	PingInterval time.Duration
	// Auth says who may talk to the TxManager. With no credentials, no
	// client certificates and Insecure unset, New refuses to start.
	Auth AuthConfig
	// MessageRate and MessageBurst bound the messages one client session
	// may send per second (a flooding client is throttled, others are not
	// slowed). Defaults 2000 and 4000.
	MessageRate  float64
	MessageBurst int
	// MaxBodyBytes bounds REST request bodies. Default 1 MiB.
	MaxBodyBytes int64
	// LostAfter is how long the client holding a branch of a decided group
	// may stay disconnected before the TxManager counts the branch as lost
	// (commit: LOST, and the group needs attention; rollback: rolled back).
	// It must exceed a client's reconnect time, including a restart that
	// recovers durable branches. Default 1m.
	LostAfter time.Duration
	// AttentionAfter is how long phase 2 of a decided group may go on
	// being retried before the group gets a phase2_stuck compensation
	// marker (it still goes on being retried). Default 10m.
	AttentionAfter time.Duration
	// Logger receives the TxManager's logs. Default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.GroupTimeout, 30*time.Second)
	def(&c.MaxGroupTimeout, 10*time.Minute)
	def(&c.ReapInterval, 500*time.Millisecond)
	def(&c.RetryMin, 200*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	def(&c.Retention, 24*time.Hour)
	def(&c.PingInterval, 10*time.Second)
	def(&c.LostAfter, time.Minute)
	def(&c.AttentionAfter, 10*time.Minute)
	if c.MessageRate == 0 {
		c.MessageRate = 2000
	}
	if c.MessageBurst == 0 {
		c.MessageBurst = 4000
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first setting that is out of range, by its name.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	pos("group_timeout", c.GroupTimeout)
	pos("max_group_timeout", c.MaxGroupTimeout)
	pos("reap_interval", c.ReapInterval)
	pos("retry_min", c.RetryMin)
	pos("retry_max", c.RetryMax)
	pos("retention", c.Retention)
	pos("ping_interval", c.PingInterval)
	pos("lost_after", c.LostAfter)
	pos("attention_after", c.AttentionAfter)
	if c.GroupTimeout > c.MaxGroupTimeout {
		errs = append(errs, fmt.Errorf("group_timeout (%s) must not exceed max_group_timeout (%s)", c.GroupTimeout, c.MaxGroupTimeout))
	}
	if c.RetryMin > c.RetryMax {
		errs = append(errs, fmt.Errorf("retry_min (%s) must not exceed retry_max (%s)", c.RetryMin, c.RetryMax))
	}
	if c.Retention < c.MaxGroupTimeout {
		errs = append(errs, fmt.Errorf("retention (%s) must be at least max_group_timeout (%s)", c.Retention, c.MaxGroupTimeout))
	}
	if c.MessageRate <= 0 || c.MessageBurst <= 0 {
		errs = append(errs, fmt.Errorf("limits.message_rate and limits.message_burst must be positive, got %v and %d", c.MessageRate, c.MessageBurst))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("limits.max_body_bytes must be positive, got %d", c.MaxBodyBytes))
	}
	if err := c.Auth.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("txmanager: invalid config: %w", err)
	}
	return nil
}
