package uitest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/wire"
)

// wireClient is a minimal TxClient: one websocket speaking the wire
// protocol synchronously (enough to make real groups for the page).
type wireClient struct {
	t      *testing.T
	ws     *websocket.Conn
	id     uint64
	pushes []*wire.Message // decisions pushed while waiting for answers
}

// dialWire opens a session as service/instance with token.
func dialWire(t *testing.T, baseURL, token, service, instance string) *wireClient {
	t.Helper()
	url := "ws" + strings.TrimPrefix(baseURL, "http") + "/v1/ws"
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", url, service, err)
	}
	c := &wireClient{t: t, ws: ws}
	t.Cleanup(func() { _ = ws.Close() })
	if r := c.call(&wire.Message{Type: wire.TypeHello, Service: service, Instance: instance}); r.Type != wire.TypeOK {
		t.Fatalf("hello as %s: %+v", service, r)
	}
	return c
}

// call sends m and returns its answer; pushes that arrive first are kept.
func (c *wireClient) call(m *wire.Message) *wire.Message {
	c.t.Helper()
	c.id++
	m.ID = c.id
	frame, err := wire.Encode(m)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.t.Fatalf("send %s: %v", m.Type, err)
	}
	for {
		r := c.read()
		if r.ID == 0 {
			c.pushes = append(c.pushes, r)
			continue
		}
		if r.ID != m.ID {
			c.t.Fatalf("answer id %d for request %d", r.ID, m.ID)
		}
		return r
	}
}

// ok sends m and fails the test unless the answer is ok.
func (c *wireClient) ok(m *wire.Message) *wire.Message {
	c.t.Helper()
	r := c.call(m)
	if r.Type != wire.TypeOK {
		c.t.Fatalf("%s: %+v", m.Type, r)
	}
	return r
}

// decision returns the next decision pushed for group (waiting for it).
func (c *wireClient) decision(group string) *wire.Message {
	c.t.Helper()
	for {
		for i, p := range c.pushes {
			if p.Type == wire.TypeDecision && p.Group == group {
				c.pushes = append(c.pushes[:i], c.pushes[i+1:]...)
				return p
			}
		}
		c.pushes = append(c.pushes, c.read())
	}
}

func (c *wireClient) read() *wire.Message {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, frame, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	m, err := wire.Decode(frame)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// join opens an lcn branch in group and votes it prepared.
func (c *wireClient) joinAndVote(group, datasource string) string {
	c.t.Helper()
	br := c.ok(&wire.Message{Type: wire.TypeJoin, Group: group, Datasource: datasource, Mode: "lcn"}).Branch
	c.ok(&wire.Message{Type: wire.TypeVote, Group: group, Branch: br, OK: true})
	return br
}
