// Package batchconn provides a net.Conn whose writes its writer can hold and
// send together, so that a websocket writer with several messages queued
// sends their frames with one system call instead of one each.
//
// gorilla/websocket writes every frame straight to its net.Conn; the
// session writers of the TxManager and the TxClient wrap that connection in
// a Conn, call Hold before writing what is queued and Flush once the queue
// is empty. Writes made while nothing is held (the handshake, control
// frames from other goroutines, a lone message) go straight through.
package batchconn

import (
	"net"
	"runtime"
	"sync"
)

// MaxBatch is the number of queued messages a session writer sends with one
// WriteQueued: enough to empty a busy queue in a few writes, few enough
// that one batch does not hold the write deadline for long.
const MaxBatch = 64

// maxHeld bounds the bytes a Conn holds: a write that would exceed it
// first sends what is held.
const maxHeld = 256 << 10

// Conn wraps a net.Conn. Its methods are safe for concurrent use; a nil
// *Conn's Hold and Flush do nothing.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

// New wraps c. Nothing is held until Hold.
func New(c net.Conn) *Conn { return &Conn{Conn: c} }

// Hold makes later writes wait in memory until Flush.
func (c *Conn) Hold() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// Write sends p, or appends it to what is held while holding. A held write
// reports success: its error, if any, is Flush's.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > maxHeld {
		if err := c.sendLocked(); err != nil {
			return 0, err
		}
		if len(p) > maxHeld {
			return c.Conn.Write(p)
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// Flush sends what is held with one write to the wrapped connection (under
// its write deadline) and stops holding. It returns that write's error.
func (c *Conn) Flush() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	return c.sendLocked()
}

func (c *Conn) sendLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxHeld {
		c.buf = nil // do not keep a buffer grown by one large burst
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// WriteQueued writes first and then whatever is already queued on queue, up
// to max items in all, with c held, and flushes: one write to the network
// for the lot. When the queue looks empty it yields once, so that
// goroutines about to queue a message join the batch. write is called once
// per item, in queue order; its error ends the batch (what was held is
// still sent) and is returned. The caller must be the queue's only
// receiver. c may be nil: then every write goes straight out.
func WriteQueued[T any](c *Conn, queue <-chan T, first T, max int, write func(T) error) error {
	c.Hold()
	it := first
	for n := 1; ; n++ {
		if err := write(it); err != nil {
			_ = c.Flush()
			return err
		}
		if n >= max {
			break
		}
		if len(queue) == 0 {
			runtime.Gosched()
			if len(queue) == 0 {
				break
			}
		}
		it = <-queue // the only receiver: a non-empty queue has it
	}
	return c.Flush()
}
