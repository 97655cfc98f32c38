package chaos

import (
	"path/filepath"
	"strings"
	"testing"
)

// bankFacts is a consistent quiescent world: op1 committed (2 legs), op2
// rolled back (no legs), op3 outcome unknown and applied whole.
func bankFacts() Facts {
	f := Facts{Schemas: []string{"bank_a", "bank_b", "bank_c"}, Balances: map[string]map[int]int64{}, TM: map[string]TMGroup{}}
	for _, s := range f.Schemas {
		f.Balances[s] = map[int]int64{}
		for i := 1; i <= AccountsPerSchema; i++ {
			f.Balances[s][i] = InitialBalance
		}
	}
	legs := []Leg{{Leg: 0, Svc: "svc-a", Acct: 1, Delta: -10}, {Leg: 1, Svc: "svc-b", Acct: 2, Delta: 10}}
	f.Ops = []OpResult{
		{Op: "op1", Group: "g1", Legs: legs, Result: "ok", Invoke: 1},
		{Op: "op2", Group: "g2", Legs: legs, Result: "fail", Invoke: 2},
		{Op: "op3", Legs: legs, Result: "info", Invoke: 3},
	}
	f.TM["g1"] = TMGroup{State: "COMMITTED"}
	f.TM["g2"] = TMGroup{State: "ROLLED_BACK"}
	f.TM["g3"] = TMGroup{State: "COMMITTED"}
	for _, o := range []struct{ op, g string }{{"op1", "g1"}, {"op3", "g3"}} {
		f.Ledger = append(f.Ledger, LedgerRow{Schema: "bank_a", Group: o.g, Leg: 0, Acct: 1, Delta: -10, Op: o.op},
			LedgerRow{Schema: "bank_b", Group: o.g, Leg: 1, Acct: 2, Delta: 10, Op: o.op})
	}
	f.Balances["bank_a"][1] -= 20
	f.Balances["bank_b"][2] += 20
	return f
}

func TestCheckCleanWorld(t *testing.T) {
	rep := Check(bankFacts(), CheckOptions{})
	if len(rep.Violations) != 0 {
		t.Fatalf("violations in a clean world: %s", rep.Summary())
	}
	if rep.OK != 1 || rep.Fail != 1 || rep.Info != 1 {
		t.Fatalf("counts %+v", rep)
	}
}

// Each mutation of the clean world must be caught by the named invariant:
// the checker can fail.
func TestCheckCatches(t *testing.T) {
	for _, tc := range []struct {
		name, inv string
		mutate    func(*Facts)
		opt       CheckOptions
	}{
		{"money created", "I1", func(f *Facts) { f.Balances["bank_c"][5] += 7 }, CheckOptions{}},
		{"balance without ledger", "I2", func(f *Facts) { f.Balances["bank_a"][1] += 5; f.Balances["bank_a"][3] -= 5 }, CheckOptions{}},
		{"partial group", "I3", func(f *Facts) {
			f.Ledger = f.Ledger[1:]
			f.Balances["bank_a"][1] += 10
			f.Balances["bank_c"][1] -= 10 // keep I1 true: only the partial shows
		}, CheckOptions{}},
		{"double application", "I4", func(f *Facts) {
			f.Ledger = append(f.Ledger, LedgerRow{Schema: "bank_c", Group: "g1", Leg: 1, Acct: 2, Delta: 0, Op: "op1"})
		}, CheckOptions{}},
		{"fail with legs", "I5", func(f *Facts) { f.Ops[0].Result = "fail" }, CheckOptions{}},
		{"ok but rolled back", "I9", func(f *Facts) { f.TM["g1"] = TMGroup{State: "ROLLED_BACK"} }, CheckOptions{}},
		{"in doubt", "I6", func(f *Facts) { f.Prepared = []string{"gx/b1"} }, CheckOptions{}},
		{"still committing", "I6", func(f *Facts) { f.TM["g1"] = TMGroup{State: "COMMITTING"} }, CheckOptions{}},
		{"negative", "I8", func(f *Facts) { f.Balances["bank_a"][4] = -1; f.Balances["bank_a"][5] += 1001 }, CheckOptions{}},
		{"committed, nobody's", "I5", func(f *Facts) { f.TM["g9"] = TMGroup{State: "COMMITTED"} }, CheckOptions{}},
		{"flagged partial told ok", "I3", func(f *Facts) {
			f.Ledger = f.Ledger[1:]
			f.Balances["bank_a"][1] += 10
			f.Balances["bank_c"][1] -= 10
			f.TM["g1"] = TMGroup{State: "COMMITTED", Attention: "branch lost"}
		}, CheckOptions{FlaggedPartialsAllowed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bankFacts()
			tc.mutate(&f)
			rep := Check(f, tc.opt)
			worst, ok := rep.Worst()
			if !ok {
				t.Fatalf("no violation")
			}
			found := false
			for _, v := range rep.Violations {
				found = found || v.Inv == tc.inv
			}
			if !found {
				t.Fatalf("want %s, got %s", tc.inv, rep.Summary())
			}
			if first, _ := rep.First(); !strings.Contains(rep.Summary(), first.Inv) || !strings.Contains(rep.Summary(), worst.Inv) {
				t.Fatalf("summary lacks first/worst: %s", rep.Summary())
			}
		})
	}
}

// A flagged partial (lcn, client not told ok) is counted, not a violation.
func TestCheckFlaggedPartialAllowedInLCN(t *testing.T) {
	f := bankFacts()
	f.Ledger = f.Ledger[1:] // svc-a's debit lost with its process: money appears
	f.Balances["bank_a"][1] += 10
	f.Ops[0].Result = "info"
	f.TM["g1"] = TMGroup{State: "COMMITTED", Attention: "svc-a branch lost"}
	rep := Check(f, CheckOptions{FlaggedPartialsAllowed: true})
	if len(rep.Violations) != 0 || rep.FlaggedPartials != 1 {
		t.Fatalf("flagged partials %d, %s", rep.FlaggedPartials, rep.Summary())
	}
	if rep := Check(f, CheckOptions{}); len(rep.Violations) == 0 {
		t.Fatal("a flagged partial must be a violation in xa mode")
	}
}

// A group whose record the store lost (S9d) may be applied whole or not at
// all, never partly, and only with LostRecordsAllowed.
func TestCheckLostRecordsAllowed(t *testing.T) {
	f := bankFacts()
	delete(f.TM, "g1") // committed, record lost with the store
	rep := Check(f, CheckOptions{LostRecordsAllowed: true})
	if len(rep.Violations) != 0 || rep.LostWhole != 1 {
		t.Fatalf("lost whole %d, %s", rep.LostWhole, rep.Summary())
	}
	if rep := Check(f, CheckOptions{}); len(rep.Violations) == 0 {
		t.Fatal("a group unknown to the TxManager with legs applied must be a violation without LostRecordsAllowed")
	}
	f.Ledger = f.Ledger[1:] // and now partial
	f.Balances["bank_a"][1] += 10
	f.Balances["bank_c"][1] -= 10
	if rep := Check(f, CheckOptions{LostRecordsAllowed: true}); len(rep.Violations) == 0 {
		t.Fatal("a partial group is a violation even when records may be lost")
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	h, err := OpenHistory(filepath.Join(t.TempDir(), "h.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	h.Add(Record{Type: "invoke", Op: "o1", Legs: []Leg{{Svc: "svc-a"}}})
	h.Add(Record{Type: "nemesis", Fault: "x"})
	h.Add(Record{Type: "info", Op: "o1", Group: "g"})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	ops := Ops(h.Records())
	if len(ops) != 1 || ops[0].Result != "info" || ops[0].Group != "g" || ops[0].Complete < ops[0].Invoke {
		t.Fatalf("ops %+v", ops)
	}
}
