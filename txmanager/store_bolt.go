package txmanager

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// BoltLockTimeout is how long OpenBoltStore waits for the file lock held by
// another process before it gives up.
const BoltLockTimeout = time.Second

// Bolt buckets. Index keys are an 8-byte big-endian time (unix ms with the
// sign bit flipped, so that byte order is numeric order) followed by the
// group id; their values are empty.
var (
	boltGroups    = []byte("groups")    // id -> JSON of Group
	boltDeadlines = []byte("deadlines") // DeadlineMS+id, for ACTIVE groups
	boltUndone    = []byte("undone")    // DecidedMS+id, for decided, non-terminal groups
	boltExpiry    = []byte("expiry")    // FinishedMS+Retention+id, for terminal groups without open markers
	boltCreated   = []byte("created")   // CreatedMS+id, for every group (List, Count)
	boltEvents    = []byte("events")    // id -> JSON of []TimelineEvent
	boltMarkers   = []byte("markers")   // marker id (<group id>.<what>) -> JSON of Marker
)

// BoltStore is the embedded, durable default Store: one file, opened by one
// process at a time (go.etcd.io/bbolt). Every Apply is one read-write bolt
// transaction that changes the record and its index entries together, and is
// synced to disk before Apply returns. Safe for concurrent use.
type BoltStore struct {
	db        *bolt.DB
	retention time.Duration

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) the store file at path. The directory must
// exist. If another process has the file open, it fails after
// BoltLockTimeout with an error saying the file is locked.
func OpenBoltStore(path string, opt StoreOptions) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: BoltLockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("txmanager: open store %s: locked by another process (waited %v): %w", path, BoltLockTimeout, err)
		}
		return nil, fmt.Errorf("txmanager: open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// A file written before the created index existed gets it now.
		backfill := tx.Bucket(boltCreated) == nil && tx.Bucket(boltGroups) != nil
		for _, b := range [][]byte{boltGroups, boltDeadlines, boltUndone, boltExpiry, boltCreated, boltEvents, boltMarkers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if backfill {
			return boltBackfillCreated(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("txmanager: open store %s: create buckets: %w", path, err)
	}
	return &BoltStore{db: db, retention: opt.retention()}, nil
}

// boltKey returns an index key: ms (order-preserving) then id.
func boltKey(ms int64, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(ms)^(1<<63))
	copy(k[8:], id)
	return k
}

// boltKeyTime returns the time part of an index key.
func boltKeyTime(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
}

func (s *BoltStore) wrap(op string, err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("txmanager: bolt %s: %w", op, errStoreClosed)
	}
	return fmt.Errorf("txmanager: bolt %s: %w", op, err)
}

// Create records g and its deadline.
func (s *BoltStore) Create(ctx context.Context, g *Group) error {
	if err := checkCreate(g); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("txmanager: create group %s: %w", g.ID, err)
	}
	var exists bool
	err = s.db.Update(func(tx *bolt.Tx) error {
		groups := tx.Bucket(boltGroups)
		id := []byte(g.ID)
		if groups.Get(id) != nil {
			exists = true
			return nil
		}
		if err := groups.Put(id, raw); err != nil {
			return err
		}
		if err := tx.Bucket(boltCreated).Put(boltKey(g.CreatedMS, g.ID), nil); err != nil {
			return err
		}
		if err := boltPutEvents(tx, g.ID, []TimelineEvent{createdEvent(g)}); err != nil {
			return err
		}
		return tx.Bucket(boltDeadlines).Put(boltKey(g.DeadlineMS, g.ID), nil)
	})
	if err != nil {
		return s.wrap("create "+g.ID, err)
	}
	if exists {
		return fmt.Errorf("%w: %s", ErrExists, g.ID)
	}
	return nil
}

// Get returns the group's record.
func (s *BoltStore) Get(ctx context.Context, id string) (*Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var g *Group
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		g, err = boltLoad(tx, id)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, s.wrap("get "+id, err)
	}
	return g, nil
}

// boltLoad decodes group id; the result shares no memory with the file.
func boltLoad(tx *bolt.Tx, id string) (*Group, error) {
	raw := tx.Bucket(boltGroups).Get([]byte(id))
	if raw == nil {
		return nil, errGroupNotFound(id)
	}
	g := new(Group)
	if err := json.Unmarshal(raw, g); err != nil {
		return nil, fmt.Errorf("decode group %s: %w", id, err)
	}
	return g, nil
}

// Apply applies t with ApplyTransition to a copy of the record and, in the
// same bolt transaction, saves it and moves its index entries.
func (s *BoltStore) Apply(ctx context.Context, t Transition) (*Group, error) {
	t.MustBeWellFormed()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var after *Group
	var refused error // ApplyTransition's answer, returned as is
	err := s.db.Update(func(tx *bolt.Tx) error {
		before, err := boltLoad(tx, t.Group)
		if err != nil {
			refused = err
			return nil
		}
		g := before.Clone()
		if err := ApplyTransition(g, t); err != nil {
			refused = err
			return nil
		}
		raw, err := json.Marshal(g)
		if err != nil {
			return err
		}
		if err := tx.Bucket(boltGroups).Put([]byte(g.ID), raw); err != nil {
			return err
		}
		if err := s.reindex(tx, before, g); err != nil {
			return err
		}
		if err := s.applyOps(tx, t, before, g); err != nil {
			return err
		}
		after = g
		return nil
	})
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("apply %s to %s", t.Kind, t.Group), err)
	}
	if refused != nil {
		return nil, refused
	}
	return after, nil
}

// reindex moves the group's index entries from what before needs to what
// after needs.
func (s *BoltStore) reindex(tx *bolt.Tx, before, after *Group) error {
	if before.State.Open() && !after.State.Open() {
		if err := tx.Bucket(boltDeadlines).Delete(boltKey(before.DeadlineMS, before.ID)); err != nil {
			return err
		}
	}
	oldKey, newKey := boltKey(undoneKeyMS(before), before.ID), boltKey(undoneKeyMS(after), after.ID)
	moved := !bytes.Equal(oldKey, newKey)
	if before.State.Undone() && (!after.State.Undone() || moved) {
		if err := tx.Bucket(boltUndone).Delete(oldKey); err != nil {
			return err
		}
	}
	if after.State.Undone() && (!before.State.Undone() || moved) {
		if err := tx.Bucket(boltUndone).Put(newKey, nil); err != nil {
			return err
		}
	}
	if !before.State.Terminal() && after.State.Terminal() {
		exp := after.FinishedMS + s.retention.Milliseconds()
		if err := tx.Bucket(boltExpiry).Put(boltKey(exp, after.ID), nil); err != nil {
			return err
		}
	}
	return nil
}

// Expired lists open (ACTIVE or PREPARING) groups whose deadline is at or
// before now, oldest deadline first (ties by id).
func (s *BoltStore) Expired(ctx context.Context, now time.Time, limit int) ([]string, error) {
	ids, err := s.scan(ctx, boltDeadlines, now.UnixMilli(), limit)
	if err != nil {
		return nil, s.wrap("expired", err)
	}
	return ids, nil
}

// Undone lists groups owed pushes (PREPARING, COMMITTING, ROLLING_BACK),
// oldest first (see undoneKeyMS), ties by id.
func (s *BoltStore) Undone(ctx context.Context, limit int) ([]string, error) {
	ids, err := s.scan(ctx, boltUndone, math.MaxInt64, limit)
	if err != nil {
		return nil, s.wrap("undone", err)
	}
	return ids, nil
}

// scan returns the ids of up to limit entries of an index bucket whose time
// is at or before maxMS.
func (s *BoltStore) scan(ctx context.Context, bucket []byte, maxMS int64, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, _ := c.First(); k != nil && len(ids) < limit; k, _ = c.Next() {
			if len(k) < 8 || boltKeyTime(k) > maxMS {
				break
			}
			ids = append(ids, string(k[8:]))
		}
		return nil
	})
	return ids, err
}

// Purge removes terminal groups whose retention has passed by now, with
// their timelines and markers, and returns how many it removed. A group
// with an open marker stays (its expiry entry is dropped; resolving its
// last marker puts one back).
func (s *BoltStore) Purge(ctx context.Context, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	nowMS := now.UnixMilli()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		exp := tx.Bucket(boltExpiry)
		var keys [][]byte
		c := exp.Cursor()
		for k, _ := c.First(); k != nil && len(k) >= 8 && boltKeyTime(k) <= nowMS; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := exp.Delete(k); err != nil {
				return err
			}
			removed, err := boltRemoveGroup(tx, string(k[8:]))
			if err != nil {
				return err
			}
			if removed {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, s.wrap("purge", err)
	}
	return n, nil
}

// Ping reports an error after Close.
func (s *BoltStore) Ping(ctx context.Context) error {
	err := s.db.View(func(*bolt.Tx) error { return nil })
	if err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Close closes the file. Safe to call multiple times; later calls return
// the first call's result.
func (s *BoltStore) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("txmanager: close bolt store: %w", err)
		}
	})
	return s.closeErr
}
