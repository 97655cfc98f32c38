package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/golcn/golcn/txmanager"
)

// FuzzConfig feeds arbitrary file contents to LoadManager: it must parse or
// fail, never panic, and whatever loads must be usable.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"listen: \":8070\"\nstore: bolt\ndata_dir: ./d\n",
		"store: redis\nredis:\n  addr: r:6379\n  password: pw\n  db: 3\n  prefix: p\n  tls: true\n",
		"group_timeout: 30s\nmax_group_timeout: 10m\nreap_interval: 500ms\nretry_min: 200ms\nretry_max: 10s\nretention: 24h\nping_interval: 10s\n",
		"group_timeout: 30x\n",
		"group_timeout: 30\n",
		"group_timeout: 0\n",
		"group_timeout: -1s\n",
		"group_timeout: 20m\n",
		"retry_min: 1h\n",
		"retention: 1s\n",
		"group_timout: 1s\n",
		"redis: 5\n",
		"redis:\n",
		"redis: {addr: {x: 1}}\n",
		"redis:\n  db: 99999999999999999999999\n",
		"redis:\n  db: 1.5\n",
		"redis:\n  prefix: \"{x}\"\n",
		"store: redis\n",
		"store: [redis]\n",
		"log_level: LOUD\n",
		"listen: 8070\n",
		"listen: null\n",
		"- a\n- b\n",
		"just a string",
		"{\"group_timeout\": \"5s\", \"redis\": {\"db\": 1}}",
		"a: &x [*x]\n",
		"x: &a [a, a]\ny: &b [*a, *a]\nz: [*b, *b]\n",
		"<<: {group_timeout: 5s}\n",
		"? [a, b]\n: c\n",
		"1: 2\n",
		"\"redis.addr\": a:1\nstore: redis\n",
		"Group_Timeout: 5s\ngroup_timeout: 6s\n",
		"retention: 2262000h\n",
		"ping_interval: 2020-01-01\n",
		"\xff\xfe",
		"%YAML 1.2\n---\nlisten: \":1\"\n---\nlisten: \":2\"\n",
		"auth:\n  insecure: true\n",
		"auth:\n  tokens:\n    - {service: stock, token_sha256: " + txmanager.HashToken("t") + "}\n    - {service: ops, token_sha256: " +
			txmanager.HashToken("u") + ", role: admin, expires: 2030-01-01T00:00:00Z}\n",
		"auth:\n  tokens: \"stock=" + txmanager.HashToken("t") + ":admin:2030-01-01T00:00:00Z,x=" + txmanager.HashToken("v") + "\"\n",
		"auth:\n  tokens: [{service: a, token_sha256: " + txmanager.HashToken("t") + "}, {service: b, token_sha256: " + txmanager.HashToken("t") + "}]\n",
		"auth:\n  tokens: [[1], {a: b}, \"x\", null, {service: null}, {service: [a]}, {? [x] : y}]\n",
		"auth:\n  tokens: {service: a}\n  allowed_origins: [https://a.example, [x], null, \"\"]\n",
		"auth:\n  tokens: [{service: a, token_sha256: !!binary aGVsbG8=, expires: !!timestamp 2001-12-14}]\n",
		"auth:\n  allowed_origins: \"https://a.example,http://b:1\"\n  client_certs: true\n",
		"tls:\n  cert_file: /nonexistent\n  key_file: /dev/null\n  client_ca_file: /dev/null\n",
		"limits:\n  message_rate: 1e308\n  message_burst: 9223372036854775807\n  max_body_bytes: -1\n",
		"limits:\n  message_rate: .nan\n  message_burst: 0x10\n  max_body_bytes: 1_000\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "lcn.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Without credentials from elsewhere, and with auth.insecure set
		// by the environment, so that the other keys get past the
		// no-credentials check.
		check(t, path, nil)
		check(t, path, []string{"LCN_AUTH_INSECURE=true"})
	})
}

// check loads the file at path and checks whatever loads is usable.
func check(t *testing.T, path string, environ []string) {
	m, err := loadManager([]string{"--config", path}, environ, io.Discard)
	if err != nil {
		if m != nil {
			t.Fatalf("error %v with a non-nil Manager", err)
		}
		return
	}
	c := m.Core
	for name, d := range map[string]int64{
		"group_timeout": int64(c.GroupTimeout), "max_group_timeout": int64(c.MaxGroupTimeout),
		"reap_interval": int64(c.ReapInterval), "retry_min": int64(c.RetryMin), "retry_max": int64(c.RetryMax),
		"retention": int64(c.Retention), "ping_interval": int64(c.PingInterval), "lost_after": int64(c.LostAfter),
	} {
		if d <= 0 {
			t.Errorf("%s = %d after a successful load", name, d)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("loaded config fails Validate: %v", err)
	}
	if m.Store == StoreRedis && m.Redis.Addr == "" {
		t.Error("store=redis loaded without redis.addr")
	}
	if m.Redis.DB < 0 {
		t.Errorf("redis.db = %d", m.Redis.DB)
	}
	a := m.Core.Auth
	if len(a.Credentials) == 0 && !a.ClientCerts && !a.Insecure {
		t.Error("loaded without credentials or auth.insecure")
	}
	for i, cr := range a.Credentials {
		if cr.Service == "" || len(cr.TokenSHA256) != 64 || (cr.Role != txmanager.RoleService && cr.Role != txmanager.RoleAdmin) {
			t.Errorf("credential %d loaded: %+v", i, cr)
		}
	}
	if a.ClientCerts && (m.TLS == nil || m.TLS.ClientCAs == nil) {
		t.Error("auth.client_certs loaded without client CAs")
	}
	if c.MessageRate <= 0 || c.MessageBurst <= 0 || c.MaxBodyBytes <= 0 {
		t.Errorf("limits %v %v %v", c.MessageRate, c.MessageBurst, c.MaxBodyBytes)
	}
	_ = m.String()
}
