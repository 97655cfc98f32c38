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
package lcnmysql

import (
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

// Options returns the proxy options for dsn: its datasource name and the
// default coordinator, resolved lazily.
func Options(dsn string) (sqlproxy.Options, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return sqlproxy.Options{}, fmt.Errorf("lcnmysql: %w", err)
	}
	return sqlproxy.Options{
		Datasource:      cfg.Addr + "/" + cfg.DBName,
		CoordinatorFunc: DefaultCoordinator,
	}, nil
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
