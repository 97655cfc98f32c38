package sqlproxy

// Integration tests of mode xa (and auto) against a real MariaDB started by
// internal/testenv. They skip when MariaDB is not installed, and fail
// instead under LCN_REQUIRE_INTEGRATION=1.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/internal/xa"
)

// scriptCoord is a Coordinator without a TxManager: it assigns branch ids,
// records joins, votes and holds, and answers Resolve from a script the
// test sets (ResolveWait for branches it does not know).
type scriptCoord struct {
	mu       sync.Mutex
	joins    []string        // "group datasource mode"
	votes    []string        // "group branch ok|failed"
	holds    map[string]Held // by group
	answers  map[string]Resolution
	asked    []string // branches Resolve was called for
	resolved []string // "branch committed|rolled back"
	failNext error    // returned once by the next Resolved
}

var _ Resolver = (*scriptCoord)(nil)

func newScriptCoord() *scriptCoord {
	return &scriptCoord{holds: make(map[string]Held), answers: make(map[string]Resolution)}
}

func (c *scriptCoord) Join(_ context.Context, group, datasource, mode string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joins = append(c.joins, group+" "+datasource+" "+mode)
	return gid.New(), nil
}

func (c *scriptCoord) Vote(_ context.Context, group, branch string, ok bool, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.votes = append(c.votes, fmt.Sprintf("%s %s %t", group, branch, ok))
	return nil
}

func (c *scriptCoord) Hold(group, _ string, h Held) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds[group] = h
}

func (c *scriptCoord) Resolve(_ context.Context, _, branch string) (Resolution, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, branch)
	return c.answers[branch], nil
}

func (c *scriptCoord) Resolved(_ context.Context, _, branch string, committed bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failNext; err != nil {
		c.failNext = nil
		return err
	}
	how := "rolled back"
	if committed {
		how = "committed"
	}
	c.resolved = append(c.resolved, branch+" "+how)
	return nil
}

func (c *scriptCoord) answer(branch string, r Resolution) {
	c.mu.Lock()
	c.answers[branch] = r
	c.mu.Unlock()
}

func (c *scriptCoord) held(t *testing.T, group string) Held {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.holds[group]
	if h == nil {
		t.Fatalf("group %s: no Hold", group)
	}
	return h
}

func (c *scriptCoord) snapshot() (joins, asked, resolved []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.joins...), append([]string(nil), c.asked...), append([]string(nil), c.resolved...)
}

// mdbEnv is a proxied datasource over a MariaDB schema with a table
// t(id INT PRIMARY KEY, v INT), and a plain connection pool (raw) to look
// at it from outside.
type mdbEnv struct {
	t   *testing.T
	dsn string
	cn  *Connector
	db  *sql.DB
	raw *sql.DB
	co  *scriptCoord
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newMDBEnv(t *testing.T, m *testenv.MariaDB, mods ...func(*Options)) *mdbEnv {
	t.Helper()
	_, dsn := m.CreateDatabase(t)
	raw := openRaw(t, dsn)
	if _, err := raw.Exec("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	e := &mdbEnv{t: t, dsn: dsn, raw: raw, co: newScriptCoord()}
	e.cn, e.db = e.open(mods...)
	return e
}

// open opens another proxied datasource on e's schema, with e's coordinator
// (a "new process" in recovery tests).
func (e *mdbEnv) open(mods ...func(*Options)) (*Connector, *sql.DB) {
	e.t.Helper()
	opt := Options{Datasource: "orders", Mode: ModeXA, Coordinator: e.co, RecoveryInterval: -1,
		ApplyTimeout: 10 * time.Second, Logger: quietLogger()}
	for _, m := range mods {
		m(&opt)
	}
	cn, err := NewConnector(mysqlConnector(e.t, e.dsn), opt)
	if err != nil {
		e.t.Fatal(err)
	}
	db := sql.OpenDB(cn)
	e.t.Cleanup(func() { db.Close() })
	return cn, db
}

func mysqlConnector(t *testing.T, dsn string) driver.Connector {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openRaw(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db := sql.OpenDB(mysqlConnector(t, dsn))
	t.Cleanup(func() { db.Close() })
	return db
}

func (e *mdbEnv) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.raw.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// value returns v of row id as seen from outside (-1: no row).
func (e *mdbEnv) value(id int) int {
	e.t.Helper()
	v := -1
	err := e.raw.QueryRow("SELECT v FROM t WHERE id = ?", id).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		e.t.Fatal(err)
	}
	return v
}

func (e *mdbEnv) listed(x xa.Xid) bool {
	e.t.Helper()
	xs, err := xa.Recover(context.Background(), e.raw)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// innodbTrx returns the InnoDB transactions of the server other than the
// caller's, as "thread state rows-modified".
func (e *mdbEnv) innodbTrx() []string {
	e.t.Helper()
	rows, err := e.raw.Query("SELECT trx_mysql_thread_id, trx_state, trx_rows_modified FROM information_schema.innodb_trx WHERE trx_mysql_thread_id <> CONNECTION_ID()")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, n int64
		var st string
		if err := rows.Scan(&id, &st, &n); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %s %d", id, st, n))
	}
	return out
}

// work runs, in a new group, one local transaction that inserts (id, v) and
// commits (votes), and returns the group, its Held and its xid.
func (e *mdbEnv) work(id, v int) (string, Held, xa.Xid) {
	e.t.Helper()
	group := gid.New()
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.ExecContext(g, "INSERT INTO t (id, v) VALUES (?, ?)", id, v); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		e.t.Fatalf("vote: %v", err)
	}
	h := e.co.held(e.t, group)
	return group, h, xa.Xid{Group: group, Branch: h.(*held).b.id}
}

func (e *mdbEnv) serverID(h Held) uint64 { return h.(*held).b.pc.meta.serverID }

func (e *mdbEnv) freeLen() int {
	e.cn.src.mu.Lock()
	defer e.cn.src.mu.Unlock()
	return len(e.cn.src.free)
}

func (e *mdbEnv) branches() int {
	e.cn.src.mu.Lock()
	defer e.cn.src.mu.Unlock()
	return len(e.cn.src.branches)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestXATwoPhaseCommit(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	group, h, x := e.work(1, 10)
	joins, _, _ := e.co.snapshot()
	check(t, "join", joins[0], group+" orders xa")
	check(t, "visible after the vote", e.value(1), -1)
	check(t, "listed before prepare", e.listed(x), false)

	mustNil(t, "Prepare", h.Prepare(ctx))
	check(t, "visible after prepare", e.value(1), -1)
	check(t, "listed after prepare", e.listed(x), true)

	mustNil(t, "Commit", h.Commit(ctx))
	check(t, "value after commit", e.value(1), 10)
	check(t, "listed after commit", e.listed(x), false)
	check(t, "free list", e.freeLen(), 1)
}

func TestXAOnePhaseCommit(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	_, h, x := e.work(1, 10)
	check(t, "visible before commit", e.value(1), -1)
	mustNil(t, "Commit", h.Commit(ctxT(t)))
	check(t, "value after commit", e.value(1), 10)
	check(t, "listed", e.listed(x), false)
}

func TestXARollback(t *testing.T) {
	for _, prepare := range []bool{false, true} {
		t.Run(fmt.Sprintf("prepared=%t", prepare), func(t *testing.T) {
			e := newMDBEnv(t, testenv.SharedMariaDB(t))
			ctx := ctxT(t)
			_, h, x := e.work(1, 10)
			if prepare {
				mustNil(t, "Prepare", h.Prepare(ctx))
			}
			mustNil(t, "Rollback", h.Rollback(ctx))
			check(t, "value", e.value(1), -1)
			check(t, "listed", e.listed(x), false)
			// The row lock is gone: another session can write the row.
			e.exec("INSERT INTO t VALUES (1, 99)")
		})
	}
}

// A service called twice in one group runs in the same branch: the second
// local transaction sees the first one's writes, on the same session.
func TestXASecondLocalTxReusesBranch(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	group, h, x := e.work(1, 10)
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	var v int
	mustNil(t, "read own write", tx.QueryRowContext(g, "SELECT v FROM t WHERE id = 1").Scan(&v))
	check(t, "own write seen", v, 10)
	var id uint64
	mustNil(t, "CONNECTION_ID", tx.QueryRowContext(g, "SELECT CONNECTION_ID()").Scan(&id))
	check(t, "same session", id, e.serverID(h))
	_, err = tx.ExecContext(g, "UPDATE t SET v = v + 1 WHERE id = 1")
	mustNil(t, "UPDATE", err)
	mustNil(t, "second vote", tx.Commit())
	// An autocommit statement of the group too.
	_, err = e.db.ExecContext(g, "INSERT INTO t VALUES (2, 20)")
	mustNil(t, "autocommit in the group", err)

	joins, _, _ := e.co.snapshot()
	check(t, "joins", len(joins), 1)
	check(t, "visible before commit", e.value(1), -1)
	mustNil(t, "Prepare", h.Prepare(ctx))
	if _, err := e.db.ExecContext(g, "INSERT INTO t VALUES (3, 30)"); !errors.Is(err, ErrBranchPrepared) {
		t.Fatalf("work after Prepare = %v, want ErrBranchPrepared", err)
	}
	mustNil(t, "Commit", h.Commit(ctx))
	check(t, "row 1", e.value(1), 11)
	check(t, "row 2", e.value(2), 20)
	check(t, "row 3", e.value(3), -1)
	check(t, "listed", e.listed(x), false)
}

func TestXAForbiddenStatementOnServer(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	group := gid.New()
	g := gctx(group)
	tx, err := e.db.BeginTx(g, nil)
	mustNil(t, "BeginTx", err)
	_, err = tx.ExecContext(g, "INSERT INTO t VALUES (1, 1)")
	mustNil(t, "INSERT", err)
	_, err = tx.ExecContext(g, "CREATE TABLE u (id INT)")
	if !errors.Is(err, ErrForbiddenInXA) || !strings.Contains(err.Error(), `datasource "orders": CREATE TABLE cannot run in an xa branch`) {
		t.Fatalf("CREATE TABLE in a branch = %v", err)
	}
	if err := tx.Commit(); !errors.Is(err, ErrLocalTxFailed) {
		t.Fatalf("Commit = %v, want ErrLocalTxFailed", err)
	}
	var n int
	mustNil(t, "count tables", e.raw.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'u'").Scan(&n))
	check(t, "table u created", n, 0)
	check(t, "row", e.value(1), -1)
}

// The local transaction's isolation level and read-only flag apply to its
// branch (SET TRANSACTION before XA START), and not to the connection's
// next transaction.
func TestXAIsolationLevelAndReadOnly(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	e.db.SetMaxOpenConns(1)
	e.exec("INSERT INTO t VALUES (1, 0)")
	n := 0
	// sees reports whether a read in q sees a change committed by another
	// session after q's first read: true under READ COMMITTED, false under
	// REPEATABLE READ.
	sees := func(q queryRower, ctx context.Context) bool {
		t.Helper()
		var a, b int
		mustNil(t, "first read", q.QueryRowContext(ctx, "SELECT v FROM t WHERE id = 1").Scan(&a))
		n++
		e.exec("UPDATE t SET v = ? WHERE id = 1", n)
		mustNil(t, "second read", q.QueryRowContext(ctx, "SELECT v FROM t WHERE id = 1").Scan(&b))
		return a != b
	}
	for _, tc := range []struct {
		iso  sql.IsolationLevel
		sees bool
	}{{sql.LevelDefault, false}, {sql.LevelReadCommitted, true}, {sql.LevelRepeatableRead, false}} {
		group := gid.New()
		g := gctx(group)
		tx, err := e.db.BeginTx(g, &sql.TxOptions{Isolation: tc.iso})
		mustNil(t, "BeginTx", err)
		check(t, "sees others' commits at "+tc.iso.String(), sees(tx, g), tc.sees)
		mustNil(t, "vote", tx.Commit())
		mustNil(t, "Commit", e.co.held(t, group).Commit(ctx))

		// The released connection's next transaction, outside any group,
		// is back to the server's default (REPEATABLE READ).
		plain, err := e.db.BeginTx(ctx, nil)
		mustNil(t, "BeginTx outside", err)
		check(t, "next transaction sees others' commits", sees(plain, ctx), false)
		mustNil(t, "Commit outside", plain.Commit())
	}

	group := gid.New()
	g := gctx(group)
	tx, err := e.db.BeginTx(g, &sql.TxOptions{ReadOnly: true})
	mustNil(t, "BeginTx read-only", err)
	var me *mysql.MySQLError
	if _, err := tx.ExecContext(g, "INSERT INTO t VALUES (2, 2)"); !errors.As(err, &me) || me.Number != 1792 {
		t.Fatalf("write in a read-only branch = %v, want error 1792", err)
	}
	mustNil(t, "Rollback", tx.Rollback())
	_, err = e.db.ExecContext(ctx, "INSERT INTO t VALUES (3, 3)")
	mustNil(t, "write on the released connection outside a group", err)
	check(t, "row 2", e.value(2), -1)
	check(t, "row 3", e.value(3), 3)
}

// KILL CONNECTION of a prepared branch's session: Commit finishes it from
// another connection (after the killed session is gone) and nothing is
// left behind. Repeated, because finishing a branch while its session is
// still being torn down loses the commit now and then on MariaDB.
func TestXAKillAfterPrepare(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	const n = 20
	for i := range n {
		_, h, x := e.work(i, 10+i)
		mustNil(t, "Prepare", h.Prepare(ctx))
		e.exec(fmt.Sprintf("KILL CONNECTION %d", e.serverID(h)))
		if i == 0 {
			check(t, "listed after kill", e.listed(x), true)
			check(t, "side pool before", e.cn.src.sideDB == nil, true)
		}
		mustNil(t, "Commit", h.Commit(ctx))
		check(t, "value", e.value(i), 10+i)
		check(t, "listed", e.listed(x), false)
		mustNil(t, "Commit again", h.Commit(ctx))
	}
	check(t, "finished from the side pool", e.cn.src.sideDB != nil, true)
	if trx := e.innodbTrx(); len(trx) != 0 {
		t.Fatalf("InnoDB transactions left: %q", trx)
	}
	check(t, "free list (killed conns are not reused)", e.freeLen(), 0)
	var rows int
	mustNil(t, "count", e.raw.QueryRow("SELECT COUNT(*) FROM t").Scan(&rows))
	check(t, "rows", rows, n)
}

// KILL CONNECTION before the prepare phase: the server rolled the branch
// back, so Prepare fails and the rollback decision succeeds.
func TestXAKillBeforePrepare(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	_, h, x := e.work(1, 10)
	e.exec(fmt.Sprintf("KILL CONNECTION %d", e.serverID(h)))
	if err := h.Prepare(ctx); !errors.Is(err, ErrVoteFailed) {
		t.Fatalf("Prepare after KILL = %v, want ErrVoteFailed", err)
	}
	mustNil(t, "Rollback", h.Rollback(ctx))
	check(t, "value", e.value(1), -1)
	check(t, "listed", e.listed(x), false)
	// The killed session's teardown is asynchronous: poll.
	deadline := time.Now().Add(10 * time.Second)
	for len(e.innodbTrx()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("InnoDB transactions left: %q", e.innodbTrx())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.exec("INSERT INTO t VALUES (1, 99)") // no lock left
}

// crashedBranch leaves x prepared with row (id, v), as a process that
// crashed after XA PREPARE would: its session is closed and gone.
func crashedBranch(t *testing.T, dsn string, x xa.Xid, id, v int) {
	t.Helper()
	ctx := ctxT(t)
	db := sql.OpenDB(mysqlConnector(t, dsn))
	c, err := db.Conn(ctx)
	mustNil(t, "Conn", err)
	sid, err := xa.ConnectionID(ctx, c)
	mustNil(t, "ConnectionID", err)
	mustNil(t, "XA START", xa.Start(ctx, c, x))
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (?, ?)", id, v)
	mustNil(t, "INSERT", err)
	mustNil(t, "XA END", xa.End(ctx, c, x))
	mustNil(t, "XA PREPARE", xa.Prepare(ctx, c, x))
	c.Close()
	db.Close() // closes the session
	other := openRaw(t, dsn)
	mustNil(t, "WaitDisconnected", xa.WaitDisconnected(ctx, other, sid))
}

func TestXARecoveryFinishesCrashedBranch(t *testing.T) {
	for _, tc := range []struct {
		answer Resolution
		value  int
	}{{ResolveCommit, 10}, {ResolveRollback, -1}} {
		t.Run(tc.answer.String(), func(t *testing.T) {
			e := newMDBEnv(t, testenv.SharedMariaDB(t))
			x := xa.Xid{Group: gid.New(), Branch: gid.New()}
			crashedBranch(t, e.dsn, x, 1, 10)
			e.co.answer(x.Branch, tc.answer)

			// A new process: its first round acts at once.
			cn, _ := e.open()
			res := cn.src.recoverOnce(ctxT(t))
			mustNil(t, "round", res.err)
			check(t, "value", e.value(1), tc.value)
			check(t, "listed", e.listed(x), false)
			_, asked, resolved := e.co.snapshot()
			check(t, "asked", strings.Join(asked, ","), x.Branch)
			want := x.Branch + " rolled back"
			if tc.answer == ResolveCommit {
				want = x.Branch + " committed"
			}
			check(t, "Resolved", strings.Join(resolved, ","), want)
		})
	}
}

func TestXARecoveryWaitAndSkipLeaveBranch(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	x := xa.Xid{Group: gid.New(), Branch: gid.New()}
	crashedBranch(t, e.dsn, x, 1, 10)
	t.Cleanup(func() { _ = xa.RollbackPrepared(context.Background(), e.raw, x, time.Second) })
	for _, r := range []Resolution{ResolveSkip, ResolveWait} {
		e.co.answer(x.Branch, r)
		cn, _ := e.open()
		mustNil(t, "round", cn.src.recoverOnce(ctx).err)
		check(t, "listed after "+r.String(), e.listed(x), true)
	}
	_, asked, resolved := e.co.snapshot()
	check(t, "asked", len(asked), 2)
	check(t, "Resolved", len(resolved), 0)
	mustNil(t, "clean up", xa.RollbackPrepared(ctx, e.raw, x, time.Second))
	check(t, "value", e.value(1), -1)
}

// Without a Resolver, recovery stops and leaves the branch alone.
func TestXARecoveryWithoutResolverStops(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	x := xa.Xid{Group: gid.New(), Branch: gid.New()}
	crashedBranch(t, e.dsn, x, 1, 10)
	t.Cleanup(func() { _ = xa.RollbackPrepared(context.Background(), e.raw, x, time.Second) })
	cn, _ := e.open(func(o *Options) { o.Coordinator = newFakeCoord() })
	res := cn.src.recoverOnce(ctx)
	mustNil(t, "round", res.err)
	check(t, "keep going", res.keepGoing, false)
	check(t, "listed", e.listed(x), true)
}

// A report (Resolved) that fails is retried at the next round, although
// XA RECOVER no longer lists the finished branch.
func TestXARecoveryRetriesReport(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	x := xa.Xid{Group: gid.New(), Branch: gid.New()}
	crashedBranch(t, e.dsn, x, 1, 10)
	e.co.answer(x.Branch, ResolveCommit)
	errDown := errors.New("coordinator unreachable (test)")
	e.co.mu.Lock()
	e.co.failNext = errDown
	e.co.mu.Unlock()

	r := &recoverer{s: e.cn.src}
	res := r.round(ctx)
	if !errors.Is(res.err, errDown) {
		t.Fatalf("round error = %v, want the report's", res.err)
	}
	check(t, "value", e.value(1), 10)
	_, _, resolved := e.co.snapshot()
	check(t, "reported", len(resolved), 0)

	mustNil(t, "next round", r.round(ctx).err)
	_, asked, resolved := e.co.snapshot()
	check(t, "Resolved", strings.Join(resolved, ","), x.Branch+" committed")
	check(t, "asked", len(asked), 1)
	mustNil(t, "third round", r.round(ctx).err)
	_, _, resolved = e.co.snapshot()
	check(t, "reported once", len(resolved), 1)
}

// A periodic round acts only on an xid the previous round listed too.
func TestXARecoveryPeriodicRoundWaitsForSecondSighting(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	r := &recoverer{s: e.cn.src}
	mustNil(t, "first round (nothing listed yet)", r.round(ctx).err)

	x := xa.Xid{Group: gid.New(), Branch: gid.New()}
	crashedBranch(t, e.dsn, x, 1, 10)
	e.co.answer(x.Branch, ResolveCommit)
	mustNil(t, "periodic round, first sighting", r.round(ctx).err)
	_, asked, _ := e.co.snapshot()
	check(t, "asked on first sighting", len(asked), 0)
	check(t, "listed", e.listed(x), true)

	res := r.round(ctx)
	mustNil(t, "periodic round, second sighting", res.err)
	check(t, "committed", fmt.Sprint(res.committed), fmt.Sprint([]xa.Xid{x}))
	check(t, "value", e.value(1), 10)
	check(t, "listed", e.listed(x), false)
}

// Recovery leaves alone the prepared branches live in this process.
func TestXARecoverySkipsLiveBranch(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	ctx := ctxT(t)
	_, h, x := e.work(1, 10)
	mustNil(t, "Prepare", h.Prepare(ctx))
	e.co.answer(x.Branch, ResolveRollback) // would be wrong: it must not be asked
	cn, _ := e.open()
	res := cn.src.recoverOnce(ctx)
	mustNil(t, "round", res.err)
	_, asked, _ := e.co.snapshot()
	check(t, "asked", len(asked), 0)
	check(t, "listed", e.listed(x), true)
	mustNil(t, "Commit", h.Commit(ctx))
	check(t, "value", e.value(1), 10)
}

// The recovery goroutine starts with the connector's first use (a ping at
// service start-up) and acts at once on a crashed process's branch.
func TestXARecoveryRunsAtStartUp(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t))
	x := xa.Xid{Group: gid.New(), Branch: gid.New()}
	crashedBranch(t, e.dsn, x, 1, 10)
	e.co.answer(x.Branch, ResolveCommit)
	_, db := e.open(func(o *Options) { o.RecoveryInterval = time.Hour })
	mustNil(t, "Ping", db.PingContext(ctxT(t)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, resolved := e.co.snapshot()
		if len(resolved) == 1 {
			check(t, "Resolved", resolved[0], x.Branch+" committed")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("recovery did not finish the branch")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check(t, "value", e.value(1), 10)
	mustNil(t, "Close", db.Close())
}

// Mode auto is xa over go-sql-driver/mysql on a server with durable
// prepared branches; it is decided at the first group use.
func TestAutoModeOnMariaDBIsXA(t *testing.T) {
	e := newMDBEnv(t, testenv.SharedMariaDB(t), func(o *Options) { o.Mode = ModeAuto })
	ctx := ctxT(t)
	check(t, "Mode before use", e.cn.Mode(), "")
	mustNil(t, "Ping", e.db.PingContext(ctx))
	check(t, "Mode outside a group", e.cn.Mode(), "")
	group, h, x := e.work(1, 10)
	check(t, "Mode", e.cn.Mode(), ModeXA)
	joins, _, _ := e.co.snapshot()
	check(t, "join", joins[0], group+" orders xa")
	mustNil(t, "Prepare", h.Prepare(ctx))
	check(t, "listed", e.listed(x), true)
	mustNil(t, "Commit", h.Commit(ctx))
	check(t, "value", e.value(1), 10)
}

// A probe that cannot reach the server fails the join, not the datasource.
func TestAutoModeProbeFailureFailsJoin(t *testing.T) {
	m := testenv.StartMariaDB(t)
	e := newMDBEnv(t, m, func(o *Options) { o.Mode = ModeAuto; o.VoteTimeout = 3 * time.Second })
	ctx := ctxT(t)
	c, err := e.db.Conn(ctx) // connected before the server goes
	mustNil(t, "Conn", err)
	defer c.Close()
	m.Kill(t)
	if _, err := c.BeginTx(gctx(gid.New()), nil); !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("group work with the server down = %v, want ErrJoinFailed", err)
	}
	check(t, "Mode", e.cn.Mode(), "")
	m.Restart(t)
	_, h, _ := e.work(1, 10)
	check(t, "Mode after restart", e.cn.Mode(), ModeXA)
	mustNil(t, "Rollback", h.Rollback(ctx))
}

// The database is killed while a prepared branch is held: its commit is in
// doubt while the server is down and goes through after the restart.
func TestXAServerKilledWhilePrepared(t *testing.T) {
	m := testenv.StartMariaDB(t)
	e := newMDBEnv(t, m, func(o *Options) { o.ApplyTimeout = time.Second })
	ctx := ctxT(t)
	_, h, x := e.work(1, 10)
	mustNil(t, "Prepare", h.Prepare(ctx))
	m.Kill(t)

	err := h.Commit(ctx)
	if !errors.Is(err, ErrInDoubt) {
		t.Fatalf("Commit with the server down = %v, want ErrInDoubt", err)
	}
	if err := h.Commit(ctx); !errors.Is(err, ErrInDoubt) {
		t.Fatalf("second Commit with the server down = %v, want ErrInDoubt", err)
	}

	m.Restart(t)
	check(t, "listed after restart", e.listed(x), true)
	check(t, "visible before commit", e.value(1), -1)
	check(t, "branch still held", e.branches(), 1)
	// The coordinator keeps delivering the decision. (Each attempt is
	// bounded by ApplyTimeout, 1s here: the first ones after the restart
	// may spend it reconnecting or waiting for the recorded session id.)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := h.Commit(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrInDoubt) || time.Now().After(deadline) {
			t.Fatalf("Commit after restart = %v", err)
		}
	}
	check(t, "value", e.value(1), 10)
	check(t, "listed", e.listed(x), false)
	check(t, "branches", e.branches(), 0)
}
