package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/golcn/golcn/txmanager"
)

// Manager is everything cmd/txmanager needs.
type Manager struct {
	// Listen is the HTTP address (REST API, admin page, websocket at
	// /v1/ws). Key "listen", default ":8070".
	Listen string
	// Store is StoreBolt (default), StoreRedis or StoreMemory. The memory
	// store loses every group on exit: it is for tests only.
	Store string
	// DataDir holds the bolt file <DataDir>/txmanager.db. Key "data_dir",
	// default "./lcn-data".
	DataDir string
	// Redis is used when Store is StoreRedis.
	Redis Redis
	// TLSFiles are the keys tls.cert_file, tls.key_file and
	// tls.client_ca_file.
	TLSFiles TLSFiles
	// TLS is the listener's configuration, built by LoadManager from
	// TLSFiles: the server certificate, and when tls.client_ca_file is set
	// the CAs that verify the client certificates presented (clients may
	// present none and use a token). Nil when tls.cert_file and
	// tls.key_file are unset: plain HTTP and ws://.
	TLS *tls.Config
	// Core is the TxManager's own configuration, with defaults applied
	// and validated: the timings, Auth (keys auth.*; Auth.ClientCerts is
	// set only with tls.client_ca_file) and the limits.* keys. Its Logger
	// is slog.Default(); cmd/txmanager replaces it with one built from
	// LogLevel and LogFormat.
	Core txmanager.Config
	// LogLevel is "debug", "info" (default), "warn" or "error".
	LogLevel string
	// LogFormat is "text" (default) or "json".
	LogFormat string
	// AdminUI holds the admin page's settings (keys admin_ui.*).
	AdminUI AdminUI
	// DrainTimeout bounds the drain at SIGTERM: new groups are refused,
	// requests in progress and queued pushes are waited for, then client
	// sessions are closed. Key "drain_timeout", default 30s.
	DrainTimeout time.Duration
}

// AdminUI holds the admin web page's settings (keys admin_ui.*).
// cmd/txmanager passes them to package txmanager/adminui.
type AdminUI struct {
	Enabled      bool          // "admin_ui.enabled", default false
	SecretSHA256 string        // "admin_ui.secret_sha256": hex SHA-256 of the login secret; never printed
	SessionTTL   time.Duration // "admin_ui.session_ttl", default 8h
}

// Redis holds the connection settings of the Redis store (keys "redis.*").
type Redis struct {
	Addr     string // "redis.addr", host:port; required when Store is StoreRedis
	Username string // "redis.username"
	Password string // "redis.password"; secret, never printed
	DB       int    // "redis.db", default 0
	Prefix   string // "redis.prefix", default "lcn"
	TLS      bool   // "redis.tls", default false
}

// LoadManager loads the TxManager's settings from, in increasing priority:
// defaults, the YAML file named by --config or LCN_CONFIG, the LCN_*
// variables of environ (usually os.Environ()), and the flags in args
// (usually os.Args[1:]). On --help or -h it writes the flags to standard
// output and returns pflag.ErrHelp.
//
// Every bad value is reported, as a *KeyError naming its key and source;
// then the core settings get their defaults and are validated.
func LoadManager(args, environ []string) (*Manager, error) {
	return loadManager(args, environ, os.Stdout)
}

func loadManager(args, environ []string, help io.Writer) (*Manager, error) {
	m, src, err := load("txmanager", "Usage: txmanager [flags]", managerSpecs(), args, environ, help)
	if err != nil {
		return nil, err
	}
	var errs []error
	switch {
	case m.Store == StoreRedis && m.Redis.Addr == "":
		errs = append(errs, &KeyError{Key: "redis.addr", Err: fmt.Errorf("required when store is redis (store from %s); set it in the file, with env %s or with flag --%s",
			src["store"], envName("redis.addr"), flagName("redis.addr", ""))})
	case m.Store == StoreBolt && m.DataDir == "":
		errs = append(errs, &KeyError{Key: "data_dir", Source: src["data_dir"], Err: fmt.Errorf("must not be empty when store is bolt")})
	}
	var tlsErrs []error
	m.TLS, tlsErrs = serverTLS(m.TLSFiles, src)
	errs = append(errs, tlsErrs...)
	a := &m.Core.Auth
	if a.ClientCerts && m.TLSFiles.CAFile == "" {
		errs = append(errs, &KeyError{Key: "auth.client_certs", Source: src["auth.client_certs"],
			Err: errors.New("requires tls.client_ca_file (and tls.cert_file, tls.key_file): the CAs that client certificates are verified against")})
	}
	if len(a.Credentials) == 0 && !a.ClientCerts && !a.Insecure {
		errs = append(errs, errNoCredentials())
	}
	if m.AdminUI.Enabled && m.AdminUI.SecretSHA256 == "" {
		errs = append(errs, &KeyError{Key: "admin_ui.secret_sha256", Err: fmt.Errorf("required when admin_ui.enabled is true (from %s): "+
			"the SHA-256 of the admin secret, made with printf %%s \"$SECRET\" | txmanager hash-token; the page has no default secret", src["admin_ui.enabled"])})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.Core = m.Core.WithDefaults()
	if err := m.Core.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return m, nil
}

// errNoCredentials is what a TxManager with no authentication configured
// says: how to configure it, or to run without.
func errNoCredentials() error {
	return &KeyError{Key: "auth.tokens", Err: errors.New(`no client credentials configured; the TxManager will not run open to anyone who reaches its port. Either:
  - list the accepted tokens by their SHA-256: auth.tokens in the file, env LCN_AUTH_TOKENS or flag --auth-tokens,
    as service=<sha256 hex>[:role] (make a token: TOKEN=$(openssl rand -hex 32); its hash: printf %s "$TOKEN" | txmanager hash-token), or
  - for development only, run without authentication: flag --auth-insecure, env LCN_AUTH_INSECURE=true or auth.insecure: true in the file.
See docs/configuration.md`)}
}

// Level returns LogLevel as a slog.Level (slog.LevelInfo if it is not one
// of the four names).
func (m Manager) Level() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(m.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// LogValue renders every setting, by key name, with secrets redacted.
func (m Manager) LogValue() slog.Value {
	return slog.GroupValue(attrs(managerSpecs(), &m)...)
}

// String renders every setting, by key name, with secrets redacted.
func (m Manager) String() string { return format(attrs(managerSpecs(), &m)) }

// GoString is String, so that %#v does not print secrets either.
func (m Manager) GoString() string { return "config.Manager" + m.String() }

func redisAttrs(r Redis) []slog.Attr {
	m := Manager{Redis: r}
	var as []slog.Attr
	for _, a := range attrs(managerSpecs(), &m) {
		if k, ok := strings.CutPrefix(a.Key, "redis."); ok {
			a.Key = k
			as = append(as, a)
		}
	}
	return as
}

// LogValue renders the Redis settings with the password redacted.
func (r Redis) LogValue() slog.Value { return slog.GroupValue(redisAttrs(r)...) }

// String renders the Redis settings with the password redacted.
func (r Redis) String() string { return format(redisAttrs(r)) }

// GoString is String, so that %#v does not print the password either.
func (r Redis) GoString() string { return "config.Redis" + r.String() }
