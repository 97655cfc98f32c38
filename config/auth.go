package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/golcn/golcn/txmanager"
)

// TLSFiles are the PEM files a TLS configuration is built from: the keys
// tls.* of the TxManager, client.tls_* of a client.
type TLSFiles struct {
	// CertFile and KeyFile are a certificate (chain) and its private key:
	// the TxManager's server certificate ("tls.cert_file",
	// "tls.key_file"), or a client's certificate ("client.tls_cert_file",
	// "client.tls_key_file").
	CertFile string
	KeyFile  string
	// CAFile holds CA certificates: for the TxManager those that client
	// certificates are verified against ("tls.client_ca_file"); for a
	// client those that the TxManager's certificate is verified against
	// ("client.tls_ca_file"; unset: the system roots).
	CAFile string
}

// credentialFields are the members of an auth.tokens item in the file.
var credentialFields = map[string]bool{"service": true, "token_sha256": true, "role": true, "expires": true}

// compactForm describes an auth.tokens item in the environment or a flag.
const compactForm = "service=<sha256 hex>[:role[:expires]]"

// parseCredentials reads auth.tokens: in the file a list of mappings
// {service, token_sha256, role, expires}; in the environment, a flag or a
// file string, a comma-separated list in compactForm. Every bad item is
// reported as a subKeyError naming auth.tokens[i].field; no error carries
// a hash, a token or any part of an item that could be one: only the
// index and the service.
func parseCredentials(raw any) ([]txmanager.Credential, error) {
	var creds []txmanager.Credential
	var errs []error
	switch v := raw.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			return nil, nil
		}
		for i, item := range strings.Split(v, ",") {
			c, err := parseCompactCredential(i, strings.TrimSpace(item))
			creds = append(creds, c)
			errs = append(errs, err...)
		}
	case []any:
		for i, item := range v {
			c, err := parseMapCredential(i, item)
			creds = append(creds, c)
			errs = append(errs, err...)
		}
	default:
		return nil, fmt.Errorf("want a list of {service, token_sha256, role, expires} mappings (or, as a string, %s,...), got %s",
			compactForm, describe(raw))
	}
	if len(errs) == 0 {
		errs = checkCredentials(creds)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, nil
	}
	return creds, nil
}

// itemErr names auth.tokens[i].field, and the service when it is known.
func itemErr(i int, field, service string, format string, args ...any) error {
	sub := fmt.Sprintf("[%d]", i)
	if field != "" {
		sub += "." + field
	}
	msg := fmt.Sprintf(format, args...)
	if service != "" {
		msg = fmt.Sprintf("service %s: %s", service, msg)
	}
	return subErr(sub, errors.New(msg))
}

func parseCompactCredential(i int, item string) (txmanager.Credential, []error) {
	if item == "" {
		return txmanager.Credential{}, []error{itemErr(i, "", "", "empty item (want %s)", compactForm)}
	}
	svc, rest, ok := strings.Cut(item, "=")
	if !ok {
		return txmanager.Credential{}, []error{itemErr(i, "", "", "want %s", compactForm)}
	}
	svc = strings.TrimSpace(svc)
	parts := strings.SplitN(rest, ":", 3) // expires (RFC 3339) has colons of its own
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return buildCredential(i, svc, parts[0], parts[1], parts[2])
}

func parseMapCredential(i int, item any) (txmanager.Credential, []error) {
	var m map[string]any
	switch v := item.(type) {
	case map[string]any:
		m = v
	case map[any]any:
		m = make(map[string]any, len(v))
		for k, val := range v {
			ks, ok := k.(string)
			if !ok {
				return txmanager.Credential{}, []error{itemErr(i, "", "", "field names must be strings")}
			}
			m[ks] = val
		}
	default:
		return txmanager.Credential{}, []error{itemErr(i, "", "",
			"want a mapping {service, token_sha256, role, expires}, got %s", describe(item))}
	}
	var errs []error
	str := map[string]string{}
	skip := map[string]bool{} // fields already reported
	for _, k := range slices.Sorted(maps.Keys(m)) {
		val := m[k]
		k = strings.ToLower(k)
		if !credentialFields[k] {
			// The field's name is echoed only when it is plainly a
			// misspelt field, not something that could be a secret.
			switch near := nearest(k, credentialFields); {
			case near != "":
				errs = append(errs, itemErr(i, k, "", "unknown field; did you mean %s?", near))
			case k == "token" || k == "secret" || k == "password":
				errs = append(errs, itemErr(i, k, "", "unknown field: tokens are never configured, "+
					"only their SHA-256 in token_sha256 (txmanager hash-token prints it)"))
			default:
				errs = append(errs, itemErr(i, "", "", "unknown field (want service, token_sha256, role, expires)"))
			}
			continue
		}
		switch v := val.(type) {
		case nil:
		case string:
			str[k] = v
		case time.Time:
			if k == "expires" {
				str[k] = v.Format(time.RFC3339Nano)
				continue
			}
			skip[k] = true
			errs = append(errs, itemErr(i, k, "", "want a string, got %s (quote it)", describe(val)))
		default:
			skip[k] = true
			errs = append(errs, itemErr(i, k, "", "want a string, got %s (quote it)", describe(val)))
		}
	}
	c, more := buildCredential(i, strings.TrimSpace(str["service"]), str["token_sha256"], str["role"], str["expires"])
	for _, e := range more {
		if se, ok := e.(*subKeyError); ok && skip[strings.TrimPrefix(se.sub, fmt.Sprintf("[%d].", i))] {
			continue
		}
		errs = append(errs, e)
	}
	return c, errs
}

// buildCredential checks one item's fields. The hash is never echoed, and
// neither are role and expires: in the compact form a token pasted in the
// wrong place would land there.
func buildCredential(i int, svc, hash, role, expires string) (txmanager.Credential, []error) {
	var errs []error
	switch {
	case svc == "":
		errs = append(errs, itemErr(i, "service", "", "required"))
	case strings.ContainsFunc(svc, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '/' }):
		errs = append(errs, itemErr(i, "service", "", "must not contain spaces, control characters or /"))
		svc = "" // do not echo it either
	case len(svc) > 1024:
		errs = append(errs, itemErr(i, "service", "", "longer than 1024 bytes"))
		svc = ""
	}
	c := txmanager.Credential{Service: svc, TokenSHA256: strings.ToLower(strings.TrimSpace(hash))}
	if b, err := hex.DecodeString(c.TokenSHA256); err != nil || len(b) != sha256.Size {
		what := "required"
		if c.TokenSHA256 != "" {
			what = "must be 64 hex characters"
		}
		errs = append(errs, itemErr(i, "token_sha256", svc,
			"%s: the SHA-256 of the token, as printed by txmanager hash-token (tokens themselves are never configured)", what))
	} else if c.TokenSHA256 == txmanager.HashToken("") {
		errs = append(errs, itemErr(i, "token_sha256", svc, "is the hash of the empty token"))
	}
	r, err := txmanager.ParseRole(strings.ToLower(strings.TrimSpace(role)))
	if err != nil {
		errs = append(errs, itemErr(i, "role", svc, "unknown role (want service or admin)"))
	}
	c.Role = r
	if expires = strings.TrimSpace(expires); expires != "" {
		t, err := time.Parse(time.RFC3339, expires)
		if err != nil {
			errs = append(errs, itemErr(i, "expires", svc, "not an RFC 3339 time such as 2027-01-31T00:00:00Z"))
		}
		c.Expires = t
	}
	return c, errs
}

// checkCredentials rejects a token listed twice: the TxManager would keep
// only one of the items, silently.
func checkCredentials(creds []txmanager.Credential) []error {
	var errs []error
	first := map[string]int{}
	for i, c := range creds {
		if j, dup := first[c.TokenSHA256]; dup {
			errs = append(errs, itemErr(i, "token_sha256", c.Service,
				"same token as auth.tokens[%d] (service %s); list each token once", j, creds[j].Service))
			continue
		}
		first[c.TokenSHA256] = i
	}
	return errs
}

// showCredentials renders auth.tokens for String and LogValue: services,
// roles and expiry, never the hashes.
func showCredentials(creds []txmanager.Credential) string {
	parts := make([]string, len(creds))
	for i, c := range creds {
		role := c.Role
		if role == 0 {
			role = txmanager.RoleService
		}
		parts[i] = c.Service + ":" + role.String()
		if !c.Expires.IsZero() {
			parts[i] += " until " + c.Expires.UTC().Format(time.RFC3339)
		}
	}
	return strings.Join(parts, ", ")
}

// tlsKeys names the keys of a TLSFiles, for errors.
type tlsKeys struct{ cert, key, ca string }

var (
	serverTLSKeys = tlsKeys{"tls.cert_file", "tls.key_file", "tls.client_ca_file"}
	clientTLSKeys = tlsKeys{"client.tls_cert_file", "client.tls_key_file", "client.tls_ca_file"}
)

// keyPair loads CertFile and KeyFile; both or neither must be set. It
// returns nil, nil when neither is.
func (f TLSFiles) keyPair(k tlsKeys, src sources) (*tls.Certificate, []error) {
	switch {
	case f.CertFile == "" && f.KeyFile == "":
		return nil, nil
	case f.KeyFile == "":
		return nil, []error{&KeyError{Key: k.key, Err: fmt.Errorf("required when %s is set (%s from %s)", k.cert, k.cert, src[k.cert])}}
	case f.CertFile == "":
		return nil, []error{&KeyError{Key: k.cert, Err: fmt.Errorf("required when %s is set (%s from %s)", k.key, k.key, src[k.key])}}
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, []error{&KeyError{Key: k.cert, Source: src[k.cert], Err: err}}
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, []error{&KeyError{Key: k.key, Source: src[k.key], Err: err}}
	}
	if !hasPEM(certPEM, "CERTIFICATE") {
		return nil, []error{&KeyError{Key: k.cert, Source: src[k.cert], Err: fmt.Errorf("%s: no PEM CERTIFICATE block", f.CertFile)}}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, []error{&KeyError{Key: k.key, Source: src[k.key], Err: fmt.Errorf("%s does not go with %s: %w", f.KeyFile, k.cert, err)}}
	}
	return &cert, nil
}

// caPool loads CAFile; nil, nil when it is unset.
func (f TLSFiles) caPool(k tlsKeys, src sources) (*x509.CertPool, []error) {
	if f.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, []error{&KeyError{Key: k.ca, Source: src[k.ca], Err: err}}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, []error{&KeyError{Key: k.ca, Source: src[k.ca], Err: fmt.Errorf("%s: no PEM certificate", f.CAFile)}}
	}
	return pool, nil
}

func hasPEM(b []byte, typ string) bool {
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return false
		}
		if blk.Type == typ {
			return true
		}
	}
}

// serverTLS builds the TxManager's listener configuration from tls.*:
// nil when no certificate is configured. A client certificate is verified
// when one is presented (tls.client_ca_file) but not required, so that
// token clients still connect.
func serverTLS(f TLSFiles, src sources) (*tls.Config, []error) {
	cert, errs := f.keyPair(serverTLSKeys, src)
	pool, caErrs := f.caPool(serverTLSKeys, src)
	errs = append(errs, caErrs...)
	if f.CAFile != "" && f.CertFile == "" && f.KeyFile == "" {
		errs = append(errs, &KeyError{Key: serverTLSKeys.ca, Source: src[serverTLSKeys.ca],
			Err: errors.New("needs tls.cert_file and tls.key_file: client certificates are verified only over TLS")})
	}
	if len(errs) > 0 || cert == nil {
		return nil, errs
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert},
		// HTTP/1.1 only: the websocket upgrade needs it.
		NextProtos: []string{"http/1.1"},
	}
	if pool != nil {
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// clientTLS builds a client's configuration from client.tls_*: nil when
// none is set.
func clientTLS(f TLSFiles, managerURL string, src sources) (*tls.Config, []error) {
	if f == (TLSFiles{}) {
		return nil, nil
	}
	if !strings.HasPrefix(strings.ToLower(managerURL), "wss://") {
		var errs []error
		for _, kv := range []struct{ key, val string }{{clientTLSKeys.ca, f.CAFile}, {clientTLSKeys.cert, f.CertFile}, {clientTLSKeys.key, f.KeyFile}} {
			if kv.val != "" {
				errs = append(errs, &KeyError{Key: kv.key, Source: src[kv.key],
					Err: fmt.Errorf("set, but client.manager_url (from %s) is not a wss:// URL: TLS would not be used", src["client.manager_url"])})
			}
		}
		return nil, errs
	}
	cert, errs := f.keyPair(clientTLSKeys, src)
	pool, caErrs := f.caPool(clientTLSKeys, src)
	if errs = append(errs, caErrs...); len(errs) > 0 {
		return nil, errs
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c, nil
}
