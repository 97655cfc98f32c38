package sqlproxy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// plainTx is a local transaction outside any group: the inner driver's.
type plainTx struct {
	c  *conn
	tx driver.Tx
	// ctx is the BeginTx ctx. database/sql's Tx lives no longer than it (it
	// rolls back when ctx ends), so neither does this; Rollback consults it.
	ctx context.Context
}

func (t *plainTx) Commit() error {
	defer t.c.endTx(t)
	return t.tx.Commit()
}

func (t *plainTx) Rollback() error {
	defer t.c.endTx(t)
	err := t.tx.Rollback()
	if t.ctx.Err() != nil && !t.c.keepOnRollback {
		// database/sql discards a conn that lacks SessionResetter or
		// Validator after rolling back because ctx ended. Our wrapper has
		// both, so decide as it would for the inner conn.
		t.c.bad = true
	}
	return err
}

// groupTx is a local transaction in a group: explicit (BeginTx with a group
// ctx) or implicit (an autocommit statement with a group ctx). Its work runs
// in the group's branch; Commit votes.
type groupTx struct {
	b *branch
	c *conn // the conn whose state tracks this transaction; nil when implicit
	// ctx is the BeginTx ctx (explicit) or the statement's ctx (implicit).
	// database/sql's Tx (or the statement, or its Rows) lives no longer than
	// it, so neither does this; it bounds the vote.
	ctx    context.Context
	failed error // first failed statement: Commit then votes failed
	ended  bool
}

var _ driver.Tx = (*groupTx)(nil)

// fail records a statement's failure.
func (t *groupTx) fail(err error) {
	if err != nil && t.failed == nil {
		t.failed = notBadConn(err)
	}
}

// check vets a statement's text for the branch's mode (xa refuses
// statements that commit implicitly); a refused one is a failed statement.
func (t *groupTx) check(query string) error {
	if err := t.b.tx.check(query); err != nil {
		t.fail(err)
		return err
	}
	return nil
}

func (t *groupTx) exec(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := t.check(query); err != nil {
		return nil, err
	}
	var res driver.Result
	err := t.b.use(ctx, func(pc physConn) error {
		var err error
		res, err = pc.exec(ctx, query, args)
		t.fail(err)
		return err
	})
	return res, err
}

// execStmt runs a statement prepared in the branch (its text was checked
// then).
func (t *groupTx) execStmt(ctx context.Context, si driver.Stmt, args []driver.NamedValue) (driver.Result, error) {
	var res driver.Result
	err := t.b.use(ctx, func(physConn) error {
		var err error
		res, err = stmtExec(ctx, si, args)
		t.fail(err)
		return err
	})
	return res, err
}

// query runs run with the lease and returns Rows that keep it until closed.
// text is run's statement text, checked first ("": checked already).
// implicit: closing the Rows ends the implicit local transaction (votes).
func (t *groupTx) query(ctx context.Context, text string, run func(physConn) (driver.Rows, driver.Stmt, error), implicit bool) (driver.Rows, error) {
	if text != "" {
		if err := t.check(text); err != nil {
			return nil, err
		}
	}
	if err := t.b.lease(ctx); err != nil {
		return nil, err
	}
	returned := false
	defer func() {
		if !returned {
			t.b.breakLeased(errors.New("sqlproxy: driver panicked"))
		}
	}()
	rows, si, err := run(t.b.pc)
	returned = true
	if err != nil {
		t.fail(err)
		return nil, t.b.unlease(err)
	}
	return newLeasedRows(t, rows, si, implicit), nil
}

func (t *groupTx) prepare(ctx context.Context, query string) (driver.Stmt, error) {
	if err := t.check(query); err != nil {
		return nil, err
	}
	var s *stmt
	err := t.b.use(ctx, func(pc physConn) error {
		si, err := pc.prepare(ctx, query)
		if err != nil {
			t.fail(err)
			return err
		}
		t.b.addStmt(si)
		s = newStmt(nil, t, query, si)
		s.home = t.b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.driverStmt(), nil
}

func (t *groupTx) end() error {
	if t.ended {
		return errors.New("sqlproxy: local transaction already ended")
	}
	t.ended = true
	if t.c != nil {
		t.c.endTx(t)
	}
	return nil
}

// Commit votes: prepared (Coordinator.Vote ok, then Hold), leaving the local
// transaction open until the group's decision; or, if a statement failed,
// failed, rolling the branch back and returning ErrLocalTxFailed. A vote
// that may not have counted returns ErrVoteFailed after rolling back.
func (t *groupTx) Commit() error {
	if err := t.end(); err != nil {
		return err
	}
	if t.failed != nil {
		err := fmt.Errorf("%w: group %s: voted failed and rolled back; first error: %w", ErrLocalTxFailed, t.b.group, t.failed)
		t.b.rollbackLocal(t.ctx, err)
		return err
	}
	return t.b.commitLocal(t.ctx)
}

// Rollback rolls the branch back (the whole group's work on this datasource:
// the group cannot commit any more) and votes failed, best effort.
func (t *groupTx) Rollback() error {
	if err := t.end(); err != nil {
		return err
	}
	t.b.rollbackLocal(t.ctx, errors.New("sqlproxy: local transaction rolled back"))
	return nil
}

// abort ends the transaction as a rollback when its conn closes under it.
func (t *groupTx) abort(cause error) {
	if t.ended {
		return
	}
	t.ended = true
	t.b.rollbackLocal(t.ctx, cause)
}
