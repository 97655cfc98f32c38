// Command order runs the example order service (the starter) as its own
// process.
//
//	go run ./examples/cmd/order --listen 127.0.0.1:8080 --dsn order.db --manager-url ws://127.0.0.1:8070/v1/ws \
//	    --stock-url http://127.0.0.1:8081 --account-url http://127.0.0.1:8082
package main

import (
	"context"
	"database/sql"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/svcmain"
	"github.com/golcn/golcn/examples/order"
	"github.com/golcn/golcn/txclient"
)

func main() {
	fs := pflag.NewFlagSet("order", pflag.ExitOnError)
	stockURL := fs.String("stock-url", "http://127.0.0.1:8081", "stock service base URL")
	accountURL := fs.String("account-url", "http://127.0.0.1:8082", "account service base URL")
	svcmain.Main(svcmain.Service{Name: "order", Flags: fs,
		Setup: func(ctx context.Context, db *sql.DB, d exdb.Dialect, c *txclient.Client) (http.Handler, error) {
			if err := order.Migrate(ctx, db, d); err != nil {
				return nil, err
			}
			return order.New(db, c, order.Options{StockURL: *stockURL, AccountURL: *accountURL})
		}})
}
