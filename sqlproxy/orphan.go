package sqlproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/golcn/golcn/internal/xa"
)

// sources maps the datasource names of this process to their sources, so
// that a branch left by another process of the same service can be
// finished by name (FinishOrphan). Names are unique per process (Options).
var sources = struct {
	sync.Mutex
	m map[string]*source
}{m: make(map[string]*source)}

func registerSource(s *source) {
	sources.Lock()
	defer sources.Unlock()
	sources.m[s.name] = s
}

func unregisterSource(s *source) {
	sources.Lock()
	defer sources.Unlock()
	if sources.m[s.name] == s {
		delete(sources.m, s.name)
	}
}

// ErrNoDatasource is returned by FinishOrphan when this process has no
// datasource of that name.
var ErrNoDatasource = errors.New("sqlproxy: no such datasource in this process")

// FinishOrphan applies a group's decision to an xa branch that the
// TxManager recorded as prepared but whose owning process is gone (it may
// have applied the decision and died before acknowledging it). It runs on
// this process's datasource of the given name, from its side pool:
//
//   - the branch is still prepared (XA RECOVER lists it): it is committed or
//     rolled back, and FinishOrphan returns nil;
//   - it is not listed: a branch the TxManager knows as prepared was
//     prepared, and only the decided outcome is ever applied to it, so it
//     was finished with the decision already: nil;
//   - it cannot be told now (the old session still holds it, the server is
//     down): an error; the TxManager asks again later.
//
// Call it only for a branch the TxManager recorded PREPARED in a decided
// group whose owner has been gone past its lost-after limit (so no session
// of the dead process is still being torn down).
func FinishOrphan(ctx context.Context, datasource, group, branch string, commit bool) error {
	sources.Lock()
	s := sources.m[datasource]
	sources.Unlock()
	if s == nil {
		return fmt.Errorf("%w: %q", ErrNoDatasource, datasource)
	}
	db, err := s.side()
	if err != nil {
		return err
	}
	x := xa.Xid{Group: group, Branch: branch}
	if commit {
		err = xa.CommitPrepared(ctx, db, x, sideFinishWait)
	} else {
		err = xa.RollbackPrepared(ctx, db, x, sideFinishWait)
	}
	switch {
	case err == nil, errors.Is(err, xa.ErrUnknownXid):
		return nil
	case commit && errors.Is(err, xa.ErrRolledBack):
		return nil // prepared with no writes: nothing to commit
	}
	return fmt.Errorf("sqlproxy: finish orphaned branch %s of group %s on datasource %q: %w", branch, group, datasource, err)
}
