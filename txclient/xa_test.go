package txclient

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/sqlproxy"
)

// The prepare phase: a prepare push runs Held.Prepare once and answers with
// a prepared request; a repeated push prepares again (idempotent) and
// answers again.
func TestPreparePushPreparesAndAnswers(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	c.Hold(g1, b1, h)
	f.send(&wire.Message{Type: wire.TypePrepare, Group: g1, Branch: b1})
	m := f.expect(wire.TypePrepared)
	if !m.OK || m.Group != g1 || m.Branch != b1 {
		t.Fatalf("prepared %+v, want ok for the branch", m)
	}
	f.send(&wire.Message{Type: wire.TypeOK, ID: m.ID})
	f.send(&wire.Message{Type: wire.TypePrepare, Group: g1, Branch: b1})
	if m := f.expect(wire.TypePrepared); !m.OK {
		t.Fatalf("repeated prepare answered %+v", m)
	}
	h.mu.Lock()
	n := h.prepares
	h.mu.Unlock()
	if n != 2 {
		t.Fatalf("Prepare called %d times, want 2", n)
	}
	if c.Status().Held != 1 {
		t.Fatal("a prepared branch must stay held until its decision")
	}
}

// A failed prepare is reported with its cause; a prepare for a branch this
// process does not hold is answered failed (its work is gone).
func TestPrepareFailureAndUnknownBranch(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	h.prepareErr = errors.New("XAER_RMFAIL: connection killed")
	c.Hold(g1, b1, h)
	f.send(&wire.Message{Type: wire.TypePrepare, Group: g1, Branch: b1})
	m := f.expect(wire.TypePrepared)
	if m.OK || !strings.Contains(m.Reason, "connection killed") {
		t.Fatalf("prepared %+v, want failed with the cause", m)
	}
	f.send(&wire.Message{Type: wire.TypeOK, ID: m.ID})
	other := "00000000000000000000000000000001"
	f.send(&wire.Message{Type: wire.TypePrepare, Group: g1, Branch: other})
	if m := f.expect(wire.TypePrepared); m.OK || m.Branch != other {
		t.Fatalf("prepared %+v for an unknown branch, want failed", m)
	}
}

// A prepared branch that cannot be finished now (ErrInDoubt) is neither
// acknowledged nor forgotten: the next push applies it again.
func TestInDoubtCommitKeptAndRetried(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	h := newFakeHeld()
	h.err = fmt.Errorf("%w: server down", sqlproxy.ErrInDoubt)
	c.Hold(g1, b1, h)
	f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
	<-h.applied
	if c.Status().Held != 1 {
		t.Fatal("an in-doubt branch must stay held")
	}
	h.mu.Lock()
	h.err = nil
	h.mu.Unlock()
	go func() { // drain the attempts
		for range h.applied {
		}
	}()
	// The in-doubt attempt sent no acknowledgement. Push again, as the
	// TxManager's retrier does, until the branch is applied and acknowledged
	// (a push that arrives while the first attempt is still unwinding is
	// ignored).
	var ack *wire.Message
	for ack == nil {
		f.send(&wire.Message{Type: wire.TypeDecision, Group: g1, Branch: b1, Commit: true})
		select {
		case m := <-f.recv:
			ack = m
		case <-time.After(100 * time.Millisecond):
		}
	}
	if ack.Type != wire.TypeAck || ack.Outcome != wire.OutcomeCommitted {
		t.Fatalf("got %+v, want a committed ack", ack)
	}
	if c.Status().Held != 0 {
		t.Fatal("applied branch still held")
	}
	if cm, _ := h.counts(); cm < 2 {
		t.Fatalf("commit attempts %d, want at least 2", cm)
	}
}

// Recovery: Resolve maps the TxManager's answer for a branch found prepared
// in the database to what the proxy does with it.
func TestResolveRecoveredBranch(t *testing.T) {
	f := newFakeManager(t)
	c := newTestClient(t, f.url(), nil)
	f.expect(wire.TypeHello)
	ctx := context.Background()
	type answer struct {
		msg  *wire.Message // nil: not found
		want sqlproxy.Resolution
	}
	for _, a := range []answer{
		{nil, sqlproxy.ResolveRollback},
		{&wire.Message{State: "COMMITTING", Service: "svc", Mode: "xa", BranchState: "PREPARED"}, sqlproxy.ResolveCommit},
		{&wire.Message{State: "COMMITTED", Service: "svc", Mode: "xa", BranchState: "LOST"}, sqlproxy.ResolveCommit},
		{&wire.Message{State: "ROLLING_BACK", Service: "svc", Mode: "xa", BranchState: "PREPARED"}, sqlproxy.ResolveRollback},
		{&wire.Message{State: "COMMITTING", Service: "other", Mode: "xa", BranchState: "PREPARED"}, sqlproxy.ResolveSkip},
		{&wire.Message{State: "PREPARING", Service: "svc", Mode: "xa", BranchState: "PREPARED"}, sqlproxy.ResolveWait},
	} {
		done := make(chan struct{})
		var got sqlproxy.Resolution
		var err error
		go func() { defer close(done); got, err = c.Resolve(ctx, g1, b1) }()
		q := f.expect(wire.TypeQuery)
		if q.Group != g1 || q.Branch != b1 {
			t.Fatalf("query %+v, want the branch", q)
		}
		if a.msg == nil {
			f.send(wire.Errorf(q.ID, wire.CodeNotFound, "unknown group"))
		} else {
			resp := *a.msg
			resp.Type, resp.ID, resp.Group, resp.Branch = wire.TypeOK, q.ID, g1, b1
			f.send(&resp)
		}
		<-done
		if err != nil || got != a.want {
			t.Fatalf("answer %+v: Resolve = %v, %v; want %v", a.msg, got, err, a.want)
		}
	}

	// A branch the TxManager still waits for in the prepare phase is
	// reported prepared on behalf of the process that prepared it.
	done := make(chan struct{})
	var got sqlproxy.Resolution
	go func() { defer close(done); got, _ = c.Resolve(ctx, g1, b1) }()
	q := f.expect(wire.TypeQuery)
	f.send(&wire.Message{Type: wire.TypeOK, ID: q.ID, Group: g1, State: "PREPARING", Service: "svc", Mode: "xa", BranchState: "READY"})
	p := f.expect(wire.TypePrepared)
	if !p.OK || p.Branch != b1 {
		t.Fatalf("prepared %+v", p)
	}
	f.send(&wire.Message{Type: wire.TypeOK, ID: p.ID, State: "PREPARING"})
	<-done
	if got != sqlproxy.ResolveWait {
		t.Fatalf("Resolve = %v, want wait", got)
	}

	// Resolved acknowledges the outcome.
	go func() { _ = c.Resolved(ctx, g1, b1, true) }()
	ack := f.expect(wire.TypeAck)
	if ack.Outcome != wire.OutcomeCommitted || !strings.Contains(ack.Reason, "recovered") {
		t.Fatalf("ack %+v", ack)
	}
	f.send(&wire.Message{Type: wire.TypeOK, ID: ack.ID})
}
