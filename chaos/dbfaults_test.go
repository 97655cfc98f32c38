//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/golcn/golcn/sqlproxy"
)

// dbConn is a service's MariaDB connection as PROCESSLIST and INNODB_TRX
// show it.
type dbConn struct {
	id       int64
	command  string // PROCESSLIST.COMMAND: Query, Sleep, ...
	info     string // the statement running, if any
	trxState string // INNODB_TRX.trx_state, "" without a transaction
}

// serviceConns lists the bank services' connections (users u_bank_*).
func (c *cluster) serviceConns(ctx context.Context) ([]dbConn, error) {
	rows, err := c.root.QueryContext(ctx, `SELECT p.ID, p.COMMAND, COALESCE(p.INFO, ''), COALESCE(t.trx_state, '')
		FROM information_schema.PROCESSLIST p LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
		WHERE p.USER LIKE 'u\_bank\_%'`)
	if err != nil {
		return nil, fmt.Errorf("list service connections: %w", err)
	}
	defer rows.Close()
	var out []dbConn
	for rows.Next() {
		var d dbConn
		if err := rows.Scan(&d.id, &d.command, &d.info, &d.trxState); err != nil {
			return nil, fmt.Errorf("list service connections: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// S10 — MariaDB connection and server faults, every 0.5–2 s one of: KILL
// CONNECTION of a service connection that holds a transaction (a held
// branch: its vote cast, its decision pending, or its commit running), KILL
// QUERY of a service connection running a statement, a reset_peer window
// on a service's link to MariaDB; and mariadbd SIGKILLed and restarted at a
// third and two thirds of the run. Pass: I1–I9 (no leg applied twice: an
// error from COMMIT is not retried blindly; no leg lost for an ok group),
// nothing prepared or open within T_rec of the last fault.
func TestS10DatabaseFaults(t *testing.T) {
	skipShort(t)
	run := time.Duration(scale(t)) * 120 * time.Second // the plan: 1,500 transfers, ≥ 200 kills; see chaos/doc.go
	c := newCluster(t, "S10", clusterOpts{mode: sqlproxy.ModeXA, dbLinks: true})
	start := time.Now()
	stopWorkload := c.background()
	defer stopWorkload()
	rng := rand.New(rand.NewPCG(c.seed, 10))
	counts := map[string]int{}
	crashes := []time.Duration{run / 3, 2 * run / 3}
	for time.Since(start) < run && !t.Failed() {
		time.Sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))) // the schedule
		if len(crashes) > 0 && time.Since(start) >= crashes[0] {
			crashes = crashes[1:]
			c.fault("SIGKILL mariadbd")
			c.mdb.Kill(t)
			c.mdb.Restart(t)
			counts["mariadbd crash"]++
			r := c.hist.Add(Record{Type: "nemesis", Fault: "mariadbd restarted"})
			c.lastT.Store(r.T)
			continue
		}
		qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
		conns, err := c.serviceConns(qctx)
		if err != nil {
			qcancel()
			c.hist.Add(Record{Type: "note", Fault: err.Error()})
			continue
		}
		var held, running []dbConn
		for _, d := range conns {
			if d.trxState != "" {
				held = append(held, d)
			}
			if d.command == "Query" {
				running = append(running, d)
			}
		}
		switch x := rng.IntN(10); {
		case x < 7 && len(held) > 0:
			d := held[rng.IntN(len(held))]
			c.fault(fmt.Sprintf("KILL CONNECTION %d (%s %q)", d.id, d.command, d.info))
			if _, err := c.root.ExecContext(qctx, fmt.Sprintf("KILL CONNECTION %d", d.id)); err == nil {
				counts["kill connection"]++
				if d.command == "Query" {
					counts["kill connection mid-statement"]++
				}
			}
		case x < 8 && len(running) > 0:
			d := running[rng.IntN(len(running))]
			c.fault(fmt.Sprintf("KILL QUERY %d (%q)", d.id, d.info))
			if _, err := c.root.ExecContext(qctx, fmt.Sprintf("KILL QUERY %d", d.id)); err == nil {
				counts["kill query"]++
			}
		case x >= 8:
			s := services[rng.IntN(len(services))]
			k := c.links["db-"+s]
			c.fault("reset_peer on the link of " + s + " to MariaDB")
			if err := k.toxic("reset", "reset_peer", "downstream", `{"timeout":0}`); err != nil {
				t.Error(err)
			} else {
				time.Sleep(time.Second) // the window's length
				if err := k.removeToxic("reset"); err != nil {
					t.Error(err)
				}
				counts["reset_peer window"]++
			}
		}
		qcancel()
		r := c.hist.Add(Record{Type: "nemesis", Fault: "fault over"})
		c.lastT.Store(r.T)
	}
	stopWorkload()
	fig, _ := c.finish(start, CheckOptions{})
	line := fmt.Sprintf("S10 kill-connection=%d (mid-statement %d) kill-query=%d reset-peer-windows=%d mariadbd-crashes=%d",
		counts["kill connection"], counts["kill connection mid-statement"], counts["kill query"], counts["reset_peer window"], counts["mariadbd crash"])
	t.Log(line)
	appendSummary(line)
	if counts["mariadbd crash"] < 2 {
		t.Errorf("%d mariadbd crashes, want 2", counts["mariadbd crash"])
	}
	if fig.quiescence > tRec {
		t.Errorf("not quiescent %v after the last fault, want ≤ %v", fig.quiescence, tRec)
	}
}
