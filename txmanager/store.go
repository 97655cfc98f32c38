package txmanager

import (
	"context"
	"time"
)

// Store keeps the TxManager's state: every fact about groups lives here, so a
// TxManager can restart (or several can share one store) without losing a
// decision.
//
// Implementations: the embedded file store (OpenBoltStore, the default), the
// Redis store (NewRedisStore, for production and several TxManagers) and the
// in-memory store (NewMemoryStore, tests only). All are safe for concurrent
// use. Every change to a group is one atomic compare-and-set: Apply either
// applies the transition exactly as ApplyTransition defines it, or changes
// nothing and returns an error wrapping ErrConflict or ErrNotFound.
type Store interface {
	// Create records a new ACTIVE group and indexes its deadline. It returns
	// an error wrapping ErrExists if the id is taken.
	Create(ctx context.Context, g *Group) error
	// Get returns the group's record, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (*Group, error)
	// Apply performs t atomically and returns the group after it. When t
	// decides the group, the group leaves the deadline index and enters the
	// phase-2 index (a PREPARING group is in both: its deadline applies and
	// its prepare requests are retried); when t makes it terminal it leaves the phase-2 index and
	// is kept for the retention period given to the store, then removed.
	Apply(ctx context.Context, t Transition) (*Group, error)
	// Expired lists up to limit open (ACTIVE or PREPARING) groups whose
	// deadline is at or before now, oldest deadline first.
	Expired(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Undone lists up to limit groups owed pushes: PREPARING (prepare
	// requests) and decided but not terminal (phase 2 owes acknowledgements).
	Undone(ctx context.Context, limit int) ([]string, error)
	// Purge removes terminal groups whose retention has passed and returns
	// how many it removed (stores that expire records by themselves return 0).
	Purge(ctx context.Context, now time.Time) (int, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// undoneKeyMS orders a group in the undone index: by the time of its
// decision, or by its creation while it is PREPARING (not decided yet).
func undoneKeyMS(g *Group) int64 {
	if g.State.Decided() {
		return g.DecidedMS
	}
	return g.CreatedMS
}
