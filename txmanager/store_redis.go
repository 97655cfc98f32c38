package txmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/golcn/golcn/internal/redisscript"
)

// The Redis store.
//
// # Layout
//
// With the default prefix "lcn":
//
//	lcn:{<id>}:g     hash    the group's record (fields: see package redisscript)
//	lcn:{<id>}:e     list    the group's timeline: JSON events, oldest first, the newest MaxEvents
//	lcn:{<id>}:m     hash    the group's compensation markers: marker id -> JSON
//	lcn:deadlines    zset    member <id>, score DeadlineMS: open (ACTIVE, PREPARING) groups (reaper)
//	lcn:undone       zset    member <id>, score: time it entered: PREPARING and decided, non-terminal groups (retrier)
//	lcn:created      zset    member <id>, score CreatedMS: every group (List, Count)
//	lcn:markers:open     zset  member marker id, score its CreatedMS: open markers
//	lcn:markers:resolved zset  member marker id, score its CreatedMS: resolved markers
//
// Every key that belongs to one group carries the hash tag {<id>}, so each
// transition script touches a single slot and the layout works on Redis
// Cluster. A terminal group's keys get a TTL of the retention period
// (PEXPIRE, from the moment it became terminal), so Purge has nothing to do
// but clean the created index; a group with an open compensation marker
// (the record's field mo counts them) gets no TTL until its last marker is
// resolved, and then the retention from that moment. The timeline and the
// markers are written by the same script as the record.
//
// The record is a hash of raw strings, one field per mutable value, so a
// script reads it with one HGETALL, writes only what changed with one HSET,
// and replies with the field list, which decodeRecord turns into a Group as
// it does Get's HGETALL. Nothing is JSON: encoding and decoding JSON, in Lua
// and in Go, cost more than everything else an Apply does.
//
// # Transitions
//
// Each transition kind is one Lua script (internal/redisscript) that loads
// the record, checks the expected old state exactly as ApplyTransition does,
// and saves the changed record, all atomically. A refusal comes back as a
// typed reply that becomes *ConflictError or ErrNotFound.
//
// # The indexes
//
// The zsets are not in the group's slot, so on Cluster no script can
// change them atomically with the record. Instead the steps are ordered so
// that a crash (or a lost connection) after any prefix of them leaves only
// stale index entries, never a missing one, and the readers clean up stale
// entries. Group states only move forward (ACTIVE, PREPARING, decided, terminal,
// gone),
// which is what makes removing a stale entry safe. The invariants:
//
//	(A) an open group (ACTIVE or PREPARING) is in deadlines or in undone
//	    (or both);
//	(B) a PREPARING group, and a decided, non-terminal one, is in undone;
//	(C) every group is in created;
//	(D) an open marker is in markers:open; a resolved one is in
//	    markers:resolved or markers:open.
//
// Create: ZADD deadlines and created, then the create script (write unless
// the key exists). The group exists only after it is indexed (A, C). A
// crash in between leaves entries without a group; Expired and List drop
// such entries once they are createGrace old (a Create still between its
// steps must not lose its entry), and so does Purge, which also drops the
// created entries of groups whose record expired.
//
// Markers: a branch-done to LOST is preceded by ZADD markers:open of the
// marker it may create, and AddMarker by ZADD markers:open (D); a stale
// entry (no marker) is dropped by Markers once createGrace old. A
// resolution (Resolve, or the script that finishes a group resolving its
// phase2_stuck marker) is followed by ZADD markers:resolved and ZREM
// markers:open; Markers moves a resolved marker it meets in markers:open,
// and drops entries whose marker expired with its group.
//
// Decide: ZADD undone, then the decide script, then ZREM deadlines (not for
// a decide to PREPARING: that group stays open, under its deadline). The group
// is PREPARING or decided only after it is in undone (B). Removing the deadline entry
// afterwards is safe whatever the script answered: if it refused and the
// group is still open, the group is in undone (A), and Apply puts the
// deadline entry back at once; if that step is lost, Undone puts it back
// when it meets an open group (it never removes one: a decide may be
// between its steps). An ACTIVE group in undone is otherwise just skipped:
// it becomes a correct entry when the group is decided, at its deadline at
// the latest.
//
// A transition that makes the group terminal is followed by ZREM undone
// (on one server, the branch-done script removes the entry itself).
// Stale entries are cleaned by the readers: Expired drops entries whose group
// is not open (and re-scores one whose deadline is later than its score);
// Undone drops entries whose group is terminal or gone.
//
// On a *redis.Client (one server, or Sentinel) the steps of one operation go
// in one pipeline: one round trip, and the server runs them in order. A
// cluster client sends a pipeline's commands to several nodes at once, in no
// fixed order, so there the steps are separate round trips.
//
// Run Redis with maxmemory-policy noeviction: an evicted record is a lost
// decision. Do not read from replicas (ReadOnly, RouteByLatency,
// RouteRandomly): Expired and Undone decide what to delete from what they
// read.

// createGrace is how old a deadline entry without a group must be before
// Expired drops it (see Create).
const createGrace = time.Minute

// RedisStore is the Store for production and for several TxManagers sharing
// one Redis (or Redis Cluster): see the layout above. It needs Redis 6.2 or
// later. Safe for concurrent use.
type RedisStore struct {
	c            redis.UniversalClient
	prefix       string
	deadlines    string // key of the deadline zset
	undone       string // key of the phase-2 zset
	created      string // key of the created-time zset
	openMarks    string // key of the open markers zset
	resolvedMark string // key of the resolved markers zset
	retentionMS  int64
	ordered      bool // c runs a pipeline's commands in order on one server
}

var _ Store = (*RedisStore)(nil)

// Transition scripts, one per kind.
var (
	redisJoin       = newRedisScript(redisscript.Join)
	redisVote       = newRedisScript(redisscript.Vote)
	redisDecide     = newRedisScript(redisscript.Decide)
	redisBranchDone = newRedisScript(redisscript.BranchDone)
	redisCreate     = redis.NewScript(redisscript.Create)
	redisAddMarker  = newRedisScript(redisscript.AddMarker)
	redisResolve    = newRedisScript(redisscript.Resolve)
)

func newRedisScript(name string) *redis.Script {
	return redis.NewScript(redisscript.Source(luaPrelude(), name))
}

// luaPrelude defines the state numbers and branch state names for the
// scripts, from the Go types, so the two cannot drift apart.
func luaPrelude() string {
	var b strings.Builder
	for s := GroupState(1); !strings.HasPrefix(s.String(), "GroupState("); s++ {
		fmt.Fprintf(&b, "local G_%s = %d\n", s.String(), uint8(s))
	}
	names := "local BRANCH_NAMES = {"
	for s := BranchState(1); !strings.HasPrefix(s.String(), "BranchState("); s++ {
		fmt.Fprintf(&b, "local B_%s = %d\n", s.String(), uint8(s))
		names += fmt.Sprintf("[%d] = '%s', ", uint8(s), s.String())
	}
	b.WriteString(names + "}\n")
	return b.String()
}

// NewRedisStore returns a store that keeps its keys under prefix (default
// "lcn") in client. The store does not own client: Close leaves it open.
// It panics if prefix contains '{' or '}', which would break the hash tags.
func NewRedisStore(client redis.UniversalClient, prefix string, opt StoreOptions) *RedisStore {
	if prefix == "" {
		prefix = "lcn"
	}
	if strings.ContainsAny(prefix, "{}") {
		panic(fmt.Sprintf("txmanager: redis key prefix %q must not contain '{' or '}'", prefix))
	}
	_, ordered := client.(*redis.Client)
	return &RedisStore{
		c:            client,
		prefix:       prefix,
		deadlines:    prefix + ":deadlines",
		undone:       prefix + ":undone",
		created:      prefix + ":created",
		openMarks:    prefix + ":markers:open",
		resolvedMark: prefix + ":markers:resolved",
		retentionMS:  max(opt.retention().Milliseconds(), 1),
		ordered:      ordered,
	}
}

// groupKey is the key of group id's record.
func (s *RedisStore) groupKey(id string) string {
	return s.prefix + ":{" + id + "}:g"
}

// groupKeys are the keys of group id: record, timeline, markers (the KEYS
// of the transition scripts).
func (s *RedisStore) groupKeys(id string) []string {
	tag := s.prefix + ":{" + id + "}:"
	return []string{tag + "g", tag + "e", tag + "m"}
}

// appendPacked appends one part of a packed field: <len>:<bytes>.
func appendPacked(buf []byte, s string) []byte {
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, ':')
	return append(buf, s...)
}

// unpack splits a packed field into parts; it reports false if v is not
// exactly len(parts) parts. The parts share v's memory.
func unpack(v string, parts []string) bool {
	for i := range parts {
		c := strings.IndexByte(v, ':')
		if c < 0 {
			return false
		}
		n, err := strconv.Atoi(v[:c])
		if err != nil || n < 0 || n > len(v)-c-1 {
			return false
		}
		parts[i], v = v[c+1:c+1+n], v[c+1+n:]
	}
	return v == ""
}

// packHeader is the record's "h" field.
func packHeader(g *Group) string {
	buf := make([]byte, 0, 32+len(g.ID)+len(g.StarterService)+len(g.Starter))
	buf = appendPacked(buf, g.ID)
	buf = appendPacked(buf, g.StarterService)
	buf = appendPacked(buf, g.Starter)
	buf = appendPacked(buf, strconv.FormatInt(g.CreatedMS, 10))
	return string(buf)
}

// packBranch is a branch's "B<i>" field.
func packBranch(b *Branch) string {
	buf := make([]byte, 0, 16+len(b.ID)+len(b.Service)+len(b.Instance)+len(b.Datasource)+len(b.Mode))
	buf = appendPacked(buf, b.ID)
	buf = appendPacked(buf, b.Service)
	buf = appendPacked(buf, b.Instance)
	buf = appendPacked(buf, b.Datasource)
	buf = appendPacked(buf, b.Mode)
	return string(buf)
}

// maxBranches bounds the branch count a record may state (a corrupt record
// must not make the decoder allocate without limit).
const maxBranches = 1 << 16

// recordDecoder builds a Group from a record's fields (HGETALL, or a
// script's reply): start, field for each field in any order, finish. The
// Group's strings share the fields' memory.
type recordDecoder struct {
	g         *Group
	hasHeader bool
	nB, nS    int // B<i> and S<i> fields seen; field names are unique
}

// start prepares for a record whose "n" field is n.
func (d *recordDecoder) start(n string) error {
	count, err := strconv.Atoi(n)
	if err != nil || count < 0 || count > maxBranches {
		return fmt.Errorf("corrupt record: branch count %q", n)
	}
	d.g = &Group{}
	if count > 0 {
		d.g.Branches = make([]Branch, count)
	}
	return nil
}

// finish returns the Group, or an error if a field was missing.
func (d *recordDecoder) finish() (*Group, error) {
	if !d.hasHeader {
		return nil, errors.New("corrupt record: no header")
	}
	// Each B<i> and S<i> names a distinct i in 1…n (no leading zeros), so
	// n of each means every branch has both.
	if n := len(d.g.Branches); d.nB != n || d.nS != n {
		return nil, fmt.Errorf("corrupt record: %d branches, %d with fixed fields, %d with a state", n, d.nB, d.nS)
	}
	return d.g, nil
}

// branch returns the branch a field named <letter><index> is about.
func (d *recordDecoder) branch(name string) (*Branch, error) {
	i, err := strconv.Atoi(name[1:])
	if err != nil || i < 1 || i > len(d.g.Branches) || name[1] == '0' {
		return nil, fmt.Errorf("corrupt record: field %q", name)
	}
	return &d.g.Branches[i-1], nil
}

// field decodes one field.
func (d *recordDecoder) field(name, v string) error {
	g := d.g
	var err error
	switch {
	case name == "h":
		var p [4]string
		if !unpack(v, p[:]) {
			return errors.New("corrupt record: header")
		}
		g.ID, g.StarterService, g.Starter = p[0], p[1], p[2]
		g.CreatedMS, err = strconv.ParseInt(p[3], 10, 64)
		d.hasHeader = true
	case name == "dl":
		g.DeadlineMS, err = strconv.ParseInt(v, 10, 64)
	case name == "s":
		var s uint64
		s, err = strconv.ParseUint(v, 10, 8)
		g.State = GroupState(s)
	case name == "dm":
		g.DecidedMS, err = parseOptInt(v)
	case name == "fm":
		g.FinishedMS, err = parseOptInt(v)
	case name == "r":
		g.Reason = v
	case name == "a":
		g.Attention = v
	case name == "n": // read by start
	case name == "mo": // open markers: operator data, not part of the Group
	case name == "v":
		g.Version, err = parseOptInt(v)
	case name == "":
		return errors.New("corrupt record: unnamed field")
	case name[0] == 'K':
	case name[0] == 'B':
		var b *Branch
		if b, err = d.branch(name); err == nil {
			d.nB++
			var p [5]string
			if !unpack(v, p[:]) {
				return fmt.Errorf("corrupt record: field %s", name)
			}
			b.ID, b.Service, b.Instance, b.Datasource, b.Mode = p[0], p[1], p[2], p[3], p[4]
		}
	case name[0] == 'S':
		var b *Branch
		if b, err = d.branch(name); err == nil {
			d.nS++
			var s uint64
			s, err = strconv.ParseUint(v, 10, 8)
			b.State = BranchState(s)
		}
	case name[0] == 'R':
		var b *Branch
		if b, err = d.branch(name); err == nil {
			b.Reason = v
		}
	default:
		return fmt.Errorf("corrupt record: unknown field %q", name)
	}
	if err != nil {
		return fmt.Errorf("corrupt record: field %s: %w", name, err)
	}
	return nil
}

func parseOptInt(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// Create records g: ZADD deadlines and created, then the create script
// (see the ordering above). One round trip on a *redis.Client.
func (s *RedisStore) Create(ctx context.Context, g *Group) error {
	if err := checkCreate(g); err != nil {
		return err
	}
	args := make([]any, 0, 13+8*len(g.Branches))
	args = append(args, "h", packHeader(g), "dl", g.DeadlineMS, "s", uint8(g.State), "n", len(g.Branches))
	if g.DecidedMS != 0 {
		args = append(args, "dm", g.DecidedMS)
	}
	if g.FinishedMS != 0 {
		args = append(args, "fm", g.FinishedMS)
	}
	if g.Reason != "" {
		args = append(args, "r", g.Reason)
	}
	if g.Attention != "" {
		args = append(args, "a", g.Attention)
	}
	for i := range g.Branches {
		b, n := &g.Branches[i], strconv.Itoa(i+1)
		args = append(args, "K"+b.ID, n, "B"+n, packBranch(b), "S"+n, uint8(b.State), "R"+n, b.Reason)
	}
	ev, err := json.Marshal(createdEvent(g))
	if err != nil {
		return fmt.Errorf("txmanager: redis create %s: %w", g.ID, err)
	}
	args = append(args, ev)
	keys := s.groupKeys(g.ID)[:2]
	// LT: a Create that collides with an existing id must not postpone that
	// group's reaping; Expired re-scores an entry that is too early.
	dl := redis.Z{Score: float64(g.DeadlineMS), Member: g.ID}
	cr := redis.Z{Score: float64(g.CreatedMS), Member: g.ID}
	var res any
	if s.ordered {
		res, err = s.pipelined(ctx, func(p redis.Pipeliner, eval bool) ([]redis.Cmder, *redis.Cmd) {
			zadd := p.ZAddLT(ctx, s.deadlines, dl)
			zcr := p.ZAddNX(ctx, s.created, cr)
			return []redis.Cmder{zadd, zcr}, runScript(ctx, p, redisCreate, eval, keys, args)
		})
		if n, _ := res.(int64); n == 1 && errors.As(err, new(indexError)) {
			// Created but not indexed: take it back (best effort; on one
			// server a failed ZADD means the script's write failed too).
			s.c.Del(context.WithoutCancel(ctx), keys...)
		}
	} else {
		if err = s.c.ZAddLT(ctx, s.deadlines, dl).Err(); err != nil {
			return fmt.Errorf("txmanager: redis create %s: index deadline: %w", g.ID, err)
		}
		if err = s.c.ZAddNX(ctx, s.created, cr).Err(); err != nil {
			return fmt.Errorf("txmanager: redis create %s: index creation: %w", g.ID, err)
		}
		res, err = redisCreate.Run(ctx, s.c, keys, args...).Result()
	}
	if err != nil {
		return fmt.Errorf("txmanager: redis create %s: %w", g.ID, err)
	}
	if n, _ := res.(int64); n != 1 {
		return fmt.Errorf("%w: %s", ErrExists, g.ID)
	}
	return nil
}

// indexError is a failed index command of a pipeline.
type indexError struct{ err error }

func (e indexError) Error() string { return "index: " + e.err.Error() }
func (e indexError) Unwrap() error { return e.err }

// pipelined sends one pipeline built by build: index commands, then a
// script (run with EVAL when eval is set), then possibly more. A single
// server runs them in that order. If the server has lost the script, the
// pipeline is sent again with EVAL, so its other commands must be
// idempotent. It returns the script's reply; if an index command failed,
// the error is an indexError and the reply is still returned.
func (s *RedisStore) pipelined(ctx context.Context, build func(p redis.Pipeliner, eval bool) (index []redis.Cmder, script *redis.Cmd)) (any, error) {
	for _, eval := range []bool{false, true} {
		pipe := s.c.Pipeline()
		index, cmd := build(pipe, eval)
		_, _ = pipe.Exec(ctx)
		if !eval && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			continue
		}
		res, err := cmd.Result()
		for _, ix := range index {
			if ierr := ix.Err(); ierr != nil {
				return res, indexError{ierr}
			}
		}
		return res, err
	}
	panic("unreachable")
}

// runScript adds script to p, as EVALSHA or, if eval, as EVAL.
func runScript(ctx context.Context, p redis.Pipeliner, script *redis.Script, eval bool, keys []string, args []any) *redis.Cmd {
	if eval {
		return script.Eval(ctx, p, keys, args...)
	}
	return script.EvalSha(ctx, p, keys, args...)
}

// Get reads the group's record: one HGETALL.
func (s *RedisStore) Get(ctx context.Context, id string) (*Group, error) {
	f, err := s.c.HGetAll(ctx, s.groupKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("txmanager: redis get %s: %w", id, err)
	}
	if len(f) == 0 {
		return nil, errGroupNotFound(id)
	}
	g, err := decodeRecord(f)
	if err != nil {
		return nil, fmt.Errorf("txmanager: redis get %s: %w", id, err)
	}
	return g, nil
}

// Apply runs t's script: one EVALSHA (EVAL if the server lost the script).
// A decide is pipelined between ZADD undone and ZREM deadlines (one round
// trip on a *redis.Client); a transition that makes the group terminal is
// followed by ZREM undone (a second round trip).
//
// Like every Redis command, Apply may be retried by the client after a
// network error; a retried transition that had been applied reports
// ErrConflict, so a caller must re-read the group on ErrConflict.
func (s *RedisStore) Apply(ctx context.Context, t Transition) (*Group, error) {
	t.MustBeWellFormed()
	keys := s.groupKeys(t.Group)
	evs := transitionEvents(t)
	ev, err := json.Marshal(evs[0])
	var ev2 []byte // a decision's event after the vote it carries
	if err == nil && len(evs) > 1 {
		ev2, err = json.Marshal(evs[1])
	}
	if err != nil {
		return nil, fmt.Errorf("txmanager: redis %s %s: %w", t.Kind, t.Group, err)
	}
	voteTo := "" // the state of the vote a decision carries
	if t.BranchID != "" && t.Kind == TransDecide {
		voteTo = strconv.Itoa(int(t.BranchTo))
	}
	var script *redis.Script
	var args []any
	switch t.Kind {
	case TransJoin:
		b := &t.Branch
		script, args = redisJoin, []any{s.retentionMS, t.AtMS, b.Reason, b.ID, 0, packBranch(b)}
	case TransVote:
		script, args = redisVote, []any{s.retentionMS, t.AtMS, t.Reason, t.BranchID, uint8(t.BranchTo), ""}
	case TransDecide:
		script, args = redisDecide, []any{s.retentionMS, t.AtMS, t.Reason, t.BranchID, uint8(t.GroupTo), voteTo}
	case TransBranchDone:
		script, args = redisBranchDone, []any{s.retentionMS, t.AtMS, t.Reason, t.BranchID, uint8(t.BranchTo), ""}
	}
	ifVersion := ""
	if t.CheckVersion {
		ifVersion = strconv.FormatInt(t.IfVersion, 10)
	}
	args = append(args, ev, MaxEvents, ifVersion, t.BranchReason, ev2)

	// On one server the branch-done script takes a group it makes terminal
	// out of undone itself (KEYS[4]), saving a round trip.
	unindexedByScript := t.Kind == TransBranchDone && s.ordered
	if unindexedByScript {
		keys = append(keys, s.undone)
	}
	var res any
	lost := t.Kind == TransBranchDone && t.BranchTo == BranchLost
	// The marker a LOST branch gets is indexed first (invariant D).
	openMark := redis.Z{Score: float64(t.AtMS), Member: MarkerID(t.Group, t.BranchID)}
	switch {
	case t.Kind == TransDecide && s.ordered:
		res, err = s.decidePipelined(ctx, t, keys, args)
	case t.Kind == TransDecide:
		if err = s.c.ZAdd(ctx, s.undone, redis.Z{Score: float64(t.AtMS), Member: t.Group}).Err(); err == nil {
			res, err = script.Run(ctx, s.c, keys, args...).Result()
		}
	case lost && s.ordered:
		res, err = s.pipelined(ctx, func(p redis.Pipeliner, eval bool) ([]redis.Cmder, *redis.Cmd) {
			return []redis.Cmder{p.ZAddNX(ctx, s.openMarks, openMark)}, runScript(ctx, p, script, eval, keys, args)
		})
	case lost:
		if err = s.c.ZAddNX(ctx, s.openMarks, openMark).Err(); err == nil {
			res, err = script.Run(ctx, s.c, keys, args...).Result()
		}
	default:
		res, err = script.Run(ctx, s.c, keys, args...).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("txmanager: redis %s %s: %w", t.Kind, t.Group, err)
	}

	g, deadline, stuckMS, err := scriptReply(t, res)
	// Index clean-up, on a context that outlives a cancelled caller. Its
	// errors are not returned: the transition is durable, and a stale entry
	// is harmless (see the ordering above).
	if err != nil {
		var ce *ConflictError
		if t.Kind == TransDecide && t.GroupTo != GroupPreparing && s.ordered && errors.As(err, &ce) && ce.Group.Open() {
			// The pipeline removed the deadline of a group that is still open.
			s.c.ZAddLT(context.WithoutCancel(ctx), s.deadlines, redis.Z{Score: float64(deadline), Member: t.Group})
		}
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	pipe := s.c.Pipeline() // independent commands: order does not matter
	if t.Kind == TransDecide && !s.ordered && g.State.Decided() {
		pipe.ZRem(bg, s.deadlines, t.Group)
	}
	if g.State.Terminal() && !unindexedByScript {
		pipe.ZRem(bg, s.undone, t.Group)
	}
	if stuckMS != 0 {
		// The script resolved the group's phase2_stuck marker (D).
		id := MarkerID(t.Group, phase2Suffix)
		pipe.ZAdd(bg, s.resolvedMark, redis.Z{Score: float64(stuckMS), Member: id})
		pipe.ZRem(bg, s.openMarks, id)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(bg)
	}
	return g, nil
}

// decidePipelined sends ZADD undone, the decide script and ZREM deadlines in
// one pipeline, which a single server runs in that order. If the ZADD failed
// it returns the ZADD's error: on one server that means out of memory, and
// then the script's write failed too.
func (s *RedisStore) decidePipelined(ctx context.Context, t Transition, keys []string, args []any) (any, error) {
	undone := redis.Z{Score: float64(t.AtMS), Member: t.Group}
	return s.pipelined(ctx, func(p redis.Pipeliner, eval bool) ([]redis.Cmder, *redis.Cmd) {
		zadd := p.ZAdd(ctx, s.undone, undone)
		cmd := runScript(ctx, p, redisDecide, eval, keys, args)
		if t.GroupTo != GroupPreparing { // a PREPARING group keeps its deadline
			p.ZRem(ctx, s.deadlines, t.Group)
		}
		return []redis.Cmder{zadd}, cmd
	})
}

// scriptReply converts a transition script's reply (see package
// redisscript) into the group after the transition or the refusal as
// ApplyTransition reports it. deadline is the group's DeadlineMS on a
// conflict; stuckMS, when not 0, is the creation time of the group's
// phase2_stuck marker, which the script resolved.
func scriptReply(t Transition, res any) (g *Group, deadline, stuckMS int64, err error) {
	if v, ok := res.([]any); ok && len(v) > 0 {
		code, _ := v[0].(string)
		switch {
		case code == "OK" && (len(v) == 2 || len(v) == 3):
			f, _ := v[1].([]any)
			g, err := decodeReply(f)
			if err != nil {
				return nil, 0, 0, fmt.Errorf("txmanager: redis %s %s: %w", t.Kind, t.Group, err)
			}
			if len(v) == 3 {
				ms, _ := v[2].(string)
				stuckMS, _ = strconv.ParseInt(ms, 10, 64)
			}
			return g, 0, stuckMS, nil
		case code == "C" && len(v) == 4:
			dl, _ := v[3].(string)
			deadline, _ := strconv.ParseInt(dl, 10, 64)
			return nil, deadline, 0, conflictReply(v)
		case code == "G":
			return nil, 0, 0, errGroupNotFound(t.Group)
		case code == "B":
			return nil, 0, 0, fmt.Errorf("%w: branch %s in group %s", ErrNotFound, t.BranchID, t.Group)
		case code == "P" && len(v) == 2:
			msg, _ := v[1].(string)
			panic(msg)
		}
	}
	return nil, 0, 0, fmt.Errorf("txmanager: redis %s %s: unexpected script reply %v", t.Kind, t.Group, res)
}

// conflictReply converts a script's {"C", state, detail, deadline_ms}
// refusal.
func conflictReply(v []any) *ConflictError {
	state, _ := v[1].(int64)
	detail, _ := v[2].(string)
	return &ConflictError{Group: GroupState(state), Detail: detail}
}

// decodeReply decodes a script's field/value list.
func decodeReply(f []any) (*Group, error) {
	var n string
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == "n" {
			n, _ = f[i+1].(string)
			break
		}
	}
	var d recordDecoder
	if err := d.start(n); err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(f); i += 2 {
		name, ok1 := f[i].(string)
		v, ok2 := f[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("corrupt reply: %T %T at %d", f[i], f[i+1], i)
		}
		if err := d.field(name, v); err != nil {
			return nil, err
		}
	}
	return d.finish()
}

// peeked is what Expired and Undone need to know about a group.
type peeked struct {
	found      bool
	corrupt    bool // found, but state or deadline unreadable: left alone
	state      GroupState
	deadlineMS int64
}

// peek reads the state and deadline of each group, in one pipeline. A
// corrupt record is reported as such rather than failing the whole listing
// (one bad record must not stop the reaper); Get reports it.
func (s *RedisStore) peek(ctx context.Context, zs []redis.Z) ([]peeked, error) {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.SliceCmd, len(zs))
	for i, z := range zs {
		cmds[i] = pipe.HMGet(ctx, s.groupKey(z.Member.(string)), "s", "dl")
	}
	_, _ = pipe.Exec(ctx)
	out := make([]peeked, len(zs))
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if err != nil {
			return nil, err
		}
		st, ok := v[0].(string)
		if !ok {
			continue // no record
		}
		dl, _ := v[1].(string)
		n, err1 := strconv.ParseUint(st, 10, 8)
		d, err2 := strconv.ParseInt(dl, 10, 64)
		out[i] = peeked{found: true, corrupt: err1 != nil || err2 != nil, state: GroupState(n), deadlineMS: d}
	}
	return out, nil
}

// Expired lists open groups whose deadline is at or before now, oldest
// deadline first (ties by id). It reads the candidates' records (one
// pipeline per page) and drops stale index entries on the way.
func (s *RedisStore) Expired(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	nowMS := now.UnixMilli()
	var ids []string
	var offset int64 // entries at the front of the range that stay
	for len(ids) < limit {
		want := int64(limit - len(ids))
		zs, err := s.c.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: s.deadlines, Start: "-inf", Stop: nowMS, ByScore: true, Offset: offset, Count: want,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis expired: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		peeks, err := s.peek(ctx, zs)
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis expired: %w", err)
		}
		var drop []any
		var rescore []redis.Z
		for i, z := range zs {
			id, p := z.Member.(string), peeks[i]
			switch {
			case !p.found && z.Score <= float64(nowMS-createGrace.Milliseconds()):
				drop = append(drop, id) // a Create that never finished, or long gone
			case !p.found || p.corrupt:
				offset++ // perhaps a Create between its two steps
			case !p.state.Open():
				drop = append(drop, id)
			case p.deadlineMS > nowMS:
				rescore = append(rescore, redis.Z{Score: float64(p.deadlineMS), Member: id})
			default:
				ids = append(ids, id)
				offset++
			}
		}
		if len(drop) > 0 || len(rescore) > 0 {
			pipe := s.c.Pipeline()
			if len(drop) > 0 {
				pipe.ZRem(ctx, s.deadlines, drop...)
			}
			if len(rescore) > 0 {
				pipe.ZAddXX(ctx, s.deadlines, rescore...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("txmanager: redis expired: clean index: %w", err)
			}
		}
		if int64(len(zs)) < want {
			break
		}
	}
	return ids, nil
}

// Undone lists PREPARING and decided, non-terminal groups, oldest first (ties by
// id). It reads the candidates' records (one pipeline per page), drops
// entries of terminal or vanished groups and makes sure an ACTIVE group met
// here has its deadline entry (see the ordering above).
func (s *RedisStore) Undone(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	var ids []string
	var offset int64
	for len(ids) < limit {
		want := int64(limit - len(ids))
		zs, err := s.c.ZRangeWithScores(ctx, s.undone, offset, offset+want-1).Result()
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis undone: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		peeks, err := s.peek(ctx, zs)
		if err != nil {
			return nil, fmt.Errorf("txmanager: redis undone: %w", err)
		}
		var drop []any
		var active []redis.Z
		for i, z := range zs {
			id, p := z.Member.(string), peeks[i]
			switch {
			case p.corrupt:
				offset++
			case !p.found || p.state.Terminal():
				drop = append(drop, id)
			case p.state == GroupActive:
				active = append(active, redis.Z{Score: float64(p.deadlineMS), Member: id})
				offset++
			case p.state == GroupPreparing:
				// Owed prepare requests, and still bound by its deadline.
				active = append(active, redis.Z{Score: float64(p.deadlineMS), Member: id})
				ids = append(ids, id)
				offset++
			default:
				ids = append(ids, id)
				offset++
			}
		}
		if len(drop) > 0 || len(active) > 0 {
			pipe := s.c.Pipeline()
			if len(drop) > 0 {
				pipe.ZRem(ctx, s.undone, drop...)
			}
			if len(active) > 0 {
				pipe.ZAddLT(ctx, s.deadlines, active...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("txmanager: redis undone: clean index: %w", err)
			}
		}
		if int64(len(zs)) < want {
			break
		}
	}
	return ids, nil
}

// Ping sends PING.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("txmanager: redis ping: %w", err)
	}
	return nil
}

// Close does nothing: the client belongs to the caller. Safe to call
// multiple times.
func (s *RedisStore) Close() error { return nil }
