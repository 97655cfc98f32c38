// Package failpoint marks exact points of the product's protocol where a
// test build can make the process fail: the fault suite (chaos/, scenario
// S4) kills the TxManager between persisting a decision and broadcasting
// it, half-way through a broadcast, and so on.
//
// In a normal build Hit is an empty function that the compiler inlines
// away: failpoints cost nothing and cannot be switched on. Built with the
// tag failpoint, Hit reads its configuration once from the environment:
//
//	TXM_FAILPOINT=name[:spec][,name[:spec]...]
//
// where spec is empty (fire at every hit), N (fire at the N-th hit only) or
// pF (fire with probability F at each hit, 0 < F ≤ 1). Firing writes one
// line "failpoint: <name> fired <detail>" to standard error, so that a test
// can tell which point and which group the process died at, and then
// SIGKILLs the process (nothing deferred runs, nothing is flushed: a crash).
// Points that do something other than crash (duplicate a push, delay a
// call) use Fire, which only draws, and Note, which writes the line; a
// delay point waits Delay (TXM_FAILPOINT_DELAY). A malformed TXM_FAILPOINT
// or TXM_FAILPOINT_DELAY makes the first Hit, Fire or Delay panic, naming
// the variable, rather than run a test without its faults.
package failpoint

// Env is the environment variable that arms failpoints in a failpoint build.
const Env = "TXM_FAILPOINT"

// DelayEnv sets how long delay points wait (a Go duration; default 50ms).
const DelayEnv = "TXM_FAILPOINT_DELAY"

// The TxManager's crash points (RELIABILITY.md S4).
const (
	// BeforeCommitDecide (P1): every branch voted (xa: prepared), the
	// commit decision is about to be persisted.
	BeforeCommitDecide = "tm.before.commit.decide"
	// AfterCommitDecide (P2): the commit decision is persisted, no
	// decision pushed yet.
	AfterCommitDecide = "tm.after.commit.decide"
	// MidCommitNotify (P3): the first of several commit pushes was handed to its
	// session, the others not.
	MidCommitNotify = "tm.mid.commit.notify"
	// AfterCommitNotify (P4): every commit push was handed to its session, the
	// starter not yet answered.
	AfterCommitNotify = "tm.after.commit.notify"
	// MidRollbackNotify (P5): the first of several rollback pushes was handed to
	// its session, the others not.
	MidRollbackNotify = "tm.mid.rollback.notify"
)

// S2's points: not crashes, but messages a network or a restart could
// produce.
const (
	// NotifyDuplicate: the TxManager pushes a decision three times.
	NotifyDuplicate = "tm.notify.duplicate"
	// NotifyReplay: the TxManager pushes again a decision it pushed at
	// least a second earlier (its group has usually ended).
	NotifyReplay = "tm.notify.replay"
	// NotifyEmpty: the TxManager pushes a rollback for a branch that never
	// joined (an empty rollback); EmptyAcked notes its acknowledgement.
	NotifyEmpty = "tm.notify.empty"
	EmptyAcked  = "tm.notify.empty.acked"
	// BranchDelay: the participant's middleware holds an incoming call of
	// a group for Delay before handling it (a hanging branch, arriving
	// after its group timed out); BranchDelayDone notes how it ended.
	BranchDelay     = "txclient.branch.delay"
	BranchDelayDone = "txclient.branch.delay.done"
)
