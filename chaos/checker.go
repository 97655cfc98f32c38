package chaos

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golcn/golcn/internal/xa"
	"github.com/golcn/golcn/txmanager"
)

// Bank shape (RELIABILITY.md A.2).
const (
	AccountsPerSchema = 12
	InitialBalance    = 1000
)

// LedgerRow is one applied leg, as read from a participant's schema.
type LedgerRow struct {
	Schema string
	Group  string
	Leg    int
	Acct   int
	Delta  int64
	Op     string
}

// TMGroup is the TxManager's record of a group, as read from its store.
type TMGroup struct {
	State     string // "COMMITTED", "ROLLED_BACK", ... ; "" when unknown to the store
	Attention string
}

// Facts is everything the checker judges: the history, the schemas, the
// TxManager's store and the servers' leftovers, read at quiescence.
type Facts struct {
	Schemas  []string
	Ops      []OpResult
	Ledger   []LedgerRow
	Balances map[string]map[int]int64 // schema -> account -> balance
	TM       map[string]TMGroup       // group -> record, for every group in Ops, Ledger or the store's COMMITTED list
	// NonTerminal lists groups the store still holds open or undecided.
	NonTerminal []string
	// Prepared lists golcn xids XA RECOVER still returns.
	Prepared []string
	// ActiveTrx lists InnoDB transactions still started (SHOW ENGINE INNODB STATUS).
	ActiveTrx []string
	// LockWaits counts the transactions SHOW ENGINE INNODB STATUS shows in LOCK WAIT.
	LockWaits int
	// Reader carries violations (I7, I8) found by the periodic reader during the run.
	Reader []Violation
}

// CheckOptions adjust what counts as a violation where the plan says so.
type CheckOptions struct {
	// FlaggedPartialsAllowed: plain lcn mode (S5), where a partial group is
	// not a violation if the TxManager lists it as needing attention and the
	// client was not told ok.
	FlaggedPartialsAllowed bool
	// LostRecordsAllowed: the store lost its data (S9d), so a group the
	// TxManager does not know may have committed before the loss. Such a
	// group is not a violation when all its legs or none are applied and
	// the client was not told fail with legs applied; a partial one still
	// is (I3).
	LostRecordsAllowed bool
}

// Violation is one broken invariant. Severity orders violations for the
// "worst" report: a split decision or an outcome the client was lied to
// about is worse than leftovers.
type Violation struct {
	Inv      string // "I1" ... "I9"
	Group    string
	Op       string
	Detail   string
	Severity int
	At       time.Duration // the op's invoke time (or the reader's time); orders "first"
}

func (v Violation) String() string {
	return fmt.Sprintf("%s group=%s op=%s at=%v: %s", v.Inv, v.Group, v.Op, v.At.Round(time.Millisecond), v.Detail)
}

var severity = map[string]int{"I9": 9, "I5": 8, "I3": 7, "I4": 7, "I7": 6, "I1": 5, "I2": 5, "I8": 5, "I6": 3}

// Report is the checker's verdict.
type Report struct {
	Violations []Violation
	// FlaggedPartials counts partial groups listed as needing attention
	// (allowed only with FlaggedPartialsAllowed).
	FlaggedPartials int
	// LostWhole counts groups unknown to the TxManager (record lost with
	// the store) applied whole (allowed only with LostRecordsAllowed).
	LostWhole      int
	OK, Fail, Info int
}

// First returns the earliest violation.
func (r Report) First() (Violation, bool) {
	if len(r.Violations) == 0 {
		return Violation{}, false
	}
	return slices.MinFunc(r.Violations, func(a, b Violation) int { return cmp.Compare(a.At, b.At) }), true
}

// Worst returns the most severe violation (the earliest among equals).
func (r Report) Worst() (Violation, bool) {
	if len(r.Violations) == 0 {
		return Violation{}, false
	}
	return slices.MinFunc(r.Violations, func(a, b Violation) int {
		if c := cmp.Compare(b.Severity, a.Severity); c != 0 {
			return c
		}
		return cmp.Compare(a.At, b.At)
	}), true
}

// Summary is the one-paragraph verdict with the first and worst violation.
func (r Report) Summary() string {
	if len(r.Violations) == 0 {
		return fmt.Sprintf("0 violations (ok %d, fail %d, info %d, flagged partials %d, lost records applied whole %d)", r.OK, r.Fail, r.Info, r.FlaggedPartials, r.LostWhole)
	}
	first, _ := r.First()
	worst, _ := r.Worst()
	return fmt.Sprintf("%d violations (ok %d, fail %d, info %d)\n  first: %s\n  worst: %s", len(r.Violations), r.OK, r.Fail, r.Info, first, worst)
}

// Check judges the facts against I1–I9 (RELIABILITY.md A.3). It is pure:
// the same facts give the same report.
func Check(f Facts, opt CheckOptions) Report {
	var rep Report
	add := func(inv, group, op string, at time.Duration, format string, args ...any) {
		rep.Violations = append(rep.Violations, Violation{Inv: inv, Group: group, Op: op, Detail: fmt.Sprintf(format, args...), Severity: severity[inv], At: at})
	}
	rep.Violations = append(rep.Violations, f.Reader...)

	// I1 conservation, I2 ledger agreement, I8 non-negative.
	var total int64
	ledgerSum := map[string]map[int]int64{}
	for _, r := range f.Ledger {
		if ledgerSum[r.Schema] == nil {
			ledgerSum[r.Schema] = map[int]int64{}
		}
		ledgerSum[r.Schema][r.Acct] += r.Delta
	}
	for _, s := range f.Schemas {
		for acct, bal := range f.Balances[s] {
			total += bal
			if want := InitialBalance + ledgerSum[s][acct]; bal != want {
				add("I2", "", "", 0, "%s account %d: balance %d, 1000 + ledger = %d", s, acct, bal, want)
			}
			if bal < 0 {
				add("I8", "", "", 0, "%s account %d: negative balance %d", s, acct, bal)
			}
		}
	}

	// I4: a leg applied twice (the PK prevents it within a schema).
	type legKey struct {
		op  string
		leg int
	}
	seen := map[legKey]LedgerRow{}
	byOp := map[string][]LedgerRow{}
	byGroup := map[string][]LedgerRow{}
	for _, r := range f.Ledger {
		k := legKey{r.Op, r.Leg}
		if prev, dup := seen[k]; dup {
			add("I4", r.Group, r.Op, 0, "leg %d applied twice (%s and %s)", r.Leg, prev.Schema, r.Schema)
		}
		seen[k] = r
		byOp[r.Op] = append(byOp[r.Op], r)
		byGroup[r.Group] = append(byGroup[r.Group], r)
	}

	// I3, I5, I9 per operation.
	known := map[string]bool{}
	var flaggedDelta int64
	for _, o := range f.Ops {
		switch o.Result {
		case "ok":
			rep.OK++
		case "fail":
			rep.Fail++
		default:
			rep.Info++
		}
		rows := byOp[o.Op]
		group := o.Group
		for _, r := range rows {
			if group == "" {
				group = r.Group
			}
			if r.Group != group {
				add("I3", r.Group, o.Op, o.Invoke, "operation's legs applied under two groups (%s and %s)", group, r.Group)
			}
		}
		if group != "" {
			known[group] = true
		}
		n, want := len(rows), len(o.Legs)
		tm := f.TM[group]
		partial := n != 0 && n != want
		flagged := partial && opt.FlaggedPartialsAllowed && tm.Attention != "" && o.Result != "ok"
		switch {
		case flagged:
			rep.FlaggedPartials++
			for _, r := range rows {
				flaggedDelta += r.Delta // the money the flag says went missing
			}
		case partial:
			add("I3", group, o.Op, o.Invoke, "%d of %d legs applied (client %s, TxManager %s %q)", n, want, o.Result, tm.State, tm.Attention)
		}
		switch {
		case o.Abort && n != 0:
			add("I5", group, o.Op, o.Invoke, "designed abort has %d legs applied", n)
		case o.Result == "ok" && n != want:
			add("I5", group, o.Op, o.Invoke, "client told ok, %d of %d legs applied", n, want)
		case o.Result == "fail" && n != 0:
			add("I5", group, o.Op, o.Invoke, "client told fail, %d of %d legs applied", n, want)
		}
		if group == "" {
			continue
		}
		switch tm.State {
		case "ROLLED_BACK":
			if n != 0 {
				add("I9", group, o.Op, o.Invoke, "TxManager ROLLED_BACK, %d legs committed", n)
			}
			if o.Result == "ok" {
				add("I5", group, o.Op, o.Invoke, "client told ok, TxManager ROLLED_BACK")
			}
		case "COMMITTED":
			if n != want && !flagged {
				add("I5", group, o.Op, o.Invoke, "TxManager COMMITTED, %d of %d legs applied (attention %q)", n, want, tm.Attention)
			}
			if o.Result == "fail" {
				add("I5", group, o.Op, o.Invoke, "client told fail, TxManager COMMITTED")
			}
		case "":
			if n == want && opt.LostRecordsAllowed {
				rep.LostWhole++
			} else if n != 0 {
				add("I5", group, o.Op, o.Invoke, "%d legs applied for a group the TxManager does not know", n)
			}
		default:
			add("I6", group, o.Op, o.Invoke, "group still %s at quiescence", tm.State)
		}
	}
	for g, rows := range byGroup {
		if !known[g] {
			add("I3", g, rows[0].Op, 0, "ledger rows for a group no operation accounts for")
		}
	}
	for g, tm := range f.TM {
		if !known[g] && tm.State == "COMMITTED" && tm.Attention == "" {
			add("I5", g, "", 0, "TxManager COMMITTED a group with no applied legs and no operation")
		}
	}

	// I1: conserved, except for exactly the legs of flagged partial groups.
	if want := int64(len(f.Schemas)*AccountsPerSchema*InitialBalance) + flaggedDelta; total != want {
		add("I1", "", "", 0, "total balance %d, want %d (off by %d; flagged partials account for %d)", total, want, total-want, flaggedDelta)
	}

	// I6 nothing in doubt.
	for _, g := range f.NonTerminal {
		add("I6", g, "", 0, "group not terminal in the store")
	}
	for _, x := range f.Prepared {
		add("I6", x, "", 0, "XA RECOVER still lists %s", x)
	}
	for _, t := range f.ActiveTrx {
		add("I6", "", "", 0, "InnoDB transaction still open: %s", t)
	}
	if f.LockWaits > 0 {
		add("I6", "", "", 0, "%d lock waits", f.LockWaits)
	}
	return rep
}

// Leftovers reports what the servers still hold in doubt (the I6 facts):
// golcn xids in XA RECOVER, started InnoDB transactions and lock waits. It
// reads SHOW ENGINE INNODB STATUS because MariaDB may keep ended XA
// transactions in information_schema.innodb_trx.
func Leftovers(ctx context.Context, db *sql.DB) (prepared, active []string, lockWaits int, err error) {
	xids, err := xa.Recover(ctx, db)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("XA RECOVER: %w", err)
	}
	for _, x := range xids {
		prepared = append(prepared, x.Group+"/"+x.Branch)
	}
	var typ, name, status string
	if err := db.QueryRowContext(ctx, "SHOW ENGINE INNODB STATUS").Scan(&typ, &name, &status); err != nil {
		return nil, nil, 0, fmt.Errorf("SHOW ENGINE INNODB STATUS: %w", err)
	}
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, "---TRANSACTION") && strings.Contains(line, "ACTIVE") {
			active = append(active, line)
		}
	}
	// information_schema.INNODB_LOCK_WAITS (like INNODB_TRX) is a cache
	// that MariaDB 10.11 was seen to keep stale for seconds after the
	// waiting transaction ended; the status text is generated live.
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, "LOCK WAIT ") {
			lockWaits++
		}
	}
	return prepared, active, lockWaits, nil
}

// NonTerminalGroups lists up to limit groups the store holds in a
// non-terminal state.
func NonTerminalGroups(ctx context.Context, store txmanager.Store, limit int) ([]string, error) {
	var out []string
	for _, s := range []txmanager.GroupState{txmanager.GroupActive, txmanager.GroupPreparing, txmanager.GroupCommitting, txmanager.GroupRollingBack} {
		// A page may come back short with a cursor (the store scans a
		// bounded number of records per call): follow it to the end.
		q := txmanager.ListQuery{State: s, Limit: limit}
		for len(out) < limit {
			page, err := store.List(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("list %s groups: %w", s, err)
			}
			for _, g := range page.Groups {
				out = append(out, g.Group.ID)
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
	}
	return out, nil
}

// Gather reads the facts at quiescence: the schemas' balances and ledgers
// (root connection db to the one mariadbd serving all schemas), the
// store's records of every group involved, and the leftovers.
func Gather(ctx context.Context, db *sql.DB, schemas []string, store txmanager.Store, ops []OpResult, reader []Violation) (Facts, error) {
	f := Facts{Schemas: schemas, Ops: ops, Balances: map[string]map[int]int64{}, TM: map[string]TMGroup{}, Reader: reader}
	for _, s := range schemas {
		f.Balances[s] = map[int]int64{}
		rows, err := db.QueryContext(ctx, "SELECT id, balance FROM `"+s+"`.accounts")
		if err != nil {
			return f, fmt.Errorf("read %s balances: %w", s, err)
		}
		for rows.Next() {
			var id int
			var b int64
			if err := rows.Scan(&id, &b); err != nil {
				rows.Close()
				return f, fmt.Errorf("scan %s balances: %w", s, err)
			}
			f.Balances[s][id] = b
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return f, fmt.Errorf("read %s balances: %w", s, err)
		}
		rows, err = db.QueryContext(ctx, "SELECT group_id, leg, account_id, delta, op FROM `"+s+"`.ledger")
		if err != nil {
			return f, fmt.Errorf("read %s ledger: %w", s, err)
		}
		for rows.Next() {
			r := LedgerRow{Schema: s}
			if err := rows.Scan(&r.Group, &r.Leg, &r.Acct, &r.Delta, &r.Op); err != nil {
				rows.Close()
				return f, fmt.Errorf("scan %s ledger: %w", s, err)
			}
			f.Ledger = append(f.Ledger, r)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return f, fmt.Errorf("read %s ledger: %w", s, err)
		}
	}
	groups := map[string]bool{}
	for _, o := range ops {
		if o.Group != "" {
			groups[o.Group] = true
		}
	}
	for _, r := range f.Ledger {
		groups[r.Group] = true
	}
	// Every committed group the store holds, so that a commit nobody
	// accounts for is seen.
	q := txmanager.ListQuery{State: txmanager.GroupCommitted, Limit: txmanager.MaxListLimit}
	for {
		page, err := store.List(ctx, q)
		if err != nil {
			return f, fmt.Errorf("list committed groups: %w", err)
		}
		for _, g := range page.Groups {
			groups[g.Group.ID] = true
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	for g := range groups {
		rec, err := store.Get(ctx, g)
		switch {
		case errors.Is(err, txmanager.ErrNotFound):
			f.TM[g] = TMGroup{}
		case err != nil:
			return f, fmt.Errorf("read group %s: %w", g, err)
		default:
			f.TM[g] = TMGroup{State: rec.State.String(), Attention: rec.Attention}
		}
	}
	var err error
	if f.NonTerminal, err = NonTerminalGroups(ctx, store, 100); err != nil {
		return f, err
	}
	if f.Prepared, f.ActiveTrx, f.LockWaits, err = Leftovers(ctx, db); err != nil {
		return f, err
	}
	return f, nil
}
