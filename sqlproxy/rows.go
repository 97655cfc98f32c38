package sqlproxy

import (
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
)

// leasedRows are Rows read from a branch's physical conn: they keep the
// branch's lease until closed. They implement every optional Rows interface,
// forwarding to the inner Rows and falling back to database/sql's defaults.
type leasedRows struct {
	t        *groupTx
	rows     driver.Rows
	si       driver.Stmt // prepared only for this query; closed with the rows
	implicit bool        // Close ends the implicit local transaction
	bad      error       // driver.ErrBadConn seen
	closed   bool
}

var (
	_ driver.RowsNextResultSet              = (*leasedRows)(nil)
	_ driver.RowsColumnTypeScanType         = (*leasedRows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*leasedRows)(nil)
	_ driver.RowsColumnTypeLength           = (*leasedRows)(nil)
	_ driver.RowsColumnTypeNullable         = (*leasedRows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*leasedRows)(nil)
)

func newLeasedRows(t *groupTx, rows driver.Rows, si driver.Stmt, implicit bool) *leasedRows {
	return &leasedRows{t: t, rows: rows, si: si, implicit: implicit}
}

// note records a failure seen while reading (io.EOF is not one).
func (r *leasedRows) note(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if errors.Is(err, driver.ErrBadConn) && r.bad == nil {
		r.bad = err
	}
	r.t.fail(err)
	return notBadConn(err)
}

func (r *leasedRows) Columns() []string { return r.rows.Columns() }

func (r *leasedRows) Next(dest []driver.Value) error { return r.note(r.rows.Next(dest)) }

// Close closes the inner rows, gives the branch back and, for an implicit
// local transaction, votes (the vote's error is returned here).
func (r *leasedRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.rows.Close()
	if r.si != nil {
		if e := r.si.Close(); err == nil {
			err = e
		}
	}
	if err != nil {
		err = r.note(err)
	}
	if r.bad != nil {
		err = r.t.b.unlease(r.bad)
	} else {
		r.t.b.release()
	}
	if r.implicit {
		if r.t.failed != nil {
			r.t.b.rollbackLocal(r.t.ctx, r.t.failed)
		} else if e := r.t.b.commitLocal(r.t.ctx); err == nil {
			err = e
		}
	}
	return err
}

func (r *leasedRows) HasNextResultSet() bool {
	if n, ok := r.rows.(driver.RowsNextResultSet); ok {
		return n.HasNextResultSet()
	}
	return false
}

func (r *leasedRows) NextResultSet() error {
	if n, ok := r.rows.(driver.RowsNextResultSet); ok {
		return r.note(n.NextResultSet())
	}
	return io.EOF
}

func (r *leasedRows) ColumnTypeScanType(i int) reflect.Type {
	if p, ok := r.rows.(driver.RowsColumnTypeScanType); ok {
		return p.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *leasedRows) ColumnTypeDatabaseTypeName(i int) string {
	if p, ok := r.rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return p.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *leasedRows) ColumnTypeLength(i int) (int64, bool) {
	if p, ok := r.rows.(driver.RowsColumnTypeLength); ok {
		return p.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *leasedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if p, ok := r.rows.(driver.RowsColumnTypeNullable); ok {
		return p.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *leasedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if p, ok := r.rows.(driver.RowsColumnTypePrecisionScale); ok {
		return p.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
