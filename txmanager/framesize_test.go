package txmanager

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/golcn/golcn/internal/wire"
)

// memFigures are the process's memory figures, in bytes, after a full GC.
type memFigures struct {
	heapInuse, sys uint64 // Go runtime (runtime.MemStats)
	rss, hwm       uint64 // /proc/self/status VmRSS and VmHWM (peak RSS); 0 where unreadable
}

func readMem(t *testing.T) memFigures {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memFigures{heapInuse: ms.HeapInuse, sys: ms.Sys}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m // not Linux: the runtime figures only
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/self/status %s: %q: %v", name, val, err)
		}
		if name == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
	}
	return m
}

// resetPeakRSS restarts VmHWM from the current RSS (Linux: write 5 to
// /proc/self/clear_refs); it reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

// S13 "Frame size", with its memory bound: 100 sessions each send one
// oversized frame, in turn a frame of read limit + 1 bytes, a frame header
// declaring 2^63-1 bytes and one declaring 2^63 bytes (a length with the
// top bit set, which RFC 6455 forbids). Each is closed with 1009 (the
// server's read fails with ErrReadLimit before any payload is allocated),
// and the TxManager's memory grows by less than 20 MiB.
//
// The TxManager runs in this test process, so its memory is measured as
// the process's: the Go runtime's HeapInuse and Sys after a full GC (exact
// for the server's Go memory, unaffected by other processes on the machine)
// and, on Linux, the peak RSS during the attack (VmHWM, reset before it)
// against the RSS before. The test's own clients add to these figures,
// never subtract, so they bound the server's growth from above; a child
// process would measure the same code with a build and a process
// boundary's noise in the way.
func TestOversizedFramesBoundMemory(t *testing.T) {
	const attacks = 100
	const limit = 20 << 20
	ss := newSecureServer(t, nil)
	// One ordinary session first, so that first-use allocations are not
	// charged to the attack.
	warm := ss.dial(t, "svc-b", "warm")
	if r := warm.call(&wire.Message{Type: wire.TypeCreate}); r.Type != wire.TypeOK {
		t.Fatalf("create: %+v", r)
	}
	big := bytes.Repeat([]byte("a"), wire.MaxFrame+1)
	frames := []struct {
		name string
		raw  []byte // a frame header written as is; nil: big as a message
	}{
		{"read limit + 1 bytes", nil},
		{"header declaring 2^63-1 bytes", []byte{0x81, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}},
		{"header declaring 2^63 bytes", []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}},
	}

	before := readMem(t)
	peakReset := resetPeakRSS()
	closed := map[string]int{}
	for i := range attacks {
		f := frames[i%len(frames)]
		c := ss.dial(t, "svc-a", fmt.Sprintf("over-%d", i))
		var err error
		if f.raw == nil {
			err = c.ws.WriteMessage(websocket.TextMessage, big)
		} else {
			_, err = c.ws.NetConn().Write(f.raw)
		}
		if err != nil {
			t.Fatalf("attack %d (%s): write: %v", i, f.name, err)
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := c.ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("attack %d (%s): %v, want close 1009", i, f.name, err)
		}
		closed[f.name]++
		_ = c.ws.Close()
	}
	// Every attacking session is gone (the warm one stays).
	deadline := time.Now().Add(10 * time.Second)
	for ss.srv.Sessions() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open 10s after the attack, want 1", ss.srv.Sessions())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	after := readMem(t)

	heap := int64(after.heapInuse) - int64(before.heapInuse)
	sys := int64(after.sys) - int64(before.sys)
	t.Logf("%d oversized frames %v, all closed 1009: HeapInuse %+.2f MiB, Sys %+.2f MiB", attacks, closed,
		float64(heap)/(1<<20), float64(sys)/(1<<20))
	if heap >= limit || sys >= limit {
		t.Errorf("memory growth under oversized frames: HeapInuse %s, Sys %s; want < %s each", mib(heap), mib(sys), mib(limit))
	}
	if before.rss > 0 && peakReset {
		peak := int64(after.hwm) - int64(before.rss)
		t.Logf("peak RSS during the attack %s over the RSS before it (%s)", mib(peak), mib(int64(before.rss)))
		if peak >= limit {
			t.Errorf("peak RSS grew by %s under oversized frames, want < %s", mib(peak), mib(limit))
		}
	}
	// The server still serves.
	if r := warm.call(&wire.Message{Type: wire.TypeCreate}); r.Type != wire.TypeOK {
		t.Fatalf("create after the attack: %+v", r)
	}
}
