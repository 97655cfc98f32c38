package txclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
)

// Config holds a TxClient's settings. The config package fills it from
// files, environment and flags; the zero value of a field means its default.
type Config struct {
	// ManagerURL is the TxManager's websocket endpoint, for example
	// "ws://txmanager:8070/v1/ws". Required.
	ManagerURL string
	// Service names this service (for example "stock"). Required.
	Service string
	// Instance identifies this process among the service's replicas. Decisions
	// are routed by instance, never by service name. Default: a random id
	// made at New.
	Instance string
	// Token authenticates the client: it is sent as "Authorization: Bearer
	// <token>" at the websocket handshake. May be empty when the TxManager
	// runs without authentication or authenticates by client certificate.
	Token string
	// TLS configures wss:// connections (trusted roots, a client
	// certificate). Nil means the system roots and no client certificate.
	TLS *tls.Config
	// Dialer, if set, opens the TCP connection to the TxManager's host
	// instead of a zero net.Dialer: for example with LocalAddr set, to
	// choose the source address on a multi-homed host, or with Control, to
	// set socket options. The websocket handshake, and TLS for wss:// URLs,
	// run on top of the connection it opens. It is used for every
	// (re)connect, with a context bounded by RequestTimeout. Nil: a zero
	// net.Dialer.
	Dialer *net.Dialer
	// RequestTimeout bounds each request to the TxManager when the caller's
	// context has no earlier deadline. Default 10s.
	RequestTimeout time.Duration
	// GroupTimeout is the deadline asked for new groups (0: the TxManager's
	// default).
	GroupTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the reconnect backoff. Defaults
	// 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// AskInterval is how long a held branch waits for its decision before the
	// client asks the TxManager for it (and asks again at this interval
	// until it learns the outcome). Default 5s.
	AskInterval time.Duration
	// ApplyTimeout bounds applying a decision to a held branch. Default 30s.
	ApplyTimeout time.Duration
	// Logger receives the client's logs. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, counts held branches, votes, applies and recovery
	// actions (see NewMetrics). nil: no metrics.
	Metrics *Metrics
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.ReconnectMin, 100*time.Millisecond)
	def(&c.ReconnectMax, 5*time.Second)
	def(&c.AskInterval, 5*time.Second)
	def(&c.ApplyTimeout, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every setting that is out of range, by its name.
func (c Config) Validate() error {
	var errs []error
	if c.ManagerURL == "" {
		errs = append(errs, errors.New("manager_url is required"))
	} else if u, err := url.Parse(c.ManagerURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, fmt.Errorf("manager_url %q must be a ws:// or wss:// URL with a host", c.ManagerURL))
	}
	if c.Service == "" {
		errs = append(errs, errors.New("service is required"))
	}
	if strings.Contains(c.Service, "/") || strings.Contains(c.Instance, "/") {
		errs = append(errs, fmt.Errorf("service and instance must not contain '/' (got %q, %q)", c.Service, c.Instance))
	}
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"request_timeout", c.RequestTimeout}, {"reconnect_min", c.ReconnectMin}, {"reconnect_max", c.ReconnectMax},
		{"ask_interval", c.AskInterval}, {"apply_timeout", c.ApplyTimeout}} {
		if s.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", s.name, s.d))
		}
	}
	if c.GroupTimeout < 0 {
		errs = append(errs, fmt.Errorf("group_timeout must not be negative, got %s", c.GroupTimeout))
	}
	if c.ReconnectMin > c.ReconnectMax {
		errs = append(errs, fmt.Errorf("reconnect_min (%s) must not exceed reconnect_max (%s)", c.ReconnectMin, c.ReconnectMax))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("txclient: invalid config: %w", err)
	}
	return nil
}

// LogValue renders c for logs, with the token redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("manager_url", c.ManagerURL), slog.String("service", c.Service), slog.String("instance", c.Instance),
		slog.String("token", redact(c.Token)), slog.Bool("tls", c.TLS != nil), slog.Bool("custom_dialer", c.Dialer != nil),
		slog.Duration("request_timeout", c.RequestTimeout), slog.Duration("group_timeout", c.GroupTimeout),
		slog.Duration("ask_interval", c.AskInterval), slog.Duration("apply_timeout", c.ApplyTimeout))
}

// String renders c with the token redacted, so that printing a Config
// never reveals it.
func (c Config) String() string { return c.LogValue().String() }

// GoString is String, so that %#v does not print the token either.
func (c Config) GoString() string { return "txclient.Config" + c.String() }

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}
