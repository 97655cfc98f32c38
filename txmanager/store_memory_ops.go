package txmanager

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// The in-memory store's operator data (see Store).

// Events returns a copy of the group's timeline.
func (s *MemoryStore) Events(ctx context.Context, id string) ([]TimelineEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	if _, ok := s.groups[id]; !ok {
		return nil, errGroupNotFound(id)
	}
	return slices.Clone(s.events[id]), nil
}

// List scans every group.
func (s *MemoryStore) List(ctx context.Context, q ListQuery) (ListPage, error) {
	pos, resume, err := decodeCursor(q.Cursor)
	if err != nil {
		return ListPage{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ListPage{}, errStoreClosed
	}
	var all []Listed
	for id, g := range s.groups {
		if resume && !pos.before(g.CreatedMS, id) {
			continue
		}
		if !q.inTime(g.CreatedMS) {
			continue
		}
		all = append(all, Listed{Group: g.Clone(), OpenMarkers: s.openMarkersLocked(id)})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b Listed) int {
		return cmp.Or(cmp.Compare(b.Group.CreatedMS, a.Group.CreatedMS), cmp.Compare(b.Group.ID, a.Group.ID))
	})
	return pageOf(all, q), nil
}

// pageOf takes the first page of q from candidates in newest-first order.
func pageOf(candidates []Listed, q ListQuery) ListPage {
	var p ListPage
	var scan pageScan
	for _, l := range candidates {
		if !scan.next(&p, q, l.Group.CreatedMS, l.Group.ID) {
			break
		}
		scan.offer(&p, q, l)
	}
	return p
}

// Count counts every group (max is ignored but for Complete).
func (s *MemoryStore) Count(ctx context.Context, limit int) (Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Counts{}, errStoreClosed
	}
	c := Counts{ByState: map[GroupState]int{}, Complete: true}
	if len(s.groups) <= limit {
		for _, g := range s.groups {
			c.ByState[g.State]++
		}
		return c, nil
	}
	gs := make([]*Group, 0, len(s.groups))
	for _, g := range s.groups {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *Group) int {
		return cmp.Or(cmp.Compare(b.CreatedMS, a.CreatedMS), cmp.Compare(b.ID, a.ID))
	})
	for _, g := range gs[:max(limit, 0)] {
		c.ByState[g.State]++
	}
	c.Complete = false
	return c, nil
}

// AddMarker records m if its group exists, is not terminal and has no
// marker of that id.
func (s *MemoryStore) AddMarker(ctx context.Context, m Marker) (bool, error) {
	if err := checkMarker(m); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errStoreClosed
	}
	g, ok := s.groups[m.Group]
	if !ok {
		return false, errGroupNotFound(m.Group)
	}
	if _, dup := s.markers[m.ID]; dup {
		return false, nil
	}
	if g.State.Terminal() {
		return false, conflict(g, "no marker for a finished group")
	}
	m.Resolution = nil
	s.markers[m.ID] = &m
	s.byGroup[m.Group] = append(s.byGroup[m.Group], m.ID)
	return true, nil
}

// checkMarker validates a marker given to AddMarker.
func checkMarker(m Marker) error {
	if g, ok := markerGroup(m.ID); !ok || g != m.Group || m.Kind == "" {
		return fmt.Errorf("txmanager: add marker %q: id must be MarkerID(group, what) of its group %q, with a kind", m.ID, m.Group)
	}
	return nil
}

// Marker returns a copy of one marker.
func (s *MemoryStore) Marker(ctx context.Context, id string) (Marker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Marker{}, errStoreClosed
	}
	m, ok := s.markers[id]
	if !ok {
		return Marker{}, errMarkerNotFound(id)
	}
	return m.copy(), nil
}

// copy returns m with its own Resolution.
func (m *Marker) copy() Marker {
	c := *m
	if m.Resolution != nil {
		r := *m.Resolution
		c.Resolution = &r
	}
	return c
}

// Markers scans every marker.
func (s *MemoryStore) Markers(ctx context.Context, status MarkerStatus, limit int) ([]Marker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	var out []Marker
	for _, m := range s.markers {
		if status.match(m) {
			out = append(out, m.copy())
		}
	}
	sortMarkers(out)
	return out[:min(len(out), max(limit, 0))], nil
}

// sortMarkers orders markers oldest first, ties by id.
func sortMarkers(ms []Marker) {
	slices.SortFunc(ms, func(a, b Marker) int {
		return cmp.Or(cmp.Compare(a.CreatedMS, b.CreatedMS), cmp.Compare(a.ID, b.ID))
	})
}

// GroupMarkers returns copies of the group's markers.
func (s *MemoryStore) GroupMarkers(ctx context.Context, group string) ([]Marker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	var out []Marker
	for _, id := range s.byGroup[group] {
		out = append(out, s.markers[id].copy())
	}
	sortMarkers(out)
	return out, nil
}

// Resolve records r on an open marker.
func (s *MemoryStore) Resolve(ctx context.Context, id string, r Resolution) (Marker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Marker{}, errStoreClosed
	}
	m, ok := s.markers[id]
	if !ok {
		return Marker{}, errMarkerNotFound(id)
	}
	if !m.Open() {
		return Marker{}, fmt.Errorf("%w: %s", ErrResolved, id)
	}
	m.Resolution = &r
	if g := s.groups[m.Group]; g != nil && g.State.Terminal() && s.openMarkersLocked(m.Group) == 0 {
		s.released[m.Group] = r.AtMS
	}
	return m.copy(), nil
}
