package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Key describes one setting: its name in the YAML file, the environment
// variable and the command-line flag that set it, its default and what it
// means. ManagerKeys and ClientKeys are the single source of the flags, of
// --help and of the tables in docs/configuration.md.
type Key struct {
	// Name is the key in the YAML file, dotted for nested keys
	// ("redis.addr" is `addr:` under `redis:`).
	Name string
	// Env is the environment variable: "LCN_" + Name upper-cased, with dots
	// turned into underscores ("LCN_REDIS_ADDR").
	Env string
	// Flag is the command-line flag without its leading dashes
	// ("redis-addr" for --redis-addr).
	Flag string
	// Default is the value used when no source sets the key, as it would be
	// written in the file; "" when there is none.
	Default string
	// Doc is a one-line description.
	Doc string
	// Secret keys are never printed: String, LogValue and errors show "***".
	Secret bool
}

// spec is a Key plus what the loader needs to parse it into a T.
type spec[T any] struct {
	Key
	// field returns a pointer into the T being loaded: *string,
	// *time.Duration, *int, *int64, *float64, *bool, *[]string (a list:
	// comma-separated in the environment and flags) or
	// *[]txmanager.Credential (auth.tokens). The pointer's type picks the
	// parser.
	field func(*T) any
	// enum, when set, lists the only values a string key accepts; they
	// are matched case-insensitively and stored lower-case.
	enum []string
	// zeroOK lets a duration be 0 (otherwise durations must be positive).
	zeroOK bool
	// required rejects an empty string.
	required bool
	// positive rejects 0 for a number (negative numbers are always
	// rejected).
	positive bool
	// check, when set, validates a parsed string value, or each item of a
	// list (not called on "").
	check func(string) error
	// show, when set, formats a string value for String/LogValue.
	show func(string) string
}

// Store kinds accepted by the "store" key.
const (
	StoreBolt   = "bolt"
	StoreRedis  = "redis"
	StoreMemory = "memory"
)

// envName derives the environment variable of a key.
func envName(name string) string {
	return "LCN_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
}

// flagName derives the flag of a key: dots and underscores become hyphens,
// after dropping strip (the "client." prefix for client keys).
func flagName(name, strip string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(strings.TrimPrefix(name, strip))
}

func mkKey(name, strip, def, doc string) Key {
	return Key{Name: name, Env: envName(name), Flag: flagName(name, strip), Default: def, Doc: doc}
}

func secret(k Key) Key { k.Secret = true; return k }

func managerSpecs() []spec[Manager] {
	k := func(name, def, doc string) Key { return mkKey(name, "", def, doc) }
	dur := func(name, def, doc string, f func(*Manager) *time.Duration) spec[Manager] {
		return spec[Manager]{Key: k(name, def, doc), field: func(m *Manager) any { return f(m) }}
	}
	return []spec[Manager]{
		{Key: k("listen", ":8070", "address of the HTTP server: REST API, admin page and the websocket at /v1/ws"),
			field: func(m *Manager) any { return &m.Listen }, required: true, check: checkHostPort},
		{Key: k("tls.cert_file", "", "PEM certificate (chain) of the server; with tls.key_file it serves HTTPS and wss://. Unset: plain HTTP and ws://"),
			field: func(m *Manager) any { return &m.TLSFiles.CertFile }},
		{Key: k("tls.key_file", "", "PEM private key of tls.cert_file"),
			field: func(m *Manager) any { return &m.TLSFiles.KeyFile }},
		{Key: k("tls.client_ca_file", "", "PEM CA certificates that client certificates are verified against (a client may still present none and use a token); needs tls.cert_file"),
			field: func(m *Manager) any { return &m.TLSFiles.CAFile }},
		{Key: k("auth.tokens", "", "accepted client tokens, by their SHA-256 only; in env and flag a comma-separated list of service=<sha256 hex>[:role[:expires]], role service (default) or admin, expires RFC 3339"),
			field: func(m *Manager) any { return &m.Core.Auth.Credentials }},
		{Key: k("auth.client_certs", "false", "accept a verified client certificate instead of a token, its subject common name being the service (role service); requires tls.client_ca_file"),
			field: func(m *Manager) any { return &m.Core.Auth.ClientCerts }},
		{Key: k("auth.allowed_origins", "", "browser origins (scheme://host[:port]) whose websocket upgrades are accepted, comma-separated in env and flag; an upgrade from any other Origin is refused"),
			field: func(m *Manager) any { return &m.Core.Auth.AllowedOrigins }, check: checkOrigin},
		{Key: k("auth.insecure", "false", "DEVELOPMENT ONLY: run without authentication; any client that reaches the port can decide groups"),
			field: func(m *Manager) any { return &m.Core.Auth.Insecure }},
		{Key: k("store", StoreBolt, "where group state is kept: bolt (one local file), redis, or memory (tests only: everything is lost on exit)"),
			field: func(m *Manager) any { return &m.Store }, enum: []string{StoreBolt, StoreRedis, StoreMemory}},
		{Key: k("data_dir", "./lcn-data", "directory of the bolt file <data_dir>/txmanager.db (store=bolt)"),
			field: func(m *Manager) any { return &m.DataDir }},
		{Key: k("redis.addr", "", "Redis host:port; required when store=redis"),
			field: func(m *Manager) any { return &m.Redis.Addr }, check: checkHostPort},
		{Key: k("redis.username", "", "Redis ACL user name"),
			field: func(m *Manager) any { return &m.Redis.Username }},
		{Key: secret(k("redis.password", "", "Redis password (secret: prefer the file or the environment to the flag)")),
			field: func(m *Manager) any { return &m.Redis.Password }},
		{Key: k("redis.db", "0", "Redis logical database number"),
			field: func(m *Manager) any { return &m.Redis.DB }},
		{Key: k("redis.prefix", "lcn", "prefix of every Redis key the TxManager writes; several deployments can share one Redis with different prefixes"),
			field: func(m *Manager) any { return &m.Redis.Prefix }, required: true, check: checkPrefix},
		{Key: k("redis.tls", "false", "connect to Redis over TLS"),
			field: func(m *Manager) any { return &m.Redis.TLS }},
		dur("group_timeout", "30s", "deadline of a group whose starter asks for none; an ACTIVE group past its deadline is rolled back",
			func(m *Manager) *time.Duration { return &m.Core.GroupTimeout }),
		dur("max_group_timeout", "10m", "the longest deadline a starter may ask for",
			func(m *Manager) *time.Duration { return &m.Core.MaxGroupTimeout }),
		dur("reap_interval", "500ms", "how often the reaper looks for groups past their deadline",
			func(m *Manager) *time.Duration { return &m.Core.ReapInterval }),
		dur("retry_min", "200ms", "first delay before a decision not acknowledged is pushed again (doubles each time)",
			func(m *Manager) *time.Duration { return &m.Core.RetryMin }),
		dur("retry_max", "10s", "cap of the phase-2 retry delay",
			func(m *Manager) *time.Duration { return &m.Core.RetryMax }),
		dur("retention", "24h", "how long a finished group's record is kept; at least max_group_timeout",
			func(m *Manager) *time.Duration { return &m.Core.Retention }),
		dur("ping_interval", "10s", "how often each client session is pinged; a session that answers nothing for 1.5 intervals is closed",
			func(m *Manager) *time.Duration { return &m.Core.PingInterval }),
		dur("lost_after", "1m", "how long the client holding a branch of a decided group may stay away before an lcn branch counts as lost (commit) or rolled back",
			func(m *Manager) *time.Duration { return &m.Core.LostAfter }),
		dur("attention_after", "10m", "how long phase 2 of a decided group may be retried without finishing before the group gets a phase2_stuck compensation marker (retries go on)",
			func(m *Manager) *time.Duration { return &m.Core.AttentionAfter }),
		dur("drain_timeout", "30s", "at SIGTERM, how long to wait for requests in progress and queued pushes before closing client sessions and exiting",
			func(m *Manager) *time.Duration { return &m.DrainTimeout }),
		{Key: k("admin_ui.enabled", "false", "serve the admin web page at /admin/; requires admin_ui.secret_sha256"),
			field: func(m *Manager) any { return &m.AdminUI.Enabled }},
		{Key: k("admin_ui.secret_sha256", "", "SHA-256 (hex) of the admin page's login secret, made with txmanager hash-token; a known default secret is refused"),
			field: func(m *Manager) any { return &m.AdminUI.SecretSHA256 }, check: checkSHA256, show: redact},
		dur("admin_ui.session_ttl", "8h", "how long an admin page login lasts",
			func(m *Manager) *time.Duration { return &m.AdminUI.SessionTTL }),
		{Key: k("limits.message_rate", "2000", "messages per second one client session may send; a faster session is throttled, others are not slowed"),
			field: func(m *Manager) any { return &m.Core.MessageRate }, positive: true},
		{Key: k("limits.message_burst", "4000", "messages a client session may send at once above limits.message_rate"),
			field: func(m *Manager) any { return &m.Core.MessageBurst }, positive: true},
		{Key: k("limits.max_body_bytes", "1048576", "largest REST request body, in bytes"),
			field: func(m *Manager) any { return &m.Core.MaxBodyBytes }, positive: true},
		{Key: k("log_level", "info", "least severe log level written: debug, info, warn or error"),
			field: func(m *Manager) any { return &m.LogLevel }, enum: []string{"debug", "info", "warn", "error"}},
		{Key: k("log_format", "text", "log format: text or json"),
			field: func(m *Manager) any { return &m.LogFormat }, enum: []string{"text", "json"}},
	}
}

func clientSpecs() []spec[Client] {
	k := func(name, def, doc string) Key { return mkKey(name, "client.", def, doc) }
	dur := func(name, def, doc string, f func(*Client) *time.Duration) spec[Client] {
		return spec[Client]{Key: k(name, def, doc), field: func(c *Client) any { return f(c) }}
	}
	return []spec[Client]{
		{Key: k("client.manager_url", "ws://127.0.0.1:8070/v1/ws", "the TxManager's websocket endpoint, a ws:// or wss:// URL"),
			field: func(c *Client) any { return &c.Core.ManagerURL }, required: true, check: checkWSURL, show: redactURL},
		{Key: k("client.service", "", "name of this service (for example stock); required"),
			field: func(c *Client) any { return &c.Core.Service }, required: true},
		{Key: k("client.instance", "", "identity of this process among the service's replicas; empty: a random id per process"),
			field: func(c *Client) any { return &c.Core.Instance }},
		{Key: secret(k("client.token", "", "token presented at the handshake as Authorization: Bearer (secret: prefer the file or the environment to the flag)")),
			field: func(c *Client) any { return &c.Core.Token }},
		{Key: k("client.tls_ca_file", "", "PEM CA certificates the TxManager's certificate is verified against (wss:// only); unset: the system roots"),
			field: func(c *Client) any { return &c.TLSFiles.CAFile }},
		{Key: k("client.tls_cert_file", "", "PEM client certificate presented to the TxManager (wss:// only), with client.tls_key_file"),
			field: func(c *Client) any { return &c.TLSFiles.CertFile }},
		{Key: k("client.tls_key_file", "", "PEM private key of client.tls_cert_file"),
			field: func(c *Client) any { return &c.TLSFiles.KeyFile }},
		dur("client.request_timeout", "10s", "bound of each request to the TxManager when the caller's context has no earlier deadline",
			func(c *Client) *time.Duration { return &c.Core.RequestTimeout }),
		{Key: k("client.group_timeout", "0s", "deadline asked for new groups; 0s: the TxManager's group_timeout"),
			field: func(c *Client) any { return &c.Core.GroupTimeout }, zeroOK: true},
		dur("client.reconnect_min", "100ms", "first delay before reconnecting to the TxManager (doubles each time)",
			func(c *Client) *time.Duration { return &c.Core.ReconnectMin }),
		dur("client.reconnect_max", "5s", "cap of the reconnect delay",
			func(c *Client) *time.Duration { return &c.Core.ReconnectMax }),
		dur("client.ask_interval", "5s", "how long a held branch waits for its decision before asking the TxManager, and then between asks",
			func(c *Client) *time.Duration { return &c.Core.AskInterval }),
		dur("client.apply_timeout", "30s", "bound of applying a decision (commit or rollback) to a held branch",
			func(c *Client) *time.Duration { return &c.Core.ApplyTimeout }),
	}
}

func keysOf[T any](specs []spec[T]) []Key {
	keys := make([]Key, len(specs))
	for i, s := range specs {
		keys[i] = s.Key
	}
	return keys
}

// ManagerKeys lists every setting LoadManager reads, in the order of
// --help. The slice is a fresh copy.
func ManagerKeys() []Key { return keysOf(managerSpecs()) }

// ClientKeys lists every setting LoadClient reads, in the order of --help.
// The slice is a fresh copy.
func ClientKeys() []Key { return keysOf(clientSpecs()) }

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("%q is not host:port with a numeric port", s)
	}
	return nil
}

// checkSHA256 accepts 64 hex digits; the message never shows the value.
func checkSHA256(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return errors.New("must be 64 hex characters (a SHA-256: printf %s \"$SECRET\" | txmanager hash-token)")
	}
	return nil
}

func checkPrefix(s string) error {
	if strings.ContainsAny(s, "{}") {
		// Group keys carry a {group id} hash tag; braces in the prefix
		// would change which part Redis Cluster hashes.
		return fmt.Errorf("%q must not contain { or }", s)
	}
	return nil
}

func checkWSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%q must be a ws:// or wss:// URL with a host", u.Redacted())
	}
	return nil
}

// checkOrigin accepts a browser origin as sent in the Origin header:
// scheme://host[:port], nothing more.
func checkOrigin(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an origin: want http(s)://host[:port] (origins are matched exactly; there is no wildcard)", s)
	}
	if u.Path == "/" {
		return fmt.Errorf("%q is not an origin: drop the trailing slash (browsers send none)", s)
	}
	return nil
}

// redactURL hides a password in the URL's user info.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}
