package txclient

import "sync"

var (
	defaultMu     sync.Mutex // guards defaultClient
	defaultClient *Client
)

// SetDefault makes c the process's default client: the one drivers
// registered by name (sql.Open("lcn-mysql", dsn)) use when they need a
// coordinator. Call it once at start-up, before the first group work.
func SetDefault(c *Client) {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	defaultClient = c
}

// Default returns the process's default client, or nil if none was set.
func Default() *Client {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	return defaultClient
}

// DefaultOr returns the default client, creating it with newClient (and
// making it the default) if none was set. newClient runs at most once at a
// time; if it fails, the next call tries again.
func DefaultOr(newClient func() (*Client, error)) (*Client, error) {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	if defaultClient != nil {
		return defaultClient, nil
	}
	c, err := newClient()
	if err != nil {
		return nil, err
	}
	defaultClient = c
	return c, nil
}
