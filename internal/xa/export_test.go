package xa

import (
	"context"
	"database/sql"
	"time"
)

// Test-only seams.

// SetNotaHook installs f as the XAER_NOTA observer of finishPrepared and
// returns a function that removes it. Tests using it must not run in parallel.
func SetNotaHook(f func(x Xid, listed bool)) (restore func()) {
	notaHook.Store(&f)
	return func() { notaHook.Store(nil) }
}

// ClosePhysically closes a *sql.Conn's driver connection and discards it.
var ClosePhysically = closePhysically

// RecoveredRow is one raw XA RECOVER row.
type RecoveredRow struct {
	Format       int64
	Gtrid, Bqual string
}

// RecoverAll returns every XA RECOVER row, golcn or not.
func RecoverAll(ctx context.Context, q Queryer) ([]RecoveredRow, error) {
	rs, err := recoverAll(ctx, q)
	out := make([]RecoveredRow, len(rs))
	for i, r := range rs {
		out[i] = RecoveredRow{r.format, r.gtrid, r.bqual}
	}
	return out, err
}

// RollbackPreparedFormat is RollbackPrepared for an xid of another format id.
func RollbackPreparedFormat(ctx context.Context, db *sql.DB, x Xid, format int, wait time.Duration) error {
	return finishPrepared(ctx, db, "XA ROLLBACK", x, format, wait)
}

// Literal is Xid.SQL with another format id.
func (x Xid) Literal(format int) string { return x.literal(format) }
