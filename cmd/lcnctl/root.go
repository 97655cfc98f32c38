package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Environment variables lcnctl reads.
const (
	envURL       = "LCN_URL"
	envToken     = "LCN_ADMIN_TOKEN"
	envTokenFile = "LCN_ADMIN_TOKEN_FILE"
	defaultURL   = "http://127.0.0.1:8070"
)

// globals are the flags every command shares.
type globals struct {
	url       string
	tokenFile string
	caFile    string
	output    string
	timeout   time.Duration
	env       map[string]string
	out       io.Writer
}

// usageError marks a bad command line (exit status 2).
type usageError struct{ error }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.HasPrefix(err.Error(), "unknown flag") || strings.HasPrefix(err.Error(), "unknown shorthand flag") ||
		strings.Contains(err.Error(), "flag needs an argument") || strings.Contains(err.Error(), "invalid argument") ||
		strings.Contains(err.Error(), "accepts ") || strings.Contains(err.Error(), "required flag")
}

func newRoot(environ []string, out io.Writer) *cobra.Command {
	g := &globals{env: map[string]string{}, out: out}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if _, dup := g.env[k]; !dup {
				g.env[k] = v
			}
		}
	}
	root := &cobra.Command{
		Use:   "lcnctl",
		Short: "Operate a golcn TxManager: groups, compensation markers, health",
		Long: `lcnctl talks to a golcn TxManager's REST API.

The URL comes from --url or ` + envURL + ` (default ` + defaultURL + `).
The admin token comes from the file named by --token-file or ` + envTokenFile + `,
or from ` + envToken + `; it is never taken from the command line.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("--output %q: want table or json", g.output)}
			}
			return nil
		},
	}
	url := g.env[envURL]
	if url == "" {
		url = defaultURL
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", url, "the TxManager's base URL [env "+envURL+"]")
	pf.StringVar(&g.tokenFile, "token-file", g.env[envTokenFile], "file holding the admin token [env "+envTokenFile+"; or the token itself in "+envToken+"]")
	pf.StringVar(&g.caFile, "ca-file", "", "PEM CA certificates that an https TxManager's certificate is verified against (default: the system roots)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 15*time.Second, "bound of each request")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(groupsCmd(g), compensationsCmd(g), healthCmd(g))
	return root
}

// needSubcommand is the RunE of a command that only groups subcommands:
// run alone, or with an unknown subcommand, it is a usage error.
func needSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unknown command %q for %s", args[0], cmd.CommandPath())}
	}
	return usageError{fmt.Errorf("%s needs a subcommand", cmd.CommandPath())}
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s", cmd.CommandPath(), what)}
		}
		return nil
	}
}
