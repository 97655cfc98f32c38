package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
)

// WrapDriver returns a driver that proxies d with fixed options. Every DSN
// opened through it is the same datasource, opt.Datasource; opening a
// second, different DSN fails. To name datasources per DSN use Register.
//
// The result implements driver.DriverContext exactly when d does. Options
// are validated when a connector or connection is opened.
func WrapDriver(d driver.Driver, opt Options) driver.Driver {
	return wrap(d, func(string) (Options, error) { return opt, nil })
}

// Register registers, under name, a driver that proxies d, so that adopting
// the proxy is sql.Open(name, dsn). optFunc gives the options for a DSN; its
// Datasource names the datasource. All sql.DB opened on the same DSN share
// one datasource state (one branch per group), so opening a DSN twice is
// safe; two different DSNs must have different Datasource names.
//
// Like sql.Register, it panics if name is already registered or if d or
// optFunc is nil. Call it from an init function.
func Register(name string, d driver.Driver, optFunc func(dsn string) (Options, error)) {
	if d == nil || optFunc == nil {
		panic("sqlproxy: Register " + name + ": nil driver or optFunc")
	}
	sql.Register(name, wrap(d, optFunc))
}

func wrap(d driver.Driver, optFunc func(string) (Options, error)) driver.Driver {
	w := &wrappedDriver{inner: d, optFunc: optFunc, sources: make(map[string]*sharedSource)}
	if _, ok := d.(driver.DriverContext); ok {
		w.self = wrappedDriverContext{w}
	} else {
		// Expose Open only: database/sql must see no DriverContext.
		w.self = struct{ driver.Driver }{w}
	}
	return w.self
}

// wrappedDriver proxies a driver. Connectors and conns it opens for the same
// datasource share one source, reference-counted by the Connectors (sql.DB
// closes its Connector); a source used through Open is never closed.
type wrappedDriver struct {
	inner   driver.Driver
	optFunc func(dsn string) (Options, error)
	self    driver.Driver // what callers get: w with DriverContext, or w as a bare driver.Driver

	mu      sync.Mutex               // guards sources
	sources map[string]*sharedSource // by datasource name
}

type sharedSource struct {
	src    *source
	dsn    string
	refs   int  // open Connectors
	pinned bool // used through Open: lives as long as the driver
}

// Open opens a proxy connection (database/sql calls it when the inner driver
// has no DriverContext).
func (w *wrappedDriver) Open(dsn string) (driver.Conn, error) {
	src, _, err := w.source(dsn, true, func() (driver.Connector, error) {
		return dsnConnector{d: w.inner, dsn: dsn, self: w.self}, nil
	})
	if err != nil {
		return nil, err
	}
	pc, err := src.connect(context.Background())
	if err != nil {
		return nil, err
	}
	return newConn(src, pc), nil
}

// source returns the datasource state for dsn, creating it with newInner if
// needed, and a function that drops the reference taken (nil when pinned).
func (w *wrappedDriver) source(dsn string, pin bool, newInner func() (driver.Connector, error)) (*source, func() error, error) {
	opt, err := w.optFunc(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlproxy: options for DSN: %w", err) // the DSN may hold a password
	}
	o, err := opt.normalize()
	if err != nil {
		return nil, nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ss := w.sources[o.Datasource]
	if ss != nil && ss.dsn != dsn {
		return nil, nil, fmt.Errorf("sqlproxy: datasource %q is already open with a different DSN", o.Datasource)
	}
	if ss == nil {
		inner, err := newInner()
		if err != nil {
			return nil, nil, err
		}
		ss = &sharedSource{src: newSource(o, inner, w.self), dsn: dsn}
		w.sources[o.Datasource] = ss
	}
	if pin {
		ss.pinned = true
		return ss.src, nil, nil
	}
	ss.refs++
	var once sync.Once
	release := func() error {
		var err error
		once.Do(func() { err = w.unref(ss) })
		return err
	}
	return ss.src, release, nil
}

func (w *wrappedDriver) unref(ss *sharedSource) error {
	w.mu.Lock()
	ss.refs--
	last := ss.refs == 0 && !ss.pinned
	if last {
		delete(w.sources, ss.src.name)
	}
	w.mu.Unlock()
	if last {
		return ss.src.close()
	}
	return nil
}

type wrappedDriverContext struct{ *wrappedDriver }

var _ driver.DriverContext = wrappedDriverContext{}

// OpenConnector returns a Connector for dsn (database/sql calls it from
// sql.Open). It validates the options but does not contact the coordinator.
func (w wrappedDriverContext) OpenConnector(dsn string) (driver.Connector, error) {
	src, release, err := w.source(dsn, false, func() (driver.Connector, error) {
		return w.inner.(driver.DriverContext).OpenConnector(dsn)
	})
	if err != nil {
		return nil, err
	}
	return &Connector{src: src, release: release}, nil
}

// dsnConnector adapts a driver without DriverContext, as database/sql does.
type dsnConnector struct {
	d    driver.Driver
	dsn  string
	self driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.self }
