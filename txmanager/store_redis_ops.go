package txmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis store's operator data (see the layout in store_redis.go).

// redisPage is how many index entries one round trip reads.
const redisPage = 200

// Events reads the group's timeline (and checks that the group exists) in
// one pipeline.
func (s *RedisStore) Events(ctx context.Context, id string) ([]TimelineEvent, error) {
	keys := s.groupKeys(id)
	pipe := s.c.Pipeline()
	exists := pipe.Exists(ctx, keys[0])
	lr := pipe.LRange(ctx, keys[1], 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("txmanager: redis events %s: %w", id, err)
	}
	if exists.Val() == 0 {
		return nil, errGroupNotFound(id)
	}
	events := make([]TimelineEvent, 0, len(lr.Val()))
	for i, raw := range lr.Val() {
		var e TimelineEvent
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			return nil, fmt.Errorf("txmanager: redis events %s: entry %d: %w", id, i, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// listed reads the records of ids (one pipeline), with their open marker
// counts. A missing record is nil; a record that does not decode is an
// error naming the group.
func (s *RedisStore) listed(ctx context.Context, ids []string) ([]*Listed, error) {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.groupKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]*Listed, len(ids))
	for i, cmd := range cmds {
		f := cmd.Val()
		if len(f) == 0 {
			continue
		}
		g, err := decodeRecord(f)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", ids[i], err)
		}
		open, _ := strconv.Atoi(f["mo"])
		out[i] = &Listed{Group: g, OpenMarkers: open}
	}
	return out, nil
}

// decodeRecord decodes a record read with HGETALL.
func decodeRecord(f map[string]string) (*Group, error) {
	var d recordDecoder
	if err := d.start(f["n"]); err != nil {
		return nil, err
	}
	for name, v := range f {
		if err := d.field(name, v); err != nil {
			return nil, err
		}
	}
	return d.finish()
}

// List pages through created from the newest entry (or the cursor). It
// drops entries whose record is gone once they are createGrace old.
func (s *RedisStore) List(ctx context.Context, q ListQuery) (ListPage, error) {
	pos, resume, err := decodeCursor(q.Cursor)
	if err != nil {
		return ListPage{}, err
	}
	hi := "+inf"
	switch {
	case resume:
		hi = strconv.FormatInt(pos.ms, 10)
	case q.CreatedBeforeMS != 0:
		hi = "(" + strconv.FormatInt(q.CreatedBeforeMS, 10)
	}
	lo := "-inf"
	if q.CreatedAfterMS != 0 {
		lo = strconv.FormatInt(q.CreatedAfterMS, 10)
	}
	var page ListPage
	var scan pageScan
	var drop []any
	graceMS := time.Now().Add(-createGrace).UnixMilli()
	var offset int64
	defer func() {
		if len(drop) > 0 {
			s.c.ZRem(context.WithoutCancel(ctx), s.created, drop...)
		}
	}()
	for {
		zs, err := s.c.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: s.created, Start: hi, Stop: lo,
			ByScore: true, Rev: true, Offset: offset, Count: redisPage}).Result()
		if err != nil {
			return ListPage{}, fmt.Errorf("txmanager: redis list: %w", err)
		}
		offset += int64(len(zs))
		ids := make([]string, 0, len(zs))
		for _, z := range zs {
			ids = append(ids, z.Member.(string))
		}
		recs, err := s.listed(ctx, ids)
		if err != nil {
			return ListPage{}, fmt.Errorf("txmanager: redis list: %w", err)
		}
		for i, z := range zs {
			ms, id := int64(z.Score), ids[i]
			// Entries already met (the cursor's, or ones shifted by a
			// concurrent insert) come again: skip them.
			if resume && !pos.before(ms, id) {
				continue
			}
			pos, resume = listPos{ms, id}, true
			if !scan.next(&page, q, ms, id) {
				return page, nil
			}
			switch {
			case recs[i] != nil:
				scan.offer(&page, q, *recs[i])
			case ms <= graceMS:
				drop = append(drop, id)
			}
		}
		if len(zs) < redisPage {
			return page, nil
		}
	}
}

// Count reads the states of the newest max groups (pipelines of
// redisPage).
func (s *RedisStore) Count(ctx context.Context, limit int) (Counts, error) {
	c := Counts{ByState: map[GroupState]int{}}
	total, err := s.c.ZCard(ctx, s.created).Result()
	if err != nil {
		return Counts{}, fmt.Errorf("txmanager: redis count: %w", err)
	}
	c.Complete = total <= int64(limit)
	for start := int64(0); start < min(total, int64(limit)); start += redisPage {
		ids, err := s.c.ZRevRange(ctx, s.created, start, min(start+redisPage, int64(limit))-1).Result()
		if err != nil {
			return Counts{}, fmt.Errorf("txmanager: redis count: %w", err)
		}
		pipe := s.c.Pipeline()
		cmds := make([]*redis.StringCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HGet(ctx, s.groupKey(id), "s")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Counts{}, fmt.Errorf("txmanager: redis count: %w", err)
		}
		for _, cmd := range cmds {
			if n, err := strconv.ParseUint(cmd.Val(), 10, 8); err == nil {
				c.ByState[GroupState(n)]++
			}
		}
	}
	return c, nil
}

// markerKeys are the script keys of the group of marker id.
func (s *RedisStore) markerKeys(id string) ([]string, bool) {
	g, ok := markerGroup(id)
	if !ok {
		return nil, false
	}
	return s.groupKeys(g), true
}

// AddMarker indexes m in markers:open, then runs the add-marker script.
func (s *RedisStore) AddMarker(ctx context.Context, m Marker) (bool, error) {
	if err := checkMarker(m); err != nil {
		return false, err
	}
	m.Resolution = nil
	raw, err := json.Marshal(m)
	if err != nil {
		return false, fmt.Errorf("txmanager: redis add marker %s: %w", m.ID, err)
	}
	if err := s.c.ZAddNX(ctx, s.openMarks, redis.Z{Score: float64(m.CreatedMS), Member: m.ID}).Err(); err != nil {
		return false, fmt.Errorf("txmanager: redis add marker %s: index: %w", m.ID, err)
	}
	res, err := redisAddMarker.Run(ctx, s.c, s.groupKeys(m.Group), m.ID, raw).Result()
	if err != nil {
		return false, fmt.Errorf("txmanager: redis add marker %s: %w", m.ID, err)
	}
	v, _ := res.([]any)
	switch code, _ := first(v); {
	case code == "OK" && len(v) == 2:
		n, _ := v[1].(int64)
		return n == 1, nil
	case code == "G":
		return false, errGroupNotFound(m.Group)
	case code == "C" && len(v) == 4:
		return false, conflictReply(v)
	}
	return false, fmt.Errorf("txmanager: redis add marker %s: unexpected script reply %v", m.ID, res)
}

func first(v []any) (string, bool) {
	if len(v) == 0 {
		return "", false
	}
	s, ok := v[0].(string)
	return s, ok
}

func decodeMarker(raw string) (Marker, error) {
	var m Marker
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return Marker{}, fmt.Errorf("corrupt marker: %w", err)
	}
	return m, nil
}

// Marker reads one marker from its group's marker hash.
func (s *RedisStore) Marker(ctx context.Context, id string) (Marker, error) {
	keys, ok := s.markerKeys(id)
	if !ok {
		return Marker{}, errMarkerNotFound(id)
	}
	raw, err := s.c.HGet(ctx, keys[2], id).Result()
	if errors.Is(err, redis.Nil) {
		return Marker{}, errMarkerNotFound(id)
	}
	if err != nil {
		return Marker{}, fmt.Errorf("txmanager: redis marker %s: %w", id, err)
	}
	m, err := decodeMarker(raw)
	if err != nil {
		return Marker{}, fmt.Errorf("txmanager: redis marker %s: %w", id, err)
	}
	return m, nil
}

// GroupMarkers reads the group's marker hash.
func (s *RedisStore) GroupMarkers(ctx context.Context, group string) ([]Marker, error) {
	all, err := s.c.HGetAll(ctx, s.groupKeys(group)[2]).Result()
	if err != nil {
		return nil, fmt.Errorf("txmanager: redis markers of %s: %w", group, err)
	}
	out := make([]Marker, 0, len(all))
	for id, raw := range all {
		m, err := decodeMarker(raw)
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis marker %s: %w", id, err)
		}
		out = append(out, m)
	}
	sortMarkers(out)
	return out, nil
}

// Markers reads markers:open (moving resolved markers it meets to
// markers:resolved) and, for resolved or all, markers:resolved, dropping
// stale entries.
func (s *RedisStore) Markers(ctx context.Context, status MarkerStatus, limit int) ([]Marker, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []Marker
	// The open index is read first even for resolved: a resolution whose
	// index move was lost left its marker there, and the scan moves it to
	// markers:resolved before that is read.
	open, err := s.scanMarkers(ctx, s.openMarks, limit, true)
	if err != nil {
		return nil, err
	}
	if status != MarkersResolved {
		out = append(out, open...)
	}
	if status != MarkersOpen {
		resolved, err := s.scanMarkers(ctx, s.resolvedMark, limit, false)
		if err != nil {
			return nil, err
		}
		out = append(out, resolved...)
	}
	sortMarkers(out)
	return out[:min(len(out), limit)], nil
}

// scanMarkers reads up to limit markers indexed in key, oldest first. In
// markers:open (wantOpen) it moves resolved markers to markers:resolved
// and keeps open ones; in markers:resolved it keeps
// resolved ones. Entries whose marker is gone are dropped (from
// markers:open once createGrace old: an AddMarker may be between its
// steps).
func (s *RedisStore) scanMarkers(ctx context.Context, key string, limit int, wantOpen bool) ([]Marker, error) {
	var out []Marker
	graceMS := time.Now().Add(-createGrace).UnixMilli()
	var offset int64
	for len(out) < limit {
		zs, err := s.c.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: "-inf", Stop: "+inf",
			ByScore: true, Offset: offset, Count: redisPage}).Result()
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis markers: %w", err)
		}
		pipe := s.c.Pipeline()
		cmds := make([]*redis.StringCmd, len(zs))
		for i, z := range zs {
			if keys, ok := s.markerKeys(z.Member.(string)); ok {
				cmds[i] = pipe.HGet(ctx, keys[2], z.Member.(string))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("txmanager: redis markers: %w", err)
		}
		var drop []any
		var move []redis.Z
		for i, z := range zs {
			id := z.Member.(string)
			if cmds[i] == nil || errors.Is(cmds[i].Err(), redis.Nil) {
				if !wantOpen || int64(z.Score) <= graceMS {
					drop = append(drop, id)
				} else {
					offset++
				}
				continue
			}
			m, err := decodeMarker(cmds[i].Val())
			if err != nil {
				offset++ // left alone; Marker reports it
				continue
			}
			switch {
			case wantOpen && !m.Open():
				move = append(move, z)
			case wantOpen || !m.Open():
				offset++
				if len(out) < limit {
					out = append(out, m)
				}
			default:
				offset++
			}
		}
		if len(drop) > 0 || len(move) > 0 {
			pipe := s.c.Pipeline()
			if len(move) > 0 {
				pipe.ZAdd(ctx, s.resolvedMark, move...)
				for _, z := range move {
					drop = append(drop, z.Member)
				}
			}
			pipe.ZRem(ctx, key, drop...)
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("txmanager: redis markers: clean index: %w", err)
			}
		}
		if len(zs) < redisPage {
			break
		}
	}
	return out, nil
}

// Resolve runs the resolve script, then moves the marker to
// markers:resolved.
func (s *RedisStore) Resolve(ctx context.Context, id string, r Resolution) (Marker, error) {
	keys, ok := s.markerKeys(id)
	if !ok {
		return Marker{}, errMarkerNotFound(id)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return Marker{}, fmt.Errorf("txmanager: redis resolve %s: %w", id, err)
	}
	res, err := redisResolve.Run(ctx, s.c, keys, id, raw, s.retentionMS).Result()
	if err != nil {
		return Marker{}, fmt.Errorf("txmanager: redis resolve %s: %w", id, err)
	}
	v, _ := res.([]any)
	switch code, _ := first(v); {
	case code == "M":
		return Marker{}, errMarkerNotFound(id)
	case code == "R":
		return Marker{}, fmt.Errorf("%w: %s", ErrResolved, id)
	case code == "OK" && len(v) == 2:
		out, _ := v[1].(string)
		m, err := decodeMarker(out)
		if err != nil {
			return Marker{}, fmt.Errorf("txmanager: redis resolve %s: %w", id, err)
		}
		bg := context.WithoutCancel(ctx)
		pipe := s.c.Pipeline()
		pipe.ZAdd(bg, s.resolvedMark, redis.Z{Score: float64(m.CreatedMS), Member: id})
		pipe.ZRem(bg, s.openMarks, id)
		_, _ = pipe.Exec(bg) // a lost move is made by the next Markers
		return m, nil
	}
	return Marker{}, fmt.Errorf("txmanager: redis resolve %s: unexpected script reply %v", id, res)
}

// Purge removes nothing (Redis expires terminal groups by their TTL) but
// cleans the created index: entries older than the retention whose record
// has expired. It returns 0.
func (s *RedisStore) Purge(ctx context.Context, now time.Time) (int, error) {
	cutoff := strconv.FormatInt(now.UnixMilli()-s.retentionMS, 10)
	var offset int64
	for range 50 { // bounded work per call; the next call goes on
		zs, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.created, Start: "-inf", Stop: cutoff,
			ByScore: true, Offset: offset, Count: redisPage}).Result()
		if err != nil {
			return 0, fmt.Errorf("txmanager: redis purge: %w", err)
		}
		pipe := s.c.Pipeline()
		cmds := make([]*redis.IntCmd, len(zs))
		for i, id := range zs {
			cmds[i] = pipe.Exists(ctx, s.groupKey(id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, fmt.Errorf("txmanager: redis purge: %w", err)
		}
		var drop []any
		for i, id := range zs {
			if cmds[i].Val() == 0 {
				drop = append(drop, id)
			} else {
				offset++
			}
		}
		if len(drop) > 0 {
			if err := s.c.ZRem(ctx, s.created, drop...).Err(); err != nil {
				return 0, fmt.Errorf("txmanager: redis purge: %w", err)
			}
		}
		if len(zs) < redisPage {
			break
		}
	}
	return 0, nil
}
