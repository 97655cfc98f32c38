//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// links is a Toxiproxy server embedded in the test process (RELIABILITY.md
// A.4): each link is a TCP proxy on a free loopback port in front of one
// upstream, whose faults the scenario switches with toxics. Nothing listens
// for Toxiproxy's HTTP API; the scenarios drive the proxies directly.
type links struct {
	srv *toxiproxy.ApiServer
}

func newLinks(t *testing.T) *links {
	t.Helper()
	l := &links{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())}
	t.Cleanup(func() { _ = l.srv.Collection.Clear() })
	return l
}

// link is one proxied connection path (e.g. TxManager → Redis).
type link struct {
	name string
	p    *toxiproxy.Proxy

	mu  sync.Mutex
	cut bool
}

// add starts a proxy named name in front of upstream.
func (l *links) add(t *testing.T, name, upstream string) *link {
	t.Helper()
	p := toxiproxy.NewProxy(l.srv, name, "127.0.0.1:0", upstream)
	if err := l.srv.Collection.Add(p, true); err != nil {
		t.Fatalf("toxiproxy %s → %s: %v", name, upstream, err)
	}
	return &link{name: name, p: p}
}

// Addr is where clients of the link connect.
func (k *link) Addr() string { return k.p.Listen }

// toxic adds a toxic (Toxiproxy's JSON form, e.g.
// {"type":"timeout","stream":"upstream","attributes":{"timeout":0}}) under name.
func (k *link) toxic(name, typ, stream, attrs string) error {
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := k.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		return fmt.Errorf("link %s: add toxic %s: %w", k.name, name, err)
	}
	return nil
}

func (k *link) removeToxic(name string) error {
	if err := k.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		return fmt.Errorf("link %s: remove toxic %s: %w", k.name, name, err)
	}
	return nil
}

// blackhole stops all data both ways without closing a connection (timeout
// toxics with timeout 0: the bytes wait until the toxics are removed, as
// on a link that silently drops and later recovers), until unblackhole.
func (k *link) blackhole() error {
	for _, s := range []string{"upstream", "downstream"} {
		if err := k.toxic("blackhole-"+s, "timeout", s, `{"timeout":0}`); err != nil {
			return err
		}
	}
	return nil
}

func (k *link) unblackhole() error {
	for _, s := range []string{"upstream", "downstream"} {
		if err := k.removeToxic("blackhole-" + s); err != nil {
			return err
		}
	}
	return nil
}

// setCut closes the proxy's listener and every connection through it
// (cut true) or listens again on the same address (cut false).
func (k *link) setCut(cut bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cut == cut {
		return nil
	}
	k.cut = cut
	if cut {
		k.p.Stop()
		return nil
	}
	if err := k.p.Start(); err != nil {
		return fmt.Errorf("link %s: listen again: %w", k.name, err)
	}
	return nil
}
