package txmanager

import (
	"slices"
	"time"
)

// JSON shapes of the REST API (docs/openapi.yaml, components.schemas).

// GroupView is the JSON shape of a group in the HTTP API.
type GroupView struct {
	ID             string       `json:"id"`
	State          string       `json:"state"`
	StarterService string       `json:"starter_service"`
	Created        time.Time    `json:"created"`
	Deadline       time.Time    `json:"deadline"`
	Decided        *time.Time   `json:"decided,omitempty"`
	Finished       *time.Time   `json:"finished,omitempty"`
	Reason         string       `json:"reason,omitempty"`
	Attention      string       `json:"attention,omitempty"`
	Branches       []BranchView `json:"branches"`
}

// BranchView is the JSON shape of a branch in the HTTP API.
type BranchView struct {
	ID         string `json:"id"`
	Service    string `json:"service"`
	Instance   string `json:"instance"`
	Datasource string `json:"datasource"`
	Mode       string `json:"mode,omitempty"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
}

// msTime converts unix ms to a UTC time; 0 is nil.
func msTime(v int64) *time.Time {
	if v == 0 {
		return nil
	}
	t := time.UnixMilli(v).UTC()
	return &t
}

// View returns g's HTTP API shape.
func (g *Group) View() GroupView {
	v := GroupView{ID: g.ID, State: g.State.String(), StarterService: g.StarterService,
		Created: time.UnixMilli(g.CreatedMS).UTC(), Deadline: time.UnixMilli(g.DeadlineMS).UTC(),
		Decided: msTime(g.DecidedMS), Finished: msTime(g.FinishedMS), Reason: g.Reason, Attention: g.Attention,
		Branches: make([]BranchView, 0, len(g.Branches))}
	for _, b := range g.Branches {
		v.Branches = append(v.Branches, BranchView{ID: b.ID, Service: b.Service, Instance: b.Instance,
			Datasource: b.Datasource, Mode: b.Mode, State: b.State.String(), Reason: b.Reason})
	}
	return v
}

// GroupDetail is a group with its timeline and compensation markers
// (GET /v1/groups/{id}).
type GroupDetail struct {
	GroupView
	Timeline      []EventView  `json:"timeline"`
	Compensations []MarkerView `json:"compensations"`
}

// EventView is the JSON shape of a timeline event.
type EventView struct {
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Branch string    `json:"branch,omitempty"`
	State  string    `json:"state,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// detailView builds a GroupDetail. The timeline ends with a "finished"
// event derived from the record when the group is terminal.
func detailView(g *Group, events []TimelineEvent, markers []Marker) GroupDetail {
	d := GroupDetail{GroupView: g.View(), Timeline: make([]EventView, 0, len(events)+1), Compensations: make([]MarkerView, 0, len(markers))}
	for _, e := range events {
		d.Timeline = append(d.Timeline, EventView{At: time.UnixMilli(e.AtMS).UTC(), Kind: e.Kind, Branch: e.Branch, State: e.State, Reason: e.Reason})
	}
	if g.State.Terminal() {
		d.Timeline = append(d.Timeline, EventView{At: time.UnixMilli(g.FinishedMS).UTC(), Kind: EventFinished, State: g.State.String(), Reason: g.Attention})
	}
	for i := range markers {
		d.Compensations = append(d.Compensations, markerView(markers[i]))
	}
	return d
}

// GroupSummary is one group of GET /v1/groups.
type GroupSummary struct {
	ID                string     `json:"id"`
	State             string     `json:"state"`
	StarterService    string     `json:"starter_service"`
	Services          []string   `json:"services"`
	Branches          int        `json:"branches"`
	Created           time.Time  `json:"created"`
	Deadline          time.Time  `json:"deadline"`
	Decided           *time.Time `json:"decided,omitempty"`
	Finished          *time.Time `json:"finished,omitempty"`
	Reason            string     `json:"reason,omitempty"`
	Attention         string     `json:"attention,omitempty"`
	OpenCompensations int        `json:"open_compensations,omitempty"`
}

func summaryView(l Listed) GroupSummary {
	g := l.Group
	services := []string{g.StarterService}
	for _, b := range g.Branches {
		services = append(services, b.Service)
	}
	slices.Sort(services)
	return GroupSummary{ID: g.ID, State: g.State.String(), StarterService: g.StarterService, Services: slices.Compact(services),
		Branches: len(g.Branches), Created: time.UnixMilli(g.CreatedMS).UTC(), Deadline: time.UnixMilli(g.DeadlineMS).UTC(),
		Decided: msTime(g.DecidedMS), Finished: msTime(g.FinishedMS), Reason: g.Reason, Attention: g.Attention,
		OpenCompensations: l.OpenMarkers}
}

// GroupList is GET /v1/groups's answer.
type GroupList struct {
	Groups     []GroupSummary `json:"groups"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// MarkerView is the JSON shape of a compensation marker.
type MarkerView struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	Group      string          `json:"group"`
	Branch     string          `json:"branch,omitempty"`
	Service    string          `json:"service,omitempty"`
	Instance   string          `json:"instance,omitempty"`
	Detail     string          `json:"detail"`
	Created    time.Time       `json:"created"`
	Status     string          `json:"status"`
	Resolution *ResolutionView `json:"resolution,omitempty"`
}

// ResolutionView is the JSON shape of a marker's resolution.
type ResolutionView struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

func markerView(m Marker) MarkerView {
	v := MarkerView{ID: m.ID, Kind: string(m.Kind), Group: m.Group, Branch: m.Branch, Service: m.Service,
		Instance: m.Instance, Detail: m.Detail, Created: time.UnixMilli(m.CreatedMS).UTC(), Status: "open"}
	if r := m.Resolution; r != nil {
		v.Status = "resolved"
		v.Resolution = &ResolutionView{By: r.By, At: time.UnixMilli(r.AtMS).UTC(), Reason: r.Reason}
	}
	return v
}

// CompensationList is GET /v1/compensations's answer.
type CompensationList struct {
	Compensations []MarkerView `json:"compensations"`
}

// Overview is GET /v1/overview's answer.
type Overview struct {
	GroupsByState    map[string]int `json:"groups_by_state"`
	Complete         bool           `json:"complete"`
	InFlight         int            `json:"in_flight"`
	NeedingAttention int            `json:"needing_attention"`
	DecisionLatency  LatencyView    `json:"decision_latency"`
}

// LatencyView summarises recent decision latencies.
type LatencyView struct {
	WindowSeconds int     `json:"window_seconds"`
	Count         int     `json:"count"`
	P50MS         float64 `json:"p50_ms"`
	P99MS         float64 `json:"p99_ms"`
}
