package txclient

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/golcn/golcn/internal/wire"
)

// The client's metrics follow a branch through join, vote, hold and apply,
// and the handler serves them.
func TestClientMetrics(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatalf("NewMetrics with a registry: %v", err)
	}
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), func(cfg *Config) { cfg.Metrics = m })
	f.expect(wire.TypeHello)
	ctx := context.Background()

	done := make(chan error, 1)
	go func() {
		br, err := c.Join(ctx, g1, "orders", "xa")
		if err == nil && br != b1 {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	j := f.expect(wire.TypeJoin)
	f.send(&wire.Message{Type: wire.TypeOK, ID: j.ID, Group: g1, Branch: b1, State: "ACTIVE"})
	if err := <-done; err != nil {
		t.Fatalf("join: %v", err)
	}
	go func() { done <- c.Vote(ctx, g1, b1, true, "") }()
	v := f.expect(wire.TypeVote)
	f.send(&wire.Message{Type: wire.TypeOK, ID: v.ID, Group: g1, State: "ACTIVE"})
	if err := <-done; err != nil {
		t.Fatalf("vote: %v", err)
	}
	h := newFakeHeld()
	c.Hold(g1, b1, h)
	if got := testutil.ToFloat64(m.held.WithLabelValues("xa")); got != 1 {
		t.Fatalf("branches_held{mode=xa} = %v after hold, want 1", got)
	}
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	f.expect(wire.TypeAck)
	if got := testutil.ToFloat64(m.held.WithLabelValues("xa")); got != 0 {
		t.Fatalf("branches_held{mode=xa} = %v after apply, want 0", got)
	}
	if got := testutil.ToFloat64(m.applies.WithLabelValues(ApplyCommitted)); got != 1 {
		t.Fatalf("applies_total{committed} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.votes.WithLabelValues(VoteOK)); got != 1 {
		t.Fatalf("votes_total{ok} = %v, want 1", got)
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{"lcn_txclient_votes_total", "lcn_txclient_applies_total", "lcn_txclient_branches_held", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics page lacks %s", want)
		}
	}
	var nilMetrics *Metrics
	nilMetrics.Voted(true) // a nil *Metrics is a no-op
}
