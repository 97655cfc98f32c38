package sqlproxy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golcn/golcn/internal/gid"
)

// fakeServer is the shared state behind the fake driver, in the spirit of
// database/sql's fakedb_test.go: it numbers physical connections, logs every
// driver call as "c<id> <op> [detail]", records misuse (a connection used by
// two goroutines at once, a statement while rows are open, a begin inside a
// transaction) as violations, and has fault hooks.
//
// Statements are directives: "FAIL..." fails, "BADCONN..." returns
// driver.ErrBadConn (and marks the conn invalid), "SLEEP..." sleeps 1ms,
// "SELECT CONN" and "SELECT CONNECTION_ID()" return one row holding the
// connection's id; anything else (XA statements included) succeeds with one
// row affected, or returns no rows. stmtHook, if set, may fail any statement
// first.
type fakeServer struct {
	mu         sync.Mutex
	nextID     int
	conns      map[int]*fakeConn
	log        []string
	violations []string

	// Fault hooks and modes, guarded by mu; set before use.
	minimal     bool  // conns implement only driver.Conn
	stmtChecker bool  // statements implement NamedValueChecker
	stmtCC      bool  // statements implement ColumnConverter
	beginErr    error // returned by BeginTx
	commitErr   error // returned by Tx.Commit
	// stmtHook, if set, is called (without mu) before every statement with
	// the conn id and the query; a non-nil error fails the statement.
	stmtHook func(conn int, query string) error
}

var errFakeStatement = errors.New("fake: statement failed")

func newFakeServer() *fakeServer { return &fakeServer{conns: make(map[int]*fakeConn)} }

func (s *fakeServer) logf(format string, args ...any) {
	s.mu.Lock()
	s.log = append(s.log, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *fakeServer) violate(format string, args ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *fakeServer) logCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

func (s *fakeServer) violationsCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// count returns how many log entries equal entry.
func (s *fakeServer) count(entry string) int {
	n := 0
	for _, e := range s.logCopy() {
		if e == entry {
			n++
		}
	}
	return n
}

// countPrefix returns how many log entries start with prefix.
func (s *fakeServer) countPrefix(prefix string) int {
	n := 0
	for _, e := range s.logCopy() {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func (s *fakeServer) conn(id int) *fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

func (s *fakeServer) opened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextID
}

// inTx lists the connections with an open transaction.
func (s *fakeServer) inTx() []int {
	s.mu.Lock()
	conns := make([]*fakeConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var ids []int
	for _, c := range conns {
		c.mu.Lock()
		if c.inTx && !c.closed {
			ids = append(ids, c.id)
		}
		c.mu.Unlock()
	}
	slices.Sort(ids)
	return ids
}

func (s *fakeServer) open() (driver.Conn, error) {
	s.mu.Lock()
	s.nextID++
	c := &fakeConn{srv: s, id: s.nextID}
	s.conns[c.id] = c
	minimal := s.minimal
	s.log = append(s.log, fmt.Sprintf("c%d connect", c.id))
	s.mu.Unlock()
	if minimal {
		return minimalConn{c}, nil
	}
	return c, nil
}

// fakeConnector is a driver.Connector and io.Closer.
type fakeConnector struct{ srv *fakeServer }

func (fc fakeConnector) Connect(context.Context) (driver.Conn, error) { return fc.srv.open() }
func (fc fakeConnector) Driver() driver.Driver                        { return fakeDriver{fc.srv} }
func (fc fakeConnector) Close() error {
	fc.srv.logf("connector close")
	return nil
}

// fakeDriver has no DriverContext; fakeDriverCtx has.
type fakeDriver struct{ srv *fakeServer }

func (d fakeDriver) Open(dsn string) (driver.Conn, error) { return d.srv.open() }

type fakeDriverCtx struct{ fakeDriver }

func (d fakeDriverCtx) OpenConnector(dsn string) (driver.Connector, error) {
	d.srv.logf("open connector %s", dsn)
	return fakeConnector{d.srv}, nil
}

// fakeConn implements every optional driver.Conn interface.
type fakeConn struct {
	srv  *fakeServer
	id   int
	busy atomic.Bool

	mu       sync.Mutex // guards the fields below
	inTx     bool
	closed   bool
	bad      bool
	openRows int
}

// enter marks the conn in use for op; it records a violation if another
// goroutine is using it, if it is closed, or (for statements) if rows are open.
func (c *fakeConn) enter(op string, statement bool) func() {
	if !c.busy.CompareAndSwap(false, true) {
		c.srv.violate("c%d: %s while in use by another goroutine", c.id, op)
		return func() {}
	}
	c.mu.Lock()
	if c.closed {
		c.srv.violate("c%d: %s on a closed conn", c.id, op)
	}
	if statement && c.openRows > 0 {
		c.srv.violate("c%d: %s while rows are open", c.id, op)
	}
	c.mu.Unlock()
	return func() { c.busy.Store(false) }
}

func (c *fakeConn) logf(format string, args ...any) {
	c.srv.logf("c%d "+format, append([]any{c.id}, args...)...)
}

func (c *fakeConn) run(op, query string) error {
	c.logf("%s %s", op, query)
	c.srv.mu.Lock()
	hook := c.srv.stmtHook
	c.srv.mu.Unlock()
	if hook != nil {
		if err := hook(c.id, query); err != nil {
			return err
		}
	}
	switch {
	case strings.HasPrefix(query, "FAIL"):
		return errFakeStatement
	case strings.HasPrefix(query, "BADCONN"):
		c.mu.Lock()
		c.bad = true
		c.mu.Unlock()
		return driver.ErrBadConn
	case strings.HasPrefix(query, "SLEEP"):
		time.Sleep(time.Millisecond)
	}
	return nil
}

func (c *fakeConn) rows(query string) *fakeRows {
	c.mu.Lock()
	c.openRows++
	c.mu.Unlock()
	r := &fakeRows{c: c, cols: []string{"conn"}}
	if query == "SELECT CONN" || query == "SELECT CONNECTION_ID()" {
		r.data = [][]driver.Value{{int64(c.id)}}
	}
	return r
}

func (c *fakeConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *fakeConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	defer c.enter("prepare", true)()
	if err := c.run("prepare", query); err != nil {
		return nil, err
	}
	c.srv.mu.Lock()
	checker, cc := c.srv.stmtChecker, c.srv.stmtCC
	c.srv.mu.Unlock()
	s := &fakeStmt{c: c, query: query}
	switch {
	case checker:
		return fakeStmtChecker{s}, nil
	case cc:
		return fakeStmtCC{s}, nil
	}
	return s, nil
}

func (c *fakeConn) Close() error {
	defer c.enter("close", false)()
	c.mu.Lock()
	if c.closed {
		c.srv.violate("c%d: closed twice", c.id)
	}
	c.closed = true
	c.mu.Unlock()
	c.logf("close")
	return nil
}

func (c *fakeConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *fakeConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	defer c.enter("begin", true)()
	c.srv.mu.Lock()
	berr := c.srv.beginErr
	c.srv.mu.Unlock()
	if berr != nil {
		c.logf("begin failed")
		return nil, berr
	}
	c.mu.Lock()
	if c.inTx {
		c.srv.violate("c%d: begin inside a transaction", c.id)
	}
	c.inTx = true
	c.mu.Unlock()
	c.logf("begin iso=%d ro=%t", opts.Isolation, opts.ReadOnly)
	return &fakeTx{c: c}, nil
}

func (c *fakeConn) Ping(ctx context.Context) error {
	defer c.enter("ping", true)()
	c.logf("ping")
	return nil
}

func (c *fakeConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	defer c.enter("exec", true)()
	if err := c.run("exec", query); err != nil {
		return nil, err
	}
	return driver.RowsAffected(1), nil
}

func (c *fakeConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	defer c.enter("query", true)()
	if err := c.run("query", query); err != nil {
		return nil, err
	}
	return c.rows(query), nil
}

func (c *fakeConn) ResetSession(ctx context.Context) error {
	defer c.enter("reset", false)()
	c.logf("reset")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad {
		return driver.ErrBadConn
	}
	return nil
}

func (c *fakeConn) IsValid() bool {
	defer c.enter("isvalid", false)()
	c.logf("isvalid")
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.bad && !c.closed
}

// CheckNamedValue does not touch connection state (no enter).
func (c *fakeConn) CheckNamedValue(nv *driver.NamedValue) error {
	c.logf("checkconn")
	return driver.ErrSkip
}

// minimalConn exposes only driver.Conn.
type minimalConn struct{ c *fakeConn }

func (m minimalConn) Prepare(query string) (driver.Stmt, error) { return m.c.Prepare(query) }
func (m minimalConn) Close() error                              { return m.c.Close() }
func (m minimalConn) Begin() (driver.Tx, error)                 { return m.c.Begin() }

type fakeTx struct{ c *fakeConn }

func (t *fakeTx) end(op string) error {
	defer t.c.enter(op, true)()
	t.c.mu.Lock()
	if !t.c.inTx {
		t.c.srv.violate("c%d: %s outside a transaction", t.c.id, op)
	}
	t.c.inTx = false
	t.c.mu.Unlock()
	t.c.logf("%s", op)
	return nil
}

func (t *fakeTx) Commit() error {
	t.c.srv.mu.Lock()
	err := t.c.srv.commitErr
	t.c.srv.mu.Unlock()
	t.end("commit")
	return err
}

func (t *fakeTx) Rollback() error { return t.end("rollback") }

type fakeStmt struct {
	c     *fakeConn
	query string
}

func (s *fakeStmt) Close() error {
	defer s.c.enter("stmt close", false)()
	s.c.logf("stmt close %s", s.query)
	return nil
}

func (s *fakeStmt) NumInput() int { return strings.Count(s.query, "?") }

func (s *fakeStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), valueToNamedValue(args))
}

func (s *fakeStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), valueToNamedValue(args))
}

func (s *fakeStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	defer s.c.enter("stmt exec", true)()
	if err := s.c.run("stmt exec", s.query); err != nil {
		return nil, err
	}
	return driver.RowsAffected(1), nil
}

func (s *fakeStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	defer s.c.enter("stmt query", true)()
	if err := s.c.run("stmt query", s.query); err != nil {
		return nil, err
	}
	return s.c.rows(s.query), nil
}

type fakeStmtChecker struct{ *fakeStmt }

func (s fakeStmtChecker) CheckNamedValue(nv *driver.NamedValue) error {
	s.c.logf("checkstmt")
	return driver.ErrSkip
}

type fakeStmtCC struct{ *fakeStmt }

func (s fakeStmtCC) ColumnConverter(idx int) driver.ValueConverter {
	s.c.logf("columnconverter %d", idx)
	return driver.DefaultParameterConverter
}

type fakeRows struct {
	c      *fakeConn
	cols   []string
	data   [][]driver.Value
	closed bool
}

func (r *fakeRows) Columns() []string { return r.cols }

func (r *fakeRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.c.mu.Lock()
	r.c.openRows--
	r.c.mu.Unlock()
	return nil
}

func (r *fakeRows) Next(dest []driver.Value) error {
	if len(r.data) == 0 {
		return io.EOF
	}
	copy(dest, r.data[0])
	r.data = r.data[1:]
	return nil
}

func (r *fakeRows) ColumnTypeDatabaseTypeName(int) string { return "BIGINT" }

// fakeCoord is a Coordinator that records calls, with fault hooks.
type fakeCoord struct {
	mu        sync.Mutex
	next      int
	joins     []string // "group datasource mode"
	votes     []fakeVote
	holds     map[string]Held // by group
	holdCalls int
	decided   map[string]bool // groups whose Join is refused

	joinErr   error
	joinDelay time.Duration
	voteErr   error         // returned by ok votes
	voteGate  chan struct{} // if set, ok votes wait for it
	onHold    func(group string, h Held)
}

type fakeVote struct {
	group, branch string
	ok            bool
	reason        string
}

var errNotActive = errors.New("fake coordinator: group not active")

func newFakeCoord() *fakeCoord {
	return &fakeCoord{holds: make(map[string]Held), decided: make(map[string]bool)}
}

func (f *fakeCoord) Join(ctx context.Context, group, datasource, mode string) (string, error) {
	f.mu.Lock()
	delay, err := f.joinDelay, f.joinErr
	if f.decided[group] {
		err = errNotActive
	}
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.joins = append(f.joins, group+" "+datasource+" "+mode)
	if mode == ModeXA {
		return gid.New(), nil // an xid needs canonical ids
	}
	return fmt.Sprintf("b%d", f.next), nil
}

func (f *fakeCoord) Vote(ctx context.Context, group, branch string, ok bool, reason string) error {
	f.mu.Lock()
	gate := f.voteGate
	f.mu.Unlock()
	if gate != nil && ok {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.votes = append(f.votes, fakeVote{group, branch, ok, reason})
	if ok && f.voteErr != nil {
		return f.voteErr
	}
	return nil
}

func (f *fakeCoord) Hold(group, branch string, h Held) {
	f.mu.Lock()
	f.holdCalls++
	_, seen := f.holds[group]
	if !seen {
		f.holds[group] = h
	}
	hook := f.onHold
	f.mu.Unlock()
	if hook != nil && !seen {
		hook(group, h)
	}
}

func (f *fakeCoord) joinCount(group string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, j := range f.joins {
		if strings.HasPrefix(j, group+" ") {
			n++
		}
	}
	return n
}

func (f *fakeCoord) votesFor(group string) []fakeVote {
	f.mu.Lock()
	defer f.mu.Unlock()
	var vs []fakeVote
	for _, v := range f.votes {
		if v.group == group {
			vs = append(vs, v)
		}
	}
	return vs
}

func (f *fakeCoord) held(group string) Held {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds[group]
}

func (f *fakeCoord) decide(group string) {
	f.mu.Lock()
	f.decided[group] = true
	f.mu.Unlock()
}

func (f *fakeCoord) set(fn func(f *fakeCoord)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

func (s *fakeServer) set(fn func(s *fakeServer)) {
	s.mu.Lock()
	fn(s)
	s.mu.Unlock()
}
