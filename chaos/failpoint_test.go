//go:build chaos && failpoint

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	fp "github.com/golcn/golcn/internal/failpoint"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txmanager"
)

// s4Point is one of S4's crash points and the outcome every group the
// TxManager died at must reach.
type s4Point struct {
	label, name string
	prob        float64
	want        string // "commit", "rollback" or "either" (all-or-none, I5)
}

// s4Points: P1's outcome is not presumed abort in this design. A group
// whose TxManager died before persisting the commit decision is still
// PREPARING in the store; the restarted TxManager's retrier asks the
// branches to prepare again and commits if they all answer before the
// deadline, or rolls back (deadline, lost owner). Either way all-or-none,
// which the checker proves (I5); the initiator was told nothing yet.
var s4Points = []s4Point{
	{"P1", fp.BeforeCommitDecide, 0.05, "either"},
	{"P2", fp.AfterCommitDecide, 0.05, "commit"},
	{"P3", fp.MidCommitNotify, 0.05, "commit"},
	{"P4", fp.AfterCommitNotify, 0.05, "commit"},
	{"P5", fp.MidRollbackNotify, 0.3, "rollback"},
}

// S4 — the TxManager (a failpoint build) SIGKILLs itself at each of the
// protocol points P1–P5 in turn, restarted 1 s after each death; every
// group it died at must reach its point's outcome on every participant
// (I5: all-or-none, checked against the ledgers), within T_rec of the last
// restart, and the initiator is never told ok for a group that ends
// rolled back (I3).
func TestS4CoordinatorCrashAtProtocolPoints(t *testing.T) {
	skipShort(t)
	perPoint := int64(10 * scale(t)) // the plan: 200 (CI), 2,000 (nightly); see chaos/doc.go
	arm := func(i int) string { return fmt.Sprintf("%s:p%g", s4Points[i].name, s4Points[i].prob) }
	c := newCluster(t, "S4", clusterOpts{mode: sqlproxy.ModeXA, tmEnv: []string{fp.Env + "=" + arm(0)}})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(scale(t))*8*time.Minute)
	defer cancel()

	var mu sync.Mutex
	cur, deaths := 0, int64(0)
	c.tm.setOnDeath(func() {
		mu.Lock()
		defer mu.Unlock()
		if cur >= len(s4Points) {
			return
		}
		deaths++
		if deaths < perPoint {
			return
		}
		cur, deaths = cur+1, 0
		if cur < len(s4Points) {
			c.tm.setEnv(fp.Env, arm(cur))
			return
		}
		c.tm.setEnv(fp.Env, "") // all points done: run clean
		cancel()
	})
	stopReader := c.startReader(false)
	c.workload(ctx, func(int64) bool { return false })
	stopReader()
	mu.Lock()
	done := cur
	mu.Unlock()
	if done < len(s4Points) {
		t.Errorf("only %d of %d points done (%d deaths at %s) in the time limit", done, len(s4Points), deaths, s4Points[min(done, len(s4Points)-1)].label)
	}
	fig, _ := c.finish(start, CheckOptions{})

	// Which group the TxManager died at, at which point: the line the
	// failpoint writes before SIGKILL.
	fired, err := noteLines(c.tm.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, p := range s4Points {
		var groups []string
		for _, d := range fired[p.name] {
			groups = append(groups, field(d, "group"))
		}
		wrong := 0
		var commits, rollbacks int
		for _, g := range groups {
			rec, err := c.store.Get(context.Background(), g)
			if err != nil {
				t.Errorf("%s: group %s: %v", p.label, g, err)
				continue
			}
			switch rec.State {
			case txmanager.GroupCommitted:
				commits++
			case txmanager.GroupRolledBack:
				rollbacks++
			default:
				t.Errorf("%s: group %s is %s after quiescence", p.label, g, rec.State)
				continue
			}
			if (p.want == "commit" && rec.State != txmanager.GroupCommitted) || (p.want == "rollback" && rec.State != txmanager.GroupRolledBack) {
				wrong++
				if wrong <= 3 {
					t.Errorf("%s (%s): group %s ended %s, want %s", p.label, p.name, g, rec.State, p.want)
				}
			}
		}
		if int64(len(groups)) < perPoint {
			t.Errorf("%s: the TxManager died there %d times, want %d", p.label, len(groups), perPoint)
		}
		summary = append(summary, fmt.Sprintf("%s=%d (commit %d, rollback %d, wrong %d)", p.label, len(groups), commits, rollbacks, wrong))
	}
	line := "S4 kills per point: " + strings.Join(summary, " ")
	t.Log(line)
	appendSummary(line)
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the last restart, want ≤ %v", fig.quiescence, tRec)
	}
}

// S2 — duplicated, replayed and out-of-order messages: the TxManager
// pushes every decision three times, replays (p 0.3 per push) a decision
// it pushed at least a second earlier, and pushes (p 0.15 per push) a
// rollback for a branch that never joined (an empty rollback); the
// services' middleware holds some incoming calls (p 0.05) for 5.5 s, past
// their group's 5 s timeout (hanging branches). Pass: I1–I9 (no leg
// applied twice, no ghost leg of a group rolled back before its branch
// arrived, nothing left open), every empty rollback acknowledged as rolled
// back (the participant writes nothing: it holds no such branch), every
// hanging branch refused.
func TestS2DuplicateReplayedAndLateMessages(t *testing.T) {
	skipShort(t)
	c := newCluster(t, "S2", clusterOpts{mode: sqlproxy.ModeXA,
		tmEnv:  []string{fp.Env + "=" + fp.NotifyDuplicate + "," + fp.NotifyReplay + ":p0.3," + fp.NotifyEmpty + ":p0.15"},
		svcEnv: []string{fp.Env + "=" + fp.BranchDelay + ":p0.05", fp.DelayEnv + "=5500ms"}})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(scale(t))*90*time.Second) // the plan: 1,000 groups; see chaos/doc.go
	defer cancel()
	stopReader := c.startReader(false)
	c.workload(ctx, func(int64) bool { return false })
	stopReader()
	fig, _ := c.finish(start, CheckOptions{})

	count := func(path string) map[string][]string {
		lines, err := noteLines(path)
		if err != nil {
			t.Fatal(err)
		}
		return lines
	}
	tm := count(c.tm.logPath)
	emptyPushed := map[string]bool{}
	for _, d := range tm[fp.NotifyEmpty] {
		emptyPushed[field(d, "branch")] = true
	}
	acked, wrongAck := 0, 0
	for _, d := range tm[fp.EmptyAcked] {
		if !emptyPushed[field(d, "branch")] {
			continue
		}
		acked++
		if field(d, "outcome") != "rolled_back" {
			wrongAck++
			t.Errorf("empty rollback acknowledged %q, want rolled_back: %s", field(d, "outcome"), d)
		}
	}
	var delayed, refused int
	for _, s := range services {
		l := count(c.svcs[s].logPath)
		delayed += len(l[fp.BranchDelay])
		for _, d := range l[fp.BranchDelayDone] {
			if st := field(d, "status"); st != "" && st[0] != '2' {
				refused++
			} else {
				t.Errorf("%s: a hanging branch was served: %s", s, d)
			}
		}
	}
	line := fmt.Sprintf("S2 duplicate-pushes=%d replays=%d empty-rollbacks=%d (acked rolled back %d) hanging=%d (refused %d)",
		2*len(tm[fp.NotifyDuplicate]), len(tm[fp.NotifyReplay]), len(emptyPushed), acked, delayed, refused)
	t.Log(line)
	appendSummary(line)
	if acked != len(emptyPushed) {
		t.Errorf("%d of %d empty rollbacks acknowledged", acked, len(emptyPushed))
	}
	if refused != delayed {
		t.Errorf("%d of %d hanging branches refused", refused, delayed)
	}
	if len(tm[fp.NotifyDuplicate]) == 0 || len(tm[fp.NotifyReplay]) == 0 || len(emptyPushed) == 0 || delayed == 0 {
		t.Error("a message failpoint never fired")
	}
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the workload, want ≤ %v", fig.quiescence, tRec)
	}
}

// noteLines reads a node log's failpoint lines ("failpoint: <name> fired
// <detail>"): the details per failpoint name.
func noteLines(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read failpoint lines: %w", err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "failpoint: ")
		if !ok {
			continue
		}
		name, detail, _ := strings.Cut(rest, " fired ")
		out[name] = append(out[name], detail)
	}
	return out, sc.Err()
}

// field returns the value of key=value in a failpoint line's detail.
func field(detail, key string) string {
	for _, kv := range strings.Fields(detail) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
