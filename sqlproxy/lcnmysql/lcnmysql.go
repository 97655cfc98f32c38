// Package lcnmysql registers the "lcn-mysql" database/sql driver: the golcn
// proxy over github.com/go-sql-driver/mysql. Adopting golcn in a MySQL or
// MariaDB service is an import and a driver name:
//
//	import _ "github.com/golcn/golcn/sqlproxy/lcnmysql"
//
//	db, err := sql.Open("lcn-mysql", "app:secret@tcp(db:3306)/orders")
//
// The DSN is go-sql-driver/mysql's. Outside a group every statement goes
// straight to the mysql driver. Inside a group the driver needs a
// coordinator: the process's default txclient.Client (txclient.SetDefault),
// or, if none was set when the first group work arrives, a client made from
// the LCN_CLIENT_* environment (config.LoadClient) and made the default.
// sql.Open never fails for want of a coordinator.
//
// The datasource name, which identifies the branch of a group in this
// process, is the DSN's address and database ("db:3306/orders").
//
// # Branch mode
//
// "lcn-mysql" runs in sqlproxy.ModeAuto: xa (durable prepared branches, with
// crash recovery) when the server keeps a prepared XA branch across a
// disconnect (MariaDB 10.5.2+, MySQL 5.7.7+), lcn otherwise; see package
// sqlproxy. To force a mode, open the database with OpenDB instead of
// sql.Open:
//
//	db, err := lcnmysql.OpenDB(dsn, sqlproxy.ModeLCN)
//
// (A DSN parameter cannot carry the mode: go-sql-driver/mysql sends unknown
// DSN parameters to the server as session variables.) Do not open the same
// DSN both ways in one process: each would keep its own branches.
package lcnmysql

import (
	"database/sql"
	"fmt"
	"os"

	"github.com/go-sql-driver/mysql"

	"github.com/golcn/golcn/config"
	"github.com/golcn/golcn/sqlproxy"
	"github.com/golcn/golcn/txclient"
)

// DriverName is the name the driver is registered under.
const DriverName = "lcn-mysql"

func init() {
	sqlproxy.Register(DriverName, &mysql.MySQLDriver{}, Options)
}

// Options returns the proxy options for dsn: its datasource name, mode
// auto, and the default coordinator, resolved lazily.
func Options(dsn string) (sqlproxy.Options, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return sqlproxy.Options{}, fmt.Errorf("lcnmysql: %w", err)
	}
	return sqlproxy.Options{
		Datasource:      cfg.Addr + "/" + cfg.DBName,
		Mode:            sqlproxy.ModeAuto,
		CoordinatorFunc: DefaultCoordinator,
	}, nil
}

// OpenDB opens dsn through the proxy in the given branch mode
// (sqlproxy.ModeLCN, ModeXA or ModeAuto; "" means ModeAuto), with the
// options of Options otherwise. Like sql.Open it does not connect.
func OpenDB(dsn, mode string) (*sql.DB, error) {
	opt, err := Options(dsn)
	if err != nil {
		return nil, err
	}
	if mode != "" {
		opt.Mode = mode
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("lcnmysql: %w", err)
	}
	inner, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("lcnmysql: %w", err)
	}
	return sqlproxy.OpenDB(inner, opt)
}

// DefaultCoordinator returns txclient.Default(), creating it from the
// environment if no default was set.
func DefaultCoordinator() (sqlproxy.Coordinator, error) {
	c, err := txclient.DefaultOr(func() (*txclient.Client, error) {
		cfg, err := config.LoadClient(nil, os.Environ())
		if err != nil {
			return nil, fmt.Errorf("lcnmysql: no default txclient.Client set and none configured by environment: %w", err)
		}
		return txclient.New(cfg.Core)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
