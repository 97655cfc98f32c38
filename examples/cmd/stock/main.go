// Command stock runs the example stock service as its own process.
//
//	go run ./examples/cmd/stock --listen 127.0.0.1:8081 --dsn stock.db --manager-url ws://127.0.0.1:8070/v1/ws --seed
package main

import (
	"context"
	"database/sql"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/examples/exdb"
	"github.com/golcn/golcn/examples/internal/svcmain"
	"github.com/golcn/golcn/examples/stock"
	"github.com/golcn/golcn/txclient"
)

func main() {
	fs := pflag.NewFlagSet("stock", pflag.ExitOnError)
	seed := fs.Bool("seed", false, "insert the demo catalogue if the stock table is empty")
	svcmain.Main(svcmain.Service{Name: "stock", Flags: fs,
		Setup: func(ctx context.Context, db *sql.DB, d exdb.Dialect, c *txclient.Client) (http.Handler, error) {
			if err := stock.Migrate(ctx, db, d); err != nil {
				return nil, err
			}
			if *seed {
				if _, err := stock.Seed(ctx, db, stock.DemoItems()); err != nil {
					return nil, err
				}
			}
			return stock.New(db, c), nil
		}})
}
