package txclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/batchconn"
	"github.com/golcn/golcn/internal/gid"
	"github.com/golcn/golcn/internal/wire"
)

// Errors callers branch on.
var (
	// ErrNotSent: the request never left this process (no session with the
	// TxManager); nothing happened there. Safe to retry.
	ErrNotSent = errors.New("txclient: request not sent: no session with the TxManager")
	// ErrNoAnswer: the request was sent but the session ended before an
	// answer came. It may or may not have taken effect.
	ErrNoAnswer = errors.New("txclient: request sent but not answered")
	// ErrGroupNotActive: the group is unknown to the TxManager or already
	// decided, so no work may join it.
	ErrGroupNotActive = errors.New("txclient: group is not active")
	// ErrRolledBack: the group was rolled back (a branch failed, the
	// deadline passed, or the starter asked).
	ErrRolledBack = errors.New("txclient: group rolled back")
	// ErrOutcomeUnknown: the commit request's answer was lost; the group is
	// committed or rolled back, never both; ask with Group.Status later.
	ErrOutcomeUnknown = errors.New("txclient: group outcome unknown")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("txclient: client closed")
)

// RemoteError is an error answer from the TxManager.
type RemoteError struct {
	Code   string // one of the wire.Code* values
	State  string // the group's state, for conflicts
	Reason string
}

func (e *RemoteError) Error() string {
	if e.State != "" {
		return fmt.Sprintf("txclient: txmanager answered %s (group %s): %s", e.Code, e.State, e.Reason)
	}
	return fmt.Sprintf("txclient: txmanager answered %s: %s", e.Code, e.Reason)
}

// Client is a service's session with a TxManager. It starts and decides
// groups, joins branches and votes for them (it implements
// sqlproxy.Coordinator), holds branches until their decision arrives, and
// applies decisions on contexts detached from any request.
//
// New starts a background goroutine that keeps one websocket to the
// TxManager, reconnecting with backoff and re-syncing the branches it holds
// after every reconnect. All methods are safe for concurrent use. Close stops
// it.
type Client struct {
	cfg    Config
	log    *slog.Logger
	dialer *websocket.Dialer
	reg    *registry

	nextID atomic.Uint64

	mu      sync.Mutex // guards conn, pending, connCh, modes
	conn    *clientConn
	pending map[uint64]chan *wire.Message
	modes   map[string]string // datasource -> branch mode, from joins
	connCh  chan struct{}     // closed (and replaced) whenever a session comes up

	active activeCache
	now    func() time.Time

	ctx       context.Context // the client's lifetime: cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// clientConn is one websocket session; out feeds its only writer.
type clientConn struct {
	ws   *websocket.Conn
	held *batchconn.Conn // ws's network connection: the writer holds a batch of frames in it
	out  chan []byte
	done chan struct{}
	once sync.Once
}

func (c *clientConn) close() {
	c.once.Do(func() { close(c.done); _ = c.ws.Close() })
}

// New returns a client for cfg and starts connecting in the background. It
// does not wait for the TxManager: a service may start before its
// TxManager, and requests wait (within their context and RequestTimeout) for
// a session.
func New(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if cfg.Instance == "" {
		cfg.Instance = cfg.Service + "-" + gid.New()[:12]
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("service", cfg.Service, "instance", cfg.Instance),
		dialer:  &websocket.Dialer{HandshakeTimeout: cfg.RequestTimeout, TLSClientConfig: cfg.TLS},
		pending: make(map[uint64]chan *wire.Message),
		connCh:  make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		now:     time.Now,
	}
	c.dialer.NetDialContext = (&net.Dialer{}).DialContext
	if cfg.Dialer != nil {
		c.dialer.NetDialContext = cfg.Dialer.DialContext
	}
	c.reg = newRegistry(c)
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.connectLoop() }()
	go func() { defer c.wg.Done(); c.reg.askLoop(ctx) }()
	return c, nil
}

// Instance returns the id that routes decisions to this process.
func (c *Client) Instance() string { return c.cfg.Instance }

// Service returns the service name.
func (c *Client) Service() string { return c.cfg.Service }

// Status describes the client for health checks.
type Status struct {
	Connected bool
	Held      int // branches waiting for their decision
	// Modes maps each datasource that has joined a group to the branch
	// mode it runs in ("xa" or "lcn"; mode auto resolves to one of them).
	Modes map[string]string
}

// Status returns the client's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	connected := c.conn != nil
	modes := make(map[string]string, len(c.modes))
	for k, v := range c.modes {
		modes[k] = v
	}
	c.mu.Unlock()
	return Status{Connected: connected, Held: c.reg.len(), Modes: modes}
}

// WaitConnected blocks until a session with the TxManager is up or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		up, ch := c.conn != nil, c.connCh
		c.mu.Unlock()
		if up {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("txclient: wait for TxManager session: %w", ctx.Err())
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// Close ends the session and stops the client's goroutines, waiting for
// them (including decisions being applied). Branches still held stay held
// on their connections: in lcn mode the database rolls them back when the
// process exits, and the TxManager flags them. Safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		if c.conn != nil {
			c.conn.close()
		}
		c.mu.Unlock()
	})
	c.wg.Wait()
	return nil
}

// connectLoop keeps a session up until the client is closed.
func (c *Client) connectLoop() {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = c.cfg.ReconnectMin
	bo.MaxInterval = c.cfg.ReconnectMax
	bo.MaxElapsedTime = 0
	for {
		conn, err := c.dial()
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			wait := bo.NextBackOff()
			c.log.Warn("cannot reach TxManager", "url", c.cfg.ManagerURL, "retry_in", wait, "err", err)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		bo.Reset()
		c.serve(conn)
		if c.ctx.Err() != nil {
			return
		}
	}
}

// dial opens a websocket and performs the hello handshake, listing the
// branches this process holds so the TxManager re-sends their decisions.
func (c *Client) dial() (*clientConn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	defer cancel()
	hdr := http.Header{}
	if c.cfg.Token != "" {
		hdr.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	// Each session's connection is wrapped (below TLS) so that its writer
	// can send queued frames together.
	var held *batchconn.Conn
	d := *c.dialer
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := c.dialer.NetDialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		held = batchconn.New(nc)
		return held, nil
	}
	ws, resp, err := d.DialContext(ctx, c.cfg.ManagerURL, hdr)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("dial %s: refused with %s: check client.token (or the client certificate)", c.cfg.ManagerURL, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", c.cfg.ManagerURL, err)
	}
	ws.SetReadLimit(wire.MaxFrame)
	hello := &wire.Message{Type: wire.TypeHello, ID: c.nextID.Add(1), Service: c.cfg.Service,
		Instance: c.cfg.Instance, Held: c.reg.refs()}
	frame, err := wire.Encode(hello)
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	deadline := time.Now().Add(c.cfg.RequestTimeout)
	_ = ws.SetWriteDeadline(deadline)
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	_ = ws.SetReadDeadline(deadline)
	_, frame, err = ws.ReadMessage()
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("read hello answer: %w", err)
	}
	m, err := wire.Decode(frame)
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("hello answer: %w", err)
	}
	if m.Type != wire.TypeOK || m.ID != hello.ID {
		_ = ws.Close()
		return nil, fmt.Errorf("hello refused: %s %s", m.Code, m.Reason)
	}
	_ = ws.SetReadDeadline(time.Time{})
	_ = ws.SetWriteDeadline(time.Time{})
	return &clientConn{ws: ws, held: held, out: make(chan []byte, 1024), done: make(chan struct{})}, nil
}

// serve runs one session: it publishes the connection, runs the writer and
// reads until the connection fails, then fails every pending request.
func (c *Client) serve(conn *clientConn) {
	c.mu.Lock()
	c.conn = conn
	close(c.connCh)
	c.connCh = make(chan struct{})
	c.mu.Unlock()
	c.log.Info("connected to TxManager", "url", c.cfg.ManagerURL)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.writeLoop(conn) }()
	go func() {
		// Close may have run before conn was published: end the session
		// when the client ends, whenever that is.
		defer wg.Done()
		select {
		case <-c.ctx.Done():
			conn.close()
		case <-conn.done:
		}
	}()
	err := c.readLoop(conn)
	conn.close()
	wg.Wait()

	c.mu.Lock()
	c.conn = nil
	pending := c.pending
	c.pending = make(map[uint64]chan *wire.Message)
	c.mu.Unlock()
	for _, ch := range pending {
		close(ch) // the waiter reports ErrNoAnswer
	}
	if c.ctx.Err() == nil {
		c.log.Warn("session with TxManager lost", "err", err)
	}
}

func (c *Client) writeLoop(conn *clientConn) {
	for {
		select {
		case <-conn.done:
			return
		case frame := <-conn.out:
			if err := c.writeBatch(conn, frame); err != nil {
				conn.close()
				return
			}
		}
	}
}

// writeBatch writes first and whatever else is already queued (up to
// batchconn.MaxBatch frames), sent together (batchconn.WriteQueued).
func (c *Client) writeBatch(conn *clientConn, first []byte) error {
	_ = conn.ws.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
	return batchconn.WriteQueued(conn.held, conn.out, first, batchconn.MaxBatch, func(frame []byte) error {
		return conn.ws.WriteMessage(websocket.TextMessage, frame)
	})
}

func (c *Client) readLoop(conn *clientConn) error {
	for {
		_, frame, err := conn.ws.ReadMessage()
		if err != nil {
			return err
		}
		m, err := wire.Decode(frame)
		if errors.Is(err, wire.ErrUnknownType) {
			// A type this client does not know (a newer TxManager's, or
			// a forged redirect such as TX-LCN's newTxManager): never
			// acted on, and not a reason to end the session either, which
			// would make the client reconnect. The client only ever
			// connects to its configured ManagerURL.
			c.log.Warn("ignored a message of unknown type from the TxManager", "err", err)
			continue
		}
		if err != nil {
			_ = conn.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "malformed message"), time.Now().Add(time.Second))
			return err
		}
		switch m.Type {
		case wire.TypeDecision:
			if m.Mode == "xa" && m.Datasource != "" {
				// A prepared branch of this service whose own process is gone.
				c.reg.orphan(m.Group, m.Branch, m.Datasource, m.Commit)
				continue
			}
			c.reg.decision(m.Group, m.Branch, m.Commit)
		case wire.TypePrepare:
			c.reg.prepare(m.Group, m.Branch)
		case wire.TypeOK, wire.TypeError:
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		default:
			c.log.Warn("unexpected message from TxManager", "type", m.Type)
		}
	}
}

// request sends m and waits for its answer. The wait is bounded by ctx and
// by RequestTimeout. The error wraps ErrNotSent when m never left, and
// ErrNoAnswer when it left but no answer came; an error answer is a
// *RemoteError.
func (c *Client) request(ctx context.Context, m *wire.Message) (*wire.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	m.ID = c.nextID.Add(1)
	frame, err := wire.Encode(m)
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.Message, 1)
	var conn *clientConn
	for conn == nil {
		c.mu.Lock()
		conn = c.conn
		wait := c.connCh
		if conn != nil {
			c.pending[m.ID] = ch
		}
		c.mu.Unlock()
		if conn != nil {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%s): %v", ErrNotSent, m.Type, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
	forget := func() {
		c.mu.Lock()
		delete(c.pending, m.ID)
		c.mu.Unlock()
	}
	select {
	case conn.out <- frame:
	case <-conn.done:
		forget()
		return nil, fmt.Errorf("%w (%s): session ended", ErrNotSent, m.Type)
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("%w (%s): %v", ErrNotSent, m.Type, ctx.Err())
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w (%s): session ended", ErrNoAnswer, m.Type)
		}
		if resp.Type == wire.TypeError {
			return resp, &RemoteError{Code: resp.Code, State: resp.State, Reason: resp.Reason}
		}
		return resp, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("%w (%s): %v", ErrNoAnswer, m.Type, ctx.Err())
	}
}

// remoteCode returns the code of a *RemoteError in err's chain, or "".
func remoteCode(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}
