package config

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

// writeConfig writes a YAML file into a fresh temporary directory.
func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lcn.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustManager(t *testing.T, args, environ []string) *Manager {
	t.Helper()
	m, err := loadManager(args, environ, io.Discard)
	if err != nil {
		t.Fatalf("LoadManager(%q, %q): %v", args, environ, err)
	}
	return m
}

// dev lets a TxManager configuration load without credentials.
const dev = "LCN_AUTH_INSECURE=true"

// devManager is mustManager with auth.insecure set in the environment (the
// first of duplicate variables wins, so environ may still override it).
func devManager(t *testing.T, args, environ []string) *Manager {
	t.Helper()
	return mustManager(t, args, append(slices.Clip(environ), dev))
}

func mustClient(t *testing.T, args, environ []string) *Client {
	t.Helper()
	c, err := loadClient(args, environ, io.Discard)
	if err != nil {
		t.Fatalf("LoadClient(%q, %q): %v", args, environ, err)
	}
	return c
}

func TestManagerDefaults(t *testing.T) {
	// No credentials and no auth.insecure: refused, with the way out.
	_, err := loadManager(nil, nil, io.Discard)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "auth.tokens" {
		t.Fatalf("no credentials: err %v, want a *KeyError for auth.tokens", err)
	}
	for _, want := range []string{"auth.insecure", "LCN_AUTH_TOKENS", "--auth-tokens", "--auth-insecure", "hash-token", "development only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no-credentials error does not mention %s:\n%v", want, err)
		}
	}

	m := mustManager(t, []string{"--auth-insecure"}, nil)
	core := txmanager.Config{Auth: txmanager.AuthConfig{Insecure: true}}.WithDefaults()
	want := Manager{
		Listen:       ":8070",
		Store:        StoreBolt,
		DataDir:      "./lcn-data",
		Redis:        Redis{Prefix: "lcn"},
		Core:         core,
		LogLevel:     "info",
		LogFormat:    "text",
		AdminUI:      AdminUI{SessionTTL: 8 * time.Hour},
		DrainTimeout: 30 * time.Second,
	}
	// Our defaults must be txmanager's own: the docs table shows ours.
	if !reflect.DeepEqual(*m, want) {
		t.Errorf("defaults:\n got %v\nwant %v", m, want)
	}
	if m.Core.Logger == nil {
		t.Error("Core.Logger is nil after WithDefaults")
	}
	if m.TLS != nil {
		t.Error("TLS configured by default")
	}
	if err := m.Core.Validate(); err != nil {
		t.Error(err)
	}
}

func TestClientDefaults(t *testing.T) {
	c := mustClient(t, nil, []string{"LCN_CLIENT_SERVICE=stock"})
	want := txclient.Config{ManagerURL: "ws://127.0.0.1:8070/v1/ws", Service: "stock"}.WithDefaults()
	if c.Core != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", c.Core, want)
	}
}

func TestManagerPrecedence(t *testing.T) {
	file := writeConfig(t, `
group_timeout: 40s
log_level: warn
redis:
  addr: file:1
  db: 2
`)
	other := writeConfig(t, "group_timeout: 45s\n")
	tests := []struct {
		name        string
		args, env   []string
		wantTimeout time.Duration
		wantAddr    string
		wantLevel   string
	}{
		{"defaults", nil, nil, 30 * time.Second, "", "info"},
		{"file overrides defaults", []string{"--config", file}, nil, 40 * time.Second, "file:1", "warn"},
		{"file named by env", nil, []string{"LCN_CONFIG=" + file}, 40 * time.Second, "file:1", "warn"},
		{"--config beats LCN_CONFIG", []string{"--config=" + other}, []string{"LCN_CONFIG=" + file}, 45 * time.Second, "", "info"},
		{"env overrides file", []string{"--config", file},
			[]string{"LCN_GROUP_TIMEOUT=50s", "LCN_REDIS_ADDR=env:2"}, 50 * time.Second, "env:2", "warn"},
		{"flag overrides env", []string{"--config", file, "--group-timeout", "1m", "--redis-addr=flag:3"},
			[]string{"LCN_GROUP_TIMEOUT=50s", "LCN_REDIS_ADDR=env:2"}, time.Minute, "flag:3", "warn"},
		{"flag overrides default", []string{"--log-level=DEBUG"}, nil, 30 * time.Second, "", "debug"},
		{"empty env is unset", []string{"--config", file}, []string{"LCN_GROUP_TIMEOUT=", "LCN_REDIS_ADDR="}, 40 * time.Second, "file:1", "warn"},
		{"first duplicate env wins", nil, []string{"LCN_GROUP_TIMEOUT=31s", "LCN_GROUP_TIMEOUT=32s"}, 31 * time.Second, "", "info"},
		{"last repeated flag wins", []string{"--group-timeout=33s", "--group-timeout=34s"}, nil, 34 * time.Second, "", "info"},
		{"unknown LCN_ env ignored", nil, []string{"LCN_GROUP_TIMOUT=1s", "LCN_SOMETHING_ELSE=x", "GROUP_TIMEOUT=2s"}, 30 * time.Second, "", "info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := devManager(t, tt.args, tt.env)
			if m.Core.GroupTimeout != tt.wantTimeout {
				t.Errorf("group_timeout = %s, want %s", m.Core.GroupTimeout, tt.wantTimeout)
			}
			if m.Redis.Addr != tt.wantAddr {
				t.Errorf("redis.addr = %q, want %q", m.Redis.Addr, tt.wantAddr)
			}
			if m.LogLevel != tt.wantLevel {
				t.Errorf("log_level = %q, want %q", m.LogLevel, tt.wantLevel)
			}
		})
	}
	// A sibling key in the file survives the environment setting another
	// key of the same section.
	m := devManager(t, []string{"--config", file}, []string{"LCN_REDIS_ADDR=env:2"})
	if m.Redis.DB != 2 {
		t.Errorf("redis.db = %d after env set redis.addr, want the file's 2", m.Redis.DB)
	}
}

func TestEveryManagerKeyFromEverySource(t *testing.T) {
	// Each key is set to a non-default value from each source in turn; the
	// loaded struct must be the same whichever source set it.
	pki := newTestPKI(t)
	hashA, hashB := txmanager.HashToken("token-a"), txmanager.HashToken("token-b")
	values := map[string]string{
		"listen": "127.0.0.1:9000", "store": "memory", "data_dir": "/tmp/x",
		"redis.addr": "r:6379", "redis.username": "u", "redis.password": "p", "redis.db": "3",
		"redis.prefix": "px", "redis.tls": "true",
		"tls.cert_file": pki.serverCert, "tls.key_file": pki.serverKey, "tls.client_ca_file": pki.caFile,
		"auth.tokens":          "stock=" + hashA + ",ops=" + strings.ToUpper(hashB) + ":Admin:2030-01-02T03:04:05Z",
		"auth.client_certs":    "true",
		"auth.allowed_origins": "https://a.example, http://b.example:8080",
		"auth.insecure":        "true",
		"limits.message_rate":  "2500.5", "limits.message_burst": "17", "limits.max_body_bytes": "4096",
		"group_timeout": "31s", "max_group_timeout": "11m", "reap_interval": "501ms",
		"retry_min": "201ms", "retry_max": "11s", "retention": "25h", "ping_interval": "11s", "lost_after": "2m",
		"attention_after": "3m", "drain_timeout": "5s",
		"admin_ui.enabled": "true", "admin_ui.secret_sha256": hashA, "admin_ui.session_ttl": "1h",
		"log_level": "error", "log_format": "json",
	}
	var yaml, env, args []string
	for _, k := range ManagerKeys() {
		v, ok := values[k.Name]
		if !ok {
			t.Fatalf("test lacks a value for %s", k.Name)
		}
		if v == k.Default {
			t.Fatalf("test value for %s is its default", k.Name)
		}
		yaml = append(yaml, fmt.Sprintf("%q: %q", k.Name, v))
		env = append(env, k.Env+"="+v)
		args = append(args, "--"+k.Flag+"="+v)
	}
	// A quoted string where YAML wants a number or bool is rejected, so
	// write those unquoted.
	fileText := strings.Join(yaml, "\n")
	for _, kv := range []string{`"redis.db": "3"`, `"redis.tls": "true"`, `"auth.client_certs": "true"`, `"auth.insecure": "true"`, `"admin_ui.enabled": "true"`,
		`"limits.message_rate": "2500.5"`, `"limits.message_burst": "17"`, `"limits.max_body_bytes": "4096"`} {
		k, v, _ := strings.Cut(kv, ": ")
		fileText = strings.Replace(fileText, kv, k+": "+strings.Trim(v, `"`), 1)
	}
	fromFile := mustManager(t, []string{"--config", writeConfig(t, fileText)}, nil)
	fromEnv := mustManager(t, nil, env)
	fromFlags := mustManager(t, args, nil)
	// The file's own forms: lists as YAML lists, tokens as mappings.
	nested := strings.NewReplacer(
		fmt.Sprintf("%q: %q", "auth.tokens", values["auth.tokens"]), `auth:
  tokens:
    - service: stock
      token_sha256: `+hashA+`
    - {service: ops, token_sha256: "`+strings.ToUpper(hashB)+`", role: admin, expires: 2030-01-02T03:04:05Z}
  allowed_origins: ["https://a.example", "http://b.example:8080"]
  client_certs: true
  insecure: true`,
		`"auth.client_certs": true`, "", `"auth.insecure": true`, "",
		fmt.Sprintf("%q: %q", "auth.allowed_origins", values["auth.allowed_origins"]), "",
	).Replace(fileText)
	fromFileLists := mustManager(t, []string{"--config", writeConfig(t, nested)}, nil)

	want := Manager{
		Listen: "127.0.0.1:9000", Store: "memory", DataDir: "/tmp/x",
		Redis:    Redis{Addr: "r:6379", Username: "u", Password: "p", DB: 3, Prefix: "px", TLS: true},
		TLSFiles: TLSFiles{CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.caFile},
		Core: txmanager.Config{GroupTimeout: 31 * time.Second, MaxGroupTimeout: 11 * time.Minute,
			ReapInterval: 501 * time.Millisecond, RetryMin: 201 * time.Millisecond, RetryMax: 11 * time.Second,
			Retention: 25 * time.Hour, PingInterval: 11 * time.Second, LostAfter: 2 * time.Minute,
			AttentionAfter: 3 * time.Minute,
			Auth: txmanager.AuthConfig{
				Credentials: []txmanager.Credential{
					{Service: "stock", TokenSHA256: hashA, Role: txmanager.RoleService},
					{Service: "ops", TokenSHA256: hashB, Role: txmanager.RoleAdmin, Expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
				},
				ClientCerts: true, Insecure: true,
				AllowedOrigins: []string{"https://a.example", "http://b.example:8080"},
			},
			MessageRate: 2500.5, MessageBurst: 17, MaxBodyBytes: 4096,
		}.WithDefaults(),
		LogLevel: "error", LogFormat: "json",
		AdminUI:      AdminUI{Enabled: true, SecretSHA256: hashA, SessionTTL: time.Hour},
		DrainTimeout: 5 * time.Second,
	}
	for name, got := range map[string]*Manager{"file": fromFile, "file lists": fromFileLists, "env": fromEnv, "flags": fromFlags} {
		if got.TLS == nil || len(got.TLS.Certificates) != 1 || got.TLS.ClientCAs == nil || got.TLS.ClientAuth != tls.VerifyClientCertIfGiven {
			t.Errorf("from %s: TLS = %+v", name, got.TLS)
		}
		g := *got
		g.TLS = nil
		if !reflect.DeepEqual(g, want) {
			t.Errorf("from %s:\n got %#v\n     %+v\nwant %#v\n     %+v", name, got, g.Core.Auth, want, want.Core.Auth)
		}
		if got.Redis.Password != "p" {
			t.Errorf("from %s: password not loaded", name)
		}
	}
}

func TestClientPrecedence(t *testing.T) {
	file := writeConfig(t, `
client:
  manager_url: ws://file:8070/v1/ws
  service: stock
  ask_interval: 6s
`)
	tests := []struct {
		name      string
		args, env []string
		wantURL   string
		wantAsk   time.Duration
	}{
		{"file", []string{"--config", file}, nil, "ws://file:8070/v1/ws", 6 * time.Second},
		{"env over file", []string{"--config", file}, []string{"LCN_CLIENT_MANAGER_URL=ws://env:1/v1/ws"}, "ws://env:1/v1/ws", 6 * time.Second},
		{"flag over env", []string{"--config", file, "--manager-url", "wss://flag:1/v1/ws", "--ask-interval=7s"},
			[]string{"LCN_CLIENT_MANAGER_URL=ws://env:1/v1/ws", "LCN_CLIENT_ASK_INTERVAL=8s"}, "wss://flag:1/v1/ws", 7 * time.Second},
		{"env only", nil, []string{"LCN_CLIENT_SERVICE=order", "LCN_CLIENT_ASK_INTERVAL=8s"}, "ws://127.0.0.1:8070/v1/ws", 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, tt.args, tt.env)
			if c.Core.ManagerURL != tt.wantURL {
				t.Errorf("manager_url = %q, want %q", c.Core.ManagerURL, tt.wantURL)
			}
			if c.Core.AskInterval != tt.wantAsk {
				t.Errorf("ask_interval = %s, want %s", c.Core.AskInterval, tt.wantAsk)
			}
		})
	}
	c := mustClient(t, []string{"--service=s", "--instance=i-1", "--token=tk", "--group-timeout=2m",
		"--request-timeout=3s", "--reconnect-min=1s", "--reconnect-max=2s", "--apply-timeout=4s"}, nil)
	want := txclient.Config{ManagerURL: "ws://127.0.0.1:8070/v1/ws", Service: "s", Instance: "i-1", Token: "tk",
		GroupTimeout: 2 * time.Minute, RequestTimeout: 3 * time.Second, ReconnectMin: time.Second,
		ReconnectMax: 2 * time.Second, AskInterval: 5 * time.Second, ApplyTimeout: 4 * time.Second}.WithDefaults()
	if c.Core != want {
		t.Errorf("flags:\n got %+v\nwant %+v", c.Core, want)
	}
}

// loadErr runs LoadManager or LoadClient and returns its error.
func loadErr(t *testing.T, client bool, file string, args, env []string) error {
	t.Helper()
	if file != "" {
		args = append([]string{"--config", writeConfig(t, file)}, args...)
	}
	var err error
	if client {
		_, err = loadClient(args, env, io.Discard)
	} else {
		_, err = loadManager(args, env, io.Discard)
	}
	if err == nil {
		t.Fatalf("loaded without error; want one")
	}
	return err
}

func TestBadValueNamesKeyAndSource(t *testing.T) {
	const fileSrc = "file " // + path, which is random
	tests := []struct {
		name      string
		client    bool
		file      string
		args, env []string
		key, src  string // src "" means: no source (the key was never set)
		msg       string // must appear in the error
	}{
		{name: "bad duration from env", env: []string{"LCN_GROUP_TIMEOUT=30x"},
			key: "group_timeout", src: "env LCN_GROUP_TIMEOUT", msg: `config: group_timeout: invalid duration "30x" (from env LCN_GROUP_TIMEOUT)`},
		{name: "bad duration from file", file: "reap_interval: soon\n",
			key: "reap_interval", src: fileSrc, msg: `invalid duration "soon"`},
		{name: "bare number duration", file: "group_timeout: 30\n",
			key: "group_timeout", src: fileSrc, msg: `a number needs a unit, for example "30s"`},
		{name: "negative duration from flag", args: []string{"--retry-min=-1s"},
			key: "retry_min", src: "flag --retry-min", msg: "must not be negative"},
		{name: "zero duration", file: "ping_interval: 0s\n",
			key: "ping_interval", src: fileSrc, msg: "must be positive"},
		{name: "duration as list", file: "retention: [1h]\n",
			key: "retention", src: fileSrc, msg: "got a list"},
		{name: "unknown store", file: "store: mongo\n",
			key: "store", src: fileSrc, msg: `invalid value "mongo" (want bolt, redis, memory)`},
		{name: "unknown log level", env: []string{"LCN_LOG_LEVEL=verbose"},
			key: "log_level", src: "env LCN_LOG_LEVEL", msg: `"verbose"`},
		{name: "log format not a string", file: "log_format: [a]\n",
			key: "log_format", src: fileSrc, msg: "want a string"},
		{name: "bad int from env", env: []string{"LCN_REDIS_DB=abc"},
			key: "redis.db", src: "env LCN_REDIS_DB", msg: `invalid integer "abc"`},
		{name: "negative int", file: "redis:\n  db: -1\n",
			key: "redis.db", src: fileSrc, msg: "must not be negative"},
		{name: "float int", file: "redis:\n  db: 1.5\n",
			key: "redis.db", src: fileSrc, msg: "want an integer"},
		{name: "bad bool from flag", args: []string{"--redis-tls=maybe"},
			key: "redis.tls", src: "flag --redis-tls", msg: `invalid boolean "maybe"`},
		{name: "number where string wanted", file: "listen: 8070\n",
			key: "listen", src: fileSrc, msg: "want a string, got a number (quote it)"},
		{name: "listen without port", args: []string{"--listen", "localhost"},
			key: "listen", src: "flag --listen", msg: `"localhost" is not host:port`},
		{name: "empty listen", args: []string{"--listen="},
			key: "listen", src: "flag --listen", msg: "required"},
		{name: "redis addr without port", env: []string{"LCN_REDIS_ADDR=redis://x"},
			key: "redis.addr", src: "env LCN_REDIS_ADDR", msg: "not host:port"},
		{name: "prefix with hash tag", file: "redis:\n  prefix: \"a{b}\"\n",
			key: "redis.prefix", src: fileSrc, msg: "must not contain { or }"},
		{name: "mapping where a value is wanted", file: "listen:\n  port: 1\n  host: x\n",
			key: "listen", src: fileSrc, msg: "got a mapping, want a single value"},
		{name: "section not a mapping", file: "redis: 5\n",
			key: "redis", src: fileSrc, msg: "want a mapping of redis.* keys"},
		{name: "store redis needs addr", file: "store: redis\n",
			key: "redis.addr", src: "", msg: "required when store is redis (store from file"},
		{name: "store redis needs addr (env)", env: []string{"LCN_STORE=Redis"},
			key: "redis.addr", src: "", msg: "LCN_REDIS_ADDR"},
		{name: "bolt needs data dir", args: []string{"--data-dir="},
			key: "data_dir", src: "flag --data-dir", msg: "must not be empty when store is bolt"},
		{name: "client bad url", client: true, env: []string{"LCN_CLIENT_SERVICE=s", "LCN_CLIENT_MANAGER_URL=http://tm:8070"},
			key: "client.manager_url", src: "env LCN_CLIENT_MANAGER_URL", msg: "ws:// or wss://"},
		{name: "client service missing", client: true,
			key: "client.service", src: "", msg: "required; set it in the file, with env LCN_CLIENT_SERVICE or with flag --service"},
		{name: "client negative group timeout", client: true, args: []string{"--service=s", "--group-timeout=-1s"},
			key: "client.group_timeout", src: "flag --group-timeout", msg: "must not be negative"},
		{name: "client bad apply timeout", client: true, file: "client:\n  service: s\n  apply_timeout: 1 minute\n",
			key: "client.apply_timeout", src: fileSrc, msg: `invalid duration "1 minute"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadErr(t, tt.client, tt.file, tt.args, tt.env)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.msg)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %q is not a *KeyError", err)
			}
			if ke.Key != tt.key {
				t.Errorf("KeyError.Key = %q, want %q (error %q)", ke.Key, tt.key, err)
			}
			if tt.src == fileSrc {
				if !strings.HasPrefix(ke.Source, fileSrc) || !strings.HasSuffix(ke.Source, "lcn.yaml") {
					t.Errorf("KeyError.Source = %q, want the file", ke.Source)
				}
			} else if ke.Source != tt.src {
				t.Errorf("KeyError.Source = %q, want %q", ke.Source, tt.src)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestAllBadValuesReported(t *testing.T) {
	err := loadErr(t, false, "group_timeout: 1x\nretry_max: 2y\n", []string{"--redis-db=z"}, []string{"LCN_STORE=tape"})
	for _, want := range []string{"group_timeout", "retry_max", "redis.db", "store"} {
		if !strings.Contains(err.Error(), "config: "+want+":") {
			t.Errorf("error does not report %s:\n%v", want, err)
		}
	}
}

func TestUnknownYAMLKey(t *testing.T) {
	tests := []struct {
		name, file, key, msg string
		client               bool
	}{
		{name: "typo", file: "group_timout: 30s\n", key: "group_timout", msg: "unknown key; did you mean group_timeout?"},
		{name: "nested typo", file: "redis:\n  adr: x:1\n", key: "redis.adr", msg: "did you mean redis.addr?"},
		{name: "far from anything", file: "zzzzzzzzzz: 1\n", key: "zzzzzzzzzz", msg: "unknown key (from file"},
		{name: "client key in manager file", file: "client:\n  service: s\n", key: "client.service", msg: "unknown key"},
		{name: "manager key in client file", client: true, file: "client:\n  service: s\nlisten: \":1\"\n", key: "listen", msg: "unknown key"},
		{name: "client key at top level", client: true, file: "service: s\n", key: "service", msg: "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadErr(t, tt.client, tt.file, nil, nil)
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key || !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("error %q: want an ErrUnknownKey *KeyError for %q", err, tt.key)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestFileEdgeCases(t *testing.T) {
	// Accepted.
	for name, file := range map[string]string{
		"empty file":         "",
		"comments only":      "# nothing\n",
		"empty section":      "redis:\n",
		"empty mapping":      "redis: {}\n",
		"key without value":  "group_timeout:\n",
		"json":               `{"group_timeout": "31s", "redis": {"db": 1}}`,
		"upper-case key":     "Group_Timeout: 31s\n",
		"zero as duration 0": "retry_min: 0s\nretry_max: 1s\n" + "retention: 24h\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadManager([]string{"--config", writeConfig(t, file)}, []string{dev}, io.Discard)
			if name == "zero as duration 0" {
				if err == nil || !strings.Contains(err.Error(), "retry_min: must be positive") {
					t.Fatalf("want retry_min: must be positive, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("missing file named by flag", func(t *testing.T) {
		_, err := loadManager([]string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "from flag --config") || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing file named by env", func(t *testing.T) {
		_, err := loadClient(nil, []string{"LCN_CONFIG=" + filepath.Join(t.TempDir(), "nope.yaml")}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "from env LCN_CONFIG") || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("invalid YAML", func(t *testing.T) {
		_, err := loadManager([]string{"--config", writeConfig(t, "listen: [\n")}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "invalid YAML") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("top level not a mapping", func(t *testing.T) {
		_, err := loadManager([]string{"--config", writeConfig(t, "- a\n- b\n")}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "invalid YAML") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		_, err := loadManager([]string{"--group-timout=1s"}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "group-timout") || !strings.Contains(err.Error(), "--help") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("positional argument", func(t *testing.T) {
		_, err := loadManager([]string{"--redis-tls", "false"}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), `unexpected argument "false"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bool flag alone", func(t *testing.T) {
		m := devManager(t, []string{"--redis-tls"}, []string{"LCN_REDIS_TLS=false"})
		if !m.Redis.TLS {
			t.Fatal("--redis-tls did not set redis.tls")
		}
	})
}

func TestValidateErrorWrapped(t *testing.T) {
	err := loadErr(t, false, "group_timeout: 20m\n", nil, []string{dev})
	for _, want := range []string{"config: ", "group_timeout", "max_group_timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	err = loadErr(t, true, "", []string{"--service=s", "--reconnect-min=10s"}, nil)
	if !strings.Contains(err.Error(), "reconnect_min") {
		t.Errorf("error %q does not name reconnect_min", err)
	}
}

func TestStoreRedisWithAddr(t *testing.T) {
	m := devManager(t, []string{"--store=REDIS", "--redis-addr=localhost:6379"}, nil)
	if m.Store != StoreRedis || m.Redis.Addr != "localhost:6379" {
		t.Fatalf("got store %q addr %q", m.Store, m.Redis.Addr)
	}
	// store=memory needs neither.
	if m := devManager(t, []string{"--store=memory", "--data-dir="}, nil); m.Store != StoreMemory {
		t.Fatalf("store = %q", m.Store)
	}
}

func TestSecretsRedacted(t *testing.T) {
	const pw, tok = "hunter2-pw", "s3cret-token"
	m := devManager(t, []string{"--redis-password", pw}, nil)
	c := mustClient(t, []string{"--token=" + tok, "--service=s", "--manager-url=wss://u:urlpass@tm:1/v1/ws"}, nil)
	var renders []string
	for _, v := range []any{m, *m, m.Redis, c, *c} {
		renders = append(renders, fmt.Sprint(v), fmt.Sprintf("%v|%+v|%#v|%s", v, v, v, v))
		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("cfg", "config", v)
		slog.New(slog.NewJSONHandler(&js, nil)).Info("cfg", "config", v)
		renders = append(renders, text.String(), js.String())
	}
	for _, r := range renders {
		for _, s := range []string{pw, tok, "urlpass"} {
			if strings.Contains(r, s) {
				t.Errorf("rendering leaks %q:\n%s", s, r)
			}
		}
		if !strings.Contains(r, "***") {
			t.Errorf("rendering does not show the secret as set:\n%s", r)
		}
	}
	// The JSON log has the settings by key name.
	var js bytes.Buffer
	slog.New(slog.NewJSONHandler(&js, nil)).Info("cfg", "config", m)
	var rec struct{ Config map[string]any }
	if err := json.Unmarshal(js.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Config["redis.password"] != "***" || rec.Config["listen"] != ":8070" || rec.Config["group_timeout"] == nil {
		t.Errorf("LogValue: %v", rec.Config)
	}
	// Unset secrets show as empty, not as set.
	if s := devManager(t, nil, nil).String(); !strings.Contains(s, `redis.password=""`) {
		t.Errorf("unset password: %s", s)
	}

	// Errors never carry a secret either.
	for name, tc := range map[string]struct {
		file string
		env  []string
	}{
		"password of wrong type": {file: "redis:\n  password: [" + pw + "]\n"},
		"malformed line":         {file: "redis:\n  password " + pw + "\n  addr: :\n- x"},
		"scalar document":        {file: pw + "\n"},
		"mapping as password":    {file: "redis:\n  password:\n    " + pw + ": 1\n"},
		"other error with pw":    {env: []string{"LCN_REDIS_PASSWORD=" + pw, "LCN_GROUP_TIMEOUT=x"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := loadErr(t, false, tc.file, nil, tc.env)
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
	err := loadErr(t, true, "", []string{"--token", tok}, []string{"LCN_CLIENT_SERVICE=s", "LCN_CLIENT_MANAGER_URL=http://u:urlpass@x"})
	if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "urlpass") {
		t.Errorf("error leaks a secret: %v", err)
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []Key
		load func([]string, []string, io.Writer) error
	}{
		{"manager", ManagerKeys(), func(a, e []string, w io.Writer) error { _, err := loadManager(a, e, w); return err }},
		{"client", ClientKeys(), func(a, e []string, w io.Writer) error { _, err := loadClient(a, e, w); return err }},
	} {
		for _, arg := range []string{"--help", "-h"} {
			t.Run(tc.name+arg, func(t *testing.T) {
				var out bytes.Buffer
				err := tc.load([]string{arg}, nil, &out)
				if err != pflag.ErrHelp {
					t.Fatalf("err = %v, want pflag.ErrHelp itself", err)
				}
				help := out.String()
				for _, want := range []string{"--config", "LCN_CONFIG", "increasing priority"} {
					if !strings.Contains(help, want) {
						t.Errorf("help lacks %q", want)
					}
				}
				for _, k := range tc.keys {
					line := ""
					for l := range strings.SplitSeq(help, "\n") {
						if strings.Contains(l, "--"+k.Flag+" ") {
							line = l
						}
					}
					if line == "" {
						t.Errorf("help lacks --%s:\n%s", k.Flag, help)
						continue
					}
					if !strings.Contains(line, k.Env) {
						t.Errorf("help line of --%s lacks %s: %q", k.Flag, k.Env, line)
					}
					if k.Default != "" && !strings.Contains(line, "(default "+k.Default+")") && !strings.Contains(line, fmt.Sprintf("(default %q)", k.Default)) {
						t.Errorf("help line of --%s lacks default %q: %q", k.Flag, k.Default, line)
					}
				}
			})
		}
	}
}

func TestKeys(t *testing.T) {
	for name, keys := range map[string][]Key{"manager": ManagerKeys(), "client": ClientKeys()} {
		seen := map[string]bool{}
		for _, k := range keys {
			if k.Env == "" || k.Flag == "" || k.Doc == "" {
				t.Errorf("%s key %q lacks env, flag or doc: %+v", name, k.Name, k)
			}
			if want := "LCN_" + strings.ToUpper(strings.ReplaceAll(k.Name, ".", "_")); k.Env != want {
				t.Errorf("%s: env %q, want %q", k.Name, k.Env, want)
			}
			if strings.ContainsAny(k.Flag, "._") || strings.HasPrefix(k.Flag, "-") {
				t.Errorf("%s: flag %q should be hyphenated, without leading dashes", k.Name, k.Flag)
			}
			if k.Flag == "config" || k.Flag == "help" || k.Env == "LCN_CONFIG" {
				t.Errorf("%s: flag or env collides with --config/--help", k.Name)
			}
			if strings.Contains(k.Doc, "`") {
				t.Errorf("%s: backquote in Doc changes pflag's help", k.Name)
			}
			if name == "client" && !strings.HasPrefix(k.Name, "client.") {
				t.Errorf("client key %q lacks the client. prefix", k.Name)
			}
			for _, id := range []string{"name " + k.Name, "env " + k.Env, "flag " + k.Flag} {
				if seen[id] {
					t.Errorf("duplicate %s", id)
				}
				seen[id] = true
			}
		}
	}
	for _, k := range []struct{ got, want string }{
		{flagOf(ManagerKeys(), "data_dir"), "data-dir"},
		{flagOf(ManagerKeys(), "redis.addr"), "redis-addr"},
		{flagOf(ClientKeys(), "client.manager_url"), "manager-url"},
		{flagOf(ClientKeys(), "client.service"), "service"},
	} {
		if k.got != k.want {
			t.Errorf("flag %q, want %q", k.got, k.want)
		}
	}
	// The slices are copies.
	ManagerKeys()[0].Name = "changed"
	if ManagerKeys()[0].Name == "changed" {
		t.Error("ManagerKeys shares its table")
	}
	// Only the documented secrets are secret.
	var secrets []string
	for _, k := range append(ManagerKeys(), ClientKeys()...) {
		if k.Secret {
			secrets = append(secrets, k.Name)
		}
	}
	if got := strings.Join(secrets, ","); got != "redis.password,client.token" {
		t.Errorf("secret keys = %s", got)
	}
}

func flagOf(keys []Key, name string) string {
	for _, k := range keys {
		if k.Name == name {
			return k.Flag
		}
	}
	return ""
}

func TestLevel(t *testing.T) {
	for lvl, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		m := devManager(t, []string{"--log-level", lvl}, nil)
		if m.Level() != want {
			t.Errorf("Level(%s) = %v", lvl, m.Level())
		}
	}
}

func TestLoadDoesNotReadProcessEnv(t *testing.T) {
	t.Setenv("LCN_GROUP_TIMEOUT", "x")
	t.Setenv("LCN_CONFIG", "/does/not/exist")
	if m := devManager(t, nil, nil); m.Core.GroupTimeout != 30*time.Second {
		t.Errorf("group_timeout = %s: the process environment leaked in", m.Core.GroupTimeout)
	}
}

func TestConcurrentLoads(t *testing.T) {
	file := writeConfig(t, "group_timeout: 40s\nredis:\n  db: 2\n")
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			timeout := fmt.Sprintf("%ds", 41+i)
			m := devManager(t, []string{"--config", file, "--group-timeout", timeout}, []string{"LCN_REDIS_DB=" + fmt.Sprint(i)})
			if m.Core.GroupTimeout.String() != timeout || m.Redis.DB != i {
				t.Errorf("load %d got group_timeout %s redis.db %d", i, m.Core.GroupTimeout, m.Redis.DB)
			}
			c := mustClient(t, []string{"--service", fmt.Sprint("s", i)}, nil)
			if c.Core.Service != fmt.Sprint("s", i) {
				t.Errorf("service %q", c.Core.Service)
			}
		})
	}
}

// The admin page needs its secret's hash, which is never shown.
func TestAdminUISettings(t *testing.T) {
	_, err := loadManager([]string{"--auth-insecure", "--admin-ui-enabled"}, nil, io.Discard)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "admin_ui.secret_sha256" || !strings.Contains(err.Error(), "hash-token") {
		t.Errorf("enabled without a hash: %v", err)
	}
	_, err = loadManager([]string{"--auth-insecure", "--admin-ui-secret-sha256", "not-a-hash-but-maybe-a-secret"}, nil, io.Discard)
	if !errors.As(err, &ke) || ke.Key != "admin_ui.secret_sha256" || strings.Contains(err.Error(), "not-a-hash-but-maybe-a-secret") {
		t.Errorf("malformed hash: %v", err)
	}
	h := txmanager.HashToken("a-long-admin-secret")
	m := mustManager(t, []string{"--auth-insecure", "--admin-ui-enabled", "--admin-ui-secret-sha256", h}, nil)
	if !m.AdminUI.Enabled || m.AdminUI.SecretSHA256 != h || m.AdminUI.SessionTTL != 8*time.Hour {
		t.Errorf("admin UI settings %+v", m.AdminUI)
	}
	if strings.Contains(m.String(), h) || !strings.Contains(m.String(), "admin_ui.secret_sha256=***") {
		t.Errorf("rendered settings show the hash: %s", m)
	}
}
