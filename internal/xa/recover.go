package xa

import (
	"context"

	"github.com/golcn/golcn/internal/gid"
)

// recovered is one row of XA RECOVER.
type recovered struct {
	format       int64
	gtrid, bqual string
}

// Recover runs XA RECOVER and returns the golcn branches the server holds
// prepared (format id FormatID, gtrid and bqual both 32 bytes and canonical
// ids). Every other xid (other software's, ProbeDurable's probes, malformed
// ones) is ignored. The result includes branches still attached to a live
// session (the server lists those too), so a caller must not assume every
// listed branch is orphaned. It needs the XA RECOVER privilege
// (XA_RECOVER_ADMIN on MySQL 8). Safe for concurrent use if q is.
func Recover(ctx context.Context, q Queryer) ([]Xid, error) {
	rows, err := recoverAll(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []Xid
	for _, r := range rows {
		if r.format == FormatID && gid.Valid(r.gtrid) && gid.Valid(r.bqual) {
			out = append(out, Xid{Group: r.gtrid, Branch: r.bqual})
		}
	}
	return out, nil
}

// recoverAll runs XA RECOVER (MariaDB: FORMAT='RAW' is the default; MySQL
// has the same columns) and splits each row's data by the lengths.
func recoverAll(ctx context.Context, q Queryer) ([]recovered, error) {
	const stmt = "XA RECOVER"
	rows, err := q.QueryContext(ctx, stmt)
	if err != nil {
		return nil, &Error{Stmt: stmt, Err: err}
	}
	defer rows.Close()
	var out []recovered
	for rows.Next() {
		var (
			format, glen, blen int64
			data               []byte // raw bytes: xids may hold any bytes
		)
		if err := rows.Scan(&format, &glen, &blen, &data); err != nil {
			return nil, &Error{Stmt: stmt, Err: err}
		}
		if glen < 0 || blen < 0 || glen+blen != int64(len(data)) {
			continue // not something we could have written
		}
		out = append(out, recovered{format: format, gtrid: string(data[:glen]), bqual: string(data[glen:])})
	}
	if err := rows.Err(); err != nil {
		return nil, &Error{Stmt: stmt, Err: err}
	}
	return out, nil
}

// isListed reports whether XA RECOVER lists x with the given format id.
func isListed(ctx context.Context, q Queryer, x Xid, format int) (bool, error) {
	rows, err := recoverAll(ctx, q)
	if err != nil {
		return false, err
	}
	for _, r := range rows {
		if r.format == int64(format) && r.gtrid == x.Group && r.bqual == x.Branch {
			return true, nil
		}
	}
	return false, nil
}
