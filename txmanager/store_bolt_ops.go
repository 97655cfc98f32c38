package txmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// The bolt store's operator data (see Store): a timeline per group in
// bucket events, markers in bucket markers (keyed by marker id, which
// starts with the group id, so a group's markers are one key range), and
// the created index in bucket created.

// boltBackfillCreated indexes every group of a file written before the
// created index existed.
func boltBackfillCreated(tx *bolt.Tx) error {
	created := tx.Bucket(boltCreated)
	return tx.Bucket(boltGroups).ForEach(func(k, v []byte) error {
		var g Group
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("decode group %s: %w", k, err)
		}
		return created.Put(boltKey(g.CreatedMS, g.ID), nil)
	})
}

func boltGetEvents(tx *bolt.Tx, id string) ([]TimelineEvent, error) {
	raw := tx.Bucket(boltEvents).Get([]byte(id))
	if raw == nil {
		return nil, nil
	}
	var events []TimelineEvent
	if err := json.Unmarshal(raw, &events); err != nil {
		return nil, fmt.Errorf("decode timeline of %s: %w", id, err)
	}
	return events, nil
}

func boltPutEvents(tx *bolt.Tx, id string, events []TimelineEvent) error {
	raw, err := json.Marshal(events)
	if err != nil {
		return err
	}
	return tx.Bucket(boltEvents).Put([]byte(id), raw)
}

func boltGetMarker(tx *bolt.Tx, id string) (*Marker, error) {
	raw := tx.Bucket(boltMarkers).Get([]byte(id))
	if raw == nil {
		return nil, nil
	}
	m := new(Marker)
	if err := json.Unmarshal(raw, m); err != nil {
		return nil, fmt.Errorf("decode marker %s: %w", id, err)
	}
	return m, nil
}

func boltPutMarker(tx *bolt.Tx, m *Marker) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return tx.Bucket(boltMarkers).Put([]byte(m.ID), raw)
}

// boltGroupMarkers returns the markers of group, in id order.
func boltGroupMarkers(tx *bolt.Tx, group string) ([]Marker, error) {
	var out []Marker
	prefix := []byte(group + ".")
	c := tx.Bucket(boltMarkers).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if g, ok := markerGroup(string(k)); !ok || g != group {
			continue // a marker of group "<group>.x"
		}
		var m Marker
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("decode marker %s: %w", k, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func boltOpenMarkers(tx *bolt.Tx, group string) (int, error) {
	ms, err := boltGroupMarkers(tx, group)
	n := 0
	for i := range ms {
		if ms[i].Open() {
			n++
		}
	}
	return n, err
}

// applyOps records the operator data of transition t (before -> after) in
// the transaction that applies it.
func (s *BoltStore) applyOps(tx *bolt.Tx, t Transition, before, after *Group) error {
	events, err := boltGetEvents(tx, after.ID)
	if err != nil {
		return err
	}
	if err := boltPutEvents(tx, after.ID, appendEvent(events, transitionEvents(t)...)); err != nil {
		return err
	}
	for _, m := range lostMarkers(t, after) {
		if old, err := boltGetMarker(tx, m.ID); err != nil || old != nil {
			return err
		}
		if err := boltPutMarker(tx, &m); err != nil {
			return err
		}
	}
	if before.State.Terminal() || !after.State.Terminal() {
		return nil
	}
	stuck, err := boltGetMarker(tx, MarkerID(after.ID, phase2Suffix))
	if err != nil {
		return err
	}
	if stuck != nil && stuck.Open() {
		r := stuckResolution(t.AtMS)
		stuck.Resolution = &r
		if err := boltPutMarker(tx, stuck); err != nil {
			return err
		}
	}
	open, err := boltOpenMarkers(tx, after.ID)
	if err != nil || open == 0 {
		return err
	}
	// Held by an open marker: not purged (reindex indexed its expiry).
	return tx.Bucket(boltExpiry).Delete(boltKey(after.FinishedMS+s.retention.Milliseconds(), after.ID))
}

// boltRemoveGroup deletes a terminal group with its timeline, markers and
// created entry, unless it has an open marker. It reports whether it
// removed the group.
func boltRemoveGroup(tx *bolt.Tx, id string) (bool, error) {
	g, err := boltLoad(tx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ms, err := boltGroupMarkers(tx, id)
	if err != nil {
		return false, err
	}
	for i := range ms {
		if ms[i].Open() {
			return false, nil
		}
	}
	for i := range ms {
		if err := tx.Bucket(boltMarkers).Delete([]byte(ms[i].ID)); err != nil {
			return false, err
		}
	}
	for _, del := range []struct {
		bucket, key []byte
	}{{boltGroups, []byte(id)}, {boltEvents, []byte(id)}, {boltCreated, boltKey(g.CreatedMS, id)}} {
		if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Events returns the group's timeline.
func (s *BoltStore) Events(ctx context.Context, id string) ([]TimelineEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var events []TimelineEvent
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(boltGroups).Get([]byte(id)) == nil {
			return errGroupNotFound(id)
		}
		var err error
		events, err = boltGetEvents(tx, id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, s.wrap("events "+id, err)
	}
	return events, nil
}

// List walks the created index from the newest entry (or the cursor).
func (s *BoltStore) List(ctx context.Context, q ListQuery) (ListPage, error) {
	pos, resume, err := decodeCursor(q.Cursor)
	if err != nil {
		return ListPage{}, err
	}
	if err := ctx.Err(); err != nil {
		return ListPage{}, err
	}
	var page ListPage
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltCreated).Cursor()
		var k []byte
		switch {
		case resume:
			k, _ = c.Seek(boltKey(pos.ms, pos.id))
			if k == nil {
				k, _ = c.Last()
			}
		case q.CreatedBeforeMS != 0:
			k, _ = c.Seek(boltKey(q.CreatedBeforeMS, ""))
			if k == nil {
				k, _ = c.Last()
			}
		default:
			k, _ = c.Last()
		}
		var scan pageScan
		for ; k != nil; k, _ = c.Prev() {
			ms, id := boltKeyTime(k), string(k[8:])
			if (resume && !pos.before(ms, id)) || (q.CreatedBeforeMS != 0 && ms >= q.CreatedBeforeMS) {
				continue
			}
			if ms < q.CreatedAfterMS || !scan.next(&page, q, ms, id) {
				break
			}
			g, err := boltLoad(tx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			open, err := boltOpenMarkers(tx, id)
			if err != nil {
				return err
			}
			scan.offer(&page, q, Listed{Group: g, OpenMarkers: open})
		}
		return nil
	})
	if err != nil {
		return ListPage{}, s.wrap("list", err)
	}
	return page, nil
}

// Count walks the created index from the newest entry.
func (s *BoltStore) Count(ctx context.Context, limit int) (Counts, error) {
	if err := ctx.Err(); err != nil {
		return Counts{}, err
	}
	c := Counts{ByState: map[GroupState]int{}, Complete: true}
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(boltCreated).Cursor()
		n := 0
		for k, _ := cur.Last(); k != nil; k, _ = cur.Prev() {
			if n == limit {
				c.Complete = false
				break
			}
			g, err := boltLoad(tx, string(k[8:]))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			c.ByState[g.State]++
			n++
		}
		return nil
	})
	if err != nil {
		return Counts{}, s.wrap("count", err)
	}
	return c, nil
}

// AddMarker records m in the group's transaction.
func (s *BoltStore) AddMarker(ctx context.Context, m Marker) (bool, error) {
	if err := checkMarker(m); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.Resolution = nil
	var created bool
	var refused error
	err := s.db.Update(func(tx *bolt.Tx) error {
		g, err := boltLoad(tx, m.Group)
		if err != nil {
			refused = err
			return nil
		}
		old, err := boltGetMarker(tx, m.ID)
		if err != nil || old != nil {
			return err
		}
		if g.State.Terminal() {
			refused = conflict(g, "no marker for a finished group")
			return nil
		}
		created = true
		return boltPutMarker(tx, &m)
	})
	if err != nil {
		return false, s.wrap("add marker "+m.ID, err)
	}
	return created, refused
}

// Marker returns one marker.
func (s *BoltStore) Marker(ctx context.Context, id string) (Marker, error) {
	if err := ctx.Err(); err != nil {
		return Marker{}, err
	}
	var m *Marker
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = boltGetMarker(tx, id)
		return err
	})
	if err != nil {
		return Marker{}, s.wrap("marker "+id, err)
	}
	if m == nil {
		return Marker{}, errMarkerNotFound(id)
	}
	return *m, nil
}

// Markers scans every marker.
func (s *BoltStore) Markers(ctx context.Context, status MarkerStatus, limit int) ([]Marker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Marker
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(boltMarkers).ForEach(func(k, v []byte) error {
			var m Marker
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode marker %s: %w", k, err)
			}
			if status.match(&m) {
				out = append(out, m)
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap("markers", err)
	}
	sortMarkers(out)
	return out[:min(len(out), max(limit, 0))], nil
}

// GroupMarkers returns the group's markers.
func (s *BoltStore) GroupMarkers(ctx context.Context, group string) ([]Marker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Marker
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = boltGroupMarkers(tx, group)
		return err
	})
	if err != nil {
		return nil, s.wrap("markers of "+group, err)
	}
	sortMarkers(out)
	return out, nil
}

// Resolve records r on an open marker; the group's last open marker
// resolved puts the group back under its retention.
func (s *BoltStore) Resolve(ctx context.Context, id string, r Resolution) (Marker, error) {
	if err := ctx.Err(); err != nil {
		return Marker{}, err
	}
	var out Marker
	var refused error
	err := s.db.Update(func(tx *bolt.Tx) error {
		m, err := boltGetMarker(tx, id)
		if err != nil {
			return err
		}
		if m == nil {
			refused = errMarkerNotFound(id)
			return nil
		}
		if !m.Open() {
			refused = fmt.Errorf("%w: %s", ErrResolved, id)
			return nil
		}
		m.Resolution = &r
		if err := boltPutMarker(tx, m); err != nil {
			return err
		}
		out = *m
		g, err := boltLoad(tx, m.Group)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil || !g.State.Terminal() {
			return err
		}
		if open, err := boltOpenMarkers(tx, m.Group); err != nil || open > 0 {
			return err
		}
		exp := max(g.FinishedMS, r.AtMS) + s.retention.Milliseconds()
		return tx.Bucket(boltExpiry).Put(boltKey(min(exp, math.MaxInt64), g.ID), nil)
	})
	if err != nil {
		return Marker{}, s.wrap("resolve "+id, err)
	}
	return out, refused
}
