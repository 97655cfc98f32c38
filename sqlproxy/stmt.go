package sqlproxy

import (
	"context"
	"database/sql/driver"
)

// stmt is a proxy statement. Prepared in a group transaction (tx set) it
// runs on that transaction's branch. Prepared otherwise (c set) it is routed
// at each execution like the conn's own statements: on the own physical
// conn outside a group, and by its text in the group's branch with a group
// ctx.
type stmt struct {
	c        *conn
	tx       *groupTx
	query    string
	si       driver.Stmt // nil: text only (prepared on a detached conn)
	numInput int
	home     *branch // non-nil when si lives on this branch's physical conn
	closed   bool
}

// stmtCC is a stmt whose inner statement implements the deprecated
// driver.ColumnConverter, which database/sql then uses.
type stmtCC struct{ *stmt }

func (s stmtCC) ColumnConverter(idx int) driver.ValueConverter {
	return s.si.(driver.ColumnConverter).ColumnConverter(idx)
}

var (
	_ driver.Stmt              = (*stmt)(nil)
	_ driver.StmtExecContext   = (*stmt)(nil)
	_ driver.StmtQueryContext  = (*stmt)(nil)
	_ driver.NamedValueChecker = (*stmt)(nil)
	_ driver.ColumnConverter   = stmtCC{}
)

func newStmt(c *conn, tx *groupTx, query string, si driver.Stmt) *stmt {
	// NumInput is read once: calling into si later could race with the
	// branch's use of its conn.
	return &stmt{c: c, tx: tx, query: query, si: si, numInput: si.NumInput()}
}

func (s *stmt) driverStmt() driver.Stmt {
	if _, ok := s.si.(driver.ColumnConverter); ok {
		return stmtCC{s}
	}
	return s
}

// Close closes the inner statement; one on a branch's conn is closed when
// the branch is free (at the latest when it ends).
func (s *stmt) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	switch {
	case s.si == nil:
		return nil
	case s.home != nil:
		s.home.closeStmt(s.si)
		return nil
	}
	delete(s.c.stmts, s)
	return s.si.Close()
}

func (s *stmt) NumInput() int { return s.numInput }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), valueToNamedValue(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), valueToNamedValue(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if s.tx != nil {
		return s.tx.execStmt(ctx, s.si, args)
	}
	c := s.c
	switch r, g := c.route(ctx); r {
	case routeOwn:
		if s.si != nil && s.home == nil {
			return stmtExec(ctx, s.si, args)
		}
	case routeTx:
		return c.tx.(*groupTx).exec(ctx, s.query, args)
	case routeGroup:
		return c.execImplicit(ctx, g, s.query, args)
	case routeNone:
	}
	return nil, ErrConnDetached
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if s.tx != nil {
		// Its text was checked when it was prepared in the branch.
		return s.tx.query(ctx, "", func(physConn) (driver.Rows, driver.Stmt, error) {
			rows, err := stmtQuery(ctx, s.si, args)
			return rows, nil, err
		}, false)
	}
	c := s.c
	switch r, g := c.route(ctx); r {
	case routeOwn:
		if s.si != nil && s.home == nil {
			return stmtQuery(ctx, s.si, args)
		}
	case routeTx:
		return c.tx.(*groupTx).query(ctx, s.query, runQuery(ctx, s.query, args), false)
	case routeGroup:
		return c.queryImplicit(ctx, g, s.query, runQuery(ctx, s.query, args))
	case routeNone:
	}
	return nil, ErrConnDetached
}

// CheckNamedValue forwards to the inner statement's checker, else to its
// connection's (database/sql never consults the conn when the statement
// implements NamedValueChecker), else returns driver.ErrSkip.
func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if nvc, ok := s.si.(driver.NamedValueChecker); ok {
		return nvc.CheckNamedValue(nv)
	}
	var nvc driver.NamedValueChecker
	if s.tx != nil {
		nvc = s.tx.b.nvc
	} else {
		nvc = s.c.nvc
	}
	if nvc != nil {
		return nvc.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}
