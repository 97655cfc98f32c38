package txmanager

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Operator data: what every Store keeps, besides the group records, for
// the people who run the TxManager: a timeline of each group's events and
// compensation markers (work the TxManager could not finish by itself).

// MaxEvents bounds a group's timeline: a store keeps the newest MaxEvents.
const MaxEvents = 200

// Timeline event kinds.
const (
	EventCreated    = "created"
	EventJoined     = "joined"
	EventVoted      = "voted"
	EventPreparing  = "preparing"
	EventDecided    = "decided"
	EventBranchDone = "branch-done"
	// EventFinished is not stored: the API derives it from the record's
	// FinishedMS (see timelineView).
	EventFinished = "finished"
)

// TimelineEvent is one entry of a group's timeline: a persisted transition
// (or the group's creation). State is the branch's new state for joined,
// voted and branch-done, the group's for created, preparing and decided.
type TimelineEvent struct {
	AtMS   int64  `json:"at_ms"`
	Kind   string `json:"kind"`
	Branch string `json:"branch,omitempty"`
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// createdEvent is the first event of every group.
func createdEvent(g *Group) TimelineEvent {
	return TimelineEvent{AtMS: g.CreatedMS, Kind: EventCreated, State: g.State.String()}
}

// transitionEvents are the events a store appends when it applies t: one,
// or two for a decision that carries a vote (the vote first).
func transitionEvents(t Transition) []TimelineEvent {
	if t.Kind == TransDecide && t.BranchID != "" {
		vote, decision := t.Split()
		return []TimelineEvent{transitionEvent(vote), transitionEvent(decision)}
	}
	return []TimelineEvent{transitionEvent(t)}
}

// transitionEvent is the event of t (a decision's, when it carries a vote).
func transitionEvent(t Transition) TimelineEvent {
	e := TimelineEvent{AtMS: t.AtMS, Reason: t.Reason}
	switch t.Kind {
	case TransJoin:
		e.Kind, e.Branch, e.State, e.Reason = EventJoined, t.Branch.ID, t.Branch.State.String(), t.Branch.Reason
	case TransVote:
		e.Kind, e.Branch, e.State = EventVoted, t.BranchID, t.BranchTo.String()
	case TransDecide:
		e.Kind, e.State = EventDecided, t.GroupTo.String()
		if t.GroupTo == GroupPreparing {
			e.Kind = EventPreparing
		}
	case TransBranchDone:
		e.Kind, e.Branch, e.State = EventBranchDone, t.BranchID, t.BranchTo.String()
	default:
		panic(fmt.Sprintf("BUG: no event for transition kind %d", t.Kind))
	}
	return e
}

// appendEvent appends es to a timeline and keeps the newest MaxEvents.
func appendEvent(events []TimelineEvent, es ...TimelineEvent) []TimelineEvent {
	events = append(events, es...)
	if n := len(events); n > MaxEvents {
		events = append([]TimelineEvent(nil), events[n-MaxEvents:]...)
	}
	return events
}

// MarkerKind says why a compensation marker exists.
type MarkerKind string

// Marker kinds.
const (
	// MarkerBranchLost: a branch of the group was recorded LOST (its owner
	// went away before acknowledging a commit, or reported an outcome
	// contrary to the decision); its work may need fixing by hand. Created
	// with the transition that records the branch LOST, so it exists by the
	// time the group is terminal with attention.
	MarkerBranchLost MarkerKind = "branch_lost"
	// MarkerPhase2Stuck: phase 2 of the decided group has been retried for
	// longer than Config.AttentionAfter without finishing. One per group.
	// The TxManager resolves it itself (By "txmanager") when the group
	// finishes.
	MarkerPhase2Stuck MarkerKind = "phase2_stuck"
)

// Marker is a compensation marker: something about a group an operator
// must look at. It is kept until it is resolved, and the group's record
// (and timeline) is kept while the group has an open marker: a store never
// purges nor expires such a group. A resolved marker goes with its group,
// which is then kept for the retention period counted from the resolution.
type Marker struct {
	// ID is MarkerID(Group, Branch) for branch_lost, MarkerID(Group,
	// "phase2") for phase2_stuck: creating a marker is idempotent.
	ID       string     `json:"id"`
	Kind     MarkerKind `json:"kind"`
	Group    string     `json:"group"`
	Branch   string     `json:"branch,omitempty"`
	Service  string     `json:"service,omitempty"`
	Instance string     `json:"instance,omitempty"`
	Detail   string     `json:"detail"`
	// CreatedMS is kept as a JSON string so that the Redis scripts (whose
	// JSON numbers are doubles) carry it exactly.
	CreatedMS  int64       `json:"created_ms,string"`
	Resolution *Resolution `json:"resolution,omitempty"`
}

// Open reports whether m awaits resolution.
func (m *Marker) Open() bool { return m.Resolution == nil }

// Resolution is the audit record of a resolved marker.
type Resolution struct {
	By     string `json:"by"` // the authenticated principal, or "txmanager"
	AtMS   int64  `json:"at_ms,string"`
	Reason string `json:"reason"`
}

// ResolvedBySystem is Resolution.By when the TxManager resolved a marker
// itself (a stuck phase 2 that finished).
const ResolvedBySystem = "txmanager"

// phase2Suffix ends the id of a group's phase2_stuck marker.
const phase2Suffix = "phase2"

// MarkerID returns the id of group's marker about what (a branch id, or
// "phase2"). Group ids may contain dots; what may not.
func MarkerID(group, what string) string { return group + "." + what }

// markerGroup returns the group id of a marker id.
func markerGroup(id string) (string, bool) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || i == len(id)-1 {
		return "", false
	}
	return id[:i], true
}

// lostMarkers returns a marker for each branch that t made LOST in after.
func lostMarkers(t Transition, after *Group) []Marker {
	if t.Kind != TransBranchDone || t.BranchTo != BranchLost {
		return nil
	}
	b, ok := after.Branch(t.BranchID)
	if !ok {
		return nil
	}
	return []Marker{{ID: MarkerID(after.ID, b.ID), Kind: MarkerBranchLost, Group: after.ID, Branch: b.ID,
		Service: b.Service, Instance: b.Instance, Detail: t.Reason, CreatedMS: t.AtMS}}
}

// stuckResolution is how the TxManager resolves a group's phase2_stuck
// marker when the group finishes.
func stuckResolution(atMS int64) Resolution {
	return Resolution{By: ResolvedBySystem, AtMS: atMS, Reason: "phase 2 finished"}
}

// MarkerStatus selects markers in Store.Markers.
type MarkerStatus uint8

// Marker statuses.
const (
	MarkersOpen MarkerStatus = iota + 1
	MarkersResolved
	MarkersAll
)

// ParseMarkerStatus reads "open", "resolved" or "all".
func ParseMarkerStatus(s string) (MarkerStatus, error) {
	switch s {
	case "open":
		return MarkersOpen, nil
	case "resolved":
		return MarkersResolved, nil
	case "all":
		return MarkersAll, nil
	}
	return 0, fmt.Errorf("txmanager: unknown marker status %q (want open, resolved or all)", s)
}

func (st MarkerStatus) match(m *Marker) bool {
	switch st {
	case MarkersOpen:
		return m.Open()
	case MarkersResolved:
		return !m.Open()
	}
	return true
}

// Errors of the operator data.
var (
	// ErrResolved: the marker is resolved already. It wraps ErrConflict.
	ErrResolved = fmt.Errorf("%w: marker already resolved", ErrConflict)
	// ErrBadCursor: a list cursor that no store page returned.
	ErrBadCursor = errors.New("txmanager: invalid cursor")
)

// errMarkerNotFound is every store's answer for an unknown marker id.
func errMarkerNotFound(id string) error {
	return fmt.Errorf("%w: compensation marker %s", ErrNotFound, id)
}

// ListQuery selects groups for Store.List. The zero value of a filter
// means no filter.
type ListQuery struct {
	State   GroupState // only this state
	Service string     // only groups started by it or with a branch of it
	// CreatedAfterMS (inclusive) and CreatedBeforeMS (exclusive) bound
	// CreatedMS.
	CreatedAfterMS, CreatedBeforeMS int64
	// Attention, when set, keeps only groups that need attention (*Attention
	// true: Attention text or an open marker) or only the others.
	Attention *bool
	Limit     int    // page size; at most MaxListLimit, default DefaultListLimit
	Cursor    string // ListPage.Next of the previous page
}

// List page sizes.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// limit returns the effective page size.
func (q ListQuery) limit() int {
	switch {
	case q.Limit <= 0:
		return DefaultListLimit
	case q.Limit > MaxListLimit:
		return MaxListLimit
	}
	return q.Limit
}

// scanBudget bounds the records one List call examines, so that a filter
// that matches little cannot make one request read the whole store; the
// page then ends early with a cursor.
func (q ListQuery) scanBudget() int { return max(1000, 20*q.limit()) }

// Listed is one group of a ListPage.
type Listed struct {
	Group       *Group
	OpenMarkers int
}

// NeedsAttention reports whether the group needs an operator.
func (l Listed) NeedsAttention() bool { return l.Group.Attention != "" || l.OpenMarkers > 0 }

// ListPage is one page of Store.List, newest group first (by CreatedMS,
// then id, descending). Next is empty on the last page.
type ListPage struct {
	Groups []Listed
	Next   string
}

// matches reports whether l passes q's filters (the time bounds are the
// store's to apply).
func (q ListQuery) matches(l Listed) bool {
	g := l.Group
	if q.State != 0 && g.State != q.State {
		return false
	}
	if q.Attention != nil && l.NeedsAttention() != *q.Attention {
		return false
	}
	if q.Service != "" && g.StarterService != q.Service {
		found := false
		for _, b := range g.Branches {
			if b.Service == q.Service {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return q.inTime(g.CreatedMS)
}

func (q ListQuery) inTime(ms int64) bool {
	return ms >= q.CreatedAfterMS && (q.CreatedBeforeMS == 0 || ms < q.CreatedBeforeMS)
}

// listPos is a position in the newest-first order of List: a page resumes
// after it.
type listPos struct {
	ms int64
	id string
}

// before reports whether (ms, id) comes after p in newest-first order.
func (p listPos) before(ms int64, id string) bool {
	return ms < p.ms || (ms == p.ms && id < p.id)
}

// pageScan fills a ListPage from entries met in newest-first order, each
// announced with next before it is examined and, if it is a group, offered.
type pageScan struct {
	examined int
	last     listPos // the last entry examined
}

// next reports whether the entry at (ms, id) may be examined. When the page
// is full, or the scan budget spent, it sets p.Next to resume after the
// last entry examined (there is at least one more: this one) and reports
// false.
func (s *pageScan) next(p *ListPage, q ListQuery, ms int64, id string) bool {
	if len(p.Groups) == q.limit() || s.examined == q.scanBudget() {
		p.Next = encodeCursor(s.last)
		return false
	}
	s.examined++
	s.last = listPos{ms, id}
	return true
}

// offer adds l to the page if it matches q.
func (s *pageScan) offer(p *ListPage, q ListQuery, l Listed) {
	if q.matches(l) {
		p.Groups = append(p.Groups, l)
	}
}

func encodeCursor(p listPos) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.ms, 10) + ":" + p.id))
}

// decodeCursor reads a cursor; "" is the start (ok false).
func decodeCursor(c string) (p listPos, ok bool, err error) {
	if c == "" {
		return listPos{}, false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return listPos{}, false, ErrBadCursor
	}
	ms, id, found := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !found || err != nil || id == "" {
		return listPos{}, false, ErrBadCursor
	}
	return listPos{ms: n, id: id}, true, nil
}

// Counts is what Store.Count found.
type Counts struct {
	ByState map[GroupState]int
	// Complete is false when the store holds more groups than were
	// counted (the newest were counted).
	Complete bool
}

// InFlight is the number of counted groups that are not terminal.
func (c Counts) InFlight() int {
	n := 0
	for s, k := range c.ByState {
		if !s.Terminal() {
			n += k
		}
	}
	return n
}
