package txmanager

import (
	"context"
	"net/http"
	"time"
)

// The participant endpoints (service role): the protocol over HTTP for
// services without the Go client. They run through the same core (Step)
// as websocket requests. An HTTP caller is a session-less client whose
// instance id is "<service>/http": every HTTP caller of a service is that
// one client (it may decide the groups it started over HTTP and vote for
// and acknowledge the branches it joined over HTTP). It has no websocket,
// so it gets no pushes: it polls GET /v1/groups/{id}/branches/{branch}.
//
// Lost-branch detection counts such a client as present while it makes
// requests: each request counts as the end of a session, so its branches
// of a committed group become LOST only after it has made no request for
// lost_after (a participant that polls more often than that is never
// presumed gone). Like websocket sessions, this is each TxManager's own
// view: behind a load balancer, poll often enough for every TxManager.

// ServiceHeader names the service of a REST participant when the
// TxManager runs with auth.insecure (no token to take it from).
const ServiceHeader = "Lcn-Service"

// httpMaxWait bounds how long POST /v1/groups/{id}/decide waits for the
// prepare phase of xa branches.
const httpMaxWait = 30 * time.Second

// httpClient returns the REST caller's service and instance id, and marks
// the instance as present (lost-branch detection).
func (s *Server) httpClient(r *http.Request) (service, instance string, aerr *apiError) {
	p := principalOf(r)
	service = p.service
	if service == "" {
		service = r.Header.Get(ServiceHeader)
		if service == "" {
			return "", "", badParam(ServiceHeader, "this header names the calling service when the TxManager runs without authentication")
		}
	}
	instance = service + "/http"
	s.mu.Lock()
	s.sessionEndedLocked(instance)
	s.mu.Unlock()
	return service, instance, nil
}

// writeReply answers a core Reply: ok (with okCode and body), 404, 403 or
// 409 with the group's state.
func writeReply(w http.ResponseWriter, r Reply, okCode int, body any) {
	switch r.Code {
	case ReplyOK:
		writeJSON(w, okCode, body)
	case ReplyNotFound:
		writeAPIError(w, &apiError{code: http.StatusNotFound, msg: orDefault(r.Reason, "not found")})
	case ReplyForbidden:
		writeAPIError(w, &apiError{code: http.StatusForbidden, msg: r.Reason})
	default:
		e := &apiError{code: http.StatusConflict, msg: orDefault(r.Reason, "refused in the group's state")}
		if r.State != 0 {
			e.state = r.State.String()
		}
		writeAPIError(w, e)
	}
}

// StateReply is the answer of decide, vote and ack.
type StateReply struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

func stateReply(r Reply) StateReply {
	out := StateReply{Reason: r.Reason}
	if r.State != 0 {
		out.State = r.State.String()
	}
	return out
}

type createRequest struct {
	TimeoutMS int64 `json:"timeout_ms"`
}

// Created is POST /v1/groups's answer.
type Created struct {
	ID       string    `json:"id"`
	Deadline time.Time `json:"deadline"`
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	aerr := decodeBody(r, &req, true)
	if aerr == nil && req.TimeoutMS < 0 {
		aerr = badParam("timeout_ms", "must not be negative")
	}
	var service, instance string
	if aerr == nil {
		service, instance, aerr = s.httpClient(r)
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	g, err := s.create(r.Context(), service, instance, time.Duration(req.TimeoutMS)*time.Millisecond)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeJSON(w, http.StatusCreated, Created{ID: g.ID, Deadline: time.UnixMilli(g.DeadlineMS).UTC()})
}

// participantRequest reads what every participant request about a group
// carries, in this order: the group id from the path, the JSON body into
// req, the body's own checks (validate, may be nil) and the calling client.
// The first failure is returned.
func (s *Server) participantRequest(r *http.Request, req any, validate func() *apiError) (id, service, instance string, aerr *apiError) {
	id, aerr = groupID(r)
	if aerr == nil && req != nil {
		aerr = decodeBody(r, req, false)
	}
	if aerr == nil && validate != nil {
		aerr = validate()
	}
	if aerr == nil {
		service, instance, aerr = s.httpClient(r)
	}
	return id, service, instance, aerr
}

// stepAndReply runs ev through the core and answers with the group's state.
func (s *Server) stepAndReply(w http.ResponseWriter, r *http.Request, ev Event) {
	rep, err := s.step(r.Context(), ev)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeReply(w, rep, http.StatusOK, stateReply(rep))
}

type decideRequest struct {
	Commit *bool `json:"commit"`
}

func (s *Server) serveDecide(w http.ResponseWriter, r *http.Request) {
	var req decideRequest
	id, _, instance, aerr := s.participantRequest(r, &req, func() *apiError {
		if req.Commit == nil {
			return badParam("commit", "required: true to commit, false to roll back")
		}
		return nil
	})
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	ev := Event{Kind: EvDecide, Group: id, Instance: instance, Commit: *req.Commit}
	rep, err := s.step(r.Context(), ev)
	if err == nil && ev.Commit && rep.Code == ReplyOK && rep.State == GroupPreparing {
		// The answer to a commit is the decision: wait for the prepare
		// phase (bounded; the answer is PREPARING if it is not over).
		ctx, cancel := context.WithTimeout(r.Context(), httpMaxWait)
		rep, err = s.awaitDecision(ctx, ev)
		cancel()
	}
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeReply(w, rep, http.StatusOK, stateReply(rep))
}

type joinRequest struct {
	Datasource string `json:"datasource"`
	Mode       string `json:"mode"`
}

// Joined is POST /v1/groups/{id}/branches's answer.
type Joined struct {
	Branch string `json:"branch"`
}

func (s *Server) serveJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	id, service, instance, aerr := s.participantRequest(r, &req, func() *apiError {
		switch {
		case req.Datasource == "":
			return badParam("datasource", "required: names the datasource (database) of the branch")
		case req.Mode == "xa":
			return badParam("mode", "xa needs the prepare requests the Go client receives on its websocket; over HTTP a branch is lcn")
		case req.Mode != "" && req.Mode != "lcn":
			return badParam("mode", "want lcn, got %q", req.Mode)
		}
		return nil
	})
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	ev := Event{Kind: EvJoin, Group: id, Instance: instance,
		Branch: Branch{ID: newBranchID(), Service: service, Datasource: req.Datasource, Mode: "lcn"}}
	rep, err := s.step(r.Context(), ev)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	writeReply(w, rep, http.StatusCreated, Joined{Branch: ev.Branch.ID})
}

// BranchStatus is GET /v1/groups/{id}/branches/{branch}'s answer.
type BranchStatus struct {
	GroupState  string `json:"group_state"`
	BranchState string `json:"branch_state"`
}

func (s *Server) serveBranch(w http.ResponseWriter, r *http.Request) {
	id, service, _, aerr := s.participantRequest(r, nil, nil)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	g, err := s.store.Get(r.Context(), id)
	if err != nil {
		writeAPIError(w, storeError(err))
		return
	}
	b, ok := g.Branch(r.PathValue("branch"))
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, "group "+id+" has no branch "+r.PathValue("branch"))
	case b.Service != service && principalOf(r).role < RoleAdmin:
		writeError(w, http.StatusForbidden, "branch belongs to another service")
	default:
		writeJSON(w, http.StatusOK, BranchStatus{GroupState: g.State.String(), BranchState: b.State.String()})
	}
}

type voteRequest struct {
	OK     *bool  `json:"ok"`
	Reason string `json:"reason"`
}

func (s *Server) serveVote(w http.ResponseWriter, r *http.Request) {
	var req voteRequest
	id, _, instance, aerr := s.participantRequest(r, &req, func() *apiError {
		if req.OK == nil {
			return badParam("ok", "required: true when the branch's work is done and held, false when it failed")
		}
		return nil
	})
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	s.stepAndReply(w, r, Event{Kind: EvVote, Group: id, Instance: instance, BranchID: r.PathValue("branch"), OK: *req.OK, Reason: req.Reason})
}

type ackRequest struct {
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

func (s *Server) serveAck(w http.ResponseWriter, r *http.Request) {
	var req ackRequest
	var outcome BranchState
	id, _, instance, aerr := s.participantRequest(r, &req, func() *apiError {
		outcome = map[string]BranchState{"committed": BranchCommitted, "rolled_back": BranchRolledBack, "lost": BranchLost}[req.Outcome]
		if outcome == 0 {
			return badParam("outcome", "want committed, rolled_back or lost, got %q", req.Outcome)
		}
		return nil
	})
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	s.stepAndReply(w, r, Event{Kind: EvAck, Group: id, Instance: instance, BranchID: r.PathValue("branch"), Outcome: outcome, Reason: req.Reason})
}
