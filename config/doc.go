// Package config loads golcn's settings from a YAML file, the environment
// and command-line flags into the plain structs the other packages take
// (txmanager.Config, txclient.Config). It is the only package, with cmd/,
// that knows about viper and pflag.
//
// # Sources and precedence
//
// Each setting is read from, in increasing priority:
//
//  1. its default;
//  2. the YAML file named by the flag --config, or else by the environment
//     variable LCN_CONFIG (JSON is valid YAML too). No file named is fine;
//     a named file that cannot be read is an error;
//  3. its environment variable: LCN_ followed by the key upper-cased, dots
//     turned into underscores (redis.addr is LCN_REDIS_ADDR,
//     client.manager_url is LCN_CLIENT_MANAGER_URL). An empty variable
//     counts as unset. Other LCN_* variables are ignored, since other tools
//     share the prefix, so a misspelt variable is not reported;
//  4. its flag: the key with dots and underscores turned into hyphens
//     (--redis-addr, --group-timeout); client flags drop the "client."
//     prefix (--manager-url, --service).
//
// ManagerKeys and ClientKeys list every key with its variable, flag,
// default and meaning; docs/configuration.md has the same tables.
//
// # Strictness
//
// A key in the file that no setting has is an error naming the key (and
// the nearest known key), so typos do not pass silently. Every value is
// checked, and every bad one is reported as a *KeyError naming its key and
// where the value came from:
//
//	config: group_timeout: invalid duration "30x" (from env LCN_GROUP_TIMEOUT)
//
// Durations are written with a unit ("30s", "1m30s"); a bare number other
// than 0 is an error rather than nanoseconds. Durations must be positive,
// except client.group_timeout, where 0s means the TxManager's default.
// Strings must be strings in the file: quote values YAML would read as
// numbers or booleans. After loading, the core struct's WithDefaults and
// Validate are applied and a Validate error is returned wrapped.
//
// Lists (auth.allowed_origins) are YAML lists in the file and
// comma-separated in the environment and flags. auth.tokens is a list of
// {service, token_sha256, role, expires} mappings in the file and a
// comma-separated list of service=<sha256 hex>[:role[:expires]] in the
// environment and flags.
//
// # Authentication and TLS
//
// LoadManager refuses a configuration with no credentials (auth.tokens or
// auth.client_certs) unless auth.insecure is set, with a *KeyError for
// auth.tokens that says how to configure either. It builds Manager.TLS from
// the tls.* files, and LoadClient builds Client.Core.TLS from the
// client.tls_* files; an unreadable or mismatched file is a *KeyError
// naming its key.
//
// Secrets (redis.password, client.token) never appear in errors, and the
// String, GoString and LogValue methods of Manager, Redis and Client show
// them as "***". Prefer the file or the environment to flags for secrets:
// flags are visible to other users of the machine. Token hashes are not
// secrets, but they are not shown either: errors about auth.tokens name
// the item (auth.tokens[2].role) and its service, and the rendered settings
// list services and roles only.
//
// # Usage
//
//	m, err := config.LoadManager(os.Args[1:], os.Environ())
//	if errors.Is(err, pflag.ErrHelp) {
//		os.Exit(0) // --help was printed
//	}
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err)
//		os.Exit(2)
//	}
//	slog.Info("starting", "config", m) // secrets redacted
//
// A service embedding txclient that parses its own flags passes nil args:
//
//	c, err := config.LoadClient(nil, os.Environ())
package config
