package sqlproxy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/golcn/golcn/internal/groupctx"
)

// connState is the life of a proxy connection, the driver.Conn database/sql
// holds. Once it hands its physical connection to a branch it is detached
// (the branch's own states, branchState, then take over that connection).
//
//	idle ──BeginTx──▶ inTx ──Commit/Rollback──▶ idle      (own physical conn kept)
//	  │                 ▲  └────────────────────▶ detached (physical conn went to a branch)
//	  │ first work of   │ BeginTx in a group
//	  │ a group         │ with a branch
//	  └──▶ detached ────┘
//	any ──Close──▶ closed
type connState uint8

const (
	// connIdle: owns its physical conn; no local transaction.
	connIdle connState = iota
	// connInTx: a local transaction is open: outside a group on the own
	// physical conn, or in a group on the group's branch.
	connInTx
	// connDetached: its physical conn serves a branch. IsValid is false and
	// ResetSession returns ErrBadConn, so database/sql never pools it
	// (invariant 4); it can still run work of a group that has a branch.
	connDetached
	// connClosed: Close was called. Final.
	connClosed
)

func (s connState) String() string {
	switch s {
	case connIdle:
		return "idle"
	case connInTx:
		return "in local tx"
	case connDetached:
		return "detached"
	case connClosed:
		return "closed"
	default:
		return fmt.Sprintf("connState(%d)", uint8(s))
	}
}

// conn is a proxy connection. Like any driver.Conn it is used by one
// goroutine at a time (database/sql holds its lock around every call); the
// shared state it touches (source, branch) has its own locks.
type conn struct {
	src            *source
	phys           physConn                 // empty once handed to a branch
	nvc            driver.NamedValueChecker // the physical conn's, kept after hand-over
	keepOnRollback bool                     // the physical conn has SessionResetter and Validator
	state          connState
	tx             driver.Tx          // *plainTx or *groupTx while connInTx
	stmts          map[*stmt]struct{} // open statements prepared on phys
	bad            bool               // phys must not be reused (ErrBadConn we could not return)
}

// Every optional interface of a driver.Conn, forwarded to the physical conn
// with database/sql's fallback where it lacks one.
var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
)

func newConn(src *source, p physConn) *conn {
	return &conn{src: src, phys: p, nvc: p.checker(), keepOnRollback: p.keepOnRollback()}
}

// --- transitions ---

func (c *conn) toInTx(tx driver.Tx) {
	switch c.state {
	case connIdle:
	case connDetached:
		if _, ok := tx.(*groupTx); !ok {
			panic(bug("local transaction outside a group on a detached connection"))
		}
	case connInTx, connClosed:
		panic(bug("begin on a connection %s", c.state))
	}
	c.state = connInTx
	c.tx = tx
}

func (c *conn) endTx(tx driver.Tx) {
	switch c.state {
	case connInTx:
		if c.tx != tx {
			panic(bug("ending a transaction that is not the connection's"))
		}
	case connClosed:
		return // Close ended it
	case connIdle, connDetached:
		panic(bug("ending a transaction on a connection %s", c.state))
	}
	c.tx = nil
	if c.phys.ok() {
		c.state = connIdle
	} else {
		c.state = connDetached
	}
}

// handOver detaches c: its physical conn, and the statements prepared on it,
// now belong to b.
func (c *conn) handOver(b *branch) (physConn, driver.NamedValueChecker, map[driver.Stmt]struct{}) {
	if c.state != connIdle {
		panic(bug("hand-over from a connection %s", c.state))
	}
	pc := c.phys
	c.phys = physConn{}
	stmts := make(map[driver.Stmt]struct{}, len(c.stmts))
	for s := range c.stmts {
		s.home = b
		stmts[s.si] = struct{}{}
	}
	c.stmts = nil
	c.state = connDetached
	return pc, c.nvc, stmts
}

func (c *conn) toClosed() {
	switch c.state {
	case connIdle, connInTx, connDetached:
	case connClosed:
		panic(bug("closing a closed connection"))
	}
	c.state = connClosed
	c.tx = nil
}

// --- routing ---

type route uint8

const (
	routeOwn   route = iota // the own physical conn: outside any group
	routeTx                 // the open group transaction's branch
	routeGroup              // an implicit local transaction in ctx's group
	routeNone               // detached, no group: nowhere to run
)

// route says where work issued on c with ctx runs. An open transaction
// decides alone: statements of a group transaction run in its branch
// whatever their ctx, statements of a transaction begun outside a group run
// on the own conn whatever their ctx.
func (c *conn) route(ctx context.Context) (route, string) {
	switch c.state {
	case connInTx:
		if _, ok := c.tx.(*groupTx); ok {
			return routeTx, ""
		}
		return routeOwn, ""
	case connIdle, connDetached:
		if g, ok := groupctx.From(ctx); ok {
			return routeGroup, g
		}
		if c.state == connIdle {
			return routeOwn, ""
		}
	case connClosed:
	}
	return routeNone, ""
}

// --- driver.Conn ---

// Prepare is PrepareContext with context.Background.
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext prepares on the branch inside a group transaction, else on
// the own physical conn. A statement prepared outside a group transaction
// and executed with a group ctx re-runs its text in the group's branch.
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	r, _ := c.route(ctx)
	switch r {
	case routeTx:
		return c.tx.(*groupTx).prepare(ctx, query)
	case routeOwn, routeGroup:
		if !c.phys.ok() {
			// Detached: the statement can only ever run in a group's
			// branch, by its text.
			s := &stmt{c: c, query: query, numInput: -1}
			return s, nil
		}
		si, err := c.phys.prepare(ctx, query)
		if err != nil {
			return nil, err
		}
		s := newStmt(c, nil, query, si)
		if c.stmts == nil {
			c.stmts = make(map[*stmt]struct{})
		}
		c.stmts[s] = struct{}{}
		return s.driverStmt(), nil
	case routeNone:
	}
	return nil, ErrConnDetached
}

// Begin is BeginTx with context.Background and default options.
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx begins a local transaction. Outside a group (ctx carries none) it
// is the inner driver's. In a group it runs in the group's branch on this
// datasource, joining the group first if there is none (Coordinator.Join,
// bounded by VoteTimeout); this conn's physical conn then serves the branch
// and the conn is detached. ctx is kept for the vote at Commit.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	switch c.state {
	case connInTx:
		return nil, errors.New("sqlproxy: connection already has an open transaction")
	case connClosed:
		return nil, driver.ErrBadConn
	case connIdle, connDetached:
	}
	group, ok := groupctx.From(ctx)
	if !ok {
		if !c.phys.ok() {
			return nil, ErrConnDetached
		}
		tx, err := c.phys.begin(ctx, opts)
		if err != nil {
			return nil, err
		}
		t := &plainTx{c: c, tx: tx, ctx: ctx}
		c.toInTx(t)
		return t, nil
	}
	b, err := c.src.enter(ctx, group, opts, c)
	if err != nil {
		return nil, err
	}
	t := &groupTx{b: b, c: c, ctx: ctx}
	c.toInTx(t)
	return t, nil
}

// ExecContext runs query where route says. With a group ctx outside a
// transaction it is an implicit local transaction of the group: it runs in
// the branch, then votes (prepared, or failed if it errored) before
// returning.
func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	switch r, g := c.route(ctx); r {
	case routeOwn:
		return c.phys.execDirect(ctx, query, args)
	case routeTx:
		return c.tx.(*groupTx).exec(ctx, query, args)
	case routeGroup:
		return c.execImplicit(ctx, g, query, args)
	case routeNone:
	}
	return nil, ErrConnDetached
}

// QueryContext is ExecContext for queries. In an implicit local transaction
// the branch stays taken until the Rows are closed; the vote happens then
// and its error is returned by Rows.Close.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	switch r, g := c.route(ctx); r {
	case routeOwn:
		return c.phys.queryDirect(ctx, query, args)
	case routeTx:
		return c.tx.(*groupTx).query(ctx, query, runQuery(ctx, query, args), false)
	case routeGroup:
		return c.queryImplicit(ctx, g, query, runQuery(ctx, query, args))
	case routeNone:
	}
	return nil, ErrConnDetached
}

func runQuery(ctx context.Context, query string, args []driver.NamedValue) func(physConn) (driver.Rows, driver.Stmt, error) {
	return func(pc physConn) (driver.Rows, driver.Stmt, error) { return pc.query(ctx, query, args) }
}

func (c *conn) execImplicit(ctx context.Context, group, query string, args []driver.NamedValue) (driver.Result, error) {
	b, err := c.src.enter(ctx, group, driver.TxOptions{}, c)
	if err != nil {
		return nil, err
	}
	t := &groupTx{b: b, ctx: ctx}
	res, err := t.exec(ctx, query, args)
	if err != nil {
		b.rollbackLocal(ctx, fmt.Errorf("sqlproxy: autocommit statement failed: %w", err))
		return nil, err
	}
	if err := b.commitLocal(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

// queryImplicit runs run (whose statement text is text) as an implicit
// local transaction of group.
func (c *conn) queryImplicit(ctx context.Context, group, text string, run func(physConn) (driver.Rows, driver.Stmt, error)) (driver.Rows, error) {
	b, err := c.src.enter(ctx, group, driver.TxOptions{}, c)
	if err != nil {
		return nil, err
	}
	t := &groupTx{b: b, ctx: ctx}
	rows, err := t.query(ctx, text, run, true)
	if err != nil {
		b.rollbackLocal(ctx, fmt.Errorf("sqlproxy: autocommit query failed: %w", err))
		return nil, err
	}
	return rows, nil
}

// Ping pings the branch's physical conn inside a group transaction, else the
// own one.
func (c *conn) Ping(ctx context.Context) error {
	if t, ok := c.tx.(*groupTx); ok && c.state == connInTx {
		return t.b.use(ctx, func(pc physConn) error { return pc.ping(ctx) })
	}
	if c.phys.ok() {
		return c.phys.ping(ctx)
	}
	return ErrConnDetached
}

// ResetSession forwards to the physical conn. A detached or bad conn
// returns driver.ErrBadConn so database/sql discards it. The proxy keeps no
// session state of its own outside a transaction, so there is none to reset.
func (c *conn) ResetSession(ctx context.Context) error {
	switch c.state {
	case connIdle:
		if c.bad {
			return driver.ErrBadConn
		}
		return c.phys.resetSession(ctx)
	case connDetached:
		return ErrConnDetached
	case connInTx:
		if c.phys.ok() {
			return c.phys.resetSession(ctx)
		}
		return nil
	case connClosed:
	}
	return driver.ErrBadConn
}

// IsValid is false for a detached or bad conn (database/sql then closes it
// instead of pooling it) and otherwise the physical conn's answer.
func (c *conn) IsValid() bool {
	switch c.state {
	case connIdle, connInTx:
		return !c.bad && c.phys.ok() && c.phys.valid()
	case connDetached, connClosed:
	}
	return false
}

// CheckNamedValue forwards to the physical conn's checker, or returns
// driver.ErrSkip (database/sql's default conversion) when it has none.
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if c.nvc != nil {
		return c.nvc.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// Close closes the own physical conn. A detached conn has none: its former
// physical conn belongs to the branch. A group transaction still open is
// rolled back (the group will not commit).
func (c *conn) Close() error {
	if c.state == connClosed {
		return nil
	}
	if t, ok := c.tx.(*groupTx); ok && c.state == connInTx {
		t.abort(errors.New("sqlproxy: connection closed during the local transaction"))
	}
	c.toClosed()
	if !c.phys.ok() {
		return nil
	}
	pc := c.phys
	c.phys = physConn{}
	c.stmts = nil
	return pc.close()
}
