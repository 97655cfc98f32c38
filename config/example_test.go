package config_test

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/golcn/golcn/config"
)

func ExampleLoadManager() {
	// In cmd/txmanager: config.LoadManager(os.Args[1:], os.Environ()).
	args := []string{"--store=redis", "--log-level=debug"}
	environ := []string{"LCN_REDIS_ADDR=redis:6379", "LCN_REDIS_PASSWORD=hunter2", "LCN_GROUP_TIMEOUT=45s",
		// The accepted tokens, by their SHA-256 (txmanager hash-token).
		"LCN_AUTH_TOKENS=stock=1978c8176f7a6c9472c6e2e75e2eb5fadd0141229185b772d1bee64e76cdb575," +
			"ops=a154e9c51aaf203fc2b387ba73c4d1d922d34cc770529da10a9c9bcff6b034c1:admin:2030-01-01T00:00:00Z"}
	m, err := config.LoadManager(args, environ)
	if errors.Is(err, pflag.ErrHelp) {
		return // --help was printed: exit 0
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Store, m.Redis.Addr, m.Core.GroupTimeout, m.Level())
	fmt.Println(m.Redis)
	fmt.Println(len(m.Core.Auth.Credentials), m.Core.Auth.Credentials[1].Role)
	// Output:
	// redis redis:6379 45s DEBUG
	// {addr=redis:6379 username="" password=*** db=0 prefix=lcn tls=false}
	// 2 admin
}

func ExampleLoadManager_badValue() {
	_, err := config.LoadManager(nil, []string{"LCN_GROUP_TIMEOUT=30x"})
	fmt.Println(err)
	var ke *config.KeyError
	if errors.As(err, &ke) {
		fmt.Println(ke.Key, "|", ke.Source)
	}
	// Output:
	// config: group_timeout: invalid duration "30x" (from env LCN_GROUP_TIMEOUT)
	// group_timeout | env LCN_GROUP_TIMEOUT
}

func ExampleLoadClient() {
	// A service with flags of its own passes nil args.
	c, err := config.LoadClient(nil, []string{"LCN_CLIENT_SERVICE=stock", "LCN_CLIENT_TOKEN=t0k3n"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Core.ManagerURL, c.Core.Service, c.Core.AskInterval)
	// Output:
	// ws://127.0.0.1:8070/v1/ws stock 5s
}
