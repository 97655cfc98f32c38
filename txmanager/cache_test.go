package txmanager

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/golcn/golcn/internal/wire"
)

// countingStore counts Get calls.
type countingStore struct {
	Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, id string) (*Group, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

func newCacheServer(t *testing.T, st Store) *Server {
	t.Helper()
	srv, err := New(Config{Auth: testAuth(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// fakeSession registers a session with id on srv whose pushes the test reads.
func fakeSession(srv *Server, id string) *session {
	ss := &session{srv: srv, id: id, out: make(chan outItem, 16), done: make(chan struct{}), log: srv.log}
	srv.mu.Lock()
	srv.sessions[id] = ss
	srv.mu.Unlock()
	return ss
}

func mustStep(t *testing.T, srv *Server, ev Event) Reply {
	t.Helper()
	r, err := srv.step(context.Background(), ev)
	if err != nil {
		t.Fatalf("%s: %v", ev.Kind, err)
	}
	if r.Code != ReplyOK {
		t.Fatalf("%s: reply %s (%s)", ev.Kind, r.Code, r.Reason)
	}
	return r
}

// TestCachedGroupNeedsNoStoreRead: a group's normal life on the server that
// created it (joins, votes, the decision, the acknowledgements) reads the
// store only where nothing is written: the cache saves a round trip on
// every message that changes the group, and on a participant's
// confirmation that the group is ACTIVE.
func TestCachedGroupNeedsNoStoreRead(t *testing.T) {
	st := &countingStore{Store: NewMemoryStore(StoreOptions{})}
	srv := newCacheServer(t, st)
	ctx := context.Background()
	g, err := srv.create(ctx, "order", "order/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	ss := fakeSession(srv, "svc/b1")
	ss.ctx = ctx
	if r := ss.handle(&wire.Message{Type: wire.TypeQuery, ID: 1, Group: g.ID}); r.Type != wire.TypeOK || r.State != "ACTIVE" {
		t.Fatalf("confirming the group: %+v, want ACTIVE", r)
	}
	for _, b := range []string{"b1", "b2"} {
		mustStep(t, srv, Event{Kind: EvJoin, Group: g.ID, Instance: "svc/" + b,
			Branch: Branch{ID: b, Service: "svc", Datasource: "ds", Mode: "lcn"}})
		mustStep(t, srv, Event{Kind: EvVote, Group: g.ID, Instance: "svc/" + b, BranchID: b, OK: true})
	}
	mustStep(t, srv, Event{Kind: EvDecide, Group: g.ID, Instance: "order/1", Commit: true})
	mustStep(t, srv, Event{Kind: EvAck, Group: g.ID, Instance: "svc/b1", BranchID: "b1", Outcome: BranchCommitted})
	if n := st.gets.Load(); n != 0 {
		t.Fatalf("%d store reads for the confirmation, joins, votes, decision and ack of a cached group, want 0", n)
	}
	// A query about a decided group reads the store.
	if r := ss.handle(&wire.Message{Type: wire.TypeQuery, ID: 2, Group: g.ID}); r.Type != wire.TypeOK || r.State != "COMMITTING" {
		t.Fatalf("query after the decision: %+v, want COMMITTING", r)
	}
	if n := st.gets.Load(); n != 1 {
		t.Fatalf("%d store reads after a query about a decided group, want 1", n)
	}
	// A repeated vote changes nothing: it is answered from the store.
	mustStep(t, srv, Event{Kind: EvVote, Group: g.ID, Instance: "svc/b2", BranchID: "b2", OK: true})
	if n := st.gets.Load(); n != 2 {
		t.Fatalf("%d store reads after a repeated vote, want 2", n)
	}
	mustStep(t, srv, Event{Kind: EvAck, Group: g.ID, Instance: "svc/b2", BranchID: "b2", Outcome: BranchCommitted})
	if got, _ := st.Get(ctx, g.ID); got.State != GroupCommitted {
		t.Fatalf("group %s, want COMMITTED", got.State)
	}
	if n := srv.cache.len(); n != 0 {
		t.Fatalf("%d cached groups after the group finished, want 0", n)
	}
}

// TestStaleCachedGroupIsSteppedFromStore: two TxManagers share a store. A
// branch joins through the other one, so this server's copy is stale; the
// starter's rollback, stepped from that copy, must not reach the store as
// is (it would push the decision to the branches of the copy only): it is
// refused as stale, stepped again from the store's record, and the
// decision goes to both branches at once.
func TestStaleCachedGroupIsSteppedFromStore(t *testing.T) {
	st := NewMemoryStore(StoreOptions{})
	a, b := newCacheServer(t, st), newCacheServer(t, st)
	ctx := context.Background()
	g, err := a.create(ctx, "order", "order/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	mustStep(t, a, Event{Kind: EvJoin, Group: g.ID, Instance: "svc/1", Branch: Branch{ID: "b1", Service: "svc", Datasource: "ds", Mode: "lcn"}})
	mustStep(t, b, Event{Kind: EvJoin, Group: g.ID, Instance: "svc/2", Branch: Branch{ID: "b2", Service: "svc", Datasource: "ds", Mode: "lcn"}})
	s1, s2 := fakeSession(a, "svc/1"), fakeSession(a, "svc/2")

	mustStep(t, a, Event{Kind: EvDecide, Group: g.ID, Instance: "order/1"})

	for _, c := range []struct {
		ss     *session
		branch string
	}{{s1, "b1"}, {s2, "b2"}} {
		select {
		case it := <-c.ss.out:
			if it.m == nil || it.m.Type != wire.TypeDecision || it.m.Branch != c.branch || it.m.Commit {
				t.Fatalf("push to %s: %+v, want the rollback of %s", c.ss.id, it.m, c.branch)
			}
		default:
			t.Fatalf("no rollback pushed to %s (branch %s) with the decision", c.ss.id, c.branch)
		}
	}
	got, err := st.Get(ctx, g.ID)
	if err != nil || got.State != GroupRollingBack || len(got.Branches) != 2 {
		t.Fatalf("stored group %+v (%v), want ROLLING_BACK with 2 branches", got, err)
	}
}
