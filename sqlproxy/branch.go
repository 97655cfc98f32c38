package sqlproxy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// branchState is the life of a branch: the work of one transaction group on
// this datasource in this process, on one physical connection.
//
//	joining ──Join+begin ok──▶ working ──vote ok──▶ held ─────────decision──────────▶ applying ──▶ done
//	   │                          │                  │ │                                 ▲ │
//	   └─Join/begin failed─▶ done └─local failure────┘ └─Prepare──▶ preparing ──ok──▶ prepared
//	                                  (▶ applying)                  │  failed ▶ applying  ▲  │
//	                                                                └────decision───────┘  └decision▶ applying
//	applying ──finish of a prepared branch in doubt──▶ prepared (the same decision retries)
//
// A later local transaction of the same group runs in a working or held
// branch without changing its state (held → held on its vote). Preparing
// and prepared take no local work (ErrBranchPrepared); only xa branches
// get there (Held.Prepare of an lcn branch changes nothing).
type branchState uint8

const (
	// branchJoining: Coordinator.Join is in flight. Nobody may use the branch
	// until ready is closed.
	branchJoining branchState = iota
	// branchWorking: joined; the local transaction is open on pc; no vote
	// has succeeded yet.
	branchWorking
	// branchHeld: voted prepared at least once and handed to the coordinator;
	// may still take more local work of its group.
	branchHeld
	// branchPreparing: Held.Prepare holds the lease and runs XA END and XA
	// PREPARE; no local transaction is open and none may start.
	branchPreparing
	// branchPrepared: XA PREPARE succeeded; the branch is durable and waits
	// for the decision. No local work. Also the state of a prepared branch
	// whose decision could not be applied yet (doubt set): delivering the
	// same decision again retries.
	branchPrepared
	// branchApplying: an outcome (want) is decided — by the group's decision,
	// or by a local failure — and waits until it can be applied: the lease
	// is free and, for a commit, no local transaction of the group is open.
	// No new local transaction may start.
	branchApplying
	// branchDone: the outcome is applied (or the branch never began), pc is
	// released, and the branch is forgotten. Final.
	branchDone
)

func (s branchState) String() string {
	switch s {
	case branchJoining:
		return "joining"
	case branchWorking:
		return "working"
	case branchHeld:
		return "held"
	case branchPreparing:
		return "preparing"
	case branchPrepared:
		return "prepared"
	case branchApplying:
		return "applying"
	case branchDone:
		return "done"
	default:
		return fmt.Sprintf("branchState(%d)", uint8(s))
	}
}

// want is the outcome a branch in branchApplying is to apply.
type want uint8

const (
	wantNone want = iota
	wantCommit
	wantRollback
)

func (w want) String() string {
	switch w {
	case wantNone:
		return "none"
	case wantCommit:
		return "commit"
	case wantRollback:
		return "rollback"
	default:
		return fmt.Sprintf("want(%d)", uint8(w))
	}
}

// outcome is how a done branch ended.
type outcome uint8

const (
	outcomeNone       outcome = iota
	outcomeCommitted          // the local transaction committed
	outcomeRolledBack         // the local transaction rolled back
	outcomeBroken             // the physical conn failed; the database dropped the work
	outcomeFailed             // commit or rollback returned an error; result unknown
	outcomeAbandoned          // never began: Join or the local begin failed
)

func (o outcome) String() string {
	switch o {
	case outcomeNone:
		return "none"
	case outcomeCommitted:
		return "committed"
	case outcomeRolledBack:
		return "rolled back"
	case outcomeBroken:
		return "broken"
	case outcomeFailed:
		return "failed"
	case outcomeAbandoned:
		return "abandoned"
	default:
		return fmt.Sprintf("outcome(%d)", uint8(o))
	}
}

// reusable reports whether the physical conn of a branch that ended this way
// is clean and may serve again.
func (o outcome) reusable() bool { return o == outcomeCommitted || o == outcomeRolledBack }

func bug(format string, args ...any) string {
	return "sqlproxy: BUG: " + fmt.Sprintf(format, args...)
}

// branch is the work of one group on this datasource in this process
// (invariant 7). Its physical conn, pc, never goes back to database/sql's
// pool (invariant 4): when the branch is done it is put on the source's free
// list or closed.
//
// The lease serialises every use of pc: local work of any request of the
// group takes it for one statement (or until its Rows are closed), and
// applying an outcome takes it too. An outcome decided while the lease is
// taken (or, for a commit, while a local transaction is open) is applied by
// whoever makes it applicable — the releaser of the lease or the last local
// transaction to end — so nothing is left pending when its requester stops
// waiting. No goroutine is started.
type branch struct {
	src     *source
	group   string
	ready   chan struct{} // closed when the branch leaves branchJoining
	done    chan struct{} // closed when the branch is done and pc released
	held    *held         // the Held handed to the coordinator
	decided atomic.Uint32 // the want of the first Held.Commit or Held.Rollback call (0: none yet)

	// Set by toWorkingLocked before ready is closed; read-only afterwards.
	id    string
	mode  string // ModeLCN or ModeXA
	coord Coordinator
	pc    physConn
	nvc   driver.NamedValueChecker // pc's checker (assumed not to touch connection state)
	tx    branchTx
	opts  driver.TxOptions

	mu       sync.Mutex // guards the fields below
	state    branchState
	want     want                     // in branchApplying: the outcome to apply
	out      outcome                  // in branchDone
	cause    error                    // why the branch is ending other than by the decision
	prepared bool                     // Prepare succeeded (xa): no more local work, ever
	doubt    error                    // in branchPrepared after a failed finish: its ErrInDoubt error
	leased   bool                     // someone has exclusive use of pc
	active   int                      // open local transactions using the branch
	changed  chan struct{}            // closed and replaced when state, leased or active change
	stmts    map[driver.Stmt]struct{} // statements open on pc; closed when the branch ends
}

func newBranch(s *source, group string) *branch {
	b := &branch{
		src:     s,
		group:   group,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	b.held = &held{b: b}
	return b
}

func (b *branch) String() string {
	return fmt.Sprintf("branch %s of group %s on datasource %q", b.id, b.group, b.src.name)
}

// --- transitions (b.mu held) ---

func (b *branch) toWorkingLocked(id, mode string, coord Coordinator, pc physConn, nvc driver.NamedValueChecker, tx branchTx, opts driver.TxOptions, stmts map[driver.Stmt]struct{}) {
	if b.state != branchJoining {
		panic(bug("branch of group %s: working from %s", b.group, b.state))
	}
	b.id, b.mode, b.coord, b.pc, b.nvc, b.tx, b.opts, b.stmts = id, mode, coord, pc, nvc, tx, opts, stmts
	b.state = branchWorking
	b.active = 1 // the local transaction that joined
	close(b.ready)
	b.broadcastLocked()
}

func (b *branch) toHeldLocked() {
	switch b.state {
	case branchWorking:
		b.state = branchHeld
	case branchHeld:
		// A later local transaction of the group voted again: no change.
	case branchJoining, branchPreparing, branchPrepared, branchApplying, branchDone:
		panic(bug("%v: held from %s", b, b.state))
	}
}

// toPreparingLocked starts the prepare phase. The caller holds the lease and
// has checked that no local transaction is open.
func (b *branch) toPreparingLocked() {
	if b.state != branchHeld || b.active != 0 || !b.leased {
		panic(bug("%v: preparing from %s (active %d, leased %t)", b, b.state, b.active, b.leased))
	}
	b.state = branchPreparing
	b.broadcastLocked()
}

// toPreparedLocked records a successful XA PREPARE.
func (b *branch) toPreparedLocked() {
	if b.state != branchPreparing {
		panic(bug("%v: prepared from %s", b, b.state))
	}
	b.state = branchPrepared
	b.prepared = true
	b.broadcastLocked()
}

// toInDoubtLocked returns a prepared branch whose outcome could not be
// applied (err wraps ErrInDoubt) to branchPrepared; the decision stays
// recorded (decided) and is retried when delivered again. The caller holds
// the lease and gives it up.
func (b *branch) toInDoubtLocked(err error) {
	if b.state != branchApplying || !b.prepared {
		panic(bug("%v: in doubt from %s (prepared %t)", b, b.state, b.prepared))
	}
	b.state = branchPrepared
	b.want = wantNone
	b.doubt = err
	b.broadcastLocked()
}

// toApplyingLocked records the outcome to apply. A decision comes to a held,
// preparing or prepared branch; a local failure (or a failed prepare) may
// come to a working, held or preparing one.
func (b *branch) toApplyingLocked(w want, cause error) {
	switch b.state {
	case branchHeld, branchPreparing, branchPrepared:
	case branchWorking:
		if w != wantRollback {
			panic(bug("%v: commit of a branch that never voted", b))
		}
	case branchJoining, branchApplying, branchDone:
		panic(bug("%v: applying %s from %s", b, w, b.state))
	}
	b.state = branchApplying
	b.want = w
	b.cause = cause
	b.doubt = nil
	b.broadcastLocked()
}

// overrideCommitLocked turns a pending commit into a rollback: a local
// transaction of the group failed after the commit decision arrived, and its
// work shares the branch's local transaction.
func (b *branch) overrideCommitLocked(cause error) {
	if b.state != branchApplying || b.want != wantCommit {
		panic(bug("%v: override commit in %s/%s", b, b.state, b.want))
	}
	b.want = wantRollback
	b.cause = cause
}

func (b *branch) toDoneLocked(out outcome, cause error) {
	switch b.state {
	case branchJoining:
		if out != outcomeAbandoned {
			panic(bug("branch of group %s: %s while joining", b.group, out))
		}
		close(b.ready)
	case branchWorking, branchHeld, branchApplying:
		if out == outcomeAbandoned || out == outcomeNone {
			panic(bug("%v: %s from %s", b, out, b.state))
		}
	case branchPreparing, branchPrepared:
		panic(bug("%v: %s from %s (a prepared branch ends by applying)", b, out, b.state))
	case branchDone:
		panic(bug("%v: done twice (%s, then %s)", b, b.out, out))
	}
	b.state = branchDone
	b.out = out
	if cause != nil {
		b.cause = cause
	}
	b.broadcastLocked()
}

func (b *branch) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// --- the lease ---

// acquire waits, respecting ctx, for exclusive use of pc.
func (b *branch) acquire(ctx context.Context) error {
	for {
		b.mu.Lock()
		if !b.leased {
			b.leased = true
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives up the lease. If that makes a pending outcome applicable,
// the caller applies it first (claimLocked keeps the lease for it).
func (b *branch) release() {
	b.mu.Lock()
	b.leased = false
	claim := b.claimLocked()
	if !claim {
		b.broadcastLocked()
	}
	b.mu.Unlock()
	if claim {
		b.applyLeased()
	}
}

// claimLocked takes the lease for applying the pending outcome if that can
// happen now. The caller must then call applyLeased.
func (b *branch) claimLocked() bool {
	if b.state != branchApplying || b.leased {
		return false
	}
	if b.want == wantCommit && b.active > 0 {
		return false // the decision waits for the group's open local work
	}
	b.leased = true
	return true
}

// lease takes the lease for local work and checks the branch still takes it.
func (b *branch) lease(ctx context.Context) error {
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("sqlproxy: group %s: waiting for its branch on datasource %q: %w", b.group, b.src.name, err)
	}
	b.mu.Lock()
	err := b.usableLocked()
	b.mu.Unlock()
	if err != nil {
		b.release()
		return err
	}
	return nil
}

func (b *branch) usableLocked() error {
	switch b.state {
	case branchWorking, branchHeld:
		return nil
	case branchPreparing, branchPrepared:
		return b.preparedErrLocked()
	case branchApplying:
		if b.want == wantCommit && !b.prepared {
			return nil // open local work finishes, then commits with the group
		}
		return b.endedErrLocked()
	case branchDone:
		return b.endedErrLocked()
	case branchJoining:
	}
	panic(bug("branch of group %s used while %s", b.group, b.state))
}

// unlease ends a use of pc that returned err. If err says the physical conn
// is bad, the branch's local transaction is lost: the branch ends now and
// the error returned is ErrBranchBroken. Otherwise it releases the lease and
// returns err.
func (b *branch) unlease(err error) error {
	if err != nil && errors.Is(err, driver.ErrBadConn) {
		err = notBadConn(err)
		b.breakLeased(err)
		return err
	}
	b.release()
	return err
}

// use runs f with the lease (local work). A panic in the driver breaks the
// branch (its connection's state is unknown) and is re-raised.
func (b *branch) use(ctx context.Context, f func(pc physConn) error) error {
	if err := b.lease(ctx); err != nil {
		return err
	}
	returned := false
	defer func() {
		if !returned {
			b.breakLeased(errors.New("sqlproxy: driver panicked"))
		}
	}()
	err := f(b.pc)
	returned = true
	return b.unlease(err)
}

// breakLeased ends the branch after its physical conn failed: its work is
// lost, so unless an outcome was already decided it also votes failed (best
// effort), so the group cannot commit without it. The caller holds the lease.
func (b *branch) breakLeased(cause error) {
	b.mu.Lock()
	vote := b.state == branchWorking || b.state == branchHeld
	b.mu.Unlock()
	ctx, cancel := b.applyCtx()
	defer cancel()
	_ = b.tx.rollback(ctx) // best effort: the connection is bad, the database drops the work
	b.finish(outcomeBroken, cause)
	if vote {
		b.voteFailed(context.Background(), cause)
	}
}

// voteFailed votes failed, best effort: the TxManager never commits a group
// with a branch that did not vote prepared, so its error can be ignored.
// ctx's values are kept, its cancellation is not: this runs while giving up.
func (b *branch) voteFailed(ctx context.Context, cause error) {
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.src.opt.VoteTimeout)
	defer cancel()
	_ = b.coord.Vote(vctx, b.group, b.id, false, cause.Error())
}

func (b *branch) applyCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.src.opt.ApplyTimeout)
}

// applyLeased applies the pending outcome and ends the branch, or, for a
// prepared branch that could not be finished now (ErrInDoubt), returns it to
// branchPrepared. The caller holds the lease (from claimLocked); it is
// released.
func (b *branch) applyLeased() {
	b.mu.Lock()
	w := b.want
	b.mu.Unlock()
	ctx, cancel := b.applyCtx()
	defer cancel()
	var err error
	out := outcomeRolledBack
	if w == wantCommit {
		out = outcomeCommitted
		err = b.tx.commit(ctx)
	} else {
		err = b.tx.rollback(ctx)
	}
	switch {
	case err == nil:
		b.finish(out, nil)
	case errors.Is(err, ErrInDoubt):
		b.mu.Lock()
		b.toInDoubtLocked(fmt.Errorf("%s %v: %w", w, b, err))
		b.leased = false
		b.broadcastLocked()
		b.mu.Unlock()
	case errors.Is(err, errNotCommitted):
		b.finish(outcomeFailed, fmt.Errorf("%w: %v: the commit decision could not be applied: %w", ErrBranchLost, b, err))
	case errors.Is(err, ErrApplyFailed):
		b.finish(outcomeFailed, fmt.Errorf("%s %v: %w", w, b, err))
	default:
		b.finish(outcomeFailed, fmt.Errorf("%w: %s %v: %w", ErrApplyFailed, w, b, notBadConn(err)))
	}
}

// finish ends the branch: records the outcome, forgets the branch, closes
// the statements left on pc and releases pc (free list if clean, else
// closed; nothing if the branchTx closed it already). The caller holds the
// lease.
func (b *branch) finish(out outcome, cause error) {
	b.mu.Lock()
	b.toDoneLocked(out, cause)
	stmts := b.stmts
	b.stmts = nil
	b.mu.Unlock()

	b.src.forget(b)
	switch {
	case b.tx != nil && b.tx.connClosed():
		// pc and its statements are gone already.
	case out.reusable():
		for si := range stmts {
			_ = si.Close()
		}
		b.src.putFree(b.pc)
	default:
		for si := range stmts {
			_ = si.Close()
		}
		_ = b.pc.close()
	}

	b.mu.Lock()
	b.leased = false
	b.broadcastLocked()
	b.mu.Unlock()
	close(b.done)
}

// abandon ends a branch whose Join or local begin failed.
func (b *branch) abandon(cause error) {
	b.mu.Lock()
	b.toDoneLocked(outcomeAbandoned, cause)
	b.mu.Unlock()
	b.src.forget(b)
	close(b.done)
}

// addStmt records a statement prepared on pc (lease held).
func (b *branch) addStmt(si driver.Stmt) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stmts == nil {
		b.stmts = make(map[driver.Stmt]struct{})
	}
	b.stmts[si] = struct{}{}
}

// closeStmt closes a statement prepared on pc now if the lease is free, or
// leaves it to be closed when the branch ends. It never blocks.
func (b *branch) closeStmt(si driver.Stmt) {
	b.mu.Lock()
	if b.state == branchDone || b.leased {
		b.mu.Unlock()
		return // closed by finish
	}
	if _, ok := b.stmts[si]; !ok {
		b.mu.Unlock()
		return
	}
	delete(b.stmts, si)
	b.leased = true
	b.mu.Unlock()
	_ = si.Close()
	b.release()
}

// preparedErrLocked is the error for local work of a group whose branch is
// preparing or prepared.
func (b *branch) preparedErrLocked() error {
	return fmt.Errorf("%w: %v is prepared for the group's commit; local work of the group on this datasource must end before the group commits", ErrBranchPrepared, b)
}

// endedErrLocked describes why the branch takes no more work.
func (b *branch) endedErrLocked() error {
	what := fmt.Sprintf("%s is being rolled back", b)
	switch b.state {
	case branchApplying:
		if b.want == wantCommit {
			what = fmt.Sprintf("%s is being committed by the group's decision", b)
		}
	case branchDone:
		what = fmt.Sprintf("%s ended (%s)", b, b.out)
	case branchPrepared:
		what = fmt.Sprintf("%s is prepared and its decision was delivered", b)
	default:
		panic(bug("%v: ended error in %s", b, b.state))
	}
	if b.cause != nil {
		return fmt.Errorf("%w: %s: %w", ErrBranchEnded, what, b.cause)
	}
	return fmt.Errorf("%w: %s", ErrBranchEnded, what)
}

func (b *branch) compatibleLocked(opts driver.TxOptions) error {
	if opts.Isolation != 0 && opts.Isolation != b.opts.Isolation {
		return fmt.Errorf("%w: %v runs at isolation level %d, a local transaction asked for %d", ErrIncompatibleTx, b, b.opts.Isolation, opts.Isolation)
	}
	if b.opts.ReadOnly && !opts.ReadOnly {
		return fmt.Errorf("%w: %v is read-only, a read-write local transaction cannot join it", ErrIncompatibleTx, b)
	}
	return nil
}

// --- local transactions ---

// leaveLocked ends one local transaction's use of the branch. It returns
// whether the caller must apply the pending outcome (it then holds the lease).
func (b *branch) leaveLocked() bool {
	if b.active <= 0 {
		panic(bug("%v: local transaction ended twice", b))
	}
	b.active--
	claim := b.claimLocked()
	b.broadcastLocked()
	return claim
}

// commitLocal ends a local transaction that asked to commit: it votes
// prepared and, after the branch's first successful vote, hands the branch
// to the coordinator (Hold) with its local transaction still open. ctx
// bounds the vote (with VoteTimeout).
func (b *branch) commitLocal(ctx context.Context) error {
	b.mu.Lock()
	switch b.state {
	case branchWorking, branchHeld:
		b.mu.Unlock()
	case branchApplying:
		w := b.want
		err := b.endedErrLocked()
		claim := b.leaveLocked()
		b.mu.Unlock()
		if claim {
			b.applyLeased()
		}
		if w == wantRollback {
			return err
		}
		// The commit decision arrived while this local transaction ran: its
		// work commits with the group's.
		return b.awaitCommitted(ctx)
	case branchDone:
		err := b.endedErrLocked()
		b.leaveLocked()
		b.mu.Unlock()
		return err
	default:
		// Not preparing or prepared: Prepare refuses a branch with open
		// local transactions, and enter refuses new ones after it.
		b.mu.Unlock()
		panic(bug("%v: local commit in %s", b, b.state))
	}

	// The vote needs nothing from the branch: the work stays open (xa: the
	// branch stays ACTIVE, so that later local transactions of the group
	// can still run in it) until the prepare phase or the decision.
	vctx, cancel := context.WithTimeout(ctx, b.src.opt.VoteTimeout)
	err := b.coord.Vote(vctx, b.group, b.id, true, "")
	cancel()
	if err != nil {
		err = fmt.Errorf("%w: group %s will not commit this work (%v): %w", ErrVoteFailed, b.group, b, err)
		b.rollbackLocal(ctx, err)
		return err
	}

	b.mu.Lock()
	var result error
	hold := false
	switch b.state {
	case branchWorking:
		b.toHeldLocked()
		// Hold exactly once, on the first successful vote: no decision can
		// reach the branch before it. A later Hold could re-register a
		// branch whose decision was applied in the meantime.
		hold = true
	case branchHeld:
		b.toHeldLocked() // a later local transaction's vote: no change
	case branchApplying:
		if b.want == wantRollback { // a rollback arrived during the vote
			result = b.endedErrLocked()
		} // else the commit decision arrived during the vote and covers this work
	case branchDone:
		result = b.endedErrLocked()
	case branchJoining, branchPreparing, branchPrepared:
		panic(bug("%v: voted while %s", b, b.state))
	}
	claim := b.leaveLocked()
	b.mu.Unlock()
	if claim {
		b.applyLeased()
	}
	if hold {
		// After leaving: a coordinator that applies a decision it already
		// has, inside Hold, finds the branch quiet.
		b.coord.Hold(b.group, b.id, b.held)
	}
	return result
}

func (b *branch) awaitCommitted(ctx context.Context) error {
	select {
	case <-b.done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %v: the commit decision arrived during this local transaction: %w", ErrApplyPending, b, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.out == outcomeCommitted {
		return nil
	}
	return b.endedErrLocked()
}

// rollbackLocal ends a local transaction that failed or was rolled back. The
// whole branch rolls back (the group cannot commit any more, invariant 2) and
// a failed vote is sent, best effort, unless the branch had already ended. It
// does not wait for the lease: if another request of the group is using the
// connection, the rollback is applied when it lets go.
func (b *branch) rollbackLocal(ctx context.Context, cause error) {
	b.mu.Lock()
	vote := false
	switch b.state {
	case branchWorking, branchHeld:
		b.toApplyingLocked(wantRollback, cause)
		vote = true
	case branchApplying:
		if b.want == wantCommit {
			b.overrideCommitLocked(cause)
		}
	case branchDone:
	case branchJoining, branchPreparing, branchPrepared:
		b.mu.Unlock()
		panic(bug("%v: local rollback while %s", b, b.state))
	}
	claim := b.leaveLocked()
	b.mu.Unlock()
	if claim {
		b.applyLeased()
	}
	if vote {
		b.voteFailed(ctx, cause)
	}
}

// --- the decision ---

// held is the Held handed to the coordinator for a branch.
type held struct{ b *branch }

var _ Held = (*held)(nil)

// Prepare is the prepare phase (see Held.Prepare): nil for an lcn branch;
// XA END and XA PREPARE for an xa branch. Safe for concurrent use.
func (h *held) Prepare(ctx context.Context) error { return h.b.prepare(ctx) }

// Commit applies the group's commit decision: it commits the held branch
// and releases its physical connection. It waits, respecting ctx, for local
// work of the same group still using the branch; if ctx ends first it
// returns ErrApplyPending and the commit is applied when that work
// finishes. It returns ErrBranchLost if the branch's work no longer exists,
// and ErrInDoubt if a prepared xa branch could not be finished now (it
// stays prepared). Calling it again after ErrApplyPending waits again and
// reports the outcome; after ErrInDoubt it tries again. Calling the other of
// Commit and Rollback after either returns ErrAlreadyDecided and does
// nothing. Safe for concurrent use.
func (h *held) Commit(ctx context.Context) error { return h.b.decide(ctx, wantCommit) }

// Rollback applies the group's rollback decision. As Commit, except that it
// only waits for the statement in progress, not for open local work, and a
// branch already rolled back locally is a success.
func (h *held) Rollback(ctx context.Context) error { return h.b.decide(ctx, wantRollback) }

// String names the branch, for logs.
func (h *held) String() string { return "sqlproxy " + h.b.String() }

// prepare runs the prepare phase of an xa branch: with the lease, and no
// local transaction of the group open, XA END and XA PREPARE. Whatever goes
// wrong, the branch rolls back and the error wraps ErrVoteFailed.
func (b *branch) prepare(ctx context.Context) error {
	if b.mode != ModeXA {
		if w := want(b.decided.Load()); w != wantNone {
			return fmt.Errorf("%w: prepare of %v after its %s", ErrAlreadyDecided, b, w)
		}
		return nil // lcn: the vote is the held transaction
	}
	if err := b.acquire(ctx); err != nil {
		err = fmt.Errorf("%w: prepare of %v: waiting for the group's statement in progress: %w", ErrVoteFailed, b, err)
		b.mu.Lock()
		claim := false
		switch b.state {
		case branchWorking, branchHeld:
			// Roll back: applied by whoever holds the lease when it lets
			// go, or now if it was let go meanwhile.
			b.toApplyingLocked(wantRollback, err)
			claim = b.claimLocked()
		case branchPreparing, branchPrepared, branchApplying, branchDone, branchJoining:
		}
		b.mu.Unlock()
		if claim {
			b.applyLeased()
		}
		return err
	}

	b.mu.Lock()
	switch b.state {
	case branchHeld, branchWorking:
		if b.active > 0 || b.state == branchWorking {
			err := fmt.Errorf("%w: prepare of %v: %d local transaction(s) of group %s still open on this datasource (did the starter commit before a call returned?)",
				ErrVoteFailed, b, b.active, b.group)
			b.toApplyingLocked(wantRollback, err)
			b.mu.Unlock()
			b.applyLeased() // we hold the lease
			return err
		}
		b.toPreparingLocked()
	case branchPrepared:
		var err error
		if b.doubt != nil {
			err = fmt.Errorf("%w: prepare of %v after its %s", ErrAlreadyDecided, b, want(b.decided.Load()))
		}
		b.mu.Unlock()
		b.release()
		return err
	case branchApplying, branchDone:
		err := b.endedErrLocked()
		if w := want(b.decided.Load()); w != wantNone {
			err = fmt.Errorf("%w: prepare of %v after its %s: %w", ErrAlreadyDecided, b, w, err)
		} else {
			err = fmt.Errorf("%w: prepare: %w", ErrVoteFailed, err)
		}
		b.mu.Unlock()
		b.release()
		return err
	case branchJoining, branchPreparing:
		b.mu.Unlock()
		panic(bug("%v: prepare with the lease in %s", b, b.state))
	}
	b.mu.Unlock()

	// Like the outcome, the statements run on a context of their own: some
	// drivers kill the connection when a statement's ctx ends.
	pctx, cancel := b.applyCtx()
	perr := b.tx.prepare(pctx)
	cancel()

	var result error
	b.mu.Lock()
	if perr != nil {
		result = fmt.Errorf("%w: prepare of %v: %w", ErrVoteFailed, b, notBadConn(perr))
	}
	switch b.state {
	case branchPreparing:
		if perr == nil {
			b.toPreparedLocked()
		} else {
			b.toApplyingLocked(wantRollback, result)
		}
	case branchApplying:
		// A decision arrived during XA PREPARE; release applies it.
		switch {
		case perr != nil && b.want == wantCommit:
			b.overrideCommitLocked(result)
		case perr == nil && b.want == wantRollback:
			result = fmt.Errorf("%w: %v was prepared, and then rolled back by the group's decision", ErrAlreadyDecided, b)
		}
		if perr == nil {
			b.prepared = true
		}
	default:
		b.mu.Unlock()
		panic(bug("%v: after prepare in %s", b, b.state))
	}
	b.mu.Unlock()
	b.release() // applies the rollback (or a decision) now
	return result
}

func (b *branch) decide(ctx context.Context, w want) error {
	if !b.decided.CompareAndSwap(0, uint32(w)) {
		if b.decided.Load() != uint32(w) {
			return fmt.Errorf("%w: %v (%s ignored)", ErrAlreadyDecided, b, w)
		}
		// The same decision again: its first delivery returned
		// ErrApplyPending (wait for, and report, its outcome) or ErrInDoubt
		// (try again).
		b.mu.Lock()
		claim := false
		if b.state == branchPrepared && b.doubt != nil {
			b.toApplyingLocked(w, nil)
			claim = b.claimLocked()
		}
		b.mu.Unlock()
		if claim {
			b.applyLeased()
		}
		return b.awaitDecided(ctx, w)
	}
	b.mu.Lock()
	switch b.state {
	case branchHeld, branchPreparing, branchPrepared:
		// Preparing: the lease is Prepare's, which applies w when it lets go.
		b.toApplyingLocked(w, nil)
		claim := b.claimLocked()
		b.mu.Unlock()
		if claim {
			b.applyLeased()
		}
	case branchApplying:
		// Only a local failure (or a failed prepare) leads here (a decision
		// comes once): the branch is being rolled back.
		if b.want != wantRollback {
			b.mu.Unlock()
			panic(bug("%v: decision %s while applying %s", b, w, b.want))
		}
		if w == wantCommit {
			err := b.lostErrLocked()
			b.mu.Unlock()
			return err
		}
		b.mu.Unlock()
	case branchDone:
		b.mu.Unlock()
	case branchJoining, branchWorking:
		b.mu.Unlock()
		panic(bug("%v: decision %s for a branch that never voted (%s)", b, w, b.state))
	}
	return b.awaitDecided(ctx, w)
}

// awaitDecided waits, respecting ctx, until decision w is applied (the
// branch is done) or found in doubt, and reports how it ended.
func (b *branch) awaitDecided(ctx context.Context, w want) error {
	b.mu.Lock()
	for b.state != branchDone {
		if b.state == branchPrepared && b.doubt != nil {
			err := b.doubt
			b.mu.Unlock()
			return err
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %s of %v waits for local work of the group: %w", ErrApplyPending, w, b, ctx.Err())
		}
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	switch b.out {
	case outcomeCommitted:
		if w == wantCommit {
			return nil
		}
	case outcomeRolledBack, outcomeBroken:
		if w == wantRollback {
			return nil
		}
		return b.lostErrLocked()
	case outcomeFailed:
		return b.cause
	case outcomeNone, outcomeAbandoned:
	}
	panic(bug("%v: %s decision found outcome %s", b, w, b.out))
}

func (b *branch) lostErrLocked() error {
	if b.cause != nil {
		return fmt.Errorf("%w: %v was rolled back before the commit decision: %w", ErrBranchLost, b, b.cause)
	}
	return fmt.Errorf("%w: %v was rolled back before the commit decision", ErrBranchLost, b)
}
