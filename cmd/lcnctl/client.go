package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// client calls the TxManager's REST API.
type client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// newClient builds a client from the global flags. needToken: the
// command's endpoints need the admin token.
func (g *globals) newClient(needToken bool) (*client, error) {
	u, err := url.Parse(strings.TrimRight(g.url, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--url %q: want http(s)://host[:port]", g.url)}
	}
	c := &client{base: u, hc: &http.Client{Timeout: g.timeout}}
	if g.caFile != "" {
		pem, err := os.ReadFile(g.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", g.caFile)
		}
		c.hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	if needToken {
		if c.token, err = g.readToken(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// readToken reads the admin token: --token-file / LCN_ADMIN_TOKEN_FILE,
// else LCN_ADMIN_TOKEN. The error never shows the token.
func (g *globals) readToken() (string, error) {
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return "", fmt.Errorf("admin token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" || strings.ContainsAny(tok, "\r\n") {
			return "", fmt.Errorf("admin token file %s: want one token on one line", g.tokenFile)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(g.env[envToken]); tok != "" {
		return tok, nil
	}
	return "", usageError{fmt.Errorf("no admin token: set %s to a file holding it (or --token-file), or %s to the token", envTokenFile, envToken)}
}

// apiError is an error answer of the TxManager.
type apiError struct {
	Status  int
	Message string
	Param   string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
	if e.Param != "" {
		msg += " (parameter " + e.Param + ")"
	}
	return msg
}

// do sends method path (with query and a JSON body when not nil) and
// returns the raw JSON answer of a 2xx status. Other statuses are
// *apiError with the server's message.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body any) (json.RawMessage, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		var ne net.Error
		if errors.As(err, &ue) && (errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused")) {
			return nil, fmt.Errorf("cannot reach the TxManager at %s: %w", c.base, ue.Err)
		}
		return nil, fmt.Errorf("cannot reach the TxManager at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return raw, nil
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Param   string `json:"param"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &e) != nil || e.Error.Message == "" {
		e.Error.Message = strings.TrimSpace(string(raw))
		if len(e.Error.Message) > 200 {
			e.Error.Message = e.Error.Message[:200] + "…"
		}
	}
	return nil, &apiError{Status: resp.StatusCode, Message: e.Error.Message, Param: e.Error.Param}
}

// get decodes a GET's answer into v and returns the raw JSON too.
func (c *client) call(ctx context.Context, method, path string, query url.Values, body, v any) (json.RawMessage, error) {
	raw, err := c.do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return raw, nil
}
