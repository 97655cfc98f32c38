//go:build chaos

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txmanager"
)

// netnsEnv marks the inner run of S12: the test binary re-run under
// `ip netns exec <ns>`; its value is the namespace's name.
const netnsEnv = "CHAOS_NETNS"

// nftTable is the nftables table S12 owns inside its namespace.
const nftTable = "golcn_s12"

// s12Plan is S12's fault schedule.
type s12Plan struct {
	partitions int           // partitions injected
	asym       int           // of which asymmetric (only TxManager → participant dropped)
	dur        time.Duration // length of each partition
	gap        time.Duration // healed time between partitions (at least; a recovery may take longer)
}

// s12Figures: the plan's 20 partitions × 10 s (5 asymmetric) over about
// 5 min at CHAOS_SCALE ≥ 10 (× CHAOS_SCALE/10); the CI tier runs 6 × 8 s
// (2 asymmetric), about 1.5 min (see chaos/doc.go).
func s12Figures(scale int) s12Plan {
	if scale >= 10 {
		return s12Plan{partitions: 20 * scale / 10, asym: 5 * scale / 10, dur: 10 * time.Second, gap: 5 * time.Second}
	}
	return s12Plan{partitions: 6, asym: 2, dur: 8 * time.Second, gap: 7 * time.Second}
}

// S12 — network partitions (RELIABILITY.md S12, variant A). The test
// creates a fresh network namespace with lo up and re-runs itself inside
// it (`ip netns exec`), so that its nftables rules never touch the host.
// The inner run builds the usual cluster with each service on its own
// loopback address and partitions one service at a time by dropping its
// packets in the output hook: symmetric partitions cut the victim from the
// TxManager and from the other services (both ways), asymmetric ones drop
// only TxManager → victim. Established connections hang (nothing is
// reset). Pass: I1–I9, and after each heal the cluster recovers within
// T_rec: every group in doubt at the heal is terminal and a transfer with
// a leg on the victim, started after the heal, succeeded. Without
// `ip netns add` (not root) or nft, the test is skipped with the reason.
func TestS12Partitions(t *testing.T) {
	skipShort(t)
	if ns := os.Getenv(netnsEnv); ns != "" {
		runS12(t)
		return
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skipf("S12 needs nftables: exec.LookPath(%q): %v (apt-get install -y nftables)", "nft", err)
	}
	ns := fmt.Sprintf("golcn-s12-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("S12 needs a network namespace: `ip netns add %s`: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
	})
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{nft, "add", "table", "inet", nftTable + "_probe"},
		{nft, "delete", "table", "inet", nftTable + "_probe"},
	} {
		cmd := append([]string{"netns", "exec", ns}, args...)
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			t.Skipf("S12 cannot set up its namespace: `ip %s`: %v: %s", strings.Join(cmd, " "), err, bytes.TrimSpace(out))
		}
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("S12: find the test binary: %v", err)
	}
	args := []string{"netns", "exec", ns, exe, "-test.run=^TestS12Partitions$", "-test.count=1", "-test.v"}
	if dl, ok := t.Deadline(); ok {
		// Leave the outer run time to report an inner timeout.
		args = append(args, "-test.timeout="+(time.Until(dl)-30*time.Second).Round(time.Second).String())
	} else {
		args = append(args, "-test.timeout=0")
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), netnsEnv+"="+ns)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			t.Log("netns| " + sc.Text())
			out.Write(sc.Bytes())
			out.WriteByte('\n')
		}
		_, _ = io.Copy(io.Discard, pr) // a line over 4 MiB: drain, never block the child
	}()
	runErr := cmd.Run()
	_ = pw.Close()
	<-copied
	switch {
	case runErr != nil:
		t.Fatalf("S12 inner run (ip %s): %v", strings.Join(args, " "), runErr)
	case strings.Contains(out.String(), "--- SKIP: TestS12Partitions"):
		t.Skip("S12 inner run skipped (see its log above)")
	case !strings.Contains(out.String(), "--- PASS: TestS12Partitions"):
		t.Fatalf("S12 inner run (ip %s) exited 0 without passing TestS12Partitions", strings.Join(args, " "))
	}
}

// runS12 is the inner run: the cluster and its partitions, inside the
// namespace.
func runS12(t *testing.T) {
	plan := s12Figures(scale(t))
	if v := os.Getenv("CHAOS_S12_PARTITIONS"); v != "" { // shorter runs while developing
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CHAOS_S12_PARTITIONS=%q: want a positive integer", v)
		}
		plan.partitions, plan.asym = n, n/3
	}
	fw, err := newFirewall()
	if err != nil {
		t.Skipf("S12: %v", err)
	}
	t.Cleanup(func() {
		if err := fw.remove(); err != nil {
			t.Errorf("S12: %v", err)
		}
	})
	c := newCluster(t, "S12", clusterOpts{mode: sqlproxy.ModeXA, ownAddrs: true})
	_, tmPort, ok := strings.Cut(c.tm.addr, ":")
	if !ok {
		t.Fatalf("S12: TxManager address %q has no port", c.tm.addr)
	}
	t.Logf("S12 plan: %d partitions × %v (%d asymmetric), ≥ %v healed between", plan.partitions, plan.dur, plan.asym, plan.gap)

	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopReader := c.startReader(false)
	type heal struct {
		n        int
		victim   string
		asym     bool
		dropped  int64
		recovery time.Duration
		err      error
	}
	var heals []heal
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		defer cancel() // the workload ends with the nemesis
		rng := rand.New(rand.NewPCG(c.seed, 12))
		asym := map[int]bool{}
		for _, i := range rng.Perm(plan.partitions)[:plan.asym] {
			asym[i] = true
		}
		var order []int
		next := time.Now().Add(3 * time.Second) // warm-up
		for i := range plan.partitions {
			if !sleepUntil(ctx, next) {
				return
			}
			// Victims in rounds of a shuffled order: every service is
			// isolated once every three partitions.
			if i%len(services) == 0 {
				order = rng.Perm(len(services))
			}
			vi := order[i%len(services)]
			victim := services[vi]
			rules := partitionRules(svcIP(vi), tmPort, asym[i])
			kind := "symmetric"
			if asym[i] {
				kind = "asymmetric TxManager→" + victim
			}
			if err := fw.set(rules); err != nil {
				c.errorf("partition %d: %w", i+1, err)
				return
			}
			c.fault(fmt.Sprintf("partition %d: %s isolated (%s)", i+1, victim, kind))
			if !sleepUntil(ctx, time.Now().Add(plan.dur)) {
				_, _ = fw.heal()
				return
			}
			dropped, err := fw.heal()
			if err != nil {
				c.errorf("heal %d: %w", i+1, err)
				return
			}
			r := c.hist.Add(Record{Type: "nemesis", Fault: fmt.Sprintf("heal %d: %s (%d packets dropped)", i+1, victim, dropped)})
			c.lastT.Store(r.T)
			healedAt := time.Now()
			rec, err := c.recovery(ctx, victim, time.Duration(r.T))
			heals = append(heals, heal{n: i + 1, victim: victim, asym: asym[i], dropped: dropped, recovery: rec, err: err})
			t.Logf("S12 partition %d (%s, %s): %d packets dropped; recovered %v after the heal (err %v)",
				i+1, victim, kind, dropped, rec.Round(time.Millisecond), err)
			next = healedAt.Add(plan.gap)
		}
	}()
	c.workload(ctx, func(int64) bool { return false })
	<-nemesisDone
	stopReader()
	fig, _ := c.finish(start, CheckOptions{})

	var longest heal
	for _, h := range heals {
		if h.err != nil {
			t.Errorf("partition %d (%s): %v", h.n, h.victim, h.err)
		}
		if h.dropped == 0 {
			t.Errorf("partition %d (%s, asymmetric %v) dropped no packet: the rules did not cut anything", h.n, h.victim, h.asym)
		}
		if h.recovery >= longest.recovery {
			longest = h
		}
	}
	nAsym := 0
	for _, h := range heals {
		if h.asym {
			nAsym++
		}
	}
	line := fmt.Sprintf("FIGURES S12-parts  partitions=%d (asymmetric %d) × %v longest-recovery=%v (partition %d, %s) ops=%d ok=%d violations=%d",
		len(heals), nAsym, plan.dur, longest.recovery.Round(time.Millisecond), longest.n, longest.victim, fig.ops, fig.ok, fig.violations)
	t.Log(line)
	appendSummary(line)
	if len(heals) != plan.partitions || nAsym != plan.asym {
		t.Errorf("injected %d partitions (%d asymmetric), want %d (%d)", len(heals), nAsym, plan.partitions, plan.asym)
	}
	if longest.recovery > tRec {
		t.Errorf("recovery took %v after heal %d, want ≤ %v", longest.recovery, longest.n, tRec)
	}
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the last heal, want ≤ %v", fig.quiescence, tRec)
	}
	if fig.ok == 0 {
		t.Errorf("liveness: no transfer succeeded in %d", fig.ops)
	}
}

// sleepUntil waits until at or ctx's end; it reports whether ctx is live.
func sleepUntil(ctx context.Context, at time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(at)):
		return true
	}
}

// partitionRules are the nft rules (chain "out") isolating the service on
// victimIP. Symmetric: nothing between the victim and the TxManager (port
// tmPort on 127.0.0.1) or the other services, either way. Asymmetric: only
// the TxManager's packets to the victim. The harness, MariaDB and Redis
// (on 127.0.0.1) stay reachable: the victim's database connections leave
// from 127.0.0.1.
func partitionRules(victimIP, tmPort string, asym bool) []string {
	toVictim := fmt.Sprintf("ip saddr 127.0.0.1 tcp sport %s ip daddr %s counter drop", tmPort, victimIP)
	if asym {
		return []string{toVictim}
	}
	var others []string
	for i := range services {
		if ip := svcIP(i); ip != victimIP {
			others = append(others, ip)
		}
	}
	set := "{ " + strings.Join(others, ", ") + " }"
	return []string{
		toVictim,
		fmt.Sprintf("ip saddr %s ip daddr 127.0.0.1 tcp dport %s counter drop", victimIP, tmPort),
		fmt.Sprintf("ip saddr %s ip daddr %s counter drop", victimIP, set),
		fmt.Sprintf("ip saddr %s ip daddr %s counter drop", set, victimIP),
	}
}

// firewall is S12's nftables table inside the namespace: one output chain
// whose rules are the current partition.
type firewall struct{ nft string }

func newFirewall() (*firewall, error) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("exec.LookPath(%q): %w", "nft", err)
	}
	fw := &firewall{nft: nft}
	if err := fw.run(fmt.Sprintf("add table inet %[1]s\nadd chain inet %[1]s out { type filter hook output priority 0; policy accept; }\n", nftTable)); err != nil {
		return nil, err
	}
	return fw, nil
}

// run feeds script to `nft -f -`.
func (fw *firewall) run(script string) error {
	cmd := exec.Command(fw.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f - <<%q: %w: %s", script, err, bytes.TrimSpace(out))
	}
	return nil
}

// set replaces the chain's rules by rules, atomically.
func (fw *firewall) set(rules []string) error {
	script := fmt.Sprintf("flush chain inet %s out\n", nftTable)
	for _, r := range rules {
		script += fmt.Sprintf("add rule inet %s out %s\n", nftTable, r)
	}
	return fw.run(script)
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

// heal removes every rule and returns how many packets they dropped.
func (fw *firewall) heal() (int64, error) {
	out, err := exec.Command(fw.nft, "list", "chain", "inet", nftTable, "out").CombinedOutput()
	if err != nil {
		_ = fw.set(nil)
		return 0, fmt.Errorf("nft list chain inet %s out: %w: %s", nftTable, err, bytes.TrimSpace(out))
	}
	var dropped int64
	for _, m := range packetsRE.FindAllSubmatch(out, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		dropped += n
	}
	return dropped, fw.set(nil)
}

func (fw *firewall) remove() error {
	return fw.run(fmt.Sprintf("delete table inet %s\n", nftTable))
}

// recovery waits (polling, deadline T_rec after the heal at history time
// healT) until every group that was not terminal at the heal is terminal
// and a transfer with a leg on victim, invoked after the heal, succeeded.
// It returns the time from the heal, and an error if T_rec passed first.
func (c *cluster) recovery(ctx context.Context, victim string, healT time.Duration) (time.Duration, error) {
	inDoubt, err := NonTerminalGroups(ctx, c.store, 100000)
	if err != nil {
		return 0, fmt.Errorf("list groups in doubt at the heal: %w", err)
	}
	victimOK := false
	for {
		for i := 0; i < len(inDoubt); {
			g, err := c.store.Get(ctx, inDoubt[i])
			switch {
			case err == nil && !g.State.Terminal(), // still in doubt
				err != nil && !errors.Is(err, txmanager.ErrNotFound): // store unreachable: ask again
				i++
			default: // terminal, or purged
				inDoubt = slices.Delete(inDoubt, i, i+1)
			}
		}
		if !victimOK {
			for _, o := range Ops(c.hist.Records()) {
				if o.Result == "ok" && o.Invoke >= healT && slices.ContainsFunc(o.Legs, func(l Leg) bool { return l.Svc == victim }) {
					victimOK = true
					break
				}
			}
		}
		since := c.hist.Since() - healT
		if len(inDoubt) == 0 && victimOK {
			return since, nil
		}
		if since > tRec {
			return since, fmt.Errorf("not recovered %v after the heal: %d groups still in doubt (first %v), transfer on %s ok since: %v",
				since.Round(time.Millisecond), len(inDoubt), inDoubt[:min(1, len(inDoubt))], victim, victimOK)
		}
		select {
		case <-ctx.Done():
			return since, fmt.Errorf("recovery after the heal not seen: run ended (%d groups in doubt, transfer on %s ok: %v)", len(inDoubt), victim, victimOK)
		case <-time.After(100 * time.Millisecond): // polling interval
		}
	}
}
