package sqlproxy_test

import (
	"context"
	"errors"
	"log"

	"github.com/go-sql-driver/mysql"

	"github.com/golcn/golcn/sqlproxy"
)

// coordinator stands for the process's coordinator client (a
// *txclient.Client implements sqlproxy.Coordinator).
func coordinator() (sqlproxy.Coordinator, error) {
	return nil, errors.New("no coordinator client in this example")
}

func Example_openDB() {
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", "127.0.0.1:3306", "orders"
	cfg.User, cfg.Passwd = "app", "secret"
	inner, err := mysql.NewConnector(cfg)
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlproxy.OpenDB(inner, sqlproxy.Options{
		Datasource: "orders", // unique in the process
		// Resolved at the first use of a group: opening the database never
		// fails because the coordinator client is not ready yet.
		CoordinatorFunc: coordinator,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// reserve runs in a request whose ctx carries a transaction group (put
	// there by txclient's HTTP middleware). Without one it is an ordinary
	// local transaction.
	reserve := func(ctx context.Context, item int64) error {
		tx, err := db.BeginTx(ctx, nil) // joins the group's branch on "orders"
		if err != nil {
			return err
		}
		defer tx.Rollback() // votes failed unless Commit ran
		if _, err := tx.ExecContext(ctx, "UPDATE stock SET n = n - 1 WHERE id = ? AND n > 0", item); err != nil {
			return err
		}
		// Votes prepared and returns once the TxManager recorded it; the
		// group's decision commits or rolls back the held work later.
		return tx.Commit()
	}
	_ = reserve
}
