package txmanager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/golcn/golcn/internal/testenv"
)

// t0 is a realistic time (unix ms) for fixtures.
const t0 = int64(1_760_000_000_000)

func newTestGroup(id string) *Group {
	return &Group{
		ID: id, State: GroupActive, StarterService: "order", Starter: "order-1",
		CreatedMS: t0, DeadlineMS: t0 + 30_000,
	}
}

// Transition builders for the tables.
func tJoin(id string) Transition {
	return Transition{Kind: TransJoin, Branch: Branch{ID: id, Service: "svc-" + id, Instance: "inst-" + id,
		Datasource: "ds-" + id, Mode: "xa", State: BranchRegistered}, AtMS: t0 + 1}
}

func tVote(id string, ok bool, reason string) Transition {
	to := BranchPrepared
	if !ok {
		to = BranchFailed
	}
	return Transition{Kind: TransVote, BranchID: id, BranchTo: to, AtMS: t0 + 2, Reason: reason}
}

// tReady is an xa branch's vote at local commit (READY), tPrepared the
// prepare phase's answer, tPrepare the decide to PREPARING.
func tReady(id string) Transition {
	return Transition{Kind: TransVote, BranchID: id, BranchTo: BranchReady, AtMS: t0 + 2}
}

func tPrepared(id string, ok bool, reason string) Transition {
	tr := tVote(id, ok, reason)
	tr.AtMS = t0 + 3
	return tr
}

func tPrepare() Transition {
	return Transition{Kind: TransDecide, GroupTo: GroupPreparing, AtMS: t0 + 3, Reason: "commit asked: preparing"}
}

func tDecide(commit bool, reason string) Transition {
	to := GroupRollingBack
	if commit {
		to = GroupCommitting
	}
	return Transition{Kind: TransDecide, GroupTo: to, AtMS: t0 + 3, Reason: reason}
}

// tCarry makes decision d carry branch id's vote to state to.
func tCarry(d Transition, id string, to BranchState, reason string) Transition {
	d.BranchID, d.BranchTo, d.BranchReason = id, to, reason
	return d
}

func tDone(id string, to BranchState, reason string) Transition {
	return Transition{Kind: TransBranchDone, BranchID: id, BranchTo: to, AtMS: t0 + 4, Reason: reason}
}

// outcome classifies a transition's result in the tables.
type outcome uint8

const (
	ok outcome = iota
	conflicts
	notFound
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return ok
	case errors.Is(err, ErrConflict):
		return conflicts
	case errors.Is(err, ErrNotFound):
		return notFound
	}
	return 255
}

// sameError reports how got differs from want (ApplyTransition's error), or "".
func sameError(want, got error) string {
	if (want == nil) != (got == nil) {
		return fmt.Sprintf("error %v, want %v", got, want)
	}
	if want == nil {
		return ""
	}
	if got.Error() != want.Error() {
		return fmt.Sprintf("error %q, want %q", got, want)
	}
	if classify(got) != classify(want) {
		return fmt.Sprintf("error %v is not the same kind as %v", got, want)
	}
	var wc, gc *ConflictError
	if errors.As(want, &wc) {
		if !errors.As(got, &gc) || *gc != *wc {
			return fmt.Sprintf("conflict %#v, want %#v", gc, wc)
		}
	}
	return ""
}

// mustGet returns the stored group or fails.
func mustGet(t *testing.T, s Store, id string) *Group {
	t.Helper()
	g, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return g
}

func mustCreate(t *testing.T, s Store, g *Group) {
	t.Helper()
	if err := s.Create(context.Background(), g); err != nil {
		t.Fatalf("Create(%s): %v", g.ID, err)
	}
}

func mustApply(t *testing.T, s Store, tr Transition) *Group {
	t.Helper()
	g, err := s.Apply(context.Background(), tr)
	if err != nil {
		t.Fatalf("Apply(%s %s): %v", tr.Kind, tr.Group, err)
	}
	return g
}

// expectIDs returns a check that a listing (Expired, Undone) is want:
// expectIDs(t, "Expired", "a", "b")(s.Expired(ctx, now, 10)).
func expectIDs(t *testing.T, what string, want ...string) func([]string, error) {
	return func(got []string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got) == 0 && len(want) == 0 {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
}

// applyChecked applies tr to the store and, by ApplyTransition, to ref, and
// fails unless both give the same group (field by field) or the same error;
// the stored record must then equal ref. It returns ref after tr.
func applyChecked(t *testing.T, s Store, ref *Group, tr Transition) (*Group, error) {
	t.Helper()
	want := ref.Clone()
	wantErr := ApplyTransition(want, tr)
	got, err := s.Apply(context.Background(), tr)
	if d := sameError(wantErr, err); d != "" {
		t.Fatalf("%s %+v: %s", tr.Kind, tr, d)
	}
	if wantErr != nil {
		want = ref
		if got != nil {
			t.Errorf("%s refused but returned a group", tr.Kind)
		}
	} else if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %+v:\n got  %+v\n want %+v", tr.Kind, tr, got, want)
	}
	if stored := mustGet(t, s, ref.ID); !reflect.DeepEqual(stored, want) {
		t.Fatalf("after %s: stored\n %+v\n want %+v", tr.Kind, stored, want)
	}
	return want, wantErr
}

// transitionCases: each row creates a group, applies setup (each step
// compared too), then last, whose outcome must be want. Rows cover every way
// a transition is refused.
var transitionCases = []struct {
	name  string
	group func(*Group) // adjusts the created group (nil: as newTestGroup)
	setup []Transition
	last  Transition
	want  outcome
}{
	{name: "join", last: tJoin("b1")},
	{name: "join second", setup: []Transition{tJoin("b1")}, last: tJoin("b2")},
	{name: "join no mode, with reason", last: Transition{Kind: TransJoin,
		Branch: Branch{ID: "b1", Service: "s", Instance: "i", Datasource: "d", State: BranchRegistered, Reason: "why"}}},
	{name: "join duplicate", setup: []Transition{tJoin("b1")}, last: tJoin("b1"), want: conflicts},
	{name: "join after rollback", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tJoin("b2"), want: conflicts},
	{name: "join terminal", setup: []Transition{tDecide(true, "c")}, last: tJoin("b1"), want: conflicts},

	{name: "vote prepared", setup: []Transition{tJoin("b1")}, last: tVote("b1", true, "")},
	{name: "vote prepared again", setup: []Transition{tJoin("b1"), tVote("b1", true, "first")}, last: tVote("b1", true, "")},
	{name: "vote failed", setup: []Transition{tJoin("b1")}, last: tVote("b1", false, "deadlock")},
	{name: "vote failed after prepared", setup: []Transition{tJoin("b1"), tVote("b1", true, "")}, last: tVote("b1", false, "late")},
	{name: "vote prepared after failed", setup: []Transition{tJoin("b1"), tVote("b1", false, "x")}, last: tVote("b1", true, ""), want: conflicts},
	{name: "vote failed after failed", setup: []Transition{tJoin("b1"), tVote("b1", false, "x")}, last: tVote("b1", false, "y"), want: conflicts},
	{name: "vote unknown branch", setup: []Transition{tJoin("b1")}, last: tVote("b9", true, ""), want: notFound},
	{name: "vote no branches", last: tVote("b1", true, ""), want: notFound},
	{name: "vote after decide", setup: []Transition{tJoin("b1"), tVote("b1", true, ""), tDecide(true, "c")}, last: tVote("b1", true, ""), want: conflicts},
	{name: "vote unknown after decide", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tVote("b2", true, ""), want: notFound},

	{name: "commit", setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, "")}, last: tDecide(true, "commit asked")},
	{name: "commit no branches", last: tDecide(true, "nothing to do")},
	{name: "rollback no branches", last: tDecide(false, "nothing to undo")},
	{name: "rollback", setup: []Transition{tJoin("b1"), tVote("b1", true, "")}, last: tDecide(false, "asked")},
	{name: "rollback with failed", setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", false, "x")}, last: tDecide(false, "failed vote")},
	{name: "commit with registered", setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, "")}, last: tDecide(true, "c"), want: conflicts},
	{name: "commit with failed", setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", false, "x")}, last: tDecide(true, "c"), want: conflicts},
	{name: "decide twice", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tDecide(false, "again"), want: conflicts},
	{name: "commit after rollback", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tDecide(true, "c"), want: conflicts},
	{name: "decide terminal", setup: []Transition{tDecide(false, "r")}, last: tDecide(false, "again"), want: conflicts},

	{name: "vote ready", setup: []Transition{tJoin("b1")}, last: tReady("b1")},
	{name: "vote ready again", setup: []Transition{tJoin("b1"), tReady("b1")}, last: tReady("b1")},
	{name: "vote ready after failed", setup: []Transition{tJoin("b1"), tVote("b1", false, "x")}, last: tReady("b1"), want: conflicts},
	{name: "prepare", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tVote("b2", true, "")}, last: tPrepare()},
	{name: "prepare all ready", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2")}, last: tPrepare()},
	{name: "prepare none ready", setup: []Transition{tJoin("b1"), tVote("b1", true, "")}, last: tPrepare(), want: conflicts},
	{name: "prepare with registered", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1")}, last: tPrepare(), want: conflicts},
	{name: "prepare twice", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tPrepare(), want: conflicts},
	{name: "prepare after decide", setup: []Transition{tJoin("b1"), tReady("b1"), tDecide(false, "r")}, last: tPrepare(), want: conflicts},
	{name: "prepared while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tPrepared("b1", true, "")},
	{name: "prepare failed while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tPrepared("b1", false, "XAER_RMFAIL")},
	{name: "prepared twice while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare(), tPrepared("b1", true, "")}, last: tPrepared("b1", true, ""), want: conflicts},
	{name: "ready while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tReady("b1"), want: conflicts},
	{name: "join while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tJoin("b3"), want: conflicts},
	{name: "commit while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare(), tPrepared("b1", true, "")}, last: tDecide(true, "c"), want: conflicts},
	{name: "commit after prepare", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare(), tPrepared("b1", true, ""), tPrepared("b2", true, "")}, last: tDecide(true, "every branch prepared")},
	{name: "rollback while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tDecide(false, "deadline")},
	{name: "done while preparing", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()}, last: tDone("b1", BranchRolledBack, ""), want: conflicts},
	{name: "one-phase commit", setup: []Transition{tJoin("b1"), tReady("b1")}, last: tDecide(true, "one phase")},
	{name: "one-phase commit done", setup: []Transition{tJoin("b1"), tReady("b1"), tDecide(true, "one phase")}, last: tDone("b1", BranchCommitted, "")},
	{name: "commit two ready", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2")}, last: tDecide(true, "c"), want: conflicts},

	// A decision carrying the vote that caused it (one write for both).
	{name: "commit carrying the last prepared", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare(), tPrepared("b1", true, "")},
		last: tCarry(tDecide(true, "every branch prepared"), "b2", BranchPrepared, "")},
	{name: "commit carrying a prepared, another ready", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()},
		last: tCarry(tDecide(true, "c"), "b2", BranchPrepared, ""), want: conflicts},
	{name: "commit carrying a vote of a prepared branch", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare(), tPrepared("b1", true, "")},
		last: tCarry(tDecide(true, "c"), "b1", BranchPrepared, ""), want: conflicts},
	{name: "rollback carrying a failed vote", setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, "")},
		last: tCarry(tDecide(false, "b2 failed"), "b2", BranchFailed, "duplicate key")},
	{name: "rollback carrying a failed prepare", setup: []Transition{tJoin("b1"), tJoin("b2"), tReady("b1"), tReady("b2"), tPrepare()},
		last: tCarry(tDecide(false, "b1 failed to prepare"), "b1", BranchFailed, "XAER_RMFAIL")},
	{name: "rollback carrying a vote after the decision", setup: []Transition{tJoin("b1"), tDecide(false, "r")},
		last: tCarry(tDecide(false, "again"), "b1", BranchFailed, "late"), want: conflicts},
	{name: "rollback carrying a vote of an unknown branch", setup: []Transition{tJoin("b1")},
		last: tCarry(tDecide(false, "r"), "b9", BranchFailed, "x"), want: notFound},

	{name: "done before decision", setup: []Transition{tJoin("b1"), tVote("b1", true, "")}, last: tDone("b1", BranchRolledBack, ""), want: conflicts},
	{name: "done unknown branch", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tDone("b2", BranchRolledBack, ""), want: notFound},
	{name: "done unknown branch active", setup: []Transition{tJoin("b1")}, last: tDone("b2", BranchRolledBack, ""), want: notFound},
	{name: "done committed one of two",
		setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, ""), tDecide(true, "c")},
		last:  tDone("b1", BranchCommitted, "")},
	{name: "done committed last",
		setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, ""), tDecide(true, "c"), tDone("b1", BranchCommitted, "")},
		last:  tDone("b2", BranchCommitted, "ok")},
	{name: "done lost",
		setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, ""), tDecide(true, "c")},
		last:  tDone("b1", BranchLost, "session gone")},
	{name: "done lost twice: attention joined",
		setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, ""), tDecide(true, "c"), tDone("b1", BranchLost, "gone")},
		last:  tDone("b2", BranchLost, "rolled back instead of committing: disk full")},
	{name: "done rolled back last", setup: []Transition{tJoin("b1"), tVote("b1", false, "x"), tDecide(false, "r")}, last: tDone("b1", BranchRolledBack, "")},
	{name: "done lost in rollback", setup: []Transition{tJoin("b1"), tJoin("b2"), tDecide(false, "r")}, last: tDone("b2", BranchLost, "why")},
	{name: "done twice",
		setup: []Transition{tJoin("b1"), tJoin("b2"), tVote("b1", true, ""), tVote("b2", true, ""), tDecide(true, "c"), tDone("b1", BranchCommitted, "")},
		last:  tDone("b1", BranchCommitted, ""), want: conflicts},
	{name: "done terminal", setup: []Transition{tJoin("b1"), tDecide(false, "r"), tDone("b1", BranchRolledBack, "")},
		last: tDone("b1", BranchRolledBack, ""), want: conflicts},

	{name: "strings survive",
		group: func(g *Group) {
			g.StarterService = `quo"te \back/slash <>& ü 你好 🎉 %s %d` + "\n\t\x00\x01"
			g.Starter = "{}[]:,"
		},
		setup: []Transition{{Kind: TransJoin, Branch: Branch{ID: `b "1"/{x}`, Service: "svc\\%s", Instance: "i\u2028j",
			Datasource: "ds\x7f", Mode: "lcn", State: BranchRegistered, Reason: "join \"why\""}, AtMS: t0}},
		last: Transition{Kind: TransVote, BranchID: `b "1"/{x}`, BranchTo: BranchFailed, AtMS: t0, Reason: "ERROR 1213: \"Deadlock\"\r\n\\ 🎉"}},
	{name: "strings in attention",
		setup: []Transition{{Kind: TransJoin, Branch: Branch{ID: "b%1", Service: `s"v`, Instance: "in/st", State: BranchRegistered}},
			tDecide(false, `r"r`)},
		last: tDone("b%1", BranchLost, "gone: \"x\" \\ y")},
	{name: "large and negative times",
		group: func(g *Group) { g.CreatedMS, g.DeadlineMS = math.MinInt64, math.MaxInt64 },
		setup: []Transition{{Kind: TransJoin, Branch: Branch{ID: "b1", State: BranchRegistered}, AtMS: 1<<53 + 1}},
		last:  Transition{Kind: TransDecide, GroupTo: GroupRollingBack, AtMS: math.MaxInt64 - 1}},
	{name: "large time finishes",
		setup: []Transition{{Kind: TransDecide, GroupTo: GroupCommitting, AtMS: 1<<53 + 1}},
		last:  tJoin("b1"), want: conflicts},
	{name: "negative time finishes",
		setup: []Transition{tJoin("b1"), {Kind: TransDecide, GroupTo: GroupRollingBack, AtMS: -(1<<53 + 1)}},
		last:  Transition{Kind: TransBranchDone, BranchID: "b1", BranchTo: BranchRolledBack, AtMS: math.MinInt64}},
}

// panicCases are transitions no caller can legally build: every store must
// panic as ApplyTransition does, and change nothing.
var panicCases = []struct {
	name  string
	setup []Transition
	last  Transition
}{
	{name: "join not registered", last: Transition{Kind: TransJoin, Branch: Branch{ID: "b1", State: BranchPrepared}}},
	{name: "vote to committed", setup: []Transition{tJoin("b1")}, last: Transition{Kind: TransVote, BranchID: "b1", BranchTo: BranchCommitted}},
	{name: "decide to committed", last: Transition{Kind: TransDecide, GroupTo: GroupCommitted}},
	{name: "done to prepared", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: Transition{Kind: TransBranchDone, BranchID: "b1", BranchTo: BranchPrepared}},
	{name: "commit carrying a failed vote", setup: []Transition{tJoin("b1")}, last: tCarry(tDecide(true, "c"), "b1", BranchFailed, "")},
	{name: "rollback carrying a prepared vote", setup: []Transition{tJoin("b1")}, last: tCarry(tDecide(false, "r"), "b1", BranchPrepared, "")},
	{name: "prepare carrying a vote", setup: []Transition{tJoin("b1")}, last: tCarry(tPrepare(), "b1", BranchReady, "")},
	{name: "unknown kind", last: Transition{Kind: 99}},
	{name: "committed in rollback", setup: []Transition{tJoin("b1"), tDecide(false, "r")}, last: tDone("b1", BranchCommitted, "")},
}

func panicMessage(f func()) (msg any) {
	defer func() { msg = recover() }()
	f()
	return nil
}

// testStore is the conformance suite every Store must pass. newStore returns
// a fresh, empty store (cleaned up by t).
func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()

	t.Run("CreateGet", func(t *testing.T) {
		s := newStore(t)
		in := newTestGroup("g1")
		in.Reason, in.Attention = "created \"so\"", "look: 🎉"
		in.Branches = []Branch{
			{ID: "b1", Service: "s", Instance: "i:1", Datasource: "3:x", Mode: "xa", State: BranchPrepared, Reason: "r\x00"},
			{ID: "", State: BranchRegistered},
		}
		mustCreate(t, s, in)
		want := in.Clone()
		in.Branches[0].State = BranchLost // the store must have its own copy
		in.StarterService = "changed"
		got := mustGet(t, s, "g1")
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Get = %+v, want %+v", got, want)
		}
		got.Branches[0].ID = "changed" // and hand out copies
		if again := mustGet(t, s, "g1"); !reflect.DeepEqual(again, want) {
			t.Fatalf("Get after changing a result = %+v, want %+v", again, want)
		}
		if err := s.Create(ctx, newTestGroup("g1")); !errors.Is(err, ErrExists) {
			t.Errorf("Create of a taken id: %v, want ErrExists", err)
		}
		if again := mustGet(t, s, "g1"); !reflect.DeepEqual(again, want) {
			t.Fatalf("Get after a refused Create = %+v, want %+v", again, want)
		}
		decided := newTestGroup("g2")
		decided.State = GroupCommitting
		if err := s.Create(ctx, decided); err == nil {
			t.Error("Create of a COMMITTING group succeeded")
		}
		if err := s.Create(ctx, &Group{State: GroupActive}); err == nil {
			t.Error("Create with an empty id succeeded")
		}
		dup := newTestGroup("g3")
		dup.Branches = []Branch{{ID: "b", State: BranchRegistered}, {ID: "b", State: BranchRegistered}}
		if err := s.Create(ctx, dup); err == nil {
			t.Error("Create with two branches of one id succeeded")
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})

	// Version: every applied transition counts; a transition that names
	// a version (CheckVersion) applies to that version only, so a caller
	// stepping a copy it kept (the server's cache) can never apply a
	// transition to a group that changed since.
	t.Run("Version", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, newTestGroup("g1"))
		ref := mustGet(t, s, "g1")
		on := func(tr Transition) Transition { tr.Group = "g1"; return tr }
		if ref.Version != 0 {
			t.Fatalf("created group has version %d, want 0", ref.Version)
		}
		ref, _ = applyChecked(t, s, ref, on(tJoin("b1")))
		ref, _ = applyChecked(t, s, ref, on(tJoin("b2")))
		if ref.Version != 2 {
			t.Fatalf("after two joins: version %d, want 2", ref.Version)
		}
		stale := on(tVote("b1", true, ""))
		stale.CheckVersion, stale.IfVersion = true, 1
		if _, err := applyChecked(t, s, ref, stale); !errors.Is(err, ErrConflict) {
			t.Fatalf("vote naming version 1 of a version-2 group: %v, want ErrConflict", err)
		}
		staleJoin := on(tJoin("b3"))
		staleJoin.CheckVersion, staleJoin.IfVersion = true, 3
		if _, err := applyChecked(t, s, ref, staleJoin); !errors.Is(err, ErrConflict) {
			t.Fatalf("join naming version 3 of a version-2 group: %v, want ErrConflict", err)
		}
		fresh := on(tVote("b1", true, ""))
		fresh.CheckVersion, fresh.IfVersion = true, 2
		ref, err := applyChecked(t, s, ref, fresh)
		if err != nil || ref.Version != 3 {
			t.Fatalf("vote naming the current version: %v (version %d), want applied (version 3)", err, ref.Version)
		}
		dec := on(tDecide(false, "stop"))
		dec.CheckVersion, dec.IfVersion = true, 2
		if _, err := applyChecked(t, s, ref, dec); !errors.Is(err, ErrConflict) {
			t.Fatalf("decide naming an old version: %v, want ErrConflict", err)
		}
		dec.IfVersion = 3
		ref, _ = applyChecked(t, s, ref, dec)
		done := on(tDone("b1", BranchRolledBack, ""))
		done.CheckVersion, done.IfVersion = true, 3
		if _, err := applyChecked(t, s, ref, done); !errors.Is(err, ErrConflict) {
			t.Fatalf("branch-done naming an old version: %v, want ErrConflict", err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) || err.Error() != errGroupNotFound("nope").Error() {
			t.Errorf("Get: %v, want %v", err, errGroupNotFound("nope"))
		}
		for _, tr := range []Transition{tJoin("b1"), tVote("b1", true, ""), tDecide(true, ""), tDecide(false, ""), tDone("b1", BranchCommitted, "")} {
			tr.Group = "nope"
			if g, err := s.Apply(ctx, tr); !errors.Is(err, ErrNotFound) || g != nil {
				t.Errorf("Apply(%s) to an unknown group: %v, %v; want ErrNotFound", tr.Kind, g, err)
			}
		}
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Apply created the group: Get: %v", err)
		}
		expectIDs(t, "Undone")(s.Undone(ctx, 10))
	})

	t.Run("Transitions", func(t *testing.T) {
		s := newStore(t)
		for i, tc := range transitionCases {
			t.Run(tc.name, func(t *testing.T) {
				g := newTestGroup(fmt.Sprintf("tr-%d", i))
				if tc.group != nil {
					tc.group(g)
				}
				mustCreate(t, s, g)
				ref := g.Clone()
				wantEvents := []string{EventCreated}
				for j, tr := range slices.Concat(tc.setup, []Transition{tc.last}) {
					tr.Group = g.ID
					var err error
					ref, err = applyChecked(t, s, ref, tr)
					if j < len(tc.setup) && err != nil {
						t.Fatalf("setup step %d (%s) refused: %v", j, tr.Kind, err)
					}
					if j == len(tc.setup) && classify(err) != tc.want {
						t.Fatalf("last step: outcome %d (%v), the table says %d", classify(err), err, tc.want)
					}
					if err == nil {
						for _, e := range transitionEvents(tr) {
							wantEvents = append(wantEvents, e.Kind)
						}
					}
				}
				// The timeline has an event per transition applied (two for
				// a decision carrying a vote), none for a refused one.
				evs, err := s.Events(ctx, g.ID)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, e := range evs {
					got = append(got, e.Kind)
				}
				if !slices.Equal(got, wantEvents) {
					t.Fatalf("timeline %v, want %v", got, wantEvents)
				}
			})
		}
	})

	t.Run("Panics", func(t *testing.T) {
		s := newStore(t)
		for i, tc := range panicCases {
			t.Run(tc.name, func(t *testing.T) {
				g := newTestGroup(fmt.Sprintf("p-%d", i))
				mustCreate(t, s, g)
				ref := g.Clone()
				for _, tr := range tc.setup {
					tr.Group = g.ID
					ref, _ = applyChecked(t, s, ref, tr)
				}
				last := tc.last
				last.Group = g.ID
				want := panicMessage(func() { _ = ApplyTransition(ref.Clone(), last) })
				if want == nil {
					t.Fatal("ApplyTransition did not panic")
				}
				got := panicMessage(func() { _, _ = s.Apply(ctx, last) })
				if got != want {
					t.Errorf("Apply panicked with %v, want %v", got, want)
				}
				if stored := mustGet(t, s, g.ID); !reflect.DeepEqual(stored, ref) {
					t.Errorf("after the panic: stored %+v, want %+v", stored, ref)
				}
				// The store still works.
				if _, err := s.Apply(ctx, Transition{Kind: TransJoin, Group: g.ID, Branch: Branch{ID: "after", State: BranchRegistered}}); err != nil && !errors.Is(err, ErrConflict) {
					t.Errorf("Apply after the panic: %v", err)
				}
			})
		}
	})

	t.Run("Indexes", func(t *testing.T) {
		s := newStore(t)
		now := time.UnixMilli(t0)
		for _, c := range []struct {
			id string
			dl int64
		}{{"d", t0 + 10}, {"a", t0 - 10}, {"c", t0}, {"b", t0}, {"e", t0 - 5}} {
			g := newTestGroup(c.id)
			g.DeadlineMS = c.dl
			mustCreate(t, s, g)
			mustApply(t, s, Transition{Kind: TransJoin, Group: c.id, Branch: Branch{ID: "x", State: BranchRegistered}})
		}
		expectIDs(t, "Expired", "a", "e", "b", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Expired limit 2", "a", "e")(s.Expired(ctx, now, 2))
		expectIDs(t, "Expired limit 0")(s.Expired(ctx, now, 0))
		expectIDs(t, "Expired earlier")(s.Expired(ctx, now.Add(-11*time.Millisecond), 10))
		expectIDs(t, "Undone")(s.Undone(ctx, 10))

		// Deciding moves a group from the deadline index to the phase-2 index.
		mustApply(t, s, Transition{Kind: TransDecide, Group: "e", GroupTo: GroupRollingBack, AtMS: t0 + 7})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "b", GroupTo: GroupRollingBack, AtMS: t0 + 5})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "d", GroupTo: GroupRollingBack, AtMS: t0 + 5})
		expectIDs(t, "Expired after decide", "a", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Undone after decide", "b", "d", "e")(s.Undone(ctx, 10))
		expectIDs(t, "Undone limit 1", "b")(s.Undone(ctx, 1))
		expectIDs(t, "Undone limit 0")(s.Undone(ctx, 0))

		// A refused decide changes no index.
		if _, err := s.Apply(ctx, Transition{Kind: TransDecide, Group: "a", GroupTo: GroupCommitting, AtMS: t0 + 8}); !errors.Is(err, ErrConflict) {
			t.Fatalf("commit with a REGISTERED branch: %v, want ErrConflict", err)
		}
		expectIDs(t, "Expired after refused decide", "a", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Undone after refused decide", "b", "d", "e")(s.Undone(ctx, 10))

		// Terminal groups leave the phase-2 index.
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "b", BranchID: "x", BranchTo: BranchRolledBack, AtMS: t0 + 9})
		expectIDs(t, "Undone after done", "d", "e")(s.Undone(ctx, 10))

		// A decide with no branch goes straight to terminal: in no index.
		g := newTestGroup("f")
		g.DeadlineMS = t0 - 20
		mustCreate(t, s, g)
		expectIDs(t, "Expired with f", "f", "a", "c")(s.Expired(ctx, now, 10))
		if got := mustApply(t, s, Transition{Kind: TransDecide, Group: "f", GroupTo: GroupCommitting, AtMS: t0}); got.State != GroupCommitted {
			t.Fatalf("decide without branches: %s, want COMMITTED", got.State)
		}
		expectIDs(t, "Expired after f", "a", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Undone after f", "d", "e")(s.Undone(ctx, 10))

		// A PREPARING group stays under its deadline and is owed pushes.
		g = newTestGroup("p")
		g.DeadlineMS = t0 - 1
		mustCreate(t, s, g)
		mustApply(t, s, Transition{Kind: TransJoin, Group: "p", Branch: Branch{ID: "x", State: BranchRegistered}})
		mustApply(t, s, Transition{Kind: TransVote, Group: "p", BranchID: "x", BranchTo: BranchReady})
		mustApply(t, s, Transition{Kind: TransJoin, Group: "p", Branch: Branch{ID: "y", State: BranchRegistered}})
		mustApply(t, s, Transition{Kind: TransVote, Group: "p", BranchID: "y", BranchTo: BranchReady})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "p", GroupTo: GroupPreparing, AtMS: t0})
		expectIDs(t, "Expired with PREPARING p", "a", "p", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Undone with PREPARING p", "p", "d", "e")(s.Undone(ctx, 10))
		mustApply(t, s, Transition{Kind: TransVote, Group: "p", BranchID: "x", BranchTo: BranchPrepared, AtMS: t0 + 1})
		expectIDs(t, "Undone after one prepared", "p", "d", "e")(s.Undone(ctx, 10))
		mustApply(t, s, Transition{Kind: TransDecide, Group: "p", GroupTo: GroupRollingBack, AtMS: t0 + 6})
		expectIDs(t, "Expired after p decided", "a", "c")(s.Expired(ctx, now, 10))
		expectIDs(t, "Undone after p decided", "d", "p", "e")(s.Undone(ctx, 10))
		for _, b := range []string{"x", "y"} {
			mustApply(t, s, Transition{Kind: TransBranchDone, Group: "p", BranchID: b, BranchTo: BranchRolledBack, AtMS: t0 + 7})
		}
		expectIDs(t, "Undone after p done", "d", "e")(s.Undone(ctx, 10))

		// Purge removes nothing before the retention has passed.
		if n, err := s.Purge(ctx, time.UnixMilli(t0).Add(DefaultRetention-time.Millisecond)); err != nil || n != 0 {
			t.Errorf("early Purge = %d, %v; want 0", n, err)
		}
		for _, id := range []string{"a", "b", "c", "d", "e", "f", "p"} {
			mustGet(t, s, id)
		}
	})

	t.Run("ConcurrentDecide", func(t *testing.T) {
		s := newStore(t)
		const groups, branches = 8, 4
		for gi := range groups {
			id := fmt.Sprintf("race-%d", gi)
			mustCreate(t, s, newTestGroup(id))
			for b := range branches {
				mustApply(t, s, Transition{Kind: TransJoin, Group: id, Branch: Branch{ID: fmt.Sprint("b", b), State: BranchRegistered}})
				mustApply(t, s, Transition{Kind: TransVote, Group: id, BranchID: fmt.Sprint("b", b), BranchTo: BranchPrepared})
			}
			var wg sync.WaitGroup
			var wins atomic.Int32
			var winner atomic.Value
			errs := make(chan error, 64)
			start := make(chan struct{})
			for w := range 24 {
				wg.Go(func() {
					<-start
					var tr Transition
					switch {
					case w%3 == 0: // decide: commit or roll back
						tr = Transition{Kind: TransDecide, Group: id, GroupTo: GroupCommitting, AtMS: t0 + int64(w), Reason: fmt.Sprint("w", w)}
						if w%2 == 1 {
							tr.GroupTo = GroupRollingBack
						}
					case w == 1+gi%4*3: // one voter fails its branch in some groups
						tr = Transition{Kind: TransVote, Group: id, BranchID: fmt.Sprint("b", w%branches), BranchTo: BranchFailed, AtMS: t0, Reason: "x"}
						if gi%2 == 1 {
							tr.BranchTo = BranchPrepared
						}
					default:
						tr = Transition{Kind: TransVote, Group: id, BranchID: fmt.Sprint("b", w%branches), BranchTo: BranchPrepared, AtMS: t0}
					}
					g, err := s.Apply(ctx, tr)
					switch {
					case err == nil && tr.Kind == TransDecide:
						wins.Add(1)
						winner.Store(g)
					case err != nil && !errors.Is(err, ErrConflict):
						errs <- fmt.Errorf("%s: %w", tr.Kind, err)
					}
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("%s: error other than ErrConflict: %v", id, err)
			}
			if n := wins.Load(); n != 1 {
				t.Fatalf("%s: %d decides won, want exactly 1", id, n)
			}
			won := winner.Load().(*Group)
			final := mustGet(t, s, id)
			if !reflect.DeepEqual(final, won) {
				t.Errorf("%s: stored %+v, the winning decide returned %+v", id, final, won)
			}
			if final.State == GroupCommitting {
				for _, b := range final.Branches {
					if b.State != BranchPrepared {
						t.Errorf("%s committed with branch %s %s", id, b.ID, b.State)
					}
				}
			}
		}
		ids, err := s.Undone(ctx, 100)
		if err != nil || len(ids) != groups {
			t.Errorf("Undone = %v, %v; want %d groups", ids, err, groups)
		}
		expectIDs(t, "Expired")(s.Expired(ctx, time.UnixMilli(t0+1e9), 100))
	})

	testOps(t, newStore)
}

// testPurge checks Purge of a store that implements it (Memory, Bolt).
func testPurge(t *testing.T, s Store, retention time.Duration) {
	ctx := context.Background()
	p := s
	for _, id := range []string{"p1", "p2", "p3"} {
		g := newTestGroup(id)
		mustCreate(t, s, g)
		mustApply(t, s, Transition{Kind: TransJoin, Group: id, Branch: Branch{ID: "b", State: BranchRegistered}})
	}
	mustApply(t, s, Transition{Kind: TransDecide, Group: "p1", GroupTo: GroupRollingBack, AtMS: t0})
	mustApply(t, s, Transition{Kind: TransBranchDone, Group: "p1", BranchID: "b", BranchTo: BranchRolledBack, AtMS: t0 + 100})
	mustApply(t, s, Transition{Kind: TransDecide, Group: "p2", GroupTo: GroupRollingBack, AtMS: t0})
	mustApply(t, s, Transition{Kind: TransBranchDone, Group: "p2", BranchID: "b", BranchTo: BranchLost, AtMS: t0 + 200, Reason: "gone"})

	due := time.UnixMilli(t0 + 100).Add(retention)
	if n, err := p.Purge(ctx, due.Add(-time.Millisecond)); err != nil || n != 0 {
		t.Fatalf("Purge before retention = %d, %v; want 0", n, err)
	}
	if n, err := p.Purge(ctx, due); err != nil || n != 1 {
		t.Fatalf("Purge at retention = %d, %v; want 1", n, err)
	}
	if _, err := s.Get(ctx, "p1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("purged group: Get: %v", err)
	}
	mustGet(t, s, "p2")
	// p2 has a LOST branch: its open marker keeps it, however late.
	later := due.Add(time.Hour * 24 * 365)
	if n, err := p.Purge(ctx, later); err != nil || n != 0 {
		t.Fatalf("Purge of a group with an open marker = %d, %v; want 0", n, err)
	}
	mustGet(t, s, "p2")
	if _, err := s.Resolve(ctx, MarkerID("p2", "b"), Resolution{By: "ops", AtMS: later.UnixMilli(), Reason: "fixed by hand"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	// Resolved: kept for the retention from the resolution, then gone with
	// its timeline and markers.
	if n, err := p.Purge(ctx, later.Add(retention-time.Millisecond)); err != nil || n != 0 {
		t.Fatalf("Purge before the retention after the resolution = %d, %v; want 0", n, err)
	}
	if n, err := p.Purge(ctx, later.Add(retention)); err != nil || n != 1 {
		t.Fatalf("Purge of the rest = %d, %v; want 1 (p2; p3 is ACTIVE)", n, err)
	}
	if n, err := p.Purge(ctx, later.Add(retention)); err != nil || n != 0 {
		t.Fatalf("second Purge = %d, %v; want 0", n, err)
	}
	if _, err := s.Get(ctx, "p2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("purged group: Get: %v", err)
	}
	if _, err := s.Events(ctx, "p2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("purged group: Events: %v", err)
	}
	if _, err := s.Marker(ctx, MarkerID("p2", "b")); !errors.Is(err, ErrNotFound) {
		t.Errorf("purged group: Marker: %v", err)
	}
	if ms, err := s.GroupMarkers(ctx, "p2"); err != nil || len(ms) != 0 {
		t.Errorf("purged group: GroupMarkers = %v, %v", ms, err)
	}
	if page, err := s.List(ctx, ListQuery{}); err != nil || len(page.Groups) != 1 || page.Groups[0].Group.ID != "p3" {
		t.Errorf("List after Purge = %+v, %v; want p3 only", page, err)
	}
	mustGet(t, s, "p3")
	expectIDs(t, "Expired", "p3")(s.Expired(ctx, time.UnixMilli(t0+1e9), 10))
}

func TestMemoryStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		s := NewMemoryStore(StoreOptions{})
		t.Cleanup(func() { s.Close() })
		return s
	})
	t.Run("Purge", func(t *testing.T) {
		testPurge(t, NewMemoryStore(StoreOptions{Retention: time.Hour}), time.Hour)
	})
	t.Run("Close", func(t *testing.T) {
		s := NewMemoryStore(StoreOptions{})
		mustCreate(t, s, newTestGroup("g"))
		for range 2 {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if _, err := s.Get(context.Background(), "g"); !errors.Is(err, errStoreClosed) {
			t.Errorf("Get after Close: %v", err)
		}
		if err := s.Ping(context.Background()); !errors.Is(err, errStoreClosed) {
			t.Errorf("Ping after Close: %v", err)
		}
	})
}

func openBolt(t *testing.T, path string, opt StoreOptions) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(path, opt)
	if err != nil {
		t.Fatalf("OpenBoltStore: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestBoltStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		return openBolt(t, filepath.Join(t.TempDir(), "lcn.db"), StoreOptions{})
	})
	t.Run("Purge", func(t *testing.T) {
		testPurge(t, openBolt(t, filepath.Join(t.TempDir(), "lcn.db"), StoreOptions{Retention: time.Hour}), time.Hour)
	})

	t.Run("Reopen", func(t *testing.T) {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "lcn.db")
		s, err := OpenBoltStore(path, StoreOptions{Retention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b", "c"} {
			mustCreate(t, s, newTestGroup(id))
			mustApply(t, s, Transition{Kind: TransJoin, Group: id, Branch: Branch{ID: "x", Service: "s", State: BranchRegistered}})
		}
		mustApply(t, s, Transition{Kind: TransDecide, Group: "b", GroupTo: GroupRollingBack, AtMS: t0})
		mustApply(t, s, Transition{Kind: TransDecide, Group: "c", GroupTo: GroupRollingBack, AtMS: t0})
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "c", BranchID: "x", BranchTo: BranchLost, AtMS: t0 + 1, Reason: "gone"})
		before := map[string]*Group{}
		for _, id := range []string{"a", "b", "c"} {
			before[id] = mustGet(t, s, id)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := s.Get(ctx, "a"); !errors.Is(err, errStoreClosed) {
			t.Errorf("Get after Close: %v, want errStoreClosed", err)
		}

		s2 := openBolt(t, path, StoreOptions{Retention: time.Hour})
		for id, want := range before {
			if got := mustGet(t, s2, id); !reflect.DeepEqual(got, want) {
				t.Errorf("after reopen %s = %+v, want %+v", id, got, want)
			}
		}
		expectIDs(t, "Expired", "a")(s2.Expired(ctx, time.UnixMilli(t0+1e9), 10))
		expectIDs(t, "Undone", "b")(s2.Undone(ctx, 10))
		// c's LOST branch has its marker, which holds c.
		if n, err := s2.Purge(ctx, time.UnixMilli(t0+1).Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("Purge after reopen = %d, %v; want 0", n, err)
		}
		if _, err := s2.Resolve(ctx, MarkerID("c", "x"), Resolution{By: "ops", AtMS: t0 + 2, Reason: "checked"}); err != nil {
			t.Fatalf("Resolve after reopen: %v", err)
		}
		if n, err := s2.Purge(ctx, time.UnixMilli(t0+2).Add(time.Hour)); err != nil || n != 1 {
			t.Errorf("Purge after resolution = %d, %v; want 1", n, err)
		}
		if ev, err := s2.Events(ctx, "a"); err != nil || len(ev) != 2 {
			t.Errorf("timeline of a after reopen: %v, %v", ev, err)
		}
	})

	t.Run("Locked", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "lcn.db")
		openBolt(t, path, StoreOptions{})
		began := time.Now()
		s, err := OpenBoltStore(path, StoreOptions{})
		if err == nil {
			s.Close()
			t.Fatal("second open of a locked file succeeded")
		}
		if !strings.Contains(err.Error(), "locked by another process") || !errors.Is(err, bolterrors.ErrTimeout) {
			t.Errorf("error %q does not say the file is locked", err)
		}
		if d := time.Since(began); d > 5*BoltLockTimeout {
			t.Errorf("open took %v", d)
		}
	})

	t.Run("NoDir", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing", "lcn.db")
		if s, err := OpenBoltStore(path, StoreOptions{}); err == nil {
			s.Close()
			t.Fatal("open in a missing directory succeeded")
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	})
}

// Redis tests run on the test binary's private server (testenv); each store
// gets its own key prefix, so tests never see each other's keys.

var redisPrefixSeq atomic.Int64

func uniquePrefix() string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("lcntest%d-%s", redisPrefixSeq.Add(1), hex.EncodeToString(b[:]))
}

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	r := testenv.SharedRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisStore(t *testing.T) {
	c := redisClient(t)
	testStore(t, func(t *testing.T) Store {
		return NewRedisStore(c, uniquePrefix(), StoreOptions{})
	})
}

// TestRedisStoreSequential runs the suite with the steps a cluster client
// takes (separate round trips instead of one ordered pipeline).
func TestRedisStoreSequential(t *testing.T) {
	c := redisClient(t)
	testStore(t, func(t *testing.T) Store {
		s := NewRedisStore(c, uniquePrefix(), StoreOptions{})
		s.ordered = false
		return s
	})
}

func TestRedisStoreTTL(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	for _, ordered := range []bool{true, false} {
		s := NewRedisStore(c, uniquePrefix(), StoreOptions{Retention: time.Hour})
		s.ordered = ordered
		inIndex := func(key, id string) bool {
			err := c.ZScore(ctx, key, id).Err()
			if err != nil && err != redis.Nil {
				t.Fatal(err)
			}
			return err == nil
		}
		mustCreate(t, s, newTestGroup("g"))
		mustApply(t, s, tJoinTo("g", "b1"))
		if !inIndex(s.deadlines, "g") || inIndex(s.undone, "g") {
			t.Errorf("ordered=%v: ACTIVE group: in deadlines %v, in undone %v", ordered, inIndex(s.deadlines, "g"), inIndex(s.undone, "g"))
		}
		mustApply(t, s, Transition{Kind: TransDecide, Group: "g", GroupTo: GroupRollingBack, AtMS: t0})
		key := s.groupKey("g")
		if ttl := c.PTTL(ctx, key).Val(); ttl != -1 {
			t.Errorf("ordered=%v: decided group: PTTL = %v, want none", ordered, ttl)
		}
		if inIndex(s.deadlines, "g") || !inIndex(s.undone, "g") {
			t.Errorf("ordered=%v: decided group: in deadlines %v, in undone %v", ordered, inIndex(s.deadlines, "g"), inIndex(s.undone, "g"))
		}
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "g", BranchID: "b1", BranchTo: BranchRolledBack, AtMS: t0 + 1})
		if ttl := c.PTTL(ctx, key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("ordered=%v: terminal group: PTTL = %v, want about 1h", ordered, ttl)
		}
		if inIndex(s.deadlines, "g") || inIndex(s.undone, "g") {
			t.Errorf("ordered=%v: terminal group still indexed", ordered)
		}
		// A branch LOST in phase 2 finishes its group too.
		mustCreate(t, s, newTestGroup("l"))
		mustApply(t, s, tJoinTo("l", "b1"))
		mustApply(t, s, Transition{Kind: TransDecide, Group: "l", GroupTo: GroupRollingBack, AtMS: t0})
		mustApply(t, s, Transition{Kind: TransBranchDone, Group: "l", BranchID: "b1", BranchTo: BranchLost, AtMS: t0 + 1, Reason: "gone"})
		if inIndex(s.deadlines, "l") || inIndex(s.undone, "l") {
			t.Errorf("ordered=%v: group finished by a LOST branch still indexed", ordered)
		}
		// A group that is terminal as it is decided gets it too.
		mustCreate(t, s, newTestGroup("h"))
		mustApply(t, s, Transition{Kind: TransDecide, Group: "h", GroupTo: GroupCommitting, AtMS: t0})
		if ttl := c.PTTL(ctx, s.groupKey("h")).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("ordered=%v: terminal group: PTTL = %v, want about 1h", ordered, ttl)
		}
		if inIndex(s.deadlines, "h") || inIndex(s.undone, "h") {
			t.Errorf("ordered=%v: group terminal at decide still indexed", ordered)
		}
		if n, err := s.Purge(ctx, time.Now().Add(48*time.Hour)); n != 0 || err != nil {
			t.Errorf("Purge = %d, %v; want 0, nil", n, err)
		}
	}
}

func tJoinTo(group, branch string) Transition {
	tr := tJoin(branch)
	tr.Group = group
	return tr
}

// crc16 is the CRC16-CCITT (XModem) Redis Cluster uses for key slots.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// keySlot is Redis Cluster's HASH_SLOT(key), hash tags included.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16([]byte(key)) % 16384)
}

func TestRedisStoreKeySlots(t *testing.T) {
	// Known answers of CLUSTER KEYSLOT.
	for key, want := range map[string]int{"foo": 12182, "somekey": 11058, "{user1000}.following": 3443, "foo{}{bar}": 8363} {
		if got := keySlot(key); got != want {
			t.Fatalf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	ctx := context.Background()
	c := redisClient(t)
	prefix := uniquePrefix()
	s := NewRedisStore(c, prefix, StoreOptions{})
	id := "0123456789abcdef0123456789abcdef"
	mustCreate(t, s, newTestGroup(id))
	mustApply(t, s, tJoinTo(id, "b1"))
	mustApply(t, s, Transition{Kind: TransVote, Group: id, BranchID: "b1", BranchTo: BranchPrepared})
	mustApply(t, s, Transition{Kind: TransDecide, Group: id, GroupTo: GroupCommitting, AtMS: t0})
	mustApply(t, s, Transition{Kind: TransBranchDone, Group: id, BranchID: "b1", BranchTo: BranchCommitted, AtMS: t0})

	keys, err := c.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var groupKeys int
	for _, k := range keys {
		switch {
		case k == s.deadlines || k == s.undone || k == s.created || k == s.openMarks || k == s.resolvedMark:
		case strings.Contains(k, "{"+id+"}"):
			groupKeys++
			if got, want := keySlot(k), keySlot(id); got != want {
				t.Errorf("key %s is in slot %d, the group's slot is %d", k, got, want)
			}
		default:
			t.Errorf("key %s is neither an index nor tagged with the group id", k)
		}
	}
	if groupKeys == 0 {
		t.Fatalf("no keys of group %s among %q", id, keys)
	}
}

// TestRedisStoreCrashLeftovers builds the index states a crash between the
// non-atomic steps can leave, and checks that readers neither lose a group
// nor return a wrong one, and clean up.
func TestRedisStoreCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	s := NewRedisStore(c, uniquePrefix(), StoreOptions{})
	now := time.UnixMilli(t0)
	score := func(key, id string) (float64, bool) {
		v, err := c.ZScore(ctx, key, id).Result()
		if err == redis.Nil {
			return 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return v, true
	}
	zadd := func(key, id string, sc int64) {
		if err := c.ZAdd(ctx, key, redis.Z{Score: float64(sc), Member: id}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Create stopped after ZADD: an old entry goes, a fresh one stays (its
	// Create may still be on the way).
	zadd(s.deadlines, "ghost-old", t0-createGrace.Milliseconds()-1)
	zadd(s.deadlines, "ghost-new", t0-1)
	// A decided group whose deadline entry survived (decide stopped before ZREM).
	mustCreate(t, s, newTestGroup("decided"))
	mustApply(t, s, tJoinTo("decided", "b1"))
	mustApply(t, s, Transition{Kind: TransDecide, Group: "decided", GroupTo: GroupRollingBack, AtMS: t0 - 50})
	zadd(s.deadlines, "decided", t0-100)
	// An ACTIVE group whose entry is earlier than its deadline.
	early := newTestGroup("early")
	early.DeadlineMS = t0 + 1000
	mustCreate(t, s, early)
	zadd(s.deadlines, "early", t0-100)
	// An ACTIVE group that is due.
	due := newTestGroup("due")
	due.DeadlineMS = t0 - 10
	mustCreate(t, s, due)

	expectIDs(t, "Expired", "due")(s.Expired(ctx, now, 10))
	if _, ok := score(s.deadlines, "ghost-old"); ok {
		t.Error("old entry without a group was kept")
	}
	if _, ok := score(s.deadlines, "ghost-new"); !ok {
		t.Error("fresh entry without a group was dropped")
	}
	if _, ok := score(s.deadlines, "decided"); ok {
		t.Error("entry of a decided group was kept")
	}
	if v, ok := score(s.deadlines, "early"); !ok || int64(v) != t0+1000 {
		t.Errorf("early entry: score %v, %v; want re-scored to its deadline %d", v, ok, t0+1000)
	}
	expectIDs(t, "Expired at the later deadline", "due", "early")(s.Expired(ctx, time.UnixMilli(t0+1000), 10))

	// A decide stopped after ZADD undone and ZREM deadlines, or refused,
	// leaves an ACTIVE group in undone only: Undone must not return or drop
	// it, and must give it its deadline entry back.
	lost := newTestGroup("half-decided")
	lost.DeadlineMS = t0 - 5
	mustCreate(t, s, lost)
	c.ZRem(ctx, s.deadlines, "half-decided")
	zadd(s.undone, "half-decided", t0)
	// A terminal group left in undone (stopped before ZREM undone), and one
	// whose record expired.
	mustCreate(t, s, newTestGroup("finished"))
	mustApply(t, s, Transition{Kind: TransDecide, Group: "finished", GroupTo: GroupRollingBack, AtMS: t0})
	zadd(s.undone, "finished", t0)
	zadd(s.undone, "vanished", t0)

	expectIDs(t, "Undone", "decided")(s.Undone(ctx, 10))
	if _, ok := score(s.undone, "half-decided"); !ok {
		t.Error("ACTIVE group dropped from undone")
	}
	if v, ok := score(s.deadlines, "half-decided"); !ok || int64(v) != t0-5 {
		t.Errorf("ACTIVE group in undone: deadline entry %v, %v; want %d", v, ok, t0-5)
	}
	for _, id := range []string{"finished", "vanished"} {
		if _, ok := score(s.undone, id); ok {
			t.Errorf("%s kept in undone", id)
		}
	}
	expectIDs(t, "Expired finds the half-decided group", "due", "half-decided")(s.Expired(ctx, now, 10))

	// Once decided, it is a proper undone entry.
	mustApply(t, s, Transition{Kind: TransDecide, Group: "half-decided", GroupTo: GroupRollingBack, AtMS: t0 + 1})
	mustApply(t, s, tJoinTo("due", "b1"))
	expectIDs(t, "Undone after deciding", "decided")(s.Undone(ctx, 10))
	if g := mustGet(t, s, "half-decided"); g.State != GroupRolledBack {
		t.Errorf("half-decided is %s", g.State)
	}

	// A refused decide keeps the group reachable by the reaper.
	refused := newTestGroup("refused")
	refused.DeadlineMS = t0 - 1
	mustCreate(t, s, refused)
	mustApply(t, s, tJoinTo("refused", "b1"))
	if _, err := s.Apply(ctx, Transition{Kind: TransDecide, Group: "refused", GroupTo: GroupCommitting, AtMS: t0}); !errors.Is(err, ErrConflict) {
		t.Fatalf("commit with a REGISTERED branch: %v", err)
	}
	if v, ok := score(s.deadlines, "refused"); !ok || int64(v) != t0-1 {
		t.Errorf("refused decide: deadline entry %v, %v; want %d", v, ok, t0-1)
	}
	expectIDs(t, "Expired after refused decide", "due", "refused")(s.Expired(ctx, now, 10))
	expectIDs(t, "Undone after refused decide", "decided")(s.Undone(ctx, 10))
}

func TestRedisStoreNoScript(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	for _, ordered := range []bool{true, false} {
		s := NewRedisStore(c, uniquePrefix(), StoreOptions{})
		s.ordered = ordered
		mustCreate(t, s, newTestGroup("g"))
		for _, tr := range []Transition{tJoinTo("g", "b1"), {Kind: TransVote, Group: "g", BranchID: "b1", BranchTo: BranchPrepared},
			{Kind: TransDecide, Group: "g", GroupTo: GroupCommitting, AtMS: t0}, {Kind: TransBranchDone, Group: "g", BranchID: "b1", BranchTo: BranchCommitted, AtMS: t0}} {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, tr)
		}
		if g := mustGet(t, s, "g"); g.State != GroupCommitted {
			t.Errorf("ordered=%v: state %s, want COMMITTED", ordered, g.State)
		}
	}
}

func TestRedisStoreCorruptRecord(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	s := NewRedisStore(c, uniquePrefix(), StoreOptions{})
	h := packHeader(newTestGroup("x"))
	b1 := packBranch(&Branch{ID: "b1"})
	good := []any{"h", h, "dl", 1, "s", 1, "n", 1, "Kb1", 1, "B1", b1, "S1", 1, "R1", ""}
	if err := c.HSet(ctx, s.groupKey("good"), good...).Err(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, "good")
	for name, fields := range map[string][]any{
		"no header":       {"dl", 1, "s", 1, "n", 0},
		"bad header":      {"h", h + "1:x", "dl", 1, "s", 1, "n", 0},
		"bad state":       {"h", h, "dl", 1, "s", "?", "n", 0},
		"bad deadline":    {"h", h, "dl", "1.5", "s", 1, "n", 0},
		"missing branch":  {"h", h, "dl", 1, "s", 1, "n", 2, "B1", b1, "S1", 1},
		"no branch state": {"h", h, "dl", 1, "s", 1, "n", 1, "B1", b1},
		"bad branch":      {"h", h, "dl", 1, "s", 1, "n", 1, "B1", "3:b1", "S1", 1},
		"negative count":  {"h", h, "dl", 1, "s", 1, "n", "-1"},
		"leading zero":    {"h", h, "dl", 1, "s", 1, "n", 1, "B01", b1, "S1", 1},
		"huge index":      {"h", h, "dl", 1, "s", 1, "n", 1, "S99999999", 1},
		"unknown field":   {"h", h, "dl", 1, "s", 1, "n", 0, "zz", 1},
	} {
		key := s.groupKey(name)
		if err := c.HSet(ctx, key, fields...).Err(); err != nil {
			t.Fatal(err)
		}
		if g, err := s.Get(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Get = %+v, %v; want an error", name, g, err)
		}
	}
	// The index readers skip (and keep) an entry whose record they cannot
	// read, instead of failing.
	c.ZAdd(ctx, s.deadlines, redis.Z{Score: float64(t0 - 1), Member: "bad state"})
	c.ZAdd(ctx, s.undone, redis.Z{Score: float64(t0 - 1), Member: "bad deadline"})
	expectIDs(t, "Expired")(s.Expired(ctx, time.UnixMilli(t0), 10))
	expectIDs(t, "Undone")(s.Undone(ctx, 10))
	if n := c.ZCard(ctx, s.deadlines).Val() + c.ZCard(ctx, s.undone).Val(); n != 2 {
		t.Errorf("%d index entries left, want 2", n)
	}
}

func TestRedisStoreMisc(t *testing.T) {
	c := redisClient(t)
	if p := panicMessage(func() { NewRedisStore(c, "a{b", StoreOptions{}) }); p == nil {
		t.Error("a prefix with a brace was accepted")
	}
	s := NewRedisStore(c, "", StoreOptions{})
	if s.deadlines != "lcn:deadlines" || s.groupKey("x") != "lcn:{x}:g" {
		t.Errorf("default layout: %s, %s", s.deadlines, s.groupKey("x"))
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Errorf("Close closed the client: %v", err)
	}
}

// benchmarkGroups runs whole groups (create, 2 joins, 2 votes, commit, 2
// acks), each Apply preceded by a Get as the server does, and reports
// groups/s.
func benchmarkGroups(b *testing.B, s Store) {
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", seq.Add(1))
			g := newTestGroup(id)
			g.DeadlineMS = time.Now().Add(time.Minute).UnixMilli()
			if err := s.Create(ctx, g); err != nil {
				b.Error(err) // not Fatal: this is not the benchmark's goroutine
				return
			}
			for _, tr := range []Transition{
				{Kind: TransJoin, Branch: Branch{ID: "b1", Service: "stock", Instance: "stock-1", Datasource: "db", Mode: "xa", State: BranchRegistered}},
				{Kind: TransJoin, Branch: Branch{ID: "b2", Service: "account", Instance: "account-1", Datasource: "db", Mode: "xa", State: BranchRegistered}},
				{Kind: TransVote, BranchID: "b1", BranchTo: BranchPrepared},
				{Kind: TransVote, BranchID: "b2", BranchTo: BranchPrepared},
				{Kind: TransDecide, GroupTo: GroupCommitting, Reason: "commit asked by the starter"},
				{Kind: TransBranchDone, BranchID: "b1", BranchTo: BranchCommitted},
				{Kind: TransBranchDone, BranchID: "b2", BranchTo: BranchCommitted},
			} {
				tr.Group, tr.AtMS = id, t0
				if _, err := s.Get(ctx, id); err != nil {
					b.Error(err)
					return
				}
				if _, err := s.Apply(ctx, tr); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "groups/s")
}

// BenchmarkRedisStoreGroup runs on the private test server, which fsyncs
// every write (appendfsync always); LCN_BENCH_REDIS_ADDR names another
// server instead (keys under a fresh prefix; terminal groups expire).
func BenchmarkRedisStoreGroup(b *testing.B) {
	addr := os.Getenv("LCN_BENCH_REDIS_ADDR")
	if addr == "" {
		addr = testenv.SharedRedis(b).Addr
	}
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	defer c.Close()
	b.SetParallelism(16)
	benchmarkGroups(b, NewRedisStore(c, uniquePrefix(), StoreOptions{}))
}

func BenchmarkMemoryStoreGroup(b *testing.B) {
	benchmarkGroups(b, NewMemoryStore(StoreOptions{}))
}
