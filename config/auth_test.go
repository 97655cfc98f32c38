package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/txmanager"
)

// Hashes whose tokens are never shown: the tests check they are never
// echoed.
var (
	hashStock = txmanager.HashToken("stock-token")
	hashOps   = txmanager.HashToken("ops-token")
)

func TestTokensForms(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []txmanager.Credential{
		{Service: "stock", TokenSHA256: hashStock, Role: txmanager.RoleService},
		{Service: "ops", TokenSHA256: hashOps, Role: txmanager.RoleAdmin, Expires: exp},
	}
	for name, tc := range map[string]struct {
		file string
		env  []string
		args []string
	}{
		"env":         {env: []string{"LCN_AUTH_TOKENS=stock=" + hashStock + ", ops=" + hashOps + ":admin:2030-01-02T03:04:05Z"}},
		"flag":        {args: []string{"--auth-tokens", "stock=" + hashStock + "::,ops=" + hashOps + ":ADMIN:2030-01-02T04:04:05+01:00"}},
		"file list":   {file: "auth:\n  tokens:\n    - {service: stock, token_sha256: " + hashStock + "}\n    - service: ops\n      token_sha256: " + strings.ToUpper(hashOps) + "\n      role: admin\n      expires: \"2030-01-02T03:04:05Z\"\n"},
		"file string": {file: "auth:\n  tokens: \"stock=" + hashStock + ":service,ops=" + hashOps + ":admin:2030-01-02T03:04:05Z\"\n"},
		"flag over file": {file: "auth:\n  tokens: [{service: x, token_sha256: " + hashOps + "}]\n",
			args: []string{"--auth-tokens=stock=" + hashStock + ",ops=" + hashOps + ":admin:2030-01-02T03:04:05Z"}},
	} {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeConfig(t, tc.file)}, args...)
			}
			m := mustManager(t, args, tc.env)
			got := m.Core.Auth.Credentials
			if len(got) != len(want) {
				t.Fatalf("credentials %+v", got)
			}
			for i := range want {
				if got[i].Service != want[i].Service || got[i].TokenSHA256 != want[i].TokenSHA256 ||
					got[i].Role != want[i].Role || !got[i].Expires.Equal(want[i].Expires) {
					t.Errorf("credential %d = %+v, want %+v", i, got[i], want[i])
				}
			}
			if m.Core.Auth.Insecure {
				t.Error("insecure")
			}
			s := m.String()
			if !strings.Contains(s, "stock:service, ops:admin until 2030-01-02T03:04:05Z") {
				t.Errorf("String: %s", s)
			}
			if strings.Contains(strings.ToLower(s), hashStock) || strings.Contains(strings.ToLower(s), hashOps) {
				t.Errorf("String shows a hash: %s", s)
			}
		})
	}
}

func TestBadTokens(t *testing.T) {
	rawToken := "my-raw-token-value-1234"
	tests := []struct {
		name      string
		file      string
		env       []string
		keys      []string // every KeyError.Key, in order
		msg, from string
	}{
		{name: "not a hash", env: []string{"LCN_AUTH_TOKENS=stock=" + rawToken},
			keys: []string{"auth.tokens[0].token_sha256"}, msg: "service stock: must be 64 hex characters", from: "env LCN_AUTH_TOKENS"},
		{name: "token in role position", env: []string{"LCN_AUTH_TOKENS=stock=" + hashStock + ":" + rawToken},
			keys: []string{"auth.tokens[0].role"}, msg: "unknown role (want service or admin)"},
		{name: "token in expires position", env: []string{"LCN_AUTH_TOKENS=stock=" + hashStock + "::" + rawToken},
			keys: []string{"auth.tokens[0].expires"}, msg: "RFC 3339"},
		{name: "no equals sign", env: []string{"LCN_AUTH_TOKENS=ops=" + hashOps + "," + rawToken},
			keys: []string{"auth.tokens[1]"}, msg: "want service=<sha256 hex>[:role[:expires]]"},
		{name: "empty item", env: []string{"LCN_AUTH_TOKENS=stock=" + hashStock + ",,"},
			keys: []string{"auth.tokens[1]", "auth.tokens[2]"}, msg: "empty item"},
		{name: "missing service", env: []string{"LCN_AUTH_TOKENS==" + hashStock},
			keys: []string{"auth.tokens[0].service"}, msg: "required"},
		{name: "service with slash", env: []string{"LCN_AUTH_TOKENS=a/b=" + hashStock},
			keys: []string{"auth.tokens[0].service"}, msg: "must not contain"},
		{name: "empty token hash", env: []string{"LCN_AUTH_TOKENS=stock=" + txmanager.HashToken("")},
			keys: []string{"auth.tokens[0].token_sha256"}, msg: "hash of the empty token"},
		{name: "duplicate", env: []string{"LCN_AUTH_TOKENS=stock=" + hashStock + ",ops=" + strings.ToUpper(hashStock)},
			keys: []string{"auth.tokens[1].token_sha256"}, msg: "same token as auth.tokens[0] (service stock)"},
		{name: "several at once", file: "auth:\n  tokens:\n    - {service: a, token_sha256: " + rawToken + ", role: root}\n    - {token_sha256: " + hashOps + ", expires: tomorrow}\n",
			keys: []string{"auth.tokens[0].token_sha256", "auth.tokens[0].role", "auth.tokens[1].service", "auth.tokens[1].expires"}, from: "file "},
		{name: "raw token field", file: "auth:\n  tokens:\n    - {service: a, token: " + rawToken + "}\n",
			keys: []string{"auth.tokens[0].token", "auth.tokens[0].token_sha256"}, msg: "tokens are never configured"},
		{name: "typo field", file: "auth:\n  tokens:\n    - {service: a, token_sha265: " + hashOps + "}\n",
			keys: []string{"auth.tokens[0].token_sha265", "auth.tokens[0].token_sha256"}, msg: "did you mean token_sha256?"},
		{name: "unknown field named like a token", file: "auth:\n  tokens:\n    - {service: a, token_sha256: " + hashOps + ", " + rawToken + ": 1}\n",
			keys: []string{"auth.tokens[0]"}, msg: "unknown field (want service"},
		{name: "item not a mapping", file: "auth:\n  tokens: [" + rawToken + "]\n",
			keys: []string{"auth.tokens[0]"}, msg: "want a mapping"},
		{name: "hash as a number", file: "auth:\n  tokens: [{service: a, token_sha256: 12345}]\n",
			keys: []string{"auth.tokens[0].token_sha256"}, msg: "quote it"},
		{name: "tokens a mapping", file: "auth:\n  tokens: {service: a}\n",
			keys: []string{"auth.tokens"}, msg: "got a mapping"},
		{name: "tokens a number", file: "auth:\n  tokens: 5\n",
			keys: []string{"auth.tokens"}, msg: "want a list of {service, token_sha256, role, expires} mappings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadErr(t, false, tt.file, nil, tt.env)
			var got []string
			for _, e := range flatten(err) {
				var ke *KeyError
				if !errors.As(e, &ke) {
					t.Fatalf("error %q is not a *KeyError", e)
				}
				got = append(got, ke.Key)
				if tt.from != "" && !strings.HasPrefix(ke.Source, tt.from) {
					t.Errorf("source %q, want %s...", ke.Source, tt.from)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.keys, " ") {
				t.Errorf("keys %q, want %q\n%v", got, tt.keys, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.msg)
			}
			for _, s := range []string{rawToken, hashStock, hashOps, strings.ToUpper(hashStock), txmanager.HashToken("")} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error echoes a token or hash: %v", err)
				}
			}
		})
	}
}

// flatten splits joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func TestNoCredentials(t *testing.T) {
	for name, env := range map[string][]string{
		"nothing":           nil,
		"insecure false":    {"LCN_AUTH_INSECURE=false"},
		"empty tokens list": {"LCN_AUTH_TOKENS= "},
	} {
		t.Run(name, func(t *testing.T) {
			err := loadErr(t, false, "", nil, env)
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "auth.tokens" || !strings.Contains(err.Error(), "auth.insecure") {
				t.Fatalf("err %v", err)
			}
		})
	}
	t.Run("empty list in file", func(t *testing.T) {
		err := loadErr(t, false, "auth:\n  tokens: []\n", nil, nil)
		if !strings.Contains(err.Error(), "config: auth.tokens: no client credentials") {
			t.Fatalf("err %v", err)
		}
	})
	// Reported with the other errors.
	err := loadErr(t, false, "store: redis\n", nil, nil)
	if !strings.Contains(err.Error(), "redis.addr") || !strings.Contains(err.Error(), "auth.tokens") {
		t.Errorf("err %v", err)
	}
	// Either of the other two is enough.
	m := mustManager(t, []string{"--auth-insecure"}, nil)
	if !m.Core.Auth.Insecure || m.Core.Auth.Credentials != nil {
		t.Errorf("auth %+v", m.Core.Auth)
	}
	pki := newTestPKI(t)
	m = mustManager(t, []string{"--auth-client-certs", "--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey,
		"--tls-client-ca-file", pki.caFile}, nil)
	if !m.Core.Auth.ClientCerts || m.TLS == nil || m.TLS.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("client certs: auth %+v tls %+v", m.Core.Auth, m.TLS)
	}
}

func TestOriginsAndLimits(t *testing.T) {
	m := mustManager(t, []string{"--auth-allowed-origins", " https://a.example ,http://localhost:3000"}, []string{dev,
		"LCN_LIMITS_MESSAGE_RATE=0.5", "LCN_LIMITS_MESSAGE_BURST=1", "LCN_LIMITS_MAX_BODY_BYTES=9223372036854775807"})
	if got := strings.Join(m.Core.Auth.AllowedOrigins, " "); got != "https://a.example http://localhost:3000" {
		t.Errorf("origins %q", got)
	}
	if m.Core.MessageRate != 0.5 || m.Core.MessageBurst != 1 || m.Core.MaxBodyBytes != 1<<63-1 {
		t.Errorf("limits %v %v %v", m.Core.MessageRate, m.Core.MessageBurst, m.Core.MaxBodyBytes)
	}
	if s := m.String(); !strings.Contains(s, `auth.allowed_origins=https://a.example,http://localhost:3000`) ||
		!strings.Contains(s, "limits.message_rate=0.5") {
		t.Errorf("String: %s", s)
	}
	m = devManager(t, []string{"--config", writeConfig(t, "limits:\n  message_rate: 10\n  max_body_bytes: 100\n")}, nil)
	if m.Core.MessageRate != 10 || m.Core.MaxBodyBytes != 100 || m.Core.MessageBurst != 4000 {
		t.Errorf("limits from file %v %v %v", m.Core.MessageRate, m.Core.MessageBurst, m.Core.MaxBodyBytes)
	}

	for _, tc := range []struct {
		file      string
		env, args []string
		key, msg  string
	}{
		{args: []string{"--auth-allowed-origins=*"}, key: "auth.allowed_origins[0]", msg: "no wildcard"},
		{args: []string{"--auth-allowed-origins=https://a.example/"}, key: "auth.allowed_origins[0]", msg: "trailing slash"},
		{env: []string{"LCN_AUTH_ALLOWED_ORIGINS=https://a.example,,https://b"}, key: "auth.allowed_origins[1]", msg: "empty item"},
		{file: "auth:\n  allowed_origins: [https://a.example, 5]\n", key: "auth.allowed_origins[1]", msg: "want a string"},
		{file: "auth:\n  allowed_origins: {a: 1}\n", key: "auth.allowed_origins", msg: "got a mapping"},
		{file: "auth:\n  allowed_origins: ftp://x\n", key: "auth.allowed_origins[0]", msg: "not an origin"},
		{args: []string{"--auth-insecure=yes please"}, key: "auth.insecure", msg: "invalid boolean"},
		{args: []string{"--limits-message-rate=0"}, key: "limits.message_rate", msg: "must be positive"},
		{args: []string{"--limits-message-rate=-1"}, key: "limits.message_rate", msg: "must not be negative"},
		{args: []string{"--limits-message-rate=NaN"}, key: "limits.message_rate", msg: "finite"},
		{file: "limits:\n  message_rate: .inf\n", key: "limits.message_rate", msg: "finite"},
		{env: []string{"LCN_LIMITS_MESSAGE_RATE=fast"}, key: "limits.message_rate", msg: `invalid number "fast"`},
		{env: []string{"LCN_LIMITS_MESSAGE_BURST=0"}, key: "limits.message_burst", msg: "must be positive"},
		{file: "limits:\n  message_burst: 1.5\n", key: "limits.message_burst", msg: "want an integer"},
		{args: []string{"--limits-max-body-bytes=0"}, key: "limits.max_body_bytes", msg: "must be positive"},
		{file: "limits:\n  max_body_bytes: 99999999999999999999\n", key: "limits.max_body_bytes", msg: ""},
		{file: "limits: 5\n", key: "limits", msg: "want a mapping of limits.* keys"},
	} {
		args := tc.args
		if tc.file != "" {
			args = append([]string{"--config", writeConfig(t, tc.file)}, args...)
		}
		_, err := loadManager(args, append(tc.env, dev), io.Discard)
		if tc.key == "" {
			if err != nil {
				t.Errorf("%v %v %q: %v", tc.args, tc.env, tc.file, err)
			}
			continue
		}
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v %v %q: err %v, want key %s and %q", tc.args, tc.env, tc.file, err, tc.key, tc.msg)
		}
	}
}

func TestServerTLS(t *testing.T) {
	pki := newTestPKI(t)
	m := devManager(t, []string{"--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey}, nil)
	if m.TLS == nil || len(m.TLS.Certificates) != 1 || m.TLS.ClientCAs != nil || m.TLS.ClientAuth != tls.NoClientCert ||
		m.TLS.MinVersion < tls.VersionTLS12 {
		t.Fatalf("TLS %+v", m.TLS)
	}
	if m.Core.Auth.ClientCerts {
		t.Error("ClientCerts set without auth.client_certs")
	}
	// A client CA without auth.client_certs: certificates verified, not
	// used for authentication.
	m = devManager(t, nil, []string{"LCN_TLS_CERT_FILE=" + pki.serverCert, "LCN_TLS_KEY_FILE=" + pki.serverKey, "LCN_TLS_CLIENT_CA_FILE=" + pki.caFile})
	if m.TLS.ClientCAs == nil || m.TLS.ClientAuth != tls.VerifyClientCertIfGiven || m.Core.Auth.ClientCerts {
		t.Fatalf("TLS %+v auth %+v", m.TLS, m.Core.Auth)
	}
	if s := m.String(); !strings.Contains(s, "tls.cert_file="+pki.serverCert) {
		t.Errorf("String: %s", s)
	}

	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		args     []string
		key, msg string
	}{
		{[]string{"--tls-cert-file", pki.serverCert}, "tls.key_file", "required when tls.cert_file is set (tls.cert_file from flag --tls-cert-file)"},
		{[]string{"--tls-key-file", pki.serverKey}, "tls.cert_file", "required when tls.key_file is set"},
		{[]string{"--tls-cert-file", missing, "--tls-key-file", pki.serverKey}, "tls.cert_file", "no such file"},
		{[]string{"--tls-cert-file", pki.serverCert, "--tls-key-file", missing}, "tls.key_file", "no such file"},
		{[]string{"--tls-cert-file", notPEM, "--tls-key-file", pki.serverKey}, "tls.cert_file", "no PEM CERTIFICATE"},
		{[]string{"--tls-cert-file", pki.serverCert, "--tls-key-file", pki.otherKey}, "tls.key_file", "does not go with tls.cert_file"},
		{[]string{"--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverCert}, "tls.key_file", "does not go with tls.cert_file"},
		{[]string{"--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey, "--tls-client-ca-file", notPEM}, "tls.client_ca_file", "no PEM certificate"},
		{[]string{"--tls-client-ca-file", pki.caFile}, "tls.client_ca_file", "needs tls.cert_file and tls.key_file"},
		{[]string{"--auth-client-certs"}, "auth.client_certs", "requires tls.client_ca_file"},
		{[]string{"--auth-client-certs", "--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey}, "auth.client_certs", "requires tls.client_ca_file"},
	} {
		_, err := loadManager(tc.args, []string{dev}, io.Discard)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err %v, want key %s and %q", tc.args, err, tc.key, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%v: error shows key material: %v", tc.args, err)
		}
	}
}

func TestClientTLS(t *testing.T) {
	pki := newTestPKI(t)
	base := []string{"LCN_CLIENT_SERVICE=s", "LCN_CLIENT_MANAGER_URL=wss://tm:8070/v1/ws"}
	c := mustClient(t, nil, base)
	if c.Core.TLS != nil {
		t.Error("TLS built with no tls_* key")
	}
	c = mustClient(t, []string{"--tls-ca-file", pki.caFile}, base)
	if c.Core.TLS == nil || c.Core.TLS.RootCAs == nil || len(c.Core.TLS.Certificates) != 0 {
		t.Fatalf("CA only: %+v", c.Core.TLS)
	}
	c = mustClient(t, []string{"--config", writeConfig(t, fmt.Sprintf("client:\n  tls_cert_file: %s\n  tls_key_file: %s\n", pki.clientCert, pki.clientKey))}, base)
	if c.Core.TLS == nil || c.Core.TLS.RootCAs != nil || len(c.Core.TLS.Certificates) != 1 {
		t.Fatalf("cert only: %+v", c.Core.TLS)
	}
	if c.TLSFiles.CertFile != pki.clientCert || !strings.Contains(c.String(), "client.tls_key_file="+pki.clientKey) {
		t.Errorf("files %+v, String %s", c.TLSFiles, c)
	}

	for _, tc := range []struct {
		args     []string
		env      []string
		key, msg string
	}{
		{[]string{"--tls-cert-file", pki.clientCert}, base, "client.tls_key_file", "required when client.tls_cert_file is set"},
		{[]string{"--tls-key-file", pki.clientKey}, base, "client.tls_cert_file", "required when client.tls_key_file is set"},
		{[]string{"--tls-ca-file", pki.clientKey}, base, "client.tls_ca_file", "no PEM certificate"},
		{[]string{"--tls-cert-file", pki.clientCert, "--tls-key-file", pki.serverKey}, base, "client.tls_key_file", "does not go with"},
		{[]string{"--tls-ca-file", pki.caFile}, []string{"LCN_CLIENT_SERVICE=s"}, "client.tls_ca_file", "is not a wss:// URL"},
	} {
		_, err := loadClient(tc.args, tc.env, io.Discard)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err %v, want key %s and %q", tc.args, err, tc.key, tc.msg)
		}
	}
}

// The rendered settings carry neither secrets nor hashes, at any level.
func TestAuthRendering(t *testing.T) {
	m := mustManager(t, []string{"--redis-password=pw-secret"}, []string{"LCN_AUTH_TOKENS=stock=" + hashStock + ",ops=" + hashOps + ":admin"})
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Debug("cfg", "config", m)
	log.Info("cfg", "config", *m, "core", m.Core.Auth.Credentials[0].Service)
	out := buf.String() + fmt.Sprintf("%v %+v %#v %s", m, m, m, m)
	for _, s := range []string{"pw-secret", hashStock, hashOps} {
		if strings.Contains(out, s) {
			t.Errorf("rendering shows %q:\n%s", s, out)
		}
	}
	if !strings.Contains(out, `"auth.tokens":"stock:service, ops:admin"`) {
		t.Errorf("rendering lacks the services:\n%s", out)
	}
}
