// Command lcnctl is the operator's command line for a golcn TxManager: it
// lists and shows transaction groups, lists compensation markers, pushes
// phase 2 again and resolves markers, and checks health, through the
// TxManager's REST API (docs/openapi.yaml).
//
//	lcnctl groups list [--state S] [--service S] [--created-after T] [--created-before T] [--attention true|false] [--limit N] [--cursor C]
//	lcnctl groups show ID
//	lcnctl groups retry ID
//	lcnctl compensations list [--status open|resolved|all]
//	lcnctl compensations retry ID
//	lcnctl compensations resolve ID --reason "why"
//	lcnctl health
//
// The TxManager's URL comes from --url or LCN_URL (default
// http://127.0.0.1:8070). The admin token comes from the file named by
// --token-file or LCN_ADMIN_TOKEN_FILE, or from LCN_ADMIN_TOKEN; there is
// no flag for the token itself, so that it never shows in the process
// list or the shell history. --ca-file names the CA certificates of an
// https TxManager. --output json prints the API's JSON; table (default)
// prints columns.
//
// Errors (the TxManager unreachable, an HTTP error with the server's
// message) go to standard error and the exit status is 1; a bad command
// line exits 2.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs lcnctl with args and environ, writing to stdout and stderr, and
// returns the exit status: 0, 1 (the command failed), 2 (bad usage).
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	root := newRoot(environ, stdout)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "lcnctl:", err)
	if isUsage(err) {
		fmt.Fprintln(stderr, "see lcnctl --help")
		return 2
	}
	return 1
}
