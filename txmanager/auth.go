package txmanager

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Role is what an authenticated caller may do.
type Role uint8

// Roles.
const (
	// RoleService may open a session, start and decide its own groups, and
	// join, vote for and acknowledge its own branches.
	RoleService Role = iota + 1
	// RoleAdmin may also use the operator endpoints (group lookup).
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleService:
		return "service"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// ParseRole is the inverse of String ("" means service).
func ParseRole(s string) (Role, error) {
	switch s {
	case "", "service":
		return RoleService, nil
	case "admin":
		return RoleAdmin, nil
	}
	return 0, fmt.Errorf("txmanager: unknown role %q (want service or admin)", s)
}

// Credential is one accepted token. Only the token's SHA-256 is kept, so a
// configuration file or a memory dump does not reveal tokens.
type Credential struct {
	Service     string    // the service this token authenticates
	TokenSHA256 string    // hex SHA-256 of the token
	Role        Role      // RoleService if zero
	Expires     time.Time // zero: never
}

// AuthConfig says who may talk to the TxManager.
type AuthConfig struct {
	// Credentials are the accepted bearer tokens (HTTP header
	// "Authorization: Bearer <token>" at the websocket handshake and on every
	// REST call).
	Credentials []Credential
	// ClientCerts accepts a verified TLS client certificate instead of a
	// token: its subject common name is the service name (role service).
	// The listener must be configured to verify client certificates.
	ClientCerts bool
	// Insecure runs with no authentication at all: a client is whoever its
	// hello says it is. For development only; the TxManager says so at start
	// and on /readyz.
	Insecure bool
	// AllowedOrigins lists the browser origins whose websocket upgrades are
	// accepted (they still need credentials). An upgrade carrying any other
	// Origin header is refused with 403.
	AllowedOrigins []string
}

// HashToken returns the hex SHA-256 of a token, the form Credential keeps.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// validate reports the first bad setting by its configuration key.
func (a AuthConfig) validate() error {
	if len(a.Credentials) == 0 && !a.ClientCerts && !a.Insecure {
		return errors.New("auth.tokens: no client credentials configured (and no client certificates); " +
			"configure tokens, or set auth.insecure to run without authentication (development only)")
	}
	for i, c := range a.Credentials {
		if c.Service == "" {
			return fmt.Errorf("auth.tokens[%d].service is required", i)
		}
		if b, err := hex.DecodeString(c.TokenSHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("auth.tokens[%d].token_sha256 (service %s) must be 64 hex characters (a SHA-256)", i, c.Service)
		}
		if c.TokenSHA256 == HashToken("") {
			return fmt.Errorf("auth.tokens[%d].token_sha256 (service %s) is the hash of the empty token", i, c.Service)
		}
		for _, weak := range knownDefaultTokens {
			if c.TokenSHA256 == HashToken(weak) {
				return fmt.Errorf("auth.tokens[%d].token_sha256 (service %s) is the hash of a known default secret", i, c.Service)
			}
		}
	}
	return nil
}

// knownDefaultTokens are secrets shipped as defaults by other coordinators;
// the TxManager refuses them.
var knownDefaultTokens = []string{"codingapi", "seata", "admin", "password", "secret", "changeme", "dtm"}

// principal is an authenticated caller.
type principal struct {
	service string // the service it acts as; "" for an admin page session, or with auth.insecure
	role    Role
	// name is who it is, for audit records: the token's service, the
	// certificate's common name, the admin page session's principal, or
	// "anonymous" (auth.insecure).
	name    string
	session bool // authenticated by an admin page session
}

// authenticator checks credentials against a table that can be replaced
// while the server runs (token rotation without restart).
type authenticator struct {
	cfg    AuthConfig
	hashes map[string]Credential // by TokenSHA256
}

func newAuthenticator(cfg AuthConfig) (*authenticator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &authenticator{cfg: cfg, hashes: make(map[string]Credential, len(cfg.Credentials))}
	for _, c := range cfg.Credentials {
		if c.Role == 0 {
			c.Role = RoleService
		}
		a.hashes[strings.ToLower(c.TokenSHA256)] = c
	}
	return a, nil
}

// errAuth is an authentication failure: the HTTP status and a message that
// reveals nothing about the credential table.
type errAuth struct {
	status int
	msg    string
}

func (e *errAuth) Error() string { return e.msg }

// authenticate identifies the caller of r, or returns an *errAuth.
func (a *authenticator) authenticate(r *http.Request, now time.Time) (principal, error) {
	if origin := r.Header.Get("Origin"); origin != "" && !a.originAllowed(origin) {
		return principal{}, &errAuth{http.StatusForbidden, "origin not allowed"}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || token == "" {
			return principal{}, &errAuth{http.StatusUnauthorized, "malformed Authorization header: want Bearer <token>"}
		}
		sum := HashToken(token)
		c, found := a.hashes[sum]
		// Compare in constant time even though the map lookup already
		// matched, so that timing says nothing about near misses.
		if !found || subtle.ConstantTimeCompare([]byte(sum), []byte(strings.ToLower(c.TokenSHA256))) != 1 {
			return principal{}, &errAuth{http.StatusUnauthorized, "invalid token"}
		}
		if !c.Expires.IsZero() && !now.Before(c.Expires) {
			return principal{}, &errAuth{http.StatusUnauthorized, "token expired"}
		}
		return principal{service: c.Service, role: c.Role, name: c.Service}, nil
	}
	if a.cfg.ClientCerts && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		if cn := cert.Subject.CommonName; cn != "" {
			return principal{service: cn, role: RoleService, name: cn}, nil
		}
	}
	if a.cfg.Insecure {
		return principal{role: RoleAdmin, name: "anonymous"}, nil // service taken from the hello
	}
	return principal{}, &errAuth{http.StatusUnauthorized, "authentication required: Authorization: Bearer <token>"}
}

func (a *authenticator) originAllowed(origin string) bool {
	for _, o := range a.cfg.AllowedOrigins {
		if o == origin {
			return true
		}
	}
	return false
}
