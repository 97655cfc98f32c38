package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"
)

// source is the state of one datasource: its options, its inner connector,
// its branches (one per group, invariant 7) and the free list of physical
// conns released by finished branches. Every Connector of the datasource
// shares it.
type source struct {
	name  string
	opt   Options // normalised private copy; never modified
	proto branchProtocol
	inner driver.Connector
	drv   driver.Driver // what Connector.Driver returns

	coordMu sync.Mutex // serialises CoordinatorFunc calls; guards coord
	coord   Coordinator

	mu       sync.Mutex         // guards the fields below
	branches map[string]*branch // by group id
	free     []driver.Conn      // clean physical conns for reuse, most recent last
	closed   bool
}

func newSource(opt Options, proto branchProtocol, inner driver.Connector, drv driver.Driver) *source {
	return &source{
		name:     opt.Datasource,
		opt:      opt,
		proto:    proto,
		inner:    inner,
		drv:      drv,
		coord:    opt.Coordinator,
		branches: make(map[string]*branch),
	}
}

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
// is still good (after ResetSession and IsValid), else a new one.
func (s *source) connect(ctx context.Context) (driver.Conn, error) {
	for {
		s.mu.Lock()
		n := len(s.free)
		if n == 0 {
			s.mu.Unlock()
			break
		}
		ci := s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		s.mu.Unlock()

		pc := physConn{ci}
		if err := pc.resetSession(ctx); err != nil {
			_ = pc.close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		if !pc.valid() {
			_ = pc.close()
			continue
		}
		return ci, nil
	}
	return s.inner.Connect(ctx)
}

// putFree keeps a clean physical conn released by a branch for reuse, or
// closes it if the free list is full, the source closed, or it is invalid.
func (s *source) putFree(pc physConn) {
	if pc.valid() {
		s.mu.Lock()
		if !s.closed && len(s.free) < s.opt.MaxIdleReleased {
			s.free = append(s.free, pc.ci)
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
	id, err := coord.Join(jctx, b.group, s.name, s.proto.mode())
	cancel()
	if err != nil {
		err = fmt.Errorf("%w: group %s, datasource %q: %w", ErrJoinFailed, b.group, s.name, err)
		b.abandon(err)
		return err
	}
	tx, berr := s.proto.begin(ctx, donor.phys, branchRef{group: b.group, branch: id, datasource: s.name}, opts)
	if berr != nil {
		err := fmt.Errorf("sqlproxy: group %s: begin branch %s on datasource %q: %w", b.group, id, s.name, notBadConn(berr))
		if errors.Is(berr, driver.ErrBadConn) {
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
	b.toWorkingLocked(id, coord, pc, nvc, tx, opts, stmts)
	b.mu.Unlock()
	return nil
}

// close closes the free list and the inner connector. Held branches are not
// touched: their decision still applies, and their conns are closed then.
func (s *source) close() error {
	s.mu.Lock()
	s.closed = true
	free := s.free
	s.free = nil
	s.mu.Unlock()
	var errs []error
	for _, ci := range free {
		if err := ci.Close(); err != nil {
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
// datasource opt describes. It validates opt (ErrModeNotSupported for modes
// not implemented yet) but does not resolve Options.CoordinatorFunc: that
// happens at the first use of a group.
//
// One Connector is one datasource: create one per database and give it a
// Datasource name unique in the process.
func NewConnector(inner driver.Connector, opt Options) (*Connector, error) {
	if inner == nil {
		return nil, errors.New("sqlproxy: NewConnector: nil inner connector")
	}
	o, proto, err := opt.normalize()
	if err != nil {
		return nil, err
	}
	var drv driver.Driver
	if d := inner.Driver(); d != nil {
		drv = WrapDriver(d, opt)
	}
	src := newSource(o, proto, inner, drv)
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
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	ci, err := c.src.connect(ctx)
	if err != nil {
		return nil, err
	}
	return newConn(c.src, ci), nil
}

// Driver returns the proxy's wrapper of the inner connector's driver (nil if
// that is nil). Opening connections through it (Driver().Open) creates a
// separate datasource state; database/sql never does that with a Connector.
func (c *Connector) Driver() driver.Driver { return c.src.drv }

// Datasource returns the datasource name.
func (c *Connector) Datasource() string { return c.src.name }

// Close closes the physical conns kept for reuse and forwards Close to the
// inner connector if it implements io.Closer (sql.DB.Close calls this).
// Branches still held keep their conns until their decision is applied.
// Safe to call multiple times; later calls return the first result.
func (c *Connector) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.release() })
	return c.closeErr
}
