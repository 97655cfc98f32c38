package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"testing"
)

func TestPassThroughForwardsEveryOptionalInterface(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.db.SetMaxOpenConns(1) // everything on c1

	mustNil(t, "Ping", e.db.PingContext(ctx))
	check(t, "Pinger.Ping calls", e.srv.count("c1 ping"), 1)

	_, err := e.db.ExecContext(ctx, "INSERT x ?", 1)
	mustNil(t, "Exec", err)
	check(t, "ExecerContext calls", e.srv.count("c1 exec INSERT x ?"), 1)
	check(t, "conn NamedValueChecker calls", e.srv.count("c1 checkconn"), 1)
	// Returning the conn to the pool asks Validator; reusing it, SessionResetter.
	if e.srv.count("c1 isvalid") == 0 {
		t.Error("Validator.IsValid not forwarded")
	}

	check(t, "SELECT CONN", connID(t, ctx, e.db), 1)
	check(t, "QueryerContext calls", e.srv.count("c1 query SELECT CONN"), 1)
	if e.srv.count("c1 reset") == 0 {
		t.Error("SessionResetter.ResetSession not forwarded")
	}

	tx, err := e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable, ReadOnly: true})
	mustNil(t, "BeginTx", err)
	_, err = tx.ExecContext(ctx, "UPDATE t")
	mustNil(t, "tx Exec", err)
	mustNil(t, "Commit", tx.Commit())
	check(t, "ConnBeginTx with options", e.srv.count(fmt.Sprintf("c1 begin iso=%d ro=true", sql.LevelSerializable)), 1)
	check(t, "commits", e.srv.count("c1 commit"), 1)

	st, err := e.db.PrepareContext(ctx, "INSERT y ?")
	mustNil(t, "Prepare", err)
	before := e.srv.count("c1 checkconn")
	_, err = st.ExecContext(ctx, 7)
	mustNil(t, "stmt Exec", err)
	check(t, "ConnPrepareContext calls", e.srv.count("c1 prepare INSERT y ?"), 1)
	check(t, "StmtExecContext calls", e.srv.count("c1 stmt exec INSERT y ?"), 1)
	check(t, "stmt checker fell back to the conn's", e.srv.count("c1 checkconn"), before+1)
	rows, err := st.QueryContext(ctx, 8)
	mustNil(t, "stmt Query", err)
	rows.Close()
	check(t, "StmtQueryContext calls", e.srv.count("c1 stmt query INSERT y ?"), 1)
	mustNil(t, "stmt Close", st.Close())
	check(t, "stmt closes", e.srv.count("c1 stmt close INSERT y ?"), 1)

	d := e.db.Driver()
	if _, ok := d.(fakeDriver); ok {
		t.Error("Driver() returned the inner driver")
	}
	if _, ok := d.(driver.DriverContext); ok {
		t.Error("Driver() has DriverContext although the inner driver has not")
	}
	dc, err := d.Open("dsn")
	mustNil(t, "Driver().Open", err)
	if _, ok := dc.(*conn); !ok {
		t.Errorf("Driver().Open = %T, want a proxy conn", dc)
	}
	mustNil(t, "Close", dc.Close())
	check(t, "joins", len(e.co.joins), 0)
	check(t, "votes", len(e.co.votes), 0)
}

func TestPassThroughStmtCheckers(t *testing.T) {
	ctx := context.Background()
	t.Run("stmt NamedValueChecker", func(t *testing.T) {
		e := newEnv(t)
		e.srv.set(func(s *fakeServer) { s.stmtChecker = true })
		e.db.SetMaxOpenConns(1)
		st, err := e.db.PrepareContext(ctx, "INSERT y ?")
		mustNil(t, "Prepare", err)
		defer st.Close()
		_, err = st.ExecContext(ctx, 7)
		mustNil(t, "Exec", err)
		check(t, "stmt checker calls", e.srv.count("c1 checkstmt"), 1)
		check(t, "conn checker calls", e.srv.count("c1 checkconn"), 0)
	})
	t.Run("stmt ColumnConverter", func(t *testing.T) {
		e := newEnv(t)
		e.srv.set(func(s *fakeServer) { s.stmtCC = true })
		e.db.SetMaxOpenConns(1)
		st, err := e.db.PrepareContext(ctx, "INSERT y ?")
		mustNil(t, "Prepare", err)
		defer st.Close()
		_, err = st.ExecContext(ctx, 7)
		mustNil(t, "Exec", err)
		// database/sql asks the conn's checker first (via our stmt), which
		// skips, then the ColumnConverter.
		check(t, "conn checker calls", e.srv.count("c1 checkconn"), 1)
		check(t, "ColumnConverter calls", e.srv.count("c1 columnconverter 0"), 1)
	})
}

func TestPassThroughMinimalDriverFallsBackLikeDatabaseSQL(t *testing.T) {
	e := newEnv(t)
	e.srv.set(func(s *fakeServer) { s.minimal = true })
	ctx := context.Background()
	e.db.SetMaxOpenConns(1)

	_, err := e.db.ExecContext(ctx, "INSERT x")
	mustNil(t, "Exec", err)
	check(t, "prepare", e.srv.count("c1 prepare INSERT x"), 1)
	check(t, "stmt exec", e.srv.count("c1 stmt exec INSERT x"), 1)
	check(t, "stmt close", e.srv.count("c1 stmt close INSERT x"), 1)

	check(t, "SELECT CONN", connID(t, ctx, e.db), 1)
	check(t, "stmt query", e.srv.count("c1 stmt query SELECT CONN"), 1)

	mustNil(t, "Ping", e.db.PingContext(ctx))
	check(t, "pings", e.srv.count("c1 ping"), 0)

	_, err = e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err == nil || !strings.Contains(err.Error(), "non-default isolation level") {
		t.Errorf("BeginTx(serializable) without ConnBeginTx: err = %v", err)
	}
	tx, err := e.db.BeginTx(ctx, nil)
	mustNil(t, "BeginTx", err)
	mustNil(t, "Commit", tx.Commit())
	check(t, "begins", e.srv.count("c1 begin iso=0 ro=false"), 1)

	// In a group too: the branch falls back to prepare+exec itself.
	g := gctx("g")
	tx, err = e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx in group", err)
	_, err = tx.ExecContext(g, "INSERT in group")
	mustNil(t, "Exec in group", err)
	mustNil(t, "Commit in group", tx.Commit())
	check(t, "stmt exec in branch", e.srv.count("c1 stmt exec INSERT in group"), 1)
	check(t, "votes", len(e.co.votesFor("g")), 1)
}

func TestPlainTxRollbackOnCancelDiscardsConnWithoutResetter(t *testing.T) {
	// database/sql discards a conn whose Tx was rolled back because its ctx
	// ended, unless the conn has SessionResetter and Validator. The proxy has
	// both, so it must decide as database/sql would for the inner conn.
	for _, minimal := range []bool{false, true} {
		t.Run(fmt.Sprintf("minimal=%t", minimal), func(t *testing.T) {
			e := newEnv(t)
			e.srv.set(func(s *fakeServer) { s.minimal = minimal })
			e.db.SetMaxOpenConns(1)
			ctx, cancel := context.WithCancel(context.Background())
			tx, err := e.db.BeginTx(ctx, nil)
			mustNil(t, "BeginTx", err)
			cancel()
			_ = tx.Rollback()
			_, _ = e.db.ExecContext(context.Background(), "INSERT after")
			want := 1
			if minimal {
				want = 2 // c1 discarded
			}
			check(t, "physical conns opened", e.srv.opened(), want)
		})
	}
}
