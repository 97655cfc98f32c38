package sqlproxy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// physConn is a physical connection: one opened by the inner driver. Its
// methods call the inner driver's optional interfaces and, where one is
// missing, fall back exactly as database/sql would.
//
// meta travels with the connection wherever it goes (proxy conn, branch,
// free list); it is read and written only by whoever has exclusive use of
// the connection.
type physConn struct {
	ci   driver.Conn
	meta *physMeta
}

// physMeta is what the proxy learnt about a physical connection.
type physMeta struct {
	// serverID is the server's id of the session (SELECT CONNECTION_ID()),
	// recorded by the first xa branch on the connection; 0 until then.
	serverID uint64
}

func newPhys(ci driver.Conn) physConn { return physConn{ci: ci, meta: &physMeta{}} }

func (p physConn) ok() bool { return p.ci != nil }

func (p physConn) close() error { return p.ci.Close() }

func (p physConn) ping(ctx context.Context) error {
	if pi, ok := p.ci.(driver.Pinger); ok {
		return pi.Ping(ctx)
	}
	return nil // database/sql treats a conn without Pinger as alive
}

func (p physConn) resetSession(ctx context.Context) error {
	if sr, ok := p.ci.(driver.SessionResetter); ok {
		return sr.ResetSession(ctx)
	}
	return nil
}

func (p physConn) valid() bool {
	if v, ok := p.ci.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// keepOnRollback reports whether database/sql would keep this conn after
// rolling back a transaction whose ctx was cancelled (see sql.DB.beginDC).
func (p physConn) keepOnRollback() bool {
	_, r := p.ci.(driver.SessionResetter)
	_, v := p.ci.(driver.Validator)
	return r && v
}

func (p physConn) checker() driver.NamedValueChecker {
	c, _ := p.ci.(driver.NamedValueChecker)
	return c
}

// begin is database/sql's ctxDriverBegin.
func (p physConn) begin(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if bt, ok := p.ci.(driver.ConnBeginTx); ok {
		return bt.BeginTx(ctx, opts)
	}
	if opts.Isolation != driver.IsolationLevel(0) {
		return nil, errors.New("sqlproxy: driver does not support non-default isolation level")
	}
	if opts.ReadOnly {
		return nil, errors.New("sqlproxy: driver does not support read-only transactions")
	}
	if ctx.Done() == nil {
		return p.ci.Begin() //nolint:staticcheck // fallback for drivers without ConnBeginTx
	}
	tx, err := p.ci.Begin() //nolint:staticcheck // fallback for drivers without ConnBeginTx
	if err == nil {
		select {
		default:
		case <-ctx.Done():
			tx.Rollback()
			return nil, ctx.Err()
		}
	}
	return tx, err
}

// prepare is database/sql's ctxDriverPrepare.
func (p physConn) prepare(ctx context.Context, query string) (driver.Stmt, error) {
	if pc, ok := p.ci.(driver.ConnPrepareContext); ok {
		return pc.PrepareContext(ctx, query)
	}
	si, err := p.ci.Prepare(query)
	if err == nil {
		select {
		default:
		case <-ctx.Done():
			si.Close()
			return nil, ctx.Err()
		}
	}
	return si, err
}

// execDirect runs query without preparing it, if the driver can. It returns
// driver.ErrSkip, unwrapped, when it cannot (database/sql compares with ==).
func (p physConn) execDirect(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if ec, ok := p.ci.(driver.ExecerContext); ok {
		return ec.ExecContext(ctx, query, args)
	}
	if e, ok := p.ci.(driver.Execer); ok { //nolint:staticcheck // fallback as in database/sql
		vals, err := namedValueToValue(args)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return e.Exec(query, vals)
	}
	return nil, driver.ErrSkip
}

// queryDirect is execDirect for queries.
func (p physConn) queryDirect(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if qc, ok := p.ci.(driver.QueryerContext); ok {
		return qc.QueryContext(ctx, query, args)
	}
	if q, ok := p.ci.(driver.Queryer); ok { //nolint:staticcheck // fallback as in database/sql
		vals, err := namedValueToValue(args)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return q.Query(query, vals)
	}
	return nil, driver.ErrSkip
}

// exec runs query, preparing it first when the driver cannot run it
// directly, as database/sql does. It never returns driver.ErrSkip.
func (p physConn) exec(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	res, err := p.execDirect(ctx, query, args)
	if err != driver.ErrSkip {
		return res, err
	}
	si, err := p.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	defer si.Close()
	if err := checkNumInput(si, len(args)); err != nil {
		return nil, err
	}
	return stmtExec(ctx, si, args)
}

// query is exec for queries. If it had to prepare, it returns the statement,
// which the caller closes after the rows.
func (p physConn) query(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, driver.Stmt, error) {
	rows, err := p.queryDirect(ctx, query, args)
	if err != driver.ErrSkip {
		return rows, nil, err
	}
	si, err := p.prepare(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	if err := checkNumInput(si, len(args)); err != nil {
		si.Close()
		return nil, nil, err
	}
	rows, err = stmtQuery(ctx, si, args)
	if err != nil {
		si.Close()
		return nil, nil, err
	}
	return rows, si, nil
}

func checkNumInput(si driver.Stmt, n int) error {
	if want := si.NumInput(); want >= 0 && want != n {
		return fmt.Errorf("sqlproxy: expected %d arguments, got %d", want, n)
	}
	return nil
}

// stmtExec is database/sql's ctxDriverStmtExec.
func stmtExec(ctx context.Context, si driver.Stmt, args []driver.NamedValue) (driver.Result, error) {
	if se, ok := si.(driver.StmtExecContext); ok {
		return se.ExecContext(ctx, args)
	}
	vals, err := namedValueToValue(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return si.Exec(vals) //nolint:staticcheck // fallback as in database/sql
}

// stmtQuery is database/sql's ctxDriverStmtQuery.
func stmtQuery(ctx context.Context, si driver.Stmt, args []driver.NamedValue) (driver.Rows, error) {
	if sq, ok := si.(driver.StmtQueryContext); ok {
		return sq.QueryContext(ctx, args)
	}
	vals, err := namedValueToValue(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return si.Query(vals) //nolint:staticcheck // fallback as in database/sql
}

func namedValueToValue(named []driver.NamedValue) ([]driver.Value, error) {
	vals := make([]driver.Value, len(named))
	for i, nv := range named {
		if nv.Name != "" {
			return nil, errors.New("sqlproxy: driver does not support the use of Named Parameters")
		}
		vals[i] = nv.Value
	}
	return vals, nil
}

func valueToNamedValue(vals []driver.Value) []driver.NamedValue {
	named := make([]driver.NamedValue, len(vals))
	for i, v := range vals {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return named
}
