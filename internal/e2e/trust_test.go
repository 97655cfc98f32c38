package e2e

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
)

// localTxnsOpened returns how many local transactions the server has
// begun so far: START TRANSACTION / BEGIN (lcn branches) plus XA START (xa
// branches), from its global status counters.
func localTxnsOpened(t *testing.T, root *sql.DB) int64 {
	t.Helper()
	rows, err := root.Query(`SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_begin', 'Com_xa_start')`)
	if err != nil {
		t.Fatalf("read transaction counters: %v", err)
	}
	defer rows.Close()
	var sum int64
	var seen int
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			t.Fatalf("read transaction counters: %v", err)
		}
		sum += n
		seen++
	}
	if err := rows.Err(); err != nil || seen != 2 {
		t.Fatalf("read transaction counters: %d of 2 (%v)", seen, err)
	}
	return sum
}

// S13 "Header trust": a participant that receives a group id in the
// header which the TxManager does not know (100 random ids) or has already
// ended (50 committed and 50 rolled-back groups it never saw) refuses the
// request (409) without calling the handler's database work: 0 local
// transactions are begun on the real MariaDB (Com_begin + Com_xa_start of
// a private server, which a control request shows counting this
// participant's transactions). A group this participant confirmed ACTIVE
// and that was rolled back since is refused too: its join is refused by the
// TxManager before any local transaction begins. Both branch modes.
func TestHeaderTrustOpensNoLocalTransactions(t *testing.T) {
	m := newManager(t, storeBolt, fastConfig())
	mdb := testenv.StartMariaDB(t)
	root, err := sql.Open("mysql", mdb.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	starter := newClient(t, m, "starter")
	hc := &http.Client{Transport: txclient.Transport(nil), Timeout: 20 * time.Second}
	ctx := context.Background()

	for _, mode := range []string{sqlproxy.ModeLCN, sqlproxy.ModeXA} {
		t.Run(mode, func(t *testing.T) {
			p := newParticipantWith(t, m, "svc-a", partOpts{mode: mode, mdb: mdb})

			// Control: a request in an ACTIVE group begins a local
			// transaction, and the counters see it.
			c0 := localTxnsOpened(t, root)
			gctx, live, err := starter.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := call(gctx, hc, moveURL(p, 1, 5, "")); err != nil {
				t.Fatalf("control request: %v", err)
			}
			control := localTxnsOpened(t, root) - c0
			if control < 1 {
				t.Fatalf("control request in an ACTIVE group: %d local transactions counted, want ≥ 1", control)
			}
			if err := live.Rollback(ctx); err != nil {
				t.Fatalf("roll back the control group: %v", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for p.client.Status().Held != 0 || openTrx(t, root, p.schema) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("control branch still held or open 10s after its rollback")
				}
				time.Sleep(20 * time.Millisecond) // polling interval
			}

			var unknown, ended []string
			for range 100 {
				unknown = append(unknown, gid.New())
			}
			for i := range 100 {
				_, g, err := starter.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					err = g.Commit(ctx)
				} else {
					err = g.Rollback(ctx)
				}
				if err != nil {
					t.Fatalf("end group %d: %v", i, err)
				}
				ended = append(ended, g.ID())
			}

			before := localTxnsOpened(t, root)
			refuse := func(kind string, ids []string, want int) {
				t.Helper()
				for _, id := range ids {
					resp := postWithHeader(t, moveURL(p, 1, 1, ""), id)
					_ = resp.Body.Close()
					if resp.StatusCode/100 == 2 || (want != 0 && resp.StatusCode != want) {
						t.Fatalf("%s group %s: status %d, want %d", kind, id, resp.StatusCode, want)
					}
				}
			}
			refuse("unknown", unknown, http.StatusConflict)
			refuse("ended", ended, http.StatusConflict)
			refuse("confirmed, then rolled back", []string{live.ID()}, 0)
			n := localTxnsOpened(t, root) - before
			t.Logf("%s: %d unknown + %d ended + 1 confirmed-then-rolled-back group ids refused; local transactions begun: %d (control request: %d)",
				mode, len(unknown), len(ended), n, control)
			if n != 0 {
				t.Errorf("%d local transactions begun for %d refused group ids, want 0", n, len(unknown)+len(ended)+1)
			}
			if n := openTrx(t, root, p.schema); n != 0 {
				t.Errorf("%d InnoDB transactions open on the participant's schema, want 0", n)
			}
			if b := p.balance(t, 1); b != initialBalance {
				t.Errorf("balance %d after refused requests, want %d", b, initialBalance)
			}
		})
	}
}
