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

	// Operator data (oplog.go). Create appends the group's "created" event
	// and every Apply that succeeds appends its transition's event
	// (transitionEvent), atomically with the record, keeping the newest
	// MaxEvents. An Apply that records a branch LOST creates its
	// branch_lost marker (lostMarkers) atomically too, and one that makes
	// the group terminal resolves the group's open phase2_stuck marker
	// (stuckResolution). A group with an open marker is never purged nor
	// expired; once its last open marker is resolved it is kept for the
	// retention period from then (or from its end, whichever is later).
	// Events, markers and the created-time index go with the group.

	// Events returns the group's timeline, oldest first, or an error
	// wrapping ErrNotFound if the group is unknown.
	Events(ctx context.Context, id string) ([]TimelineEvent, error)
	// List returns a page of groups matching q, newest first. A bad
	// q.Cursor is an error wrapping ErrBadCursor.
	List(ctx context.Context, q ListQuery) (ListPage, error)
	// Count counts the newest groups, at most max of them, by state.
	Count(ctx context.Context, max int) (Counts, error)
	// AddMarker records m (a phase2_stuck marker) for its group unless a
	// marker with its id exists; it reports whether it created one. The
	// group must exist (ErrNotFound) and not be terminal (ErrConflict).
	AddMarker(ctx context.Context, m Marker) (created bool, err error)
	// Marker returns one marker, or an error wrapping ErrNotFound.
	Marker(ctx context.Context, id string) (Marker, error)
	// Markers lists up to limit markers with the given status, oldest
	// first (by creation time, then id).
	Markers(ctx context.Context, status MarkerStatus, limit int) ([]Marker, error)
	// GroupMarkers lists the markers of one group, oldest first.
	GroupMarkers(ctx context.Context, group string) ([]Marker, error)
	// Resolve records r on the open marker id and returns the marker. An
	// unknown id is ErrNotFound; a resolved marker is ErrResolved (which
	// wraps ErrConflict) and is not changed.
	Resolve(ctx context.Context, id string, r Resolution) (Marker, error)
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
