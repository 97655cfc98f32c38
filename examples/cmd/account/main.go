// Command account runs the example account service as its own process.
//
//	go run ./examples/cmd/account --listen 127.0.0.1:8082 --dsn account.db --manager-url ws://127.0.0.1:8070/v1/ws --seed --fail-after-write 0.05
package main

import (
	"context"
	"database/sql"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/examples/account"
	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/svcmain"
	"github.com/golcn/golcn/txclient"
)

func main() {
	fs := pflag.NewFlagSet("account", pflag.ExitOnError)
	seed := fs.Bool("seed", false, "insert the demo accounts if the accounts table is empty")
	failRate := fs.Float64("fail-after-write", 0, "fraction of charges that write, vote and then answer 500 (by order id hash)")
	svcmain.Main(svcmain.Service{Name: "account", Flags: fs,
		Setup: func(ctx context.Context, db *sql.DB, d exdb.Dialect, c *txclient.Client) (http.Handler, error) {
			if err := account.Migrate(ctx, db, d); err != nil {
				return nil, err
			}
			if *seed {
				if _, err := account.Seed(ctx, db, account.DemoAccounts()); err != nil {
					return nil, err
				}
			}
			return account.New(db, c, account.Options{FailAfterWrite: *failRate}), nil
		}})
}
