package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/golcn/golcn/txclient"
)

// Client is what a service embedding txclient needs.
type Client struct {
	// Core is the client's configuration (keys "client.*"), with defaults
	// applied and validated. Its Logger is slog.Default(); set another
	// before txclient.New if needed. Its TLS is built from TLSFiles: nil
	// (the system roots, no client certificate) when none is set.
	Core txclient.Config
	// TLSFiles are the keys client.tls_ca_file, client.tls_cert_file and
	// client.tls_key_file.
	TLSFiles TLSFiles
}

// LoadClient loads a client's settings from, in increasing priority:
// defaults, the YAML file named by --config or LCN_CONFIG, the LCN_CLIENT_*
// variables of environ (usually os.Environ()), and the flags in args. On
// --help or -h it writes the flags to standard output and returns
// pflag.ErrHelp.
//
// A service that parses its own flags should pass nil args (settings then
// come from the file and the environment only): LoadClient rejects flags it
// does not know.
func LoadClient(args, environ []string) (*Client, error) {
	return loadClient(args, environ, os.Stdout)
}

func loadClient(args, environ []string, help io.Writer) (*Client, error) {
	c, src, err := load("client", "Settings of a golcn client (package txclient):", clientSpecs(), args, environ, help)
	if err != nil {
		return nil, err
	}
	var errs []error
	if c.Core.TLS, errs = clientTLS(c.TLSFiles, c.Core.ManagerURL, src); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.Core = c.Core.WithDefaults()
	if err := c.Core.Validate(); err != nil {
		return nil, fmt.Errorf("config: client: %w", err)
	}
	return c, nil
}

// LogValue renders every setting, by key name, with the token (and any
// password in the manager URL) redacted.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(attrs(clientSpecs(), &c)...)
}

// String renders every setting, by key name, with the token (and any
// password in the manager URL) redacted.
func (c Client) String() string { return format(attrs(clientSpecs(), &c)) }

// GoString is String, so that %#v does not print the token either.
func (c Client) GoString() string { return "config.Client" + c.String() }
