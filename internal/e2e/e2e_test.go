package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/wire"
	"github.com/golcn/golcn/txclient"
	"github.com/golcn/golcn/txmanager"
)

func fastConfig() txmanager.Config {
	return txmanager.Config{GroupTimeout: 10 * time.Second, ReapInterval: 50 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond}
}

// A starter and two participants commit: both writes become visible, each
// exactly once, and the group ends COMMITTED with both branches committed.
func TestCommitTwoParticipants(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		ctx := context.Background()
		id, err := bk.transfer(ctx, 30, false)
		if err != nil {
			t.Fatalf("transfer: %v", err)
		}
		g := bk.m.waitState(id, txmanager.GroupCommitted)
		if len(g.Branches) != 2 || g.Attention != "" {
			t.Fatalf("group record: %+v", g)
		}
		for _, b := range g.Branches {
			if b.State != txmanager.BranchCommitted {
				t.Fatalf("branch %s is %s", b.ID, b.State)
			}
		}
		if a, b := bk.a.balance(t, 1), bk.b.balance(t, 1); a != initialBalance-30 || b != initialBalance+30 {
			t.Fatalf("balances a=%d b=%d, want %d and %d", a, b, initialBalance-30, initialBalance+30)
		}
		waitNoTrx(t, bk)
	})
}

// Work of a group stays invisible until the decision: while the starter has
// not committed, a reader outside the group sees the old balance.
func TestHeldWorkInvisibleUntilDecision(t *testing.T) {
	bk := newBank(t, storeBolt, fastConfig())
	ctx, g, err := bk.starter.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, bk.hc, moveURL(bk.a, 2, 5, "")); err != nil {
		t.Fatal(err)
	}
	var b int64
	if err := bk.a.raw.QueryRow(`SELECT balance FROM accounts WHERE id = 2`).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if b != initialBalance {
		t.Fatalf("uncommitted group work visible: balance %d", b)
	}
	if err := g.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	bk.m.waitState(g.ID(), txmanager.GroupCommitted)
	if b := bk.a.balance(t, 2); b != initialBalance+5 {
		t.Fatalf("after commit balance %d", b)
	}
	waitNoTrx(t, bk)
}

// One participant's failure rolls everything back, including the other
// participant's held work.
func TestParticipantFailureRollsBackAll(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		id, err := bk.transfer(context.Background(), 40, true)
		if err == nil {
			t.Fatal("transfer with a failing participant succeeded")
		}
		g := bk.m.waitState(id, txmanager.GroupRolledBack)
		if g.Attention != "" {
			t.Fatalf("attention on a clean rollback: %s", g.Attention)
		}
		if a, b := bk.a.balance(t, 1), bk.b.balance(t, 1); a != initialBalance || b != initialBalance {
			t.Fatalf("balances a=%d b=%d after rollback, want %d", a, b, initialBalance)
		}
		waitNoTrx(t, bk)
	})
}

// A group past its deadline is rolled back by the reaper, its held branches
// release their work, and a late commit is refused.
func TestDeadlineRollsBackAndLateCommitRefused(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		cfg := fastConfig()
		cfg.GroupTimeout = 500 * time.Millisecond
		bk := newBank(t, k, cfg)
		ctx, g, err := bk.starter.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.a, 1, -10, "")); err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.b, 1, 10, "")); err != nil {
			t.Fatal(err)
		}
		rec := bk.m.waitState(g.ID(), txmanager.GroupRolledBack)
		if !strings.Contains(rec.Reason, "deadline") {
			t.Fatalf("reason %q, want deadline", rec.Reason)
		}
		err = g.Commit(ctx)
		if !isRolledBack(err) {
			t.Fatalf("late commit: got %v, want ErrRolledBack", err)
		}
		if a, b := bk.a.balance(t, 1), bk.b.balance(t, 1); a != initialBalance || b != initialBalance {
			t.Fatalf("balances a=%d b=%d, want untouched", a, b)
		}
		// A participant asked to join the dead group refuses with 409 and
		// opens no transaction.
		resp := postWithHeader(t, moveURL(bk.a, 1, 1, ""), g.ID())
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("join of a rolled-back group: status %d", resp.StatusCode)
		}
		waitNoTrx(t, bk)
	})
}

// A TxManager restart between the votes and the commit, and another right
// after the commit decision, lose nothing: the group commits everywhere.
func TestManagerRestartLosesNoDecision(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		ctx, g, err := bk.starter.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.a, 1, -7, "")); err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.b, 1, 7, "")); err != nil {
			t.Fatal(err)
		}
		bk.m.restart() // votes recorded, no decision yet
		if err := g.Commit(ctx); err != nil {
			t.Fatalf("commit after restart: %v", err)
		}
		bk.m.restart() // decision recorded; acknowledgements may be missing
		bk.m.waitState(g.ID(), txmanager.GroupCommitted)
		if a, b := bk.a.balance(t, 1), bk.b.balance(t, 1); a != initialBalance-7 || b != initialBalance+7 {
			t.Fatalf("balances a=%d b=%d", a, b)
		}
		waitNoTrx(t, bk)
	})
}

// A group that calls the same service twice (same row, two requests) does
// not deadlock against itself: both calls share one branch and see each
// other's writes.
func TestSameServiceTwiceInOneGroup(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		var id string
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err := bk.starter.Do(ctx, func(ctx context.Context) error {
			id, _ = txclient.GroupID(ctx)
			for _, d := range []int{-3, -4} {
				if err := call(ctx, bk.hc, moveURL(bk.a, 1, d, "")); err != nil {
					return err
				}
			}
			return call(ctx, bk.hc, moveURL(bk.b, 1, 7, ""))
		})
		if err != nil {
			t.Fatalf("group calling a service twice: %v", err)
		}
		g := bk.m.waitState(id, txmanager.GroupCommitted)
		if len(g.Branches) != 2 {
			t.Fatalf("want one branch per service, got %d: %+v", len(g.Branches), g.Branches)
		}
		if a := bk.a.balance(t, 1); a != initialBalance-7 {
			t.Fatalf("balance a=%d, want %d", a, initialBalance-7)
		}
		waitNoTrx(t, bk)
	})
}

// A duplicated decision is a no-op: committing again answers the same,
// rolling back a committed group is refused, and the work is applied once.
func TestDuplicateDecisionIsNoop(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		ctx, g, err := bk.starter.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.a, 1, -9, "")); err != nil {
			t.Fatal(err)
		}
		if err := g.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		bk.m.waitState(g.ID(), txmanager.GroupCommitted)
		if err := g.Commit(ctx); err != nil {
			t.Fatalf("second commit: %v", err)
		}
		if err := g.Rollback(ctx); err == nil {
			t.Fatal("rollback of a committed group accepted")
		}
		// Push the decision again, as a TxManager that missed the ack
		// would: the participant answers from what it applied.
		bk.m.restart()
		if a := bk.a.balance(t, 1); a != initialBalance-9 {
			t.Fatalf("balance a=%d, want %d (applied exactly once)", a, initialBalance-9)
		}
		if st := bk.m.group(g.ID()).State; st != txmanager.GroupCommitted {
			t.Fatalf("state %s", st)
		}
		waitNoTrx(t, bk)
	})
}

// Many concurrent transfers, some failing: money is conserved and no group
// is half applied.
func TestConcurrentTransfersConserveMoney(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		bk := newBank(t, k, fastConfig())
		const n = 40
		var wg sync.WaitGroup
		ids := make([]string, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], errs[i] = bk.transfer(context.Background(), 1, i%5 == 0)
			}()
		}
		wg.Wait()
		committed := 0
		for i, id := range ids {
			want := txmanager.GroupCommitted
			if errs[i] != nil {
				want = txmanager.GroupRolledBack
			} else {
				committed++
			}
			if i%5 == 0 && errs[i] == nil {
				t.Fatalf("transfer %d should have failed", i)
			}
			bk.m.waitState(id, want)
		}
		a, b := bk.a.balance(t, 1), bk.b.balance(t, 1)
		if a+b != 2*initialBalance || b-initialBalance != int64(committed) {
			t.Fatalf("a=%d b=%d committed=%d: money not conserved or half-applied", a, b, committed)
		}
		waitNoTrx(t, bk)
	})
}

// Bad input at the HTTP edge: a malformed header is a 400 naming the
// problem; an unknown group is a 409; neither opens a transaction.
func TestMiddlewareRejectsBadGroupHeader(t *testing.T) {
	bk := newBank(t, storeBolt, fastConfig())
	id := gid.New()
	for _, h := range []string{"nothex", strings.ToUpper(id), id[:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:],
		id + "00", id[:31] + "g", id[:31] + "é"} {
		resp := postWithHeader(t, moveURL(bk.a, 1, 1, ""), h)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("header %q: status %d, want 400", h, resp.StatusCode)
		}
		if msg := decodeError(t, resp.Body); !strings.Contains(msg, "Lcn-Group-Id") {
			t.Fatalf("400 message %q does not name the header", msg)
		}
	}
	resp := postWithHeader(t, moveURL(bk.a, 1, 1, ""), gid.New())
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("unknown group: status %d, want 409", resp.StatusCode)
	}
	if a := bk.a.balance(t, 1); a != initialBalance {
		t.Fatalf("balance changed by a refused request: %d", a)
	}
	waitNoTrx(t, bk)
}

// A TxManager that cannot be reached at Begin is an error, with nothing
// left behind.
func TestBeginWithoutManagerFails(t *testing.T) {
	c, err := txclient.New(txclient.Config{ManagerURL: "ws://127.0.0.1:1/v1/ws", Service: "lonely",
		Logger: quietLogger(), RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, g, err := c.Begin(context.Background())
	if err == nil || !errors.Is(err, txclient.ErrNotSent) {
		t.Fatalf("Begin: err %v, want ErrNotSent", err)
	}
	if g != nil {
		t.Fatal("Begin returned a group with its error")
	}
	if _, ok := txclient.GroupID(ctx); ok {
		t.Fatal("Begin's failed context carries a group")
	}
	if st := c.Status(); st.Held != 0 || st.Connected {
		t.Fatalf("status after failed Begin: %+v", st)
	}
}

// A vote that cannot reach the TxManager rolls the branch back and fails
// Commit; the connection is not leaked and nothing is applied.
func TestVoteWithoutManagerRollsBack(t *testing.T) {
	bk := newBank(t, storeBolt, fastConfig())
	ctx, g, err := bk.starter.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tx, err := bk.a.db.BeginTx(ctx, nil) // joins the group
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - 1 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	bk.m.stop()
	if err := tx.Commit(); err == nil {
		t.Fatal("Commit succeeded with no TxManager to vote to")
	}
	if a := bk.a.balance(t, 1); a != initialBalance {
		t.Fatalf("balance %d after failed vote", a)
	}
	waitNoTrx(t, bk)
	if _, err := bk.starter.GroupState(context.Background(), g.ID()); err == nil {
		t.Fatal("group state answered with the TxManager down")
	}
}

// Malformed websocket frames close that connection with a reason; the
// TxManager keeps serving other clients.
func TestMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	m := newManager(t, storeBolt, fastConfig())
	good := newClient(t, m, "good")
	for _, frame := range [][]byte{[]byte("{not json"), []byte(`{"v":1,"type":"vote","id":1,"group":"x"}`),
		[]byte(`{"v":9,"type":"create","id":1}`), []byte(`{"v":1,"type":"create","id":1,"evil":true}`)} {
		ws, _, err := websocket.DefaultDialer.Dial(m.url(), http.Header{"Authorization": {"Bearer " + m.tokens["svc-a"]}})
		if err != nil {
			t.Fatal(err)
		}
		hello, _ := wire.Encode(&wire.Message{Type: wire.TypeHello, ID: 1, Service: "svc-a", Instance: "bad-1"})
		if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil { // hello answer
			t.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseInvalidFramePayloadData || !strings.Contains(ce.Text, "malformed") {
			t.Fatalf("frame %q: want close 1007 with a reason, got %v", frame, err)
		}
		_ = ws.Close()
	}
	// An oversized frame is closed with 1009.
	ws, _, err := websocket.DefaultDialer.Dial(m.url(), http.Header{"Authorization": {"Bearer " + m.tokens["svc-a"]}})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, wire.MaxFrame+1)
	for i := range big {
		big[i] = 'a'
	}
	_ = ws.WriteMessage(websocket.TextMessage, big)
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig, websocket.ClosePolicyViolation) {
		t.Fatalf("oversized frame: got %v", err)
	}
	_ = ws.Close()
	// The well-behaved client still works.
	_, g, err := good.Begin(context.Background())
	if err != nil {
		t.Fatalf("TxManager stopped serving after malformed frames: %v", err)
	}
	if err := g.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func postWithHeader(t *testing.T, url, group string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(txclient.Header, group)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// waitNoTrx waits until neither participant's server has an InnoDB
// transaction open: every held branch was applied and released.
func waitNoTrx(t *testing.T, bk *bank) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := openTrx(t, bk.a.raw, bk.a.schema, bk.b.schema)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d InnoDB transactions still open: %s", n, describeTrx(t, bk.a.raw))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describeTrx lists open InnoDB transactions with their connection's last
// statement, for failure messages.
func describeTrx(t *testing.T, db *sql.DB) string {
	rows, err := db.Query(`SELECT t.trx_mysql_thread_id, t.trx_state, t.trx_started, COALESCE(p.INFO, ''), COALESCE(p.DB, ''),
		t.trx_rows_modified, t.trx_is_read_only, COALESCE(p.COMMAND, ''), COALESCE(p.USER, '')
		FROM information_schema.innodb_trx t LEFT JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, state, started, info, db, modified, ro, cmd, user string
		if err := rows.Scan(&id, &state, &started, &info, &db, &modified, &ro, &cmd, &user); err != nil {
			return err.Error()
		}
		out = append(out, fmt.Sprintf("[thread %s %s since %s db %s user %s command %s rows modified %s read-only %s: %q]",
			id, state, started, db, user, cmd, modified, ro, info))
	}
	return strings.Join(out, " ")
}

// lcn mode made honest: a participant that dies holding a voted branch
// (here: its TxManager session ends for good and the database kills its
// held connection, rolling its work back) is not reported as committed. The
// TxManager records the branch LOST after lost_after, the group ends
// COMMITTED with attention naming the branch, service and instance, and the
// starter waiting for the full outcome learns it.
func TestLostLcnBranchFlagged(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		cfg := fastConfig()
		cfg.LostAfter = 300 * time.Millisecond
		bk := newBank(t, k, cfg)
		ctx, g, err := bk.starter.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.a, 1, -11, "")); err != nil {
			t.Fatal(err)
		}
		if err := call(ctx, bk.hc, moveURL(bk.b, 1, 11, "")); err != nil {
			t.Fatal(err)
		}
		// svc-b "dies": its session ends for good, and the database drops
		// its held connection (and with it the branch's work).
		_ = bk.b.client.Close()
		killHeldConnections(t, bk.b)
		if err := g.Commit(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		out, err := g.Wait(wctx)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if !out.Committed || !strings.Contains(out.Attention, "svc-b") || !strings.Contains(out.Attention, "lost") {
			t.Fatalf("outcome %+v: want committed with attention naming the lost svc-b branch", out)
		}
		rec := bk.m.group(g.ID())
		var lost int
		for _, b := range rec.Branches {
			if b.State == txmanager.BranchLost {
				lost++
				if b.Service != "svc-b" {
					t.Fatalf("lost branch of %s", b.Service)
				}
			} else if b.State != txmanager.BranchCommitted {
				t.Fatalf("branch %s is %s", b.ID, b.State)
			}
		}
		if lost != 1 || rec.State != txmanager.GroupCommitted || rec.Attention == "" {
			t.Fatalf("group record %+v", rec)
		}
		// The checker's view: a is applied, b's work is gone: the partial
		// outcome is exactly what the attention flag reports.
		if a, b := bk.a.balance(t, 1), bk.b.balance(t, 1); a != initialBalance-11 || b != initialBalance {
			t.Fatalf("balances a=%d b=%d", a, b)
		}
	})
}

// killHeldConnections kills every connection to p's schema but the one
// issuing the kills, as a crashed process's connections would end: the
// branch's held connection among them (the others are idle pool
// connections, which database/sql replaces). It does not rely on
// information_schema.innodb_trx, whose cache MariaDB may keep stale for
// XA transactions.
func killHeldConnections(t *testing.T, p *participant) {
	t.Helper()
	ctx := context.Background()
	c, err := p.raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rows, err := c.QueryContext(ctx, `SELECT ID FROM information_schema.processlist WHERE DB = ? AND ID <> CONNECTION_ID()`, p.schema)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		t.Fatalf("no connection to kill on schema %s", p.schema)
	}
	for _, id := range ids {
		if _, err := c.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil {
			t.Fatal(err)
		}
	}
}
