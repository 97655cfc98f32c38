package txmanager

import (
	"fmt"
	"slices"
	"strings"
)

// The coordinator core: a pure function from (group record, event) to
// (transitions to persist, decisions to send, reply). It does no I/O, reads
// no clock (events carry the time) and draws no random numbers (events carry
// new ids), so it can be tested exhaustively and fuzzed. The server runs it
// under the group's lock, persists the transitions in order, each as one
// compare-and-set, and only after all of them succeeded sends the decisions
// and the reply (DESIGN invariant 1: durable before anyone learns it).

// EventKind names something that happened to a group.
type EventKind uint8

// Events.
const (
	// EvJoin: Instance asks to add Branch to the group.
	EvJoin EventKind = iota + 1
	// EvVote: Instance votes OK (prepared) or not for BranchID.
	EvVote
	// EvDecide: Instance (the starter) asks to commit (Commit) or roll back.
	EvDecide
	// EvTick: the reaper looks at the group at NowMS.
	EvTick
	// EvAck: Instance reports BranchID's phase-2 Outcome.
	EvAck
	// EvResync: Instance, reconnecting, says it holds BranchID.
	EvResync
	// EvRetry: phase-2 retry: send the decision again to every branch not
	// done, except branches whose owner is in Absent: those are recorded as
	// lost (commit) or rolled back (rollback), because a client that has been
	// gone that long no longer holds them (an lcn branch dies with its
	// process or connection).
	EvRetry
	// EvPrepared: the prepare phase's answer for BranchID: OK (the branch is
	// durable: XA PREPARE succeeded) or not. Sent by the owner, or by
	// another session of the branch's service that recovered it.
	EvPrepared
)

func (k EventKind) String() string {
	switch k {
	case EvJoin:
		return "join"
	case EvVote:
		return "vote"
	case EvDecide:
		return "decide"
	case EvTick:
		return "tick"
	case EvAck:
		return "ack"
	case EvResync:
		return "resync"
	case EvRetry:
		return "retry"
	case EvPrepared:
		return "prepared"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one input to the core.
type Event struct {
	Kind     EventKind
	Group    string // the group's id (needed when the store does not know it)
	NowMS    int64
	Instance string      // the client session the event came from ("" for the TM's own events)
	Branch   Branch      // EvJoin: the new branch (ID chosen by the caller)
	BranchID string      // EvVote, EvPrepared, EvAck, EvResync
	OK       bool        // EvVote, EvPrepared
	Commit   bool        // EvDecide
	Outcome  BranchState // EvAck: COMMITTED, ROLLED_BACK or LOST
	Reason   string      // EvVote (why it failed), EvAck (what went wrong)
	Absent   []string    // EvRetry: owners (session ids) gone longer than the lost-after limit
}

// Send is a push to the client session Instance: the group's decision for
// Branch (Commit says which), or, with Prepare, a request to make the
// branch's vote durable (the prepare phase).
type Send struct {
	Instance string
	Group    string
	Branch   string
	Commit   bool
	Prepare  bool
	// Orphan: the branch is a prepared xa branch whose owner is gone (it
	// may have applied the decision and died before acknowledging it).
	// The decision goes to any live session of Service instead, which
	// finishes the branch on its datasource named Datasource.
	Orphan     bool
	Service    string
	Datasource string
}

// ReplyCode classifies the answer to the event's sender.
type ReplyCode uint8

// Reply codes.
const (
	ReplyOK        ReplyCode = iota // done (or already done: duplicates are no-ops)
	ReplyNotFound                   // no such group or branch
	ReplyConflict                   // the group's state refuses it (Reply.State says which)
	ReplyForbidden                  // the sender does not own what it acts on
)

func (c ReplyCode) String() string {
	switch c {
	case ReplyOK:
		return "ok"
	case ReplyNotFound:
		return "not_found"
	case ReplyConflict:
		return "conflict"
	case ReplyForbidden:
		return "forbidden"
	}
	return fmt.Sprintf("ReplyCode(%d)", uint8(c))
}

// Reply is the answer to the event's sender, valid once every transition of
// the Result has been persisted.
type Reply struct {
	Code   ReplyCode
	State  GroupState // the group's state after the event (0: unknown group)
	Reason string
}

// Result is what the core wants done for one event.
type Result struct {
	Transitions []Transition // persist in order, each as a compare-and-set
	Sends       []Send       // then push these
	Reply       Reply        // then answer with this
}

// Step is the coordinator core. g is the group's current record, or nil when
// the store does not know the group. Step does not modify g.
func Step(g *Group, ev Event) Result {
	if g == nil {
		return stepUnknown(ev)
	}
	switch ev.Kind {
	case EvJoin:
		return stepJoin(g, ev)
	case EvVote:
		return stepVote(g, ev)
	case EvDecide:
		return stepDecide(g, ev)
	case EvTick:
		if g.State.Open() && ev.NowMS >= g.DeadlineMS {
			return decide(g, ev.NowMS, false, "deadline passed", ReplyOK)
		}
		return Result{Reply: Reply{State: g.State}}
	case EvPrepared:
		return stepPrepared(g, ev)
	case EvAck:
		return stepAck(g, ev)
	case EvResync:
		return stepResync(g, ev)
	case EvRetry:
		return stepRetry(g, ev)
	}
	panic(fmt.Sprintf("BUG: unknown event kind %d", ev.Kind))
}

// stepUnknown answers events for a group the store does not know: presumed
// abort. A branch asking about it is told to roll back.
func stepUnknown(ev Event) Result {
	switch ev.Kind {
	case EvResync:
		return Result{
			Sends: []Send{{Instance: ev.Instance, Group: ev.Group, Branch: ev.BranchID}},
			Reply: Reply{Code: ReplyNotFound, Reason: "unknown group: presumed rolled back"},
		}
	case EvTick, EvRetry:
		return Result{Reply: Reply{Code: ReplyNotFound}}
	}
	return Result{Reply: Reply{Code: ReplyNotFound, Reason: "unknown group: presumed rolled back"}}
}

// mayActFor reports whether the session instance may vote for or
// acknowledge branch b: its owner may; so may any session of b's service
// when b is an xa branch, whose prepared work outlives the process that did
// it and is recovered by whichever instance of the service finds it.
func mayActFor(b Branch, instance string) bool {
	return b.Instance == instance || (b.Mode == "xa" && strings.HasPrefix(instance, b.Service+"/"))
}

func stepJoin(g *Group, ev Event) Result {
	if g.State == GroupPreparing {
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "group is preparing to commit: it takes no new branch"}}
	}
	if g.State != GroupActive {
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "group already decided"}}
	}
	if ev.NowMS >= g.DeadlineMS {
		r := decide(g, ev.NowMS, false, "deadline passed", ReplyConflict)
		r.Reply.Reason = "deadline passed"
		return r
	}
	b := ev.Branch
	b.State = BranchRegistered
	b.Instance = ev.Instance
	return Result{
		Transitions: []Transition{{Kind: TransJoin, Group: g.ID, Branch: b, AtMS: ev.NowMS}},
		Reply:       Reply{State: GroupActive},
	}
}

func stepVote(g *Group, ev Event) Result {
	b, ok := g.Branch(ev.BranchID)
	if !ok {
		return Result{Reply: Reply{Code: ReplyNotFound, State: g.State, Reason: "unknown branch"}}
	}
	if b.Instance != ev.Instance {
		return Result{Reply: Reply{Code: ReplyForbidden, State: g.State, Reason: "branch belongs to another client"}}
	}
	if g.State == GroupPreparing {
		// The starter asked to commit: a repeated vote that was counted is a
		// no-op; a failure still dooms the group (nothing is decided yet).
		switch {
		case ev.OK && b.State.Voted():
			return Result{Reply: Reply{State: g.State}}
		case !ev.OK && b.State == BranchReady:
			return failVote(g, b, ev)
		}
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "group is preparing to commit"}}
	}
	if g.State != GroupActive {
		// A duplicate of a vote that was counted is a no-op; anything else
		// arrives too late.
		if ev.OK && b.State.Voted() && g.State.Commit() {
			return Result{Reply: Reply{State: g.State}}
		}
		if !ev.OK && !g.State.Commit() {
			return Result{Reply: Reply{State: g.State}}
		}
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "group already decided"}}
	}
	if b.State == BranchFailed {
		if !ev.OK {
			return Result{Reply: Reply{State: g.State}}
		}
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "branch already voted failed"}}
	}
	if ev.NowMS >= g.DeadlineMS {
		return decide(g, ev.NowMS, false, "deadline passed", ReplyConflict)
	}
	if !ev.OK {
		return failVote(g, b, ev)
	}
	// An lcn branch's open transaction is its vote; an xa branch is READY
	// until the prepare phase makes it durable.
	to := BranchPrepared
	if b.Mode == "xa" {
		to = BranchReady
	}
	if b.State == to {
		return Result{Reply: Reply{State: GroupActive}} // a later call of the same service: nothing changes
	}
	return Result{
		Transitions: []Transition{{Kind: TransVote, Group: g.ID, BranchID: b.ID, BranchTo: to, AtMS: ev.NowMS}},
		Reply:       Reply{State: GroupActive},
	}
}

// failVote records branch b's failed vote (or failed prepare) and rolls the
// open group back at once rather than at the deadline, so that every other
// branch releases its locks.
func failVote(g *Group, b Branch, ev Event) Result {
	vote := Transition{Kind: TransVote, Group: g.ID, BranchID: b.ID, BranchTo: BranchFailed, AtMS: ev.NowMS, Reason: ev.Reason}
	after := g.Clone()
	if err := ApplyTransition(after, vote); err != nil {
		panic("BUG: checked vote refused: " + err.Error())
	}
	what := "voted failed"
	if g.State == GroupPreparing {
		what = "failed to prepare"
	}
	r := decide(after, ev.NowMS, false, fmt.Sprintf("branch %s (service %s) %s: %s", b.ID, b.Service, what, ev.Reason), ReplyOK)
	carryVote(&r, vote)
	return r
}

// carryVote makes r's decision carry vote (one store write for both).
func carryVote(r *Result, vote Transition) {
	t := &r.Transitions[0]
	t.BranchID, t.BranchTo, t.BranchReason = vote.BranchID, vote.BranchTo, vote.Reason
}

func stepDecide(g *Group, ev Event) Result {
	if ev.Instance != g.Starter {
		return Result{Reply: Reply{Code: ReplyForbidden, State: g.State, Reason: "only the starter may decide"}}
	}
	if g.State.Decided() {
		// Idempotent: the answer is the decision already made. Asking to
		// commit a group decided to roll back is a conflict the caller must see.
		if ev.Commit && !g.State.Commit() {
			return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: g.Reason}}
		}
		return Result{Reply: Reply{State: g.State, Reason: g.Reason}}
	}
	if !ev.Commit {
		return decide(g, ev.NowMS, false, "rollback asked by the starter", ReplyOK)
	}
	if ev.NowMS >= g.DeadlineMS {
		return decide(g, ev.NowMS, false, "deadline passed", ReplyConflict)
	}
	if g.State == GroupPreparing {
		// Asked again (a retry, or a lost answer): the prepare phase runs;
		// the answer waits for its end (the server waits on the group).
		return Result{Reply: Reply{State: g.State, Reason: g.Reason}}
	}
	ready := 0
	for _, b := range g.Branches {
		switch b.State {
		case BranchPrepared:
		case BranchReady:
			ready++
		default:
			return decide(g, ev.NowMS, false, fmt.Sprintf("branch %s (service %s) is %s at commit", b.ID, b.Service, b.State), ReplyConflict)
		}
	}
	if ready == 0 || len(g.Branches) == 1 {
		// Every branch durable already, or a single branch that commits in
		// one phase: decide now.
		return decide(g, ev.NowMS, true, "commit asked by the starter", ReplyOK)
	}
	t := Transition{Kind: TransDecide, Group: g.ID, GroupTo: GroupPreparing, AtMS: ev.NowMS,
		Reason: fmt.Sprintf("commit asked by the starter: preparing %d xa branches", ready)}
	return Result{
		Transitions: []Transition{t},
		Sends:       prepareSends(g),
		Reply:       Reply{State: GroupPreparing, Reason: t.Reason},
	}
}

// prepareSends lists a prepare request to every READY branch.
func prepareSends(g *Group) []Send {
	var s []Send
	for _, b := range g.Branches {
		if b.State == BranchReady {
			s = append(s, Send{Instance: b.Instance, Group: g.ID, Branch: b.ID, Prepare: true})
		}
	}
	return s
}

// stepPrepared takes the prepare phase's answer for one branch. The last
// branch prepared decides commit in the same step.
func stepPrepared(g *Group, ev Event) Result {
	b, ok := g.Branch(ev.BranchID)
	if !ok {
		return Result{Reply: Reply{Code: ReplyNotFound, State: g.State, Reason: "unknown branch"}}
	}
	if !mayActFor(b, ev.Instance) {
		return Result{Reply: Reply{Code: ReplyForbidden, State: g.State, Reason: "branch belongs to another client"}}
	}
	switch {
	case g.State == GroupActive:
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "no prepare was asked"}}
	case g.State.Decided():
		// Late or repeated: the decision stands and is (or will be) pushed.
		if !ev.OK && g.State.Commit() {
			return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "group already decided to commit"}}
		}
		return Result{Reply: Reply{State: g.State, Reason: g.Reason}}
	}
	// PREPARING.
	switch {
	case b.State == BranchPrepared && ev.OK:
		return Result{Reply: Reply{State: g.State}} // duplicate
	case b.State != BranchReady:
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: fmt.Sprintf("branch %s is %s", b.ID, b.State)}}
	case !ev.OK:
		return failVote(g, b, ev)
	case ev.NowMS >= g.DeadlineMS:
		return decide(g, ev.NowMS, false, "deadline passed during the prepare phase", ReplyOK)
	}
	vote := Transition{Kind: TransVote, Group: g.ID, BranchID: b.ID, BranchTo: BranchPrepared, AtMS: ev.NowMS}
	after := g.Clone()
	if err := ApplyTransition(after, vote); err != nil {
		panic("BUG: checked prepared vote refused: " + err.Error())
	}
	for _, o := range after.Branches {
		if o.State != BranchPrepared {
			return Result{Transitions: []Transition{vote}, Reply: Reply{State: g.State}}
		}
	}
	r := decide(after, ev.NowMS, true, "commit asked by the starter; every branch prepared", ReplyOK)
	carryVote(&r, vote)
	return r
}

// decide builds the decision transition for an open group and the pushes
// that follow it; code is the reply code for the event's sender.
func decide(g *Group, nowMS int64, commit bool, reason string, code ReplyCode) Result {
	to := GroupRollingBack
	if commit {
		to = GroupCommitting
	}
	t := Transition{Kind: TransDecide, Group: g.ID, GroupTo: to, AtMS: nowMS, Reason: reason}
	after := g.Clone()
	if err := ApplyTransition(after, t); err != nil {
		panic("BUG: checked decision refused: " + err.Error())
	}
	return Result{
		Transitions: []Transition{t},
		Sends:       sendsFor(after, commit),
		Reply:       Reply{Code: code, State: after.State, Reason: reason},
	}
}

// sendsFor lists a push of the decision to every branch not done.
func sendsFor(g *Group, commit bool) []Send {
	var s []Send
	for _, b := range g.Branches {
		if !b.State.Done() {
			s = append(s, Send{Instance: b.Instance, Group: g.ID, Branch: b.ID, Commit: commit})
		}
	}
	return s
}

func stepAck(g *Group, ev Event) Result {
	b, ok := g.Branch(ev.BranchID)
	if !ok {
		return Result{Reply: Reply{Code: ReplyNotFound, State: g.State, Reason: "unknown branch"}}
	}
	if !mayActFor(b, ev.Instance) {
		return Result{Reply: Reply{Code: ReplyForbidden, State: g.State, Reason: "branch belongs to another client"}}
	}
	if !g.State.Decided() {
		return Result{Reply: Reply{Code: ReplyConflict, State: g.State, Reason: "no decision to acknowledge"}}
	}
	if b.State.Done() {
		return Result{Reply: Reply{State: g.State}} // duplicate
	}
	to := ev.Outcome
	reason := ev.Reason
	switch {
	case g.State.Commit() && to == BranchRolledBack:
		to, reason = BranchLost, "rolled back instead of committing: "+ev.Reason
	case !g.State.Commit() && to == BranchLost:
		to = BranchRolledBack // work that is gone is rolled back
	case !g.State.Commit() && to == BranchCommitted:
		// Never legal: a participant applies only the decision it was sent.
		to, reason = BranchLost, "reported committed against a rollback decision: "+ev.Reason
	}
	t := Transition{Kind: TransBranchDone, Group: g.ID, BranchID: b.ID, BranchTo: to, AtMS: ev.NowMS, Reason: reason}
	after := g.Clone()
	if err := ApplyTransition(after, t); err != nil {
		panic("BUG: checked outcome refused: " + err.Error())
	}
	return Result{Transitions: []Transition{t}, Reply: Reply{State: after.State}}
}

func stepResync(g *Group, ev Event) Result {
	b, ok := g.Branch(ev.BranchID)
	if !ok {
		// The client holds a branch the TM never recorded: its join was never
		// counted, so it cannot be part of a commit.
		return Result{
			Sends: []Send{{Instance: ev.Instance, Group: g.ID, Branch: ev.BranchID, Commit: false}},
			Reply: Reply{Code: ReplyNotFound, State: g.State},
		}
	}
	if b.Instance != ev.Instance {
		return Result{Reply: Reply{Code: ReplyForbidden, State: g.State, Reason: "branch belongs to another client"}}
	}
	if g.State == GroupPreparing && b.State == BranchReady {
		return Result{
			Sends: []Send{{Instance: ev.Instance, Group: g.ID, Branch: b.ID, Prepare: true}},
			Reply: Reply{State: g.State},
		}
	}
	if !g.State.Decided() {
		return Result{Reply: Reply{State: g.State}}
	}
	return Result{
		Sends: []Send{{Instance: ev.Instance, Group: g.ID, Branch: b.ID, Commit: g.State.Commit()}},
		Reply: Reply{State: g.State},
	}
}

func stepRetry(g *Group, ev Event) Result {
	if g.State == GroupPreparing {
		return retryPrepare(g, ev)
	}
	if !g.State.Decided() || g.State.Terminal() {
		return Result{Reply: Reply{State: g.State}}
	}
	commit := g.State.Commit()
	var r Result
	after := g.Clone()
	for _, b := range g.Branches {
		if b.State.Done() {
			continue
		}
		// A prepared xa branch outlives its process: the service recovers
		// it when an instance comes back, so it is never presumed lost. Any
		// other branch dies with its process or connection.
		durable := b.Mode == "xa" && b.State == BranchPrepared
		absent := slices.Contains(ev.Absent, b.Instance)
		if durable && absent {
			r.Sends = append(r.Sends, Send{Instance: b.Instance, Group: g.ID, Branch: b.ID, Commit: commit,
				Orphan: true, Service: b.Service, Datasource: b.Datasource})
			continue
		}
		if !absent {
			r.Sends = append(r.Sends, Send{Instance: b.Instance, Group: g.ID, Branch: b.ID, Commit: commit})
			continue
		}
		t := Transition{Kind: TransBranchDone, Group: g.ID, BranchID: b.ID, BranchTo: BranchRolledBack, AtMS: ev.NowMS,
			Reason: "owner " + b.Instance + " gone before applying the rollback"}
		if commit {
			t.BranchTo = BranchLost
			t.Reason = "owner " + b.Instance + " gone before acknowledging the commit: its held work is presumed lost"
		}
		if err := ApplyTransition(after, t); err != nil {
			panic("BUG: checked lost branch refused: " + err.Error())
		}
		r.Transitions = append(r.Transitions, t)
	}
	r.Reply = Reply{State: after.State}
	return r
}

// retryPrepare asks every READY branch of a PREPARING group again to
// prepare. A READY branch whose owner has been gone past the lost-after
// limit cannot prepare any more (its XA transaction was never durable and
// died with its connection): the group rolls back.
func retryPrepare(g *Group, ev Event) Result {
	for _, b := range g.Branches {
		if b.State == BranchReady && slices.Contains(ev.Absent, b.Instance) {
			ev.Reason = "owner " + b.Instance + " gone before preparing"
			return failVote(g, b, ev)
		}
	}
	return Result{Sends: prepareSends(g), Reply: Reply{State: g.State}}
}
