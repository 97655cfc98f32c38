package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golcn/golcn/internal/xa"
)

// source is the state of one datasource: its options, its inner connector,
// its branch mode, its branches (one per group, invariant 7), the free list
// of physical conns released by finished branches, the side pool used to
// finish xa branches from another connection, and the xa recovery
// goroutine. Every Connector of the datasource shares it.
type source struct {
	name  string
	opt   Options // normalised private copy; never modified
	inner driver.Connector
	drv   driver.Driver // what Connector.Driver returns
	log   *slog.Logger
	mysql bool // the inner driver is github.com/go-sql-driver/mysql

	coordMu sync.Mutex // serialises CoordinatorFunc calls; guards coord
	coord   Coordinator

	protoMu sync.Mutex     // guards proto
	proto   branchProtocol // the effective mode's; nil until auto decided
	probe   chan struct{}  // one-slot semaphore: one auto probe at a time

	// The recovery goroutine (recovery.go) runs under stopCtx; close
	// cancels it and waits on wg.
	stopCtx    context.Context
	stop       context.CancelFunc
	wg         sync.WaitGroup
	recStarted atomic.Bool

	mu       sync.Mutex         // guards the fields below
	branches map[string]*branch // by group id
	free     []physConn         // clean physical conns for reuse, most recent last
	closed   bool
	sideDB   *sql.DB // opened lazily by side
}

func newSource(opt Options, inner driver.Connector, drv driver.Driver) *source {
	s := &source{
		name:     opt.Datasource,
		opt:      opt,
		inner:    inner,
		drv:      drv,
		log:      opt.Logger,
		mysql:    mysqlFamily(inner),
		coord:    opt.Coordinator,
		probe:    make(chan struct{}, 1),
		branches: make(map[string]*branch),
	}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	registerSource(s)
	switch opt.Mode {
	case ModeLCN:
		s.proto = lcnProtocol{}
	case ModeXA:
		s.proto = xaProtocol{src: s}
	case ModeAuto:
		// Decided at the first group use (protocol).
	}
	return s
}

// mysqlDriverPkg is the package path of go-sql-driver/mysql, whose driver
// and connector types mode auto recognises. sqlproxy does not import it.
const mysqlDriverPkg = "github.com/go-sql-driver/mysql"

// mysqlFamily reports whether inner is go-sql-driver/mysql's (by the
// package path of its connector's or driver's type).
func mysqlFamily(inner driver.Connector) bool {
	if dc, ok := inner.(dsnConnector); ok {
		return pkgPath(dc.d) == mysqlDriverPkg
	}
	if pkgPath(inner) == mysqlDriverPkg {
		return true
	}
	d := inner.Driver()
	return d != nil && pkgPath(d) == mysqlDriverPkg
}

func pkgPath(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return ""
	}
	return t.PkgPath()
}

// mode returns the effective branch mode, "" while auto has not decided.
func (s *source) mode() string {
	s.protoMu.Lock()
	defer s.protoMu.Unlock()
	if s.proto == nil {
		return ""
	}
	return s.proto.mode()
}

func (s *source) loadProto() branchProtocol {
	s.protoMu.Lock()
	defer s.protoMu.Unlock()
	return s.proto
}

// protocol returns the effective branch protocol, deciding mode auto on
// first use: lcn unless the inner driver is go-sql-driver/mysql and
// xa.ProbeDurable says the server keeps a prepared branch across a
// disconnect. A probe that fails (server unreachable) returns the error and
// decides nothing: the next group use probes again.
func (s *source) protocol(ctx context.Context) (branchProtocol, error) {
	if p := s.loadProto(); p != nil {
		return p, nil
	}
	select {
	case s.probe <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.probe }()
	if p := s.loadProto(); p != nil {
		return p, nil
	}
	var (
		p      branchProtocol = lcnProtocol{}
		reason                = "the inner driver is not " + mysqlDriverPkg
	)
	if s.mysql {
		db, err := s.side()
		if err != nil {
			return nil, err
		}
		durable, err := xa.ProbeDurable(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("sqlproxy: datasource %q: probing XA support: %w", s.name, err)
		}
		reason = "the server does not keep a prepared XA branch across a disconnect, or refuses XA"
		if durable {
			p, reason = xaProtocol{src: s}, "the server keeps prepared XA branches across a disconnect"
		}
	}
	s.protoMu.Lock()
	s.proto = p
	s.protoMu.Unlock()
	s.log.Info("sqlproxy: branch mode chosen", "datasource", s.name, "configured", ModeAuto, "mode", p.mode(), "reason", reason)
	return p, nil
}

// side returns the side pool: a small *sql.DB over the inner connector,
// for the statements that must not run on a branch's connection (finishing
// a prepared branch whose connection failed, XA RECOVER, the auto probe).
// It is opened on first use and closed with the datasource.
func (s *source) side() (*sql.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("sqlproxy: datasource %q is closed", s.name)
	}
	if s.sideDB == nil {
		// innerOnly hides the inner connector's Close: closing the side
		// pool must not close the connector the datasource still uses.
		db := sql.OpenDB(innerOnly{s.inner})
		db.SetMaxOpenConns(4)
		db.SetMaxIdleConns(1)
		db.SetConnMaxIdleTime(time.Minute)
		s.sideDB = db
	}
	return s.sideDB, nil
}

// innerOnly exposes only driver.Connector's methods of the connector it
// embeds.
type innerOnly struct{ driver.Connector }

// coordinator returns the Coordinator, resolving Options.CoordinatorFunc on
// first use. A failure is not cached: the next group use tries again.
func (s *source) coordinator() (Coordinator, error) {
	s.coordMu.Lock()
	defer s.coordMu.Unlock()
	if s.coord != nil {
		return s.coord, nil
	}
	c, err := s.opt.CoordinatorFunc()
	if err != nil {
		return nil, fmt.Errorf("%w for datasource %q: %w", ErrNoCoordinator, s.name, err)
	}
	if c == nil {
		return nil, fmt.Errorf("%w for datasource %q: CoordinatorFunc returned nil", ErrNoCoordinator, s.name)
	}
	s.coord = c
	return c, nil
}

// connect returns a physical conn: a released one from the free list if one
// is still good (after ResetSession and IsValid), else a new one. The first
// call starts xa recovery (recovery.go).
func (s *source) connect(ctx context.Context) (physConn, error) {
	s.startRecovery()
	for {
		s.mu.Lock()
		n := len(s.free)
		if n == 0 {
			s.mu.Unlock()
			break
		}
		pc := s.free[n-1]
		s.free[n-1] = physConn{}
		s.free = s.free[:n-1]
		s.mu.Unlock()

		if err := pc.resetSession(ctx); err != nil {
			_ = pc.close()
			if ctx.Err() != nil {
				return physConn{}, ctx.Err()
			}
			continue
		}
		if !pc.valid() {
			_ = pc.close()
			continue
		}
		return pc, nil
	}
	ci, err := s.inner.Connect(ctx)
	if err != nil {
		return physConn{}, err
	}
	return newPhys(ci), nil
}

// putFree keeps a clean physical conn released by a branch for reuse, or
// closes it if the free list is full, the source closed, or it is invalid.
func (s *source) putFree(pc physConn) {
	if pc.valid() {
		s.mu.Lock()
		if !s.closed && len(s.free) < s.opt.MaxIdleReleased {
			s.free = append(s.free, pc)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	_ = pc.close()
}

// forget removes b from the branch map if it is still there.
func (s *source) forget(b *branch) {
	s.mu.Lock()
	if s.branches[b.group] == b {
		delete(s.branches, b.group)
	}
	s.mu.Unlock()
}

// enter makes the calling local transaction a user of the group's branch,
// joining the group first if this process has no branch for it on this
// datasource. A new branch takes donor's physical conn (donor is detached);
// a donor without one (already detached) can only enter an existing branch.
// On success the caller must end the local transaction with
// b.commitLocal or b.rollbackLocal. On error nothing is left behind.
func (s *source) enter(ctx context.Context, group string, opts driver.TxOptions, donor *conn) (*branch, error) {
	for {
		s.mu.Lock()
		b := s.branches[group]
		if b == nil {
			if !donor.phys.ok() {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w (group %s has no branch on datasource %q to run in)", ErrConnDetached, group, s.name)
			}
			b = newBranch(s, group)
			s.branches[group] = b
			s.mu.Unlock()
			if err := s.join(ctx, b, donor, opts); err != nil {
				return nil, err
			}
			return b, nil
		}
		s.mu.Unlock()

		select {
		case <-b.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("sqlproxy: group %s: waiting for its branch on datasource %q to join: %w", group, s.name, ctx.Err())
		}
		b.mu.Lock()
		switch b.state {
		case branchWorking, branchHeld:
			if err := b.compatibleLocked(opts); err != nil {
				b.mu.Unlock()
				return nil, err
			}
			b.active++
			b.mu.Unlock()
			return b, nil
		case branchPreparing, branchPrepared:
			err := b.preparedErrLocked()
			b.mu.Unlock()
			return nil, err
		case branchApplying:
			err := b.endedErrLocked()
			b.mu.Unlock()
			return nil, err
		case branchDone:
			// Gone (its join failed, or it ended). Join again: the
			// coordinator decides whether the group still takes work.
			b.mu.Unlock()
			s.forget(b)
		case branchJoining:
			b.mu.Unlock()
			panic(bug("group %s: branch joining after ready", group))
		}
	}
}

// join registers b with the coordinator and begins its local transaction on
// donor's physical conn, which then belongs to b.
func (s *source) join(ctx context.Context, b *branch, donor *conn, opts driver.TxOptions) error {
	coord, err := s.coordinator()
	if err != nil {
		b.abandon(err)
		return err
	}
	jctx, cancel := context.WithTimeout(ctx, s.opt.VoteTimeout)
	defer cancel()
	proto, err := s.protocol(jctx)
	if err != nil {
		err = fmt.Errorf("%w: group %s, datasource %q: choosing the branch mode: %w", ErrJoinFailed, b.group, s.name, err)
		b.abandon(err)
		return err
	}
	id, err := coord.Join(jctx, b.group, s.name, proto.mode())
	cancel()
	if err != nil {
		err = fmt.Errorf("%w: group %s, datasource %q: %w", ErrJoinFailed, b.group, s.name, err)
		b.abandon(err)
		return err
	}
	tx, berr := proto.begin(ctx, donor.phys, branchRef{group: b.group, branch: id, datasource: s.name}, opts)
	if berr != nil {
		err := fmt.Errorf("sqlproxy: group %s: begin %s branch %s on datasource %q: %w", b.group, proto.mode(), id, s.name, notBadConn(berr))
		var dc discardConn
		if errors.Is(berr, driver.ErrBadConn) || errors.As(berr, &dc) {
			donor.bad = true // not returned as ErrBadConn (the join happened), so drop it ourselves
		}
		// Joined, but nothing began: say so, so the group does not wait for
		// a vote that will never come. Best effort.
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.VoteTimeout)
		_ = coord.Vote(vctx, b.group, id, false, err.Error())
		cancel()
		b.abandon(err)
		return err
	}
	pc, nvc, stmts := donor.handOver(b)
	b.mu.Lock()
	b.toWorkingLocked(id, proto.mode(), coord, pc, nvc, tx, opts, stmts)
	b.mu.Unlock()
	return nil
}

// close stops xa recovery (and waits for it), closes the free list, the
// side pool and the inner connector. Held branches are not touched: their
// decision still applies, and their conns are closed then (but a prepared
// branch whose connection fails can no longer be finished from the side
// pool: it stays prepared for the recovery of the next process).
func (s *source) close() error {
	s.mu.Lock()
	s.closed = true
	free := s.free
	s.free = nil
	side := s.sideDB
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	var errs []error
	for _, pc := range free {
		if err := pc.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if side != nil {
		if err := side.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if c, ok := s.inner.(io.Closer); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Connector is a driver.Connector for one proxied datasource. Use it with
// sql.OpenDB (or use OpenDB). It is safe for concurrent use.
type Connector struct {
	src       *source
	release   func() error
	closeOnce sync.Once
	closeErr  error
}

var (
	_ driver.Connector = (*Connector)(nil)
	_ io.Closer        = (*Connector)(nil)
)

// NewConnector returns a Connector that proxies inner's connections for the
// datasource opt describes. It validates opt but neither resolves
// Options.CoordinatorFunc nor decides mode auto: both happen at the first
// use of a group.
//
// One Connector is one datasource: create one per database and give it a
// Datasource name unique in the process.
func NewConnector(inner driver.Connector, opt Options) (*Connector, error) {
	if inner == nil {
		return nil, errors.New("sqlproxy: NewConnector: nil inner connector")
	}
	o, err := opt.normalize()
	if err != nil {
		return nil, err
	}
	var drv driver.Driver
	if d := inner.Driver(); d != nil {
		drv = WrapDriver(d, opt)
	}
	src := newSource(o, inner, drv)
	return &Connector{src: src, release: src.close}, nil
}

// OpenDB is sql.OpenDB(NewConnector(inner, opt)).
func OpenDB(inner driver.Connector, opt Options) (*sql.DB, error) {
	c, err := NewConnector(inner, opt)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

// Connect returns a proxy connection over a physical one: one released by a
// finished branch if available and still good, else a new one from the inner
// connector.
//
// The first call starts the datasource's xa recovery (mode xa, or auto over
// go-sql-driver/mysql; see Options.RecoveryInterval), so a service that
// pings or uses its database at start-up recovers at once.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	pc, err := c.src.connect(ctx)
	if err != nil {
		return nil, err
	}
	return newConn(c.src, pc), nil
}

// Driver returns the proxy's wrapper of the inner connector's driver (nil if
// that is nil). Opening connections through it (Driver().Open) creates a
// separate datasource state; database/sql never does that with a Connector.
func (c *Connector) Driver() driver.Driver { return c.src.drv }

// Datasource returns the datasource name.
func (c *Connector) Datasource() string { return c.src.name }

// Mode returns the branch mode the datasource's branches run in: ModeLCN or
// ModeXA. For Options.Mode ModeAuto it is "" until the mode is decided, at
// the first use of a group (see ModeAuto); it never changes afterwards.
// Safe for concurrent use.
func (c *Connector) Mode() string { return c.src.mode() }

// Close stops the datasource's xa recovery and waits for it, closes the
// physical conns kept for reuse and the side pool, and forwards Close to the
// inner connector if it implements io.Closer (sql.DB.Close calls this).
// Branches still held keep their conns until their decision is applied.
// Safe to call multiple times; later calls return the first result.
func (c *Connector) Close() error {
	c.closeOnce.Do(func() {
		unregisterSource(c.src)
		c.closeErr = c.release()
	})
	return c.closeErr
}
