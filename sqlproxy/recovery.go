package sqlproxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/golcn/golcn/internal/xa"
)

// Bounds of one recovery round.
const (
	// recoveryRoundTimeout bounds a whole round.
	recoveryRoundTimeout = 2 * time.Minute
	// recoveryFinishWait bounds CommitPrepared/RollbackPrepared of one
	// recovered xid while XA RECOVER lists it but XA COMMIT says XAER_NOTA
	// (the xid is attached to a live session, perhaps of another process).
	recoveryFinishWait = time.Second
)

// recoveryWanted reports whether the datasource runs xa recovery: mode xa,
// or auto over go-sql-driver/mysql (before the probe: a restarted process
// must recover before its first group), unless disabled.
func (s *source) recoveryWanted() bool {
	if s.opt.RecoveryInterval < 0 {
		return false
	}
	switch s.opt.Mode {
	case ModeXA:
		return true
	case ModeAuto:
		return s.mysql
	}
	return false
}

// startRecovery starts the recovery goroutine once, unless recovery is not
// wanted or the datasource is closed. close stops it and waits for it.
func (s *source) startRecovery() {
	if s.recStarted.Load() || !s.recoveryWanted() {
		return
	}
	s.mu.Lock()
	if s.closed || !s.recStarted.CompareAndSwap(false, true) {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.recoveryLoop()
}

// recoveryLoop runs a round at once, then one every RecoveryInterval, until
// the datasource closes, auto decides lcn, or the coordinator turns out not
// to be a Resolver. A failed round is logged and retried at the next one.
func (s *source) recoveryLoop() {
	defer s.wg.Done()
	r := &recoverer{s: s}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		}
		if s.mode() == ModeLCN {
			return // auto decided lcn: no xa branches of ours to recover
		}
		if !r.round(s.stopCtx).keepGoing {
			return
		}
		t.Reset(s.opt.RecoveryInterval)
	}
}

// recoverer holds what one datasource's recovery remembers between rounds.
// It is used by one goroutine at a time.
type recoverer struct {
	s      *source
	rounds int                 // rounds run so far
	prev   map[xa.Xid]struct{} // xids listed (and not live) in the previous round
	failed bool                // the previous round failed (its error was logged at Warn)
	// unreported holds branches finished whose Resolved call failed
	// (committed or not), retried at each round; bounded by maxUnreported.
	unreported map[xa.Xid]bool
}

// maxUnreported bounds recoverer.unreported; past it the oldest reports are
// dropped (the TxManager then learns the outcome from its own retries).
const maxUnreported = 1024

// roundResult tells what a round did (for tests and logs).
type roundResult struct {
	listed     int      // golcn xids XA RECOVER listed
	committed  []xa.Xid // finished by commit (and reported)
	rolledBack []xa.Xid // finished by rollback (and reported)
	keepGoing  bool     // false: recovery is disabled (no Resolver)
	err        error    // what failed (the branches concerned are left for the next round)
}

// round lists the prepared golcn branches of the server, leaves alone those
// a live branch of this process holds, asks the Resolver about the others
// and finishes them as it says.
//
// Only the first round of a recoverer acts on every xid at once; later
// (periodic) rounds act only on xids already listed by the previous round,
// one interval earlier. Reason: on MariaDB, finishing a prepared branch
// while its session is still being torn down (a connection that just died
// or was killed, whose owner is about to finish the branch from another
// connection after waiting for that teardown) can report success and leave
// the work uncommitted and locked (package xa). A branch that was already
// orphaned one interval ago has no teardown left to race. The first round
// runs when a process starts: the sessions of a crashed predecessor are
// long gone by then.
func (r *recoverer) round(ctx context.Context) (res roundResult) {
	s := r.s
	ctx, cancel := context.WithTimeout(ctx, recoveryRoundTimeout)
	defer cancel()
	first := r.rounds == 0
	r.rounds++
	res.keepGoing = true
	defer func() { r.logRound(res) }()

	db, err := s.side()
	if err != nil {
		res.err = err
		return res
	}
	r.report(ctx, &res)
	xids, err := xa.Recover(ctx, db)
	if err != nil {
		res.err = err
		return res
	}
	res.listed = len(xids)
	seen := make(map[xa.Xid]struct{}, len(xids))
	var act []xa.Xid
	for _, x := range xids {
		if liveXids.has(x) {
			continue // a live branch of this process: its owner finishes it
		}
		seen[x] = struct{}{}
		if _, before := r.prev[x]; first || before {
			act = append(act, x)
		}
	}
	r.prev = seen
	if len(act) == 0 {
		return res
	}

	coord, err := s.coordinator()
	if err != nil {
		res.err = err
		return res
	}
	resolver, ok := coord.(Resolver)
	if !ok {
		s.log.Warn("sqlproxy: xa recovery disabled: the coordinator does not implement sqlproxy.Resolver; prepared branches left by a crash stay prepared (with their locks) until resolved by hand",
			"datasource", s.name, "coordinator", pkgPath(coord), "prepared", len(act))
		res.keepGoing = false
		return res
	}
	for _, x := range act {
		if ctx.Err() != nil {
			break
		}
		r.resolve(ctx, db, resolver, x, &res)
	}
	return res
}

// resolve asks the Resolver about x and applies its answer.
func (r *recoverer) resolve(ctx context.Context, db *sql.DB, resolver Resolver, x xa.Xid, res *roundResult) {
	s := r.s
	note := func(err error) {
		res.err = errors.Join(res.err, fmt.Errorf("group %s, branch %s: %w", x.Group, x.Branch, err))
	}
	rctx, cancel := context.WithTimeout(ctx, s.opt.VoteTimeout)
	how, err := resolver.Resolve(rctx, x.Group, x.Branch)
	cancel()
	if err != nil {
		note(err)
		return
	}
	var commit bool
	switch how {
	case ResolveWait, ResolveSkip:
		return
	case ResolveCommit:
		commit = true
		err = xa.CommitPrepared(ctx, db, x, recoveryFinishWait)
		if errors.Is(err, xa.ErrRolledBack) {
			err = nil // it wrote nothing: nothing to commit
		}
	case ResolveRollback:
		err = xa.RollbackPrepared(ctx, db, x, recoveryFinishWait)
	default:
		note(errors.New("sqlproxy: Resolver returned " + how.String()))
		return
	}
	if errors.Is(err, xa.ErrUnknownXid) {
		// Finished since it was listed (by its owner, or another
		// recoverer): only the decided outcome is ever applied. Report it
		// anyway; Resolved is idempotent.
		err = nil
	}
	if err != nil {
		note(err)
		return
	}
	s.log.Info("sqlproxy: xa recovery finished a prepared branch", "datasource", s.name, "group", x.Group, "branch", x.Branch, "committed", commit)
	if commit {
		res.committed = append(res.committed, x)
	} else {
		res.rolledBack = append(res.rolledBack, x)
	}
	rctx, cancel = context.WithTimeout(ctx, s.opt.VoteTimeout)
	err = resolver.Resolved(rctx, x.Group, x.Branch, commit)
	cancel()
	if err != nil {
		// XA RECOVER will not list it again: retry the report next round.
		note(err)
		if r.unreported == nil {
			r.unreported = make(map[xa.Xid]bool)
		}
		if len(r.unreported) < maxUnreported {
			r.unreported[x] = commit
		}
	}
}

// report retries the Resolved calls that failed in earlier rounds.
func (r *recoverer) report(ctx context.Context, res *roundResult) {
	if len(r.unreported) == 0 {
		return
	}
	coord, err := r.s.coordinator()
	if err != nil {
		res.err = errors.Join(res.err, err)
		return
	}
	resolver, ok := coord.(Resolver)
	if !ok {
		return
	}
	for x, commit := range r.unreported {
		rctx, cancel := context.WithTimeout(ctx, r.s.opt.VoteTimeout)
		err := resolver.Resolved(rctx, x.Group, x.Branch, commit)
		cancel()
		if err != nil {
			res.err = errors.Join(res.err, fmt.Errorf("group %s, branch %s: report: %w", x.Group, x.Branch, err))
			continue
		}
		delete(r.unreported, x)
	}
}

// logRound logs a failed round at Warn the first time, then at Debug until
// a round succeeds, so that a database that stays down does not flood the
// log.
func (r *recoverer) logRound(res roundResult) {
	if res.err == nil {
		r.failed = false
		return
	}
	level := slog.LevelWarn
	if r.failed {
		level = slog.LevelDebug
	}
	r.failed = true
	r.s.log.Log(context.Background(), level, "sqlproxy: xa recovery round failed; retrying next round",
		"datasource", r.s.name, "err", res.err)
}
