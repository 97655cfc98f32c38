package batchconn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recConn records every Write to the wrapped connection.
type recConn struct {
	net.Conn // nil: only Write is used
	mu       sync.Mutex
	writes   [][]byte
	err      error
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recConn) got() (n int, all string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, w := range r.writes {
		b.Write(w)
	}
	return len(r.writes), b.String()
}

func TestWritesGoThroughUnlessHeld(t *testing.T) {
	rec := &recConn{}
	c := New(rec)
	for _, s := range []string{"a", "b"} {
		if n, err := c.Write([]byte(s)); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if n, all := rec.got(); n != 2 || all != "ab" {
		t.Fatalf("not held: %d writes %q, want 2 writes \"ab\"", n, all)
	}

	c.Hold()
	for _, s := range []string{"c", "d", "e"} {
		if n, err := c.Write([]byte(s)); n != 1 || err != nil {
			t.Fatalf("held Write = %d, %v", n, err)
		}
	}
	if n, _ := rec.got(); n != 2 {
		t.Fatalf("held writes reached the connection before Flush: %d writes", n)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, all := rec.got(); n != 3 || all != "abcde" {
		t.Fatalf("after Flush: %d writes %q, want 3 writes \"abcde\"", n, all)
	}
	// Flush stopped holding; an empty Flush writes nothing.
	if _, err := c.Write([]byte("f")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, all := rec.got(); n != 4 || all != "abcdef" {
		t.Fatalf("after Flush: %d writes %q, want 4 writes \"abcdef\"", n, all)
	}
}

func TestHeldBytesAreBounded(t *testing.T) {
	rec := &recConn{}
	c := New(rec)
	c.Hold()
	half := bytes.Repeat([]byte("x"), maxHeld/2+1)
	big := bytes.Repeat([]byte("y"), maxHeld+1)
	for _, p := range [][]byte{half, half, big, []byte("z")} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	n, all := rec.got()
	want := string(half) + string(half) + string(big) + "z"
	if all != want {
		t.Fatalf("bytes out of order or lost: got %d bytes, want %d", len(all), len(want))
	}
	// half | half (would exceed: first half sent) | big (sent alone) | z
	if n != 4 {
		t.Fatalf("%d writes, want 4 (no write larger than the bound but the oversized one)", n)
	}
	for i, w := range rec.writes {
		if len(w) > maxHeld && len(w) != len(big) {
			t.Fatalf("write %d holds %d bytes, more than the bound %d", i, len(w), maxHeld)
		}
	}
}

func TestFlushReportsTheWriteError(t *testing.T) {
	boom := errors.New("boom")
	rec := &recConn{}
	c := New(rec)
	c.Hold()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatalf("a held write fails only at Flush: %v", err)
	}
	rec.err = boom
	if err := c.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want %v", err, boom)
	}
	if _, err := c.Write([]byte("direct")); !errors.Is(err, boom) {
		t.Fatalf("direct Write = %v, want %v", err, boom)
	}
}

func TestNilConnHoldAndFlushAreNoOps(t *testing.T) {
	var c *Conn
	c.Hold()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestWebsocketFramesInOneWrite runs gorilla/websocket over a Conn on both
// ends: frames written while held reach the peer whole and in order, with
// one write to the network; control frames from another goroutine while
// nothing is held go straight out.
func TestWebsocketFramesInOneWrite(t *testing.T) {
	const frames = 20
	got := make(chan string, frames+1)
	srvErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			srvErr <- err
			return
		}
		defer ws.Close()
		ws.SetPingHandler(func(string) error {
			got <- "ping"
			return nil
		})
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				srvErr <- err
				return
			}
			got <- string(p)
		}
	}))
	defer srv.Close()

	var held *Conn
	var counting *countConn
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		counting = &countConn{Conn: nc}
		held = New(counting)
		return held, nil
	}}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	before := counting.n()
	held.Hold()
	for i := range frames {
		if err := ws.WriteMessage(websocket.TextMessage, []byte("m"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := held.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := counting.n() - before; n != 1 {
		t.Fatalf("%d frames took %d network writes, want 1", frames, n)
	}
	for i := range frames {
		select {
		case m := <-got:
			if want := "m" + strconv.Itoa(i); m != want {
				t.Fatalf("frame %d = %q, want %q", i, m, want)
			}
		case err := <-srvErr:
			t.Fatalf("server: %v", err)
		}
	}
	// Nothing held: a control frame goes straight out.
	if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "ping" {
			t.Fatalf("got %q, want the ping", m)
		}
	case err := <-srvErr:
		t.Fatalf("server: %v", err)
	}
}

// countConn counts writes to a real connection.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countConn) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

func TestWriteQueuedSendsTheQueueInOneWrite(t *testing.T) {
	rec := &recConn{}
	c := New(rec)
	q := make(chan string, 10)
	for _, s := range []string{"b", "c", "d"} {
		q <- s
	}
	if err := WriteQueued(c, q, "a", 64, func(s string) error {
		_, err := c.Write([]byte(s))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n, all := rec.got(); n != 1 || all != "abcd" {
		t.Fatalf("%d writes %q, want 1 write \"abcd\"", n, all)
	}
	if len(q) != 0 {
		t.Fatalf("%d items left queued", len(q))
	}
	// Written after the batch: not held any more.
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if n, all := rec.got(); n != 2 || all != "abcde" {
		t.Fatalf("%d writes %q, want 2 writes \"abcde\"", n, all)
	}
}

func TestWriteQueuedStopsAtMax(t *testing.T) {
	rec := &recConn{}
	c := New(rec)
	q := make(chan string, 10)
	for _, s := range []string{"b", "c", "d"} {
		q <- s
	}
	var wrote []string
	if err := WriteQueued(c, q, "a", 2, func(s string) error {
		wrote = append(wrote, s)
		_, err := c.Write([]byte(s))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(wrote, "") != "ab" || len(q) != 2 {
		t.Fatalf("wrote %q with %d left queued, want \"ab\" and 2", wrote, len(q))
	}
	if n, all := rec.got(); n != 1 || all != "ab" {
		t.Fatalf("%d writes %q, want 1 write \"ab\"", n, all)
	}
}

func TestWriteQueuedErrorSendsWhatWasHeld(t *testing.T) {
	rec := &recConn{}
	c := New(rec)
	q := make(chan string, 10)
	q <- "b"
	q <- "c"
	boom := errors.New("encode failed")
	err := WriteQueued(c, q, "a", 64, func(s string) error {
		if s == "b" {
			return boom
		}
		_, err := c.Write([]byte(s))
		return err
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WriteQueued = %v, want %v", err, boom)
	}
	if n, all := rec.got(); n != 1 || all != "a" {
		t.Fatalf("%d writes %q, want the held \"a\" sent", n, all)
	}
	if len(q) != 1 {
		t.Fatalf("%d left queued, want 1 (the batch ended at the error)", len(q))
	}
}

func TestWriteQueuedWithoutConn(t *testing.T) {
	q := make(chan int, 4)
	q <- 2
	var got []int
	if err := WriteQueued(nil, q, 1, 64, func(i int) error {
		got = append(got, i)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("wrote %v, want [1 2]", got)
	}
}
