// Package exdb opens the example services' databases through the golcn
// proxy driver, on SQLite (modernc.org/sqlite) or MySQL/MariaDB
// (go-sql-driver/mysql).
//
// Each example service owns one database and one datasource name; Open wraps
// the inner driver's connector with sqlproxy so that work done with a group
// context joins the group.
package exdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net/url"

	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"

	"github.com/golcn/golcn/sqlproxy"
)

// Dialect names the SQL dialect of a service's database.
type Dialect string

// Supported dialects.
const (
	SQLite Dialect = "sqlite"
	MySQL  Dialect = "mysql" // MySQL and MariaDB
)

// ParseDialect checks a dialect name given on a command line.
func ParseDialect(s string) (Dialect, error) {
	switch d := Dialect(s); d {
	case SQLite, MySQL:
		return d, nil
	}
	return "", fmt.Errorf("exdb: unknown dialect %q (want %q or %q)", s, SQLite, MySQL)
}

// TableOptions returns the clause that ends a CREATE TABLE statement.
func (d Dialect) TableOptions() string {
	if d == MySQL {
		return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
	}
	return ""
}

// SQLiteDSN returns a modernc.org/sqlite DSN for the database file at path:
// WAL, a 10 s busy timeout (a held lcn transaction keeps SQLite's single
// write lock until its group is decided, so writers queue), BEGIN IMMEDIATE
// (take the write lock at BEGIN, so two transactions never deadlock upgrading
// a read lock), and synchronous=NORMAL (enough for a demo in WAL mode).
func SQLiteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

// Connector returns the inner (unproxied) connector for dsn.
func Connector(d Dialect, dsn string) (driver.Connector, error) {
	switch d {
	case SQLite:
		return &sqliteConnector{dsn: dsn, drv: &sqlite.Driver{}, writeLock: make(chan struct{}, 1)}, nil
	case MySQL:
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("exdb: parse mysql dsn: %w", err)
		}
		c, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("exdb: mysql connector: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("exdb: unknown dialect %q", d)
}

// Open opens the database of one service through the golcn proxy, naming it
// datasource, with coord as the transaction coordinator client, in the given
// branch mode ("" picks the default: lcn on SQLite, whose vote is a held
// local transaction; auto on MySQL, durable XA where the server keeps
// prepared branches). The connector reports the mode in effect (for auto,
// once the first group used the datasource).
func Open(d Dialect, dsn, datasource string, coord sqlproxy.Coordinator, mode string) (*sql.DB, *sqlproxy.Connector, error) {
	inner, err := Connector(d, dsn)
	if err != nil {
		return nil, nil, err
	}
	if mode == "" {
		mode = sqlproxy.ModeLCN
		if d == MySQL {
			mode = sqlproxy.ModeAuto
		}
	}
	c, err := sqlproxy.NewConnector(inner, sqlproxy.Options{Datasource: datasource, Coordinator: coord, Mode: mode})
	if err != nil {
		return nil, nil, fmt.Errorf("exdb: open %s database: %w", datasource, err)
	}
	return sql.OpenDB(c), c, nil
}

// MigrateAll runs each statement in order (DDL: outside any group).
func MigrateAll(ctx context.Context, db *sql.DB, stmts ...string) error {
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("exdb: migrate: %q: %w", s, err)
		}
	}
	return nil
}
