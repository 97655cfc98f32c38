package txmanager

import (
	"sync"
	"time"

	"github.com/golcn/golcn/internal/failpoint"
	"github.com/golcn/golcn/internal/wire"
)

// fpState is what the fault suite's message failpoints (S2) remember. It
// is used only in failpoint builds (failpoint.Enabled), where the calls
// below are compiled in; elsewhere it stays zero.
type fpState struct {
	mu    sync.Mutex
	empty map[string]bool // branch ids of empty rollbacks pushed
	sent  []fpSent        // recent decision pushes, for replays
	next  int
}

type fpSent struct {
	instance string
	m        *wire.Message
	at       time.Time
}

const fpReplayRing = 512

// fpAfterPush runs the message failpoints after decision m was pushed to
// ss: duplicate it, push an empty rollback beside it, replay an older
// decision.
func (s *Server) fpAfterPush(ss *session, m *wire.Message) {
	detail := "group=" + m.Group + " branch=" + m.Branch
	if failpoint.Fire(failpoint.NotifyDuplicate) {
		ss.push(m)
		ss.push(m)
		failpoint.Note(failpoint.NotifyDuplicate, detail+" copies=2")
	}
	if failpoint.Fire(failpoint.NotifyEmpty) {
		b := newBranchID()
		s.fp.mu.Lock()
		if s.fp.empty == nil {
			s.fp.empty = map[string]bool{}
		}
		s.fp.empty[b] = true
		s.fp.mu.Unlock()
		ss.push(&wire.Message{Type: wire.TypeDecision, Group: m.Group, Branch: b})
		failpoint.Note(failpoint.NotifyEmpty, "group="+m.Group+" branch="+b)
	}
	now := s.now()
	s.fp.mu.Lock()
	var old *fpSent
	for i := range s.fp.sent {
		if e := &s.fp.sent[(s.fp.next+i)%len(s.fp.sent)]; now.Sub(e.at) >= time.Second {
			old = e // the oldest entry at least a second old
			break
		}
	}
	var replay fpSent
	if old != nil {
		replay = *old
	}
	if len(s.fp.sent) < fpReplayRing {
		s.fp.sent = append(s.fp.sent, fpSent{instance: ss.id, m: m, at: now})
	} else {
		s.fp.sent[s.fp.next] = fpSent{instance: ss.id, m: m, at: now}
		s.fp.next = (s.fp.next + 1) % fpReplayRing
	}
	s.fp.mu.Unlock()
	if old != nil && failpoint.Fire(failpoint.NotifyReplay) {
		s.mu.Lock()
		to := s.sessions[replay.instance]
		s.mu.Unlock()
		if to != nil {
			to.push(replay.m)
			failpoint.Note(failpoint.NotifyReplay, "group="+replay.m.Group+" branch="+replay.m.Branch+" age="+now.Sub(replay.at).Round(time.Millisecond).String())
		}
	}
}

// fpAcked notes the acknowledgement of an empty rollback.
func (s *Server) fpAcked(m *wire.Message) {
	s.fp.mu.Lock()
	empty := s.fp.empty[m.Branch]
	delete(s.fp.empty, m.Branch)
	s.fp.mu.Unlock()
	if empty {
		failpoint.Note(failpoint.EmptyAcked, "group="+m.Group+" branch="+m.Branch+" outcome="+m.Outcome)
	}
}
