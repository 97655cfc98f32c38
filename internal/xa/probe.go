package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golcn/golcn/internal/gid"
)

// probeWait bounds how long ProbeDurable waits for the server to let go of
// its probe branch after the preparing connection closed.
const probeWait = 5 * time.Second

// ProbeDurable reports whether the server behind db keeps a prepared XA
// branch when the connection that prepared it goes away, which is what the
// "xa" branch mode needs (MariaDB 10.5.2+, MySQL 5.7.7+). It decides by
// doing, not by parsing versions:
//
//  1. on a connection A of db: XA START, XA END, XA PREPARE of a fresh random
//     xid with format id ProbeFormatID (never returned by Recover);
//  2. A is closed physically (discarded from db's pool, not returned to it);
//  3. on another connection: durable iff XA RECOVER lists the probe xid;
//     it is then rolled back with the XAER_NOTA-aware RollbackPrepared.
//
// If the server rejects XA START, END or PREPARE (XA unsupported, or not
// allowed for this user or engine) it returns false and a nil error. Other
// failures (network, ctx) return an error. The probe xid is cleaned up on
// every path that prepared it, on a context detached from ctx; an error is
// returned if that cleanup fails (the probe branch holds no row locks: it
// wrote nothing). It touches no table. Safe for concurrent use.
func ProbeDurable(ctx context.Context, db *sql.DB) (durable bool, err error) {
	x := Xid{Group: gid.New(), Branch: gid.New()}
	a, err := db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("xa: probe: %w", err)
	}
	prepared := false
	defer func() {
		if !prepared {
			closePhysically(a) // idempotent; rolls back an unprepared probe branch
			return
		}
		// The probe may be left prepared on the server: make sure it goes.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeWait+5*time.Second)
		defer cancel()
		cerr := finishPrepared(cctx, db, "XA ROLLBACK", x, ProbeFormatID, probeWait)
		switch {
		case cerr == nil:
		case errors.Is(cerr, ErrUnknownXid) && !durable:
			// Not durable: the server dropped it when A closed.
		default:
			err = errors.Join(err, fmt.Errorf("xa: probe: clean up probe xid: %w", cerr))
		}
	}()
	for _, verb := range []string{"XA START", "XA END", "XA PREPARE"} {
		if err := runFormat(ctx, a, verb, x, ProbeFormatID, ""); err != nil {
			if isAnyServerErr(err) {
				return false, nil // the server refused: XA is not usable here
			}
			return false, fmt.Errorf("xa: probe: %w", err)
		}
	}
	prepared = true
	closePhysically(a)
	listed, err := isListed(ctx, db, x, ProbeFormatID)
	if err != nil {
		return false, fmt.Errorf("xa: probe: %w", err)
	}
	return listed, nil
}

func isAnyServerErr(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me)
}

// closePhysically closes c's underlying driver connection and makes
// database/sql discard it instead of returning it to the pool: returning
// driver.ErrBadConn from Raw does that. Idempotent.
func closePhysically(c *sql.Conn) {
	_ = c.Raw(func(dc any) error {
		if cl, ok := dc.(driver.Conn); ok {
			_ = cl.Close()
		}
		return driver.ErrBadConn
	})
	_ = c.Close() // sql.ErrConnDone after Raw discarded it
}
