package txmanager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// Retention is how long a terminal group is kept (for queries and the
	// admin view) after it finished. Zero or negative means
	// DefaultRetention.
	Retention time.Duration
}

// DefaultRetention is the retention of terminal groups when
// StoreOptions.Retention is not set.
const DefaultRetention = 24 * time.Hour

func (o StoreOptions) retention() time.Duration {
	if o.Retention <= 0 {
		return DefaultRetention
	}
	return o.Retention
}

// errStoreClosed is returned by a store's methods after Close.
var errStoreClosed = errors.New("txmanager: store is closed")

// errGroupNotFound is every store's answer for an unknown group id.
func errGroupNotFound(id string) error {
	return fmt.Errorf("%w: group %s", ErrNotFound, id)
}

// checkCreate validates a group given to Store.Create.
func checkCreate(g *Group) error {
	if g.ID == "" {
		return errors.New("txmanager: create group: empty id")
	}
	if g.State != GroupActive {
		return fmt.Errorf("txmanager: create group %s: state is %s, want %s", g.ID, g.State, GroupActive)
	}
	for i := range g.Branches {
		if g.branch(g.Branches[i].ID) != i {
			return fmt.Errorf("txmanager: create group %s: branch %s listed twice", g.ID, g.Branches[i].ID)
		}
	}
	return nil
}

// MemoryStore is a Store that keeps everything in the process's memory. It
// is for tests only: nothing survives the process, and nothing is shared
// with another TxManager. Expired and Undone scan every group.
//
// It applies transitions with ApplyTransition on a copy of the record and
// swaps the copy in only on success, so it is the reference the other
// stores are tested against. Records are copied in and out: callers never
// share memory with the store. Safe for concurrent use.
type MemoryStore struct {
	retention time.Duration

	mu sync.Mutex
	// mu guards the following fields.
	groups   map[string]*Group          // by id; never handed out
	events   map[string][]TimelineEvent // by group id
	markers  map[string]*Marker         // by marker id; never handed out
	byGroup  map[string][]string        // group id -> its marker ids
	released map[string]int64           // group id -> when its last open marker was resolved
	closed   bool
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty in-memory store. For tests only.
func NewMemoryStore(opt StoreOptions) *MemoryStore {
	return &MemoryStore{retention: opt.retention(), groups: make(map[string]*Group),
		events: make(map[string][]TimelineEvent), markers: make(map[string]*Marker),
		byGroup: make(map[string][]string), released: make(map[string]int64)}
}

// Create records a copy of g.
func (s *MemoryStore) Create(ctx context.Context, g *Group) error {
	if err := checkCreate(g); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStoreClosed
	}
	if _, ok := s.groups[g.ID]; ok {
		return fmt.Errorf("%w: %s", ErrExists, g.ID)
	}
	s.groups[g.ID] = g.Clone()
	s.events[g.ID] = []TimelineEvent{createdEvent(g)}
	return nil
}

// Get returns a copy of the group's record.
func (s *MemoryStore) Get(ctx context.Context, id string) (*Group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	g, ok := s.groups[id]
	if !ok {
		return nil, errGroupNotFound(id)
	}
	return g.Clone(), nil
}

// Apply applies t with ApplyTransition to a copy of the record and keeps the
// copy only if it succeeded.
func (s *MemoryStore) Apply(ctx context.Context, t Transition) (*Group, error) {
	t.MustBeWellFormed()
	s.mu.Lock()
	defer s.mu.Unlock() // also when ApplyTransition panics
	if s.closed {
		return nil, errStoreClosed
	}
	cur, ok := s.groups[t.Group]
	if !ok {
		return nil, errGroupNotFound(t.Group)
	}
	after := cur.Clone()
	if err := ApplyTransition(after, t); err != nil {
		return nil, err
	}
	s.groups[t.Group] = after
	s.events[t.Group] = appendEvent(s.events[t.Group], transitionEvents(t)...)
	for _, m := range lostMarkers(t, after) {
		if _, dup := s.markers[m.ID]; !dup {
			s.markers[m.ID] = &m
			s.byGroup[m.Group] = append(s.byGroup[m.Group], m.ID)
		}
	}
	if !cur.State.Terminal() && after.State.Terminal() {
		if m := s.markers[MarkerID(t.Group, phase2Suffix)]; m != nil && m.Open() {
			r := stuckResolution(t.AtMS)
			m.Resolution = &r
		}
		if s.openMarkersLocked(t.Group) == 0 {
			s.released[t.Group] = t.AtMS
		}
	}
	return after.Clone(), nil
}

// openMarkersLocked counts the open markers of group; s.mu must be held.
func (s *MemoryStore) openMarkersLocked(group string) int {
	n := 0
	for _, id := range s.byGroup[group] {
		if s.markers[id].Open() {
			n++
		}
	}
	return n
}

// Expired lists open (ACTIVE or PREPARING) groups whose deadline is at or
// before now, oldest deadline first (ties by id).
func (s *MemoryStore) Expired(ctx context.Context, now time.Time, limit int) ([]string, error) {
	nowMS := now.UnixMilli()
	return s.list(limit, func(g *Group) (int64, bool) {
		return g.DeadlineMS, g.State.Open() && g.DeadlineMS <= nowMS
	})
}

// Undone lists groups owed pushes (PREPARING, COMMITTING, ROLLING_BACK),
// oldest first (by decision time; a PREPARING group by creation time), ties
// by id.
func (s *MemoryStore) Undone(ctx context.Context, limit int) ([]string, error) {
	return s.list(limit, func(g *Group) (int64, bool) {
		return undoneKeyMS(g), g.State.Undone()
	})
}

// list returns the ids of up to limit groups that match, by ascending key.
func (s *MemoryStore) list(limit int, match func(*Group) (key int64, ok bool)) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	type entry struct {
		key int64
		id  string
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	var found []entry
	for id, g := range s.groups {
		if k, ok := match(g); ok {
			found = append(found, entry{k, id})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(found, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.id, b.id))
	})
	ids := make([]string, 0, min(limit, len(found)))
	for _, e := range found[:min(limit, len(found))] {
		ids = append(ids, e.id)
	}
	return ids, nil
}

// Purge removes terminal groups that finished at least the retention period
// before now, and returns how many it removed.
func (s *MemoryStore) Purge(ctx context.Context, now time.Time) (int, error) {
	cutoff := now.UnixMilli() - s.retention.Milliseconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errStoreClosed
	}
	n := 0
	for id, g := range s.groups {
		if g.State.Terminal() && max(g.FinishedMS, s.released[id]) <= cutoff && s.openMarkersLocked(id) == 0 {
			delete(s.groups, id)
			delete(s.events, id)
			delete(s.released, id)
			for _, mid := range s.byGroup[id] {
				delete(s.markers, mid)
			}
			delete(s.byGroup, id)
			n++
		}
	}
	return n, nil
}

// Ping reports errStoreClosed after Close.
func (s *MemoryStore) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStoreClosed
	}
	return nil
}

// Close drops every record. Safe to call multiple times.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.groups, s.events, s.markers, s.byGroup, s.released = nil, nil, nil, nil, nil
	return nil
}
