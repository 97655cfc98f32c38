package sqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestOptionsNormalize(t *testing.T) {
	co := newFakeCoord()
	coFunc := func() (Coordinator, error) { return co, nil }
	tests := []struct {
		name    string
		opt     Options
		wantErr string
		is      error
	}{
		{name: "ok", opt: Options{Datasource: "d", Coordinator: co}},
		{name: "lcn", opt: Options{Datasource: "d", Mode: "lcn", CoordinatorFunc: coFunc}},
		{name: "no datasource", opt: Options{Coordinator: co}, wantErr: "Datasource is required"},
		{name: "xa", opt: Options{Datasource: "d", Mode: "xa", Coordinator: co}},
		{name: "auto", opt: Options{Datasource: "d", Mode: "auto", Coordinator: co}},
		{name: "unknown mode", opt: Options{Datasource: "d", Mode: "2pc", Coordinator: co}, wantErr: `unknown branch mode "2pc"`},
		{name: "no coordinator", opt: Options{Datasource: "d"}, wantErr: "Coordinator or Options.CoordinatorFunc is required"},
		{name: "both", opt: Options{Datasource: "d", Coordinator: co, CoordinatorFunc: coFunc}, wantErr: "only one"},
		{name: "negative vote timeout", opt: Options{Datasource: "d", Coordinator: co, VoteTimeout: -1}, wantErr: "VoteTimeout"},
		{name: "negative apply timeout", opt: Options{Datasource: "d", Coordinator: co, ApplyTimeout: -1}, wantErr: "ApplyTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewConnector(fakeConnector{newFakeServer()}, tt.opt)
			switch {
			case tt.is != nil:
				if !errors.Is(err, tt.is) {
					t.Fatalf("err = %v, want %v", err, tt.is)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "sqlproxy: ") {
					t.Fatalf("err = %v, want sqlproxy: ...%s", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	o, err := Options{Datasource: "d", Coordinator: co}.normalize()
	mustNil(t, "normalize", err)
	check(t, "Mode", o.Mode, ModeLCN)
	check(t, "VoteTimeout", o.VoteTimeout, DefaultVoteTimeout)
	check(t, "ApplyTimeout", o.ApplyTimeout, DefaultApplyTimeout)
	check(t, "MaxIdleReleased", o.MaxIdleReleased, DefaultMaxIdleReleased)
	check(t, "RecoveryInterval", o.RecoveryInterval, DefaultRecoveryInterval)
	check(t, "Logger", o.Logger, slog.Default())
	o, _ = Options{Datasource: "d", Coordinator: co, MaxIdleReleased: -1, VoteTimeout: time.Second}.normalize()
	check(t, "MaxIdleReleased<0", o.MaxIdleReleased, 0)
	check(t, "VoteTimeout kept", o.VoteTimeout, time.Second)
}

func TestCoordinatorFuncIsLazyAndRetried(t *testing.T) {
	srv, co := newFakeServer(), newFakeCoord()
	var mu sync.Mutex
	calls, ready := 0, false
	errNotYet := errors.New("client not initialised")
	db, err := OpenDB(fakeConnector{srv}, Options{
		Datasource: "d",
		CoordinatorFunc: func() (Coordinator, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if !ready {
				return nil, errNotYet
			}
			return co, nil
		},
	})
	mustNil(t, "OpenDB", err)
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()

	_, err = db.ExecContext(ctx, "INSERT outside")
	mustNil(t, "Exec outside a group", err)
	check(t, "calls before group use", calls, 0)

	g := gctx("g")
	if _, err := db.BeginTx(g, nil); !errors.Is(err, ErrNoCoordinator) || !errors.Is(err, errNotYet) {
		t.Fatalf("BeginTx = %v, want ErrNoCoordinator", err)
	}
	check(t, "calls", calls, 1)
	check(t, "inner begins", srv.countPrefix("c1 begin"), 0)

	mu.Lock()
	ready = true
	mu.Unlock()
	for range 2 {
		tx, err := db.BeginTx(g, nil)
		mustNil(t, "BeginTx", err)
		mustNil(t, "Commit", tx.Commit())
	}
	check(t, "calls after success", calls, 2)
	check(t, "joins", co.joinCount("g"), 1)
}

func TestWrapDriverMatchesDriverContext(t *testing.T) {
	srv, co := newFakeServer(), newFakeCoord()
	opt := Options{Datasource: "d", Coordinator: co}
	if _, ok := WrapDriver(fakeDriver{srv}, opt).(driver.DriverContext); ok {
		t.Error("wrapper of a driver without DriverContext implements it")
	}
	w := WrapDriver(fakeDriverCtx{fakeDriver{srv}}, opt)
	dc, ok := w.(driver.DriverContext)
	if !ok {
		t.Fatal("wrapper of a driver with DriverContext lacks it")
	}
	c, err := dc.OpenConnector("dsn-a")
	mustNil(t, "OpenConnector", err)
	check(t, "Driver()", c.Driver(), w)
	if _, err := dc.OpenConnector("dsn-b"); err == nil || !strings.Contains(err.Error(), "different DSN") {
		t.Errorf("second DSN under one datasource name: err = %v", err)
	}
	if _, err := WrapDriver(fakeDriver{srv}, Options{Datasource: "d", Mode: "2pc", Coordinator: co}).Open("x"); err == nil || !strings.Contains(err.Error(), "unknown branch mode") {
		t.Errorf("Open with mode 2pc = %v", err)
	}
	mustNil(t, "Close", c.(*Connector).Close())
}

var registerSeq atomic.Int64

func TestRegisterSharesOneDatasourcePerDSN(t *testing.T) {
	for _, withCtx := range []bool{true, false} {
		srv, co := newFakeServer(), newFakeCoord()
		var d driver.Driver = fakeDriver{srv}
		kind := "legacy"
		if withCtx {
			d, kind = fakeDriverCtx{fakeDriver{srv}}, "ctx"
		}
		// sql.Register is process-wide and panics on a repeated name
		// (go test -count=N runs this again).
		name := fmt.Sprintf("sqlproxy-test-%s-%d", kind, registerSeq.Add(1))
		t.Run(name, func(t *testing.T) {
			Register(name, d, func(dsn string) (Options, error) {
				return Options{Datasource: "ds-" + dsn, Coordinator: co}, nil
			})
			db1, err := sql.Open(name, "orders")
			mustNil(t, "Open 1", err)
			db2, err := sql.Open(name, "orders")
			mustNil(t, "Open 2", err)
			g := gctx("g")
			for _, db := range []*sql.DB{db1, db2} {
				_, err := db.ExecContext(g, "INSERT a")
				mustNil(t, "Exec", err)
			}
			check(t, "joins across two sql.DB on one DSN", co.joinCount("g"), 1)
			check(t, "join", co.joins[0], "g ds-orders lcn")
			mustNil(t, "Held.Commit", co.held("g").Commit(context.Background()))
			db1.Close()
			if withCtx {
				check(t, "inner connector closes after first DB", srv.count("connector close"), 0)
			}
			db2.Close()
			if withCtx {
				check(t, "inner connector closes after last DB", srv.count("connector close"), 1)
			}
			if v := srv.violationsCopy(); len(v) > 0 {
				t.Errorf("driver misuse: %q", v)
			}
		})
	}
}

func TestConnectorCloseForwardsAndClosesFreeList(t *testing.T) {
	e := newEnv(t)
	h, id := holdOne(t, e, "g")
	mustNil(t, "Held.Commit", h.Commit(context.Background()))
	check(t, "free", len(e.free()), 1)
	mustNil(t, "Close", e.cn.Close())
	mustNil(t, "Close again", e.cn.Close())
	check(t, "inner connector closed", e.srv.count("connector close"), 1)
	check(t, "released conn closed", e.srv.count(fmt.Sprintf("c%d close", id)), 1)
	check(t, "free", len(e.free()), 0)
}
