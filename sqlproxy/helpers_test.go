package sqlproxy

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"

	"github.com/golcn/golcn/internal/groupctx"
)

type testEnv struct {
	t   *testing.T
	srv *fakeServer
	co  *fakeCoord
	cn  *Connector
	db  *sql.DB
}

// newEnv opens a sql.DB over a Connector over the fake driver, with a fake
// coordinator. At cleanup it fails the test if the fake saw driver misuse.
func newEnv(t *testing.T, mods ...func(*Options)) *testEnv {
	t.Helper()
	srv, co := newFakeServer(), newFakeCoord()
	opt := Options{Datasource: "ds1", Coordinator: co}
	for _, m := range mods {
		m(&opt)
	}
	cn, err := NewConnector(fakeConnector{srv}, opt)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(cn)
	t.Cleanup(func() {
		db.Close()
		if v := srv.violationsCopy(); len(v) > 0 {
			t.Errorf("driver misuse: %q", v)
		}
	})
	return &testEnv{t: t, srv: srv, co: co, cn: cn, db: db}
}

func gctx(group string) context.Context { return groupctx.With(context.Background(), group) }

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// connID returns the id of the fake physical conn that ran the query.
func connID(t *testing.T, ctx context.Context, q queryRower) int {
	t.Helper()
	var id int
	if err := q.QueryRowContext(ctx, "SELECT CONN").Scan(&id); err != nil {
		t.Fatalf("SELECT CONN: %v", err)
	}
	return id
}

func (e *testEnv) branches() int {
	e.cn.src.mu.Lock()
	defer e.cn.src.mu.Unlock()
	return len(e.cn.src.branches)
}

// free returns the ids of the physical conns on the free list.
func (e *testEnv) free() []int {
	e.cn.src.mu.Lock()
	defer e.cn.src.mu.Unlock()
	var ids []int
	for _, pc := range e.cn.src.free {
		ids = append(ids, fakeID(pc.ci))
	}
	slices.Sort(ids)
	return ids
}

func fakeID(ci any) int {
	switch c := ci.(type) {
	case *fakeConn:
		return c.id
	case minimalConn:
		return c.c.id
	case *conn:
		return fakeID(c.phys.ci)
	}
	panic(fmt.Sprintf("not a fake conn: %T", ci))
}

func check[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func mustNil(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
