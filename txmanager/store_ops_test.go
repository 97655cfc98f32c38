package txmanager

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testOps is the operator-data part of the conformance suite (testStore
// runs it for every store): timelines, compensation markers, List, Count.
func testOps(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()

	t.Run("Timeline", func(t *testing.T) {
		s := newStore(t)
		g := newTestGroup("tl")
		mustCreate(t, s, g)
		for _, tr := range []Transition{tJoin("b1"), tVote("b1", true, ""), tDecide(true, "all prepared"), tDone("b1", BranchCommitted, "")} {
			tr.Group = "tl"
			mustApply(t, s, tr)
		}
		// A refused transition adds nothing.
		if _, err := s.Apply(ctx, Transition{Kind: TransJoin, Group: "tl", Branch: Branch{ID: "late", State: BranchRegistered}}); !errors.Is(err, ErrConflict) {
			t.Fatalf("late join: %v", err)
		}
		want := []TimelineEvent{
			{AtMS: t0, Kind: EventCreated, State: "ACTIVE"},
			{AtMS: t0 + 1, Kind: EventJoined, Branch: "b1", State: "REGISTERED"},
			{AtMS: t0 + 2, Kind: EventVoted, Branch: "b1", State: "PREPARED"},
			{AtMS: t0 + 3, Kind: EventDecided, State: "COMMITTING", Reason: "all prepared"},
			{AtMS: t0 + 4, Kind: EventBranchDone, Branch: "b1", State: "COMMITTED"},
		}
		if got, err := s.Events(ctx, "tl"); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Events = %+v, %v;\nwant %+v", got, err, want)
		}
		if _, err := s.Events(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Events of an unknown group: %v", err)
		}

		// Preparing, and the bound.
		mustCreate(t, s, newTestGroup("many"))
		mustApply(t, s, tJoinTo("many", "x"))
		for i := range MaxEvents + 10 {
			mustApply(t, s, Transition{Kind: TransVote, Group: "many", BranchID: "x", BranchTo: BranchReady, AtMS: t0 + int64(i)})
		}
		mustApply(t, s, tJoinTo("many", "y"))
		mustApply(t, s, Transition{Kind: TransVote, Group: "many", BranchID: "y", BranchTo: BranchPrepared, AtMS: t0})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "many", GroupTo: GroupPreparing, AtMS: t0 + 999, Reason: "prep"})
		got, err := s.Events(ctx, "many")
		if err != nil || len(got) != MaxEvents {
			t.Fatalf("Events of a long group: %d events, %v; want %d", len(got), err, MaxEvents)
		}
		if last := got[len(got)-1]; last != (TimelineEvent{AtMS: t0 + 999, Kind: EventPreparing, State: "PREPARING", Reason: "prep"}) {
			t.Errorf("last event %+v", last)
		}
		// The oldest kept: votes 13.. of x (created, join x and votes 0..12 dropped).
		if first := got[0]; first.Kind != EventVoted || first.AtMS != t0+13 {
			t.Errorf("first kept event %+v, want the vote at t0+13", first)
		}
	})

	t.Run("LostMarker", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, newTestGroup("lg"))
		for _, b := range []string{"b1", "b2"} {
			mustApply(t, s, tJoinTo("lg", b))
			mustApply(t, s, Transition{Kind: TransVote, Group: "lg", BranchID: b, BranchTo: BranchPrepared, AtMS: t0})
		}
		mustApply(t, s, Transition{Kind: TransDecide, Group: "lg", GroupTo: GroupCommitting, AtMS: t0 + 3})
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "lg", BranchID: "b1", BranchTo: BranchLost, AtMS: t0 + 4, Reason: "owner gone"})
		id := MarkerID("lg", "b1")
		want := Marker{ID: id, Kind: MarkerBranchLost, Group: "lg", Branch: "b1", Service: "svc-b1", Instance: "inst-b1",
			Detail: "owner gone", CreatedMS: t0 + 4}
		if got, err := s.Marker(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Marker = %+v, %v; want %+v", got, err, want)
		}
		g := mustApply(t, s, Transition{Kind: TransBranchDone, Group: "lg", BranchID: "b2", BranchTo: BranchCommitted, AtMS: t0 + 5})
		if g.State != GroupCommitted || g.Attention == "" {
			t.Fatalf("group %s, attention %q", g.State, g.Attention)
		}
		expectMarkers(t, s, MarkersOpen, want)
		expectMarkers(t, s, MarkersResolved)
		if ms, err := s.GroupMarkers(ctx, "lg"); err != nil || !reflect.DeepEqual(ms, []Marker{want}) {
			t.Errorf("GroupMarkers = %+v, %v", ms, err)
		}

		r := Resolution{By: "ops", AtMS: t0 + 10, Reason: "restocked by hand"}
		got, err := s.Resolve(ctx, id, r)
		want.Resolution = &r
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Resolve = %+v, %v; want %+v", got, err, want)
		}
		if _, err := s.Resolve(ctx, id, Resolution{By: "other", AtMS: t0 + 11, Reason: "again"}); !errors.Is(err, ErrResolved) || !errors.Is(err, ErrConflict) {
			t.Errorf("second Resolve: %v, want ErrResolved (ErrConflict)", err)
		}
		if got, _ := s.Marker(ctx, id); !reflect.DeepEqual(got, want) {
			t.Errorf("after a refused Resolve: %+v, want %+v", got, want)
		}
		expectMarkers(t, s, MarkersOpen)
		expectMarkers(t, s, MarkersResolved, want)
		expectMarkers(t, s, MarkersAll, want)
		for _, bad := range []string{MarkerID("lg", "b2"), MarkerID("nope", "b1"), "nodot", ".x", "x."} {
			if _, err := s.Resolve(ctx, bad, r); !errors.Is(err, ErrNotFound) {
				t.Errorf("Resolve(%q): %v, want ErrNotFound", bad, err)
			}
			if _, err := s.Marker(ctx, bad); !errors.Is(err, ErrNotFound) {
				t.Errorf("Marker(%q): %v, want ErrNotFound", bad, err)
			}
		}
	})

	t.Run("StuckMarker", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, newTestGroup("sg"))
		mustApply(t, s, tJoinTo("sg", "b1"))
		stuck := Marker{ID: MarkerID("sg", "phase2"), Kind: MarkerPhase2Stuck, Group: "sg", Detail: "retried 10m", CreatedMS: t0 + 100}
		// Not decided yet is fine (the store does not judge); terminal is not.
		mustApply(t, s, Transition{Kind: TransDecide, Group: "sg", GroupTo: GroupRollingBack, AtMS: t0 + 3})
		for i, wantCreated := range []bool{true, false} {
			if created, err := s.AddMarker(ctx, stuck); err != nil || created != wantCreated {
				t.Fatalf("AddMarker #%d = %v, %v; want %v", i, created, err, wantCreated)
			}
		}
		expectMarkers(t, s, MarkersOpen, stuck)
		if _, err := s.AddMarker(ctx, Marker{ID: MarkerID("nope", "phase2"), Kind: MarkerPhase2Stuck, Group: "nope"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("AddMarker for an unknown group: %v", err)
		}
		if _, err := s.AddMarker(ctx, Marker{ID: "sg-phase2", Kind: MarkerPhase2Stuck, Group: "sg"}); err == nil {
			t.Error("AddMarker with an id not of its group succeeded")
		}
		// Finishing resolves it.
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "sg", BranchID: "b1", BranchTo: BranchRolledBack, AtMS: t0 + 200})
		r := stuckResolution(t0 + 200)
		stuck.Resolution = &r
		if got, err := s.Marker(ctx, stuck.ID); err != nil || !reflect.DeepEqual(got, stuck) {
			t.Fatalf("after finishing: %+v, %v; want %+v", got, err, stuck)
		}
		expectMarkers(t, s, MarkersOpen)
		expectMarkers(t, s, MarkersResolved, stuck)
		if _, err := s.AddMarker(ctx, Marker{ID: MarkerID("sg", "other"), Kind: MarkerPhase2Stuck, Group: "sg"}); !errors.Is(err, ErrConflict) {
			t.Errorf("AddMarker for a finished group: %v, want ErrConflict", err)
		}
		if _, err := s.Resolve(ctx, stuck.ID, Resolution{By: "ops", Reason: "x"}); !errors.Is(err, ErrResolved) {
			t.Errorf("Resolve of a marker the TxManager resolved: %v", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		// id, created, starter, branch services, end state.
		mk := func(id string, created int64, starter string, services ...string) {
			g := newTestGroup(id)
			g.CreatedMS, g.StarterService = created, starter
			mustCreate(t, s, g)
			for i, svc := range services {
				mustApply(t, s, Transition{Kind: TransJoin, Group: id, Branch: Branch{ID: fmt.Sprint("b", i), Service: svc, State: BranchRegistered}})
			}
		}
		mk("g1", t0+1, "order", "stock")
		mk("g2", t0+2, "order", "account")
		mk("g3", t0+3, "pay")
		mk("g4a", t0+4, "order", "stock")
		mk("g4b", t0+4, "order")
		mk("g5", t0+5, "order", "stock")
		mustApply(t, s, Transition{Kind: TransDecide, Group: "g2", GroupTo: GroupRollingBack, AtMS: t0 + 10})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "g3", GroupTo: GroupRollingBack, AtMS: t0 + 10}) // no branch: ROLLED_BACK
		mustApply(t, s, Transition{Kind: TransDecide, Group: "g5", GroupTo: GroupRollingBack, AtMS: t0 + 10})
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "g5", BranchID: "b0", BranchTo: BranchLost, AtMS: t0 + 11, Reason: "x"})
		if _, err := s.AddMarker(ctx, Marker{ID: MarkerID("g2", "phase2"), Kind: MarkerPhase2Stuck, Group: "g2", CreatedMS: t0 + 20}); err != nil {
			t.Fatal(err)
		}
		yes, no := true, false
		for _, tc := range []struct {
			name string
			q    ListQuery
			want []string
		}{
			{"all", ListQuery{}, []string{"g5", "g4b", "g4a", "g3", "g2", "g1"}},
			{"state", ListQuery{State: GroupActive}, []string{"g4b", "g4a", "g1"}},
			{"service starter", ListQuery{Service: "pay"}, []string{"g3"}},
			{"service branch", ListQuery{Service: "stock"}, []string{"g5", "g4a", "g1"}},
			{"after", ListQuery{CreatedAfterMS: t0 + 4}, []string{"g5", "g4b", "g4a"}},
			{"before", ListQuery{CreatedBeforeMS: t0 + 4}, []string{"g3", "g2", "g1"}},
			{"between", ListQuery{CreatedAfterMS: t0 + 2, CreatedBeforeMS: t0 + 5}, []string{"g4b", "g4a", "g3", "g2"}},
			// g5: a lost branch (attention and an open marker); g2: an open marker.
			{"attention", ListQuery{Attention: &yes}, []string{"g5", "g2"}},
			{"no attention", ListQuery{Attention: &no}, []string{"g4b", "g4a", "g3", "g1"}},
			{"none", ListQuery{Service: "nobody"}, nil},
		} {
			for _, limit := range []int{0, 1, 2, 4} {
				q := tc.q
				q.Limit = limit
				var got []string
				for pages := 0; ; pages++ {
					p, err := s.List(ctx, q)
					if err != nil {
						t.Fatalf("%s limit %d: %v", tc.name, limit, err)
					}
					if limit > 0 && len(p.Groups) > limit {
						t.Fatalf("%s: page of %d, limit %d", tc.name, len(p.Groups), limit)
					}
					for _, l := range p.Groups {
						got = append(got, l.Group.ID)
						if wantOpen := map[string]int{"g2": 1, "g5": 1}[l.Group.ID]; l.OpenMarkers != wantOpen {
							t.Errorf("%s: %s has %d open markers, want %d", tc.name, l.Group.ID, l.OpenMarkers, wantOpen)
						}
					}
					if p.Next == "" {
						break
					}
					if pages > 10 {
						t.Fatalf("%s: no end of pages", tc.name)
					}
					q.Cursor = p.Next
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s limit %d: %q, want %q", tc.name, limit, got, tc.want)
				}
			}
		}
		for _, c := range []string{"!!", "bm90LWEtY3Vyc29y", encodeCursor(listPos{1, ""})} {
			if _, err := s.List(ctx, ListQuery{Cursor: c}); !errors.Is(err, ErrBadCursor) {
				t.Errorf("cursor %q: %v, want ErrBadCursor", c, err)
			}
		}

		c, err := s.Count(ctx, 100)
		wantCounts := map[GroupState]int{GroupActive: 3, GroupRollingBack: 1, GroupRolledBack: 2}
		if err != nil || !c.Complete || !reflect.DeepEqual(c.ByState, wantCounts) || c.InFlight() != 4 {
			t.Errorf("Count = %+v, %v; want %v, complete", c, err, wantCounts)
		}
		c, err = s.Count(ctx, 2) // the newest: g5, g4b
		if err != nil || c.Complete || !reflect.DeepEqual(c.ByState, map[GroupState]int{GroupActive: 1, GroupRolledBack: 1}) {
			t.Errorf("Count(2) = %+v, %v", c, err)
		}
	})
}

// expectMarkers checks Markers(status) against want (in order).
func expectMarkers(t *testing.T, s Store, status MarkerStatus, want ...Marker) {
	t.Helper()
	got, err := s.Markers(context.Background(), status, 100)
	if err != nil {
		t.Fatalf("Markers(%d): %v", status, err)
	}
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Markers(%d) = %+v, want %+v", status, got, want)
	}
}

// TestRedisStoreOpsKeys checks the operator keys: their slot, their TTL
// (none while a marker is open, the retention after it is resolved) and
// the index leftovers readers clean.
func TestRedisStoreOpsKeys(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	for _, ordered := range []bool{true, false} {
		s := NewRedisStore(c, uniquePrefix(), StoreOptions{Retention: time.Hour})
		s.ordered = ordered
		id := "0123456789abcdef0123456789abcdef"
		mustCreate(t, s, newTestGroup(id))
		mustApply(t, s, tJoinTo(id, "b1"))
		mustApply(t, s, Transition{Kind: TransDecide, Group: id, GroupTo: GroupRollingBack, AtMS: t0})
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: id, BranchID: "b1", BranchTo: BranchLost, AtMS: t0, Reason: "gone"})
		keys := s.groupKeys(id)
		for _, k := range keys {
			if keySlot(k) != keySlot(id) {
				t.Errorf("key %s is not in the group's slot", k)
			}
			if ttl := c.PTTL(ctx, k).Val(); ttl != -1 {
				t.Errorf("ordered=%v: %s of a terminal group with an open marker: PTTL %v, want none", ordered, k, ttl)
			}
		}
		if _, err := s.Resolve(ctx, MarkerID(id, "b1"), Resolution{By: "ops", AtMS: t0, Reason: "ok"}); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if ttl := c.PTTL(ctx, k).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
				t.Errorf("ordered=%v: %s after the resolution: PTTL %v, want about 1h", ordered, k, ttl)
			}
		}
		if n := c.ZScore(ctx, s.openMarks, MarkerID(id, "b1")).Err(); n != redis.Nil {
			t.Errorf("resolved marker still in markers:open")
		}

		// Leftovers: a created entry without a group (old: dropped; fresh:
		// kept), an open-index entry without a marker (old: dropped), a
		// resolved marker left in markers:open (moved).
		old := float64(time.Now().Add(-2 * createGrace).UnixMilli())
		c.ZAdd(ctx, s.created, redis.Z{Score: old, Member: "ghost-old"}, redis.Z{Score: float64(time.Now().UnixMilli()), Member: "ghost-new"})
		c.ZAdd(ctx, s.openMarks, redis.Z{Score: old, Member: "ghost.x"})
		c.ZAdd(ctx, s.openMarks, redis.Z{Score: float64(t0), Member: MarkerID(id, "b1")})
		c.ZRem(ctx, s.resolvedMark, MarkerID(id, "b1"))
		page, err := s.List(ctx, ListQuery{})
		if err != nil || len(page.Groups) != 1 {
			t.Fatalf("List = %+v, %v", page, err)
		}
		if c.ZScore(ctx, s.created, "ghost-old").Err() != redis.Nil || c.ZScore(ctx, s.created, "ghost-new").Err() != nil {
			t.Errorf("List did not drop the old created entry without a group, or dropped the fresh one")
		}
		expectMarkers(t, s, MarkersOpen)
		if c.ZScore(ctx, s.openMarks, "ghost.x").Err() != redis.Nil {
			t.Errorf("Markers kept an old entry without a marker")
		}
		if ms, err := s.Markers(ctx, MarkersResolved, 10); err != nil || len(ms) != 1 {
			t.Errorf("Markers(resolved) = %v, %v; want the moved marker", ms, err)
		}
		// Purge drops created entries of expired groups.
		c.Del(ctx, keys...)
		if _, err := s.Purge(ctx, time.UnixMilli(t0).Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if c.ZScore(ctx, s.created, id).Err() != redis.Nil {
			t.Errorf("Purge kept the created entry of an expired group")
		}
	}
}
