package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/golcn/golcn/internal/xa"
)

// Bounds of finishing a prepared branch from another connection.
const (
	// disconnectWait bounds the wait for the server to tear down the
	// branch's own session before finishing the branch from another one.
	disconnectWait = 3 * time.Second
	// sideFinishWait bounds one CommitPrepared/RollbackPrepared call while
	// the xid is still attached to a session.
	sideFinishWait = 2 * time.Second
	// maybePreparedWait bounds the rollback from another connection of a
	// branch whose XA PREPARE may or may not have happened (its connection
	// failed during it). Past it the branch is left to recovery.
	maybePreparedWait = 5 * time.Second
	// sideBackoffMax caps the pause between attempts from another connection.
	sideBackoffMax = 500 * time.Millisecond
)

// xaProtocol runs a branch as an XA transaction on its physical connection.
type xaProtocol struct{ src *source }

func (xaProtocol) mode() string { return ModeXA }

// begin records the session's server id (once per physical connection),
// applies the transaction options with SET TRANSACTION (which MariaDB
// applies to the XA transaction that follows and then forgets) and runs
// XA START.
func (p xaProtocol) begin(ctx context.Context, pc physConn, ref branchRef, opts driver.TxOptions) (branchTx, error) {
	x := xa.Xid{Group: ref.group, Branch: ref.branch}
	if err := x.Validate(); err != nil {
		return nil, fmt.Errorf("sqlproxy: an xa branch needs canonical group and branch ids: %w", err)
	}
	set, err := setTransaction(opts)
	if err != nil {
		return nil, err
	}
	if pc.meta.serverID == 0 {
		id, err := serverID(ctx, pc)
		if err != nil {
			return nil, err
		}
		pc.meta.serverID = id
	}
	if set != "" {
		if _, err := pc.exec(ctx, set, nil); err != nil {
			return nil, err
		}
	}
	if err := xa.Start(ctx, physExecer{pc}, x); err != nil {
		if set != "" {
			// SET TRANSACTION is still pending on the session and would
			// apply to its next transaction: the connection must go.
			err = discardConn{err}
		}
		return nil, err
	}
	liveXids.add(x)
	return &xaTx{src: p.src, pc: pc, x: x, serverID: pc.meta.serverID}, nil
}

// setTransaction returns the SET TRANSACTION statement for opts ("" for the
// defaults). MariaDB honours SET TRANSACTION ISOLATION LEVEL and READ ONLY
// run just before XA START for that XA transaction only (see the tests).
func setTransaction(opts driver.TxOptions) (string, error) {
	var parts []string
	switch sql.IsolationLevel(opts.Isolation) {
	case sql.LevelDefault:
	case sql.LevelReadUncommitted:
		parts = append(parts, "ISOLATION LEVEL READ UNCOMMITTED")
	case sql.LevelReadCommitted:
		parts = append(parts, "ISOLATION LEVEL READ COMMITTED")
	case sql.LevelRepeatableRead:
		parts = append(parts, "ISOLATION LEVEL REPEATABLE READ")
	case sql.LevelSerializable:
		parts = append(parts, "ISOLATION LEVEL SERIALIZABLE")
	default:
		return "", fmt.Errorf("sqlproxy: isolation level %v is not supported in an xa branch", sql.IsolationLevel(opts.Isolation))
	}
	if opts.ReadOnly {
		parts = append(parts, "READ ONLY")
	}
	if len(parts) == 0 {
		return "", nil
	}
	s := "SET TRANSACTION " + parts[0]
	for _, p := range parts[1:] {
		s += ", " + p
	}
	return s, nil
}

// discardConn marks an error after which the donor's physical connection
// must be closed rather than reused, although it is not broken.
type discardConn struct{ err error }

func (e discardConn) Error() string { return e.err.Error() }
func (e discardConn) Unwrap() error { return e.err }

// serverID runs SELECT CONNECTION_ID() on pc.
func serverID(ctx context.Context, pc physConn) (uint64, error) {
	const stmt = "SELECT CONNECTION_ID()"
	rows, si, err := pc.query(ctx, stmt, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlproxy: %s: %w", stmt, err)
	}
	defer func() {
		_ = rows.Close()
		if si != nil {
			_ = si.Close()
		}
	}()
	dest := make([]driver.Value, len(rows.Columns()))
	if len(dest) != 1 {
		return 0, fmt.Errorf("sqlproxy: %s: %d columns", stmt, len(dest))
	}
	if err := rows.Next(dest); err != nil {
		return 0, fmt.Errorf("sqlproxy: %s: %w", stmt, err)
	}
	var id uint64
	switch v := dest[0].(type) {
	case int64:
		id = uint64(v)
	case uint64:
		id = v
	case []byte:
		id, err = strconv.ParseUint(string(v), 10, 64)
	case string:
		id, err = strconv.ParseUint(v, 10, 64)
	default:
		err = fmt.Errorf("unexpected %T", v)
	}
	if err != nil || id == 0 {
		return 0, fmt.Errorf("sqlproxy: %s: bad id %v: %v", stmt, dest[0], err)
	}
	return id, nil
}

// physExecer runs XA statements on a physical connection, for package xa.
// They take no arguments: they go over the text protocol, never prepared.
type physExecer struct{ pc physConn }

func (e physExecer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if len(args) != 0 {
		return nil, errors.New(bug("XA statement with arguments: %s", query))
	}
	return e.pc.exec(ctx, query, nil)
}

// xaPhase is where an XA branch stands on the server, as far as its xaTx
// knows.
type xaPhase uint8

const (
	xaActive        xaPhase = iota // XA START ran: the branch takes work
	xaIdle                         // XA END ran; not prepared
	xaMaybePrepared                // the connection failed during XA PREPARE: prepared or rolled back
	xaPrepared                     // XA PREPARE succeeded: durable
	xaFinished                     // committed or rolled back (or given up to recovery)
)

func (p xaPhase) String() string {
	switch p {
	case xaActive:
		return "active"
	case xaIdle:
		return "idle"
	case xaMaybePrepared:
		return "maybe prepared"
	case xaPrepared:
		return "prepared"
	case xaFinished:
		return "finished"
	default:
		return fmt.Sprintf("xaPhase(%d)", uint8(p))
	}
}

// errNotCommitted wraps the failure of a one-phase commit that certainly
// did not commit (the server refused or rolled the branch back, or the
// connection failed before XA COMMIT ... ONE PHASE was sent).
var errNotCommitted = errors.New("not committed")

// xaTx is an XA branch. Its methods run with the branch lease (never
// concurrently); after the own connection failed it is closed (ownGone) and
// a prepared branch is finished from the datasource's side pool.
type xaTx struct {
	src      *source
	pc       physConn
	x        xa.Xid
	serverID uint64 // the own session's id, for WaitDisconnected

	phase     xaPhase
	ownGone   bool      // pc is closed
	waitSince time.Time // when finishing from the side pool first waited for the own session
	waited    bool      // the own session was seen gone (or waited for long enough)
}

func (t *xaTx) exec() physExecer { return physExecer{t.pc} }

func (t *xaTx) check(query string) error {
	if stmt, bad := xa.ForbiddenInXA(query); bad {
		return &forbiddenError{datasource: t.src.name, stmt: stmt}
	}
	return nil
}

func (t *xaTx) connClosed() bool { return t.ownGone }

// dropOwn closes the own connection, once. For a branch that is not
// prepared that rolls it back; a prepared one survives it.
func (t *xaTx) dropOwn() {
	if !t.ownGone {
		t.ownGone = true
		_ = t.pc.close()
	}
}

func (t *xaTx) finished() {
	t.phase = xaFinished
	liveXids.remove(t.x)
}

// prepare runs XA END and XA PREPARE.
func (t *xaTx) prepare(ctx context.Context) error {
	switch t.phase {
	case xaPrepared:
		return nil
	case xaActive:
	case xaIdle, xaMaybePrepared, xaFinished:
		return fmt.Errorf("sqlproxy: %v: prepare of an xa branch that is %s", t.x, t.phase)
	}
	if t.ownGone {
		return fmt.Errorf("%w: its connection was closed", ErrBranchBroken)
	}
	if err := xa.End(ctx, t.exec(), t.x); err != nil {
		if !xa.IsServerError(err) {
			t.dropOwn() // unusable: the server rolls the branch back
		}
		return err
	}
	t.phase = xaMaybePrepared
	if err := xa.Prepare(ctx, t.exec(), t.x); err != nil {
		if xa.IsServerError(err) {
			t.phase = xaIdle // refused (or rolled back): not prepared
		} else {
			t.dropOwn()
		}
		return err
	}
	t.phase = xaPrepared
	return nil
}

func (t *xaTx) commit(ctx context.Context) error {
	switch t.phase {
	case xaPrepared:
		return t.finishPrepared(ctx, true)
	case xaActive, xaIdle:
		return t.commitOnePhase(ctx)
	case xaMaybePrepared:
		// Not reachable through the branch (a failed prepare rolls back);
		// kept total: only XA RECOVER could tell, and it cannot tell a
		// commit from a rollback after the fact.
		t.dropOwn()
		t.finished()
		return fmt.Errorf("%w: commit of %v, whose XA PREPARE may not have happened: outcome unknown", ErrApplyFailed, t.x)
	case xaFinished:
		return nil
	}
	panic(bug("xa commit in phase %s", t.phase))
}

// commitOnePhase runs XA END (if needed) and XA COMMIT ... ONE PHASE.
func (t *xaTx) commitOnePhase(ctx context.Context) error {
	if t.ownGone {
		t.finished()
		return fmt.Errorf("%w: %v: its connection failed before the commit, so the server rolled it back", errNotCommitted, t.x)
	}
	if t.phase == xaActive {
		if err := xa.End(ctx, t.exec(), t.x); err != nil {
			t.dropOwn()
			t.finished()
			return fmt.Errorf("%w: %v: the server rolled it back: %w", errNotCommitted, t.x, err)
		}
		t.phase = xaIdle
	}
	err := xa.Commit(ctx, t.exec(), t.x, true)
	switch {
	case err == nil:
		t.finished()
		return nil
	case xa.IsRolledBack(err) || xa.IsNotA(err) || xa.IsRMFail(err):
		// Refused or rolled back by the server: not committed. (A branch
		// that was never prepared does not survive its session, so there
		// is no XAER_NOTA race to worry about here.)
		t.dropOwn()
		t.finished()
		return fmt.Errorf("%w: %v: %w", errNotCommitted, t.x, err)
	default:
		t.dropOwn()
		t.finished()
		return fmt.Errorf("%w: one-phase commit of %v: outcome unknown (XA COMMIT ... ONE PHASE failed and the branch was not prepared, so XA RECOVER cannot tell): %w", ErrApplyFailed, t.x, err)
	}
}

func (t *xaTx) rollback(ctx context.Context) error {
	switch t.phase {
	case xaActive, xaIdle:
		if !t.ownGone {
			var err error
			if t.phase == xaActive {
				if err = xa.End(ctx, t.exec(), t.x); err == nil {
					t.phase = xaIdle
				}
			}
			if err == nil {
				err = xa.Rollback(ctx, t.exec(), t.x)
			}
			if err == nil {
				t.finished()
				return nil
			}
		}
		// Whatever failed, closing the connection rolls back a branch that
		// is not prepared.
		t.dropOwn()
		t.finished()
		return nil
	case xaMaybePrepared:
		t.dropOwn()
		wctx, cancel := context.WithTimeout(ctx, maybePreparedWait)
		err := t.finishFromSide(wctx, false)
		cancel()
		t.finished() // no longer live: recovery may finish it
		if err != nil {
			t.src.log.Warn("sqlproxy: xa branch whose XA PREPARE may have happened could not be rolled back now; recovery will roll it back if it is prepared",
				"datasource", t.src.name, "xid", t.x.String(), "err", err)
		}
		return nil
	case xaPrepared:
		return t.finishPrepared(ctx, false)
	case xaFinished:
		return nil
	}
	panic(bug("xa rollback in phase %s", t.phase))
}

// finishPrepared commits or rolls back a prepared branch on its own
// connection, else from another one.
func (t *xaTx) finishPrepared(ctx context.Context, commit bool) error {
	if !t.ownGone {
		var err error
		if commit {
			err = xa.Commit(ctx, t.exec(), t.x, false)
		} else {
			err = xa.Rollback(ctx, t.exec(), t.x)
		}
		switch {
		case err == nil:
			t.finished()
			return nil
		case !commit && xa.IsRolledBack(err):
			t.finished()
			return nil
		}
		// The own session is unusable or answered something unexpected
		// (XAER_NOTA from the session that prepared it is never taken as
		// done, DESIGN invariant 8): close it, which leaves the prepared
		// branch on the server, and finish it from another session.
		t.dropOwn()
	}
	if err := t.finishFromSide(ctx, commit); err != nil {
		return err
	}
	t.finished()
	return nil
}

// finishFromSide finishes a branch known to be prepared (or, for
// xaMaybePrepared, perhaps prepared) from the datasource's side pool after
// its own session is gone, retrying with backoff until ctx ends; then the
// error wraps ErrInDoubt. Only the decided outcome is ever applied to a
// branch, so an xid XA RECOVER no longer lists (ErrUnknownXid) was finished
// with it by an earlier attempt or by recovery: success.
func (t *xaTx) finishFromSide(ctx context.Context, commit bool) error {
	verb := "rollback"
	if commit {
		verb = "commit"
	}
	db, err := t.src.side()
	if err != nil {
		return fmt.Errorf("%w: %s of prepared %v on datasource %q: %w", ErrInDoubt, verb, t.x, t.src.name, err)
	}
	backoff := 10 * time.Millisecond
	var last error
	for {
		if !t.waited {
			last = t.waitOwnGone(ctx, db)
		}
		if t.waited {
			if commit {
				last = xa.CommitPrepared(ctx, db, t.x, sideFinishWait)
			} else {
				last = xa.RollbackPrepared(ctx, db, t.x, sideFinishWait)
			}
			switch {
			case last == nil, errors.Is(last, xa.ErrUnknownXid):
				return nil
			case commit && errors.Is(last, xa.ErrRolledBack):
				// MariaDB answers XA_RBROLLBACK to a commit from another
				// session of a prepared branch that wrote nothing: there
				// was nothing to commit.
				return nil
			}
		}
		if err := sleepCtx(ctx, backoff); err != nil {
			return fmt.Errorf("%w: %s of prepared %v on datasource %q: its connection failed, and from another connection: %w", ErrInDoubt, verb, t.x, t.src.name, last)
		}
		backoff = min(2*backoff, sideBackoffMax)
	}
}

// waitOwnGone waits until the server has torn down the branch's own
// session: on MariaDB, finishing a prepared branch while its session is
// being torn down can report success and leave the work uncommitted
// (package xa). The wait is bounded: disconnectWait after the first
// attempt, across calls, it gives up and proceeds (t.waited), because
// after a database restart the id may belong to an unrelated new session
// (even one of the side pool), and a session of the old server has no
// teardown left to race with. It returns what kept it from knowing.
func (t *xaTx) waitOwnGone(ctx context.Context, db *sql.DB) error {
	if t.serverID == 0 {
		t.waited = true
		return nil
	}
	if t.waitSince.IsZero() {
		t.waitSince = time.Now()
	}
	limit := t.waitSince.Add(disconnectWait)
	wctx, cancel := context.WithDeadline(ctx, limit)
	defer cancel()
	err := xa.WaitDisconnected(wctx, db, t.serverID)
	if err == nil || !time.Now().Before(limit) {
		t.waited = true
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// liveXids is the set of xa branches live in this process (begun and not
// finished, including those in doubt). It is process-wide on purpose:
// recovery must leave alone every branch a live branch of this process
// holds, whichever datasource of the process it belongs to (two
// datasources may share one server, and XA RECOVER lists the server's
// branches, not a schema's).
var liveXids = xidSet{m: make(map[xa.Xid]int)}

type xidSet struct {
	mu sync.Mutex
	m  map[xa.Xid]int
}

func (s *xidSet) add(x xa.Xid) {
	s.mu.Lock()
	s.m[x]++
	s.mu.Unlock()
}

func (s *xidSet) remove(x xa.Xid) {
	s.mu.Lock()
	if s.m[x]--; s.m[x] <= 0 {
		delete(s.m, x)
	}
	s.mu.Unlock()
}

func (s *xidSet) has(x xa.Xid) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[x] > 0
}
