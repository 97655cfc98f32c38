package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Record is one line of a scenario's JSONL history. Type is "invoke", "ok",
// "fail" or "info" for a client operation (Jepsen convention: info means
// the outcome is unknown), or "nemesis" for an injected fault. T is the
// monotonic time since the history was opened, in nanoseconds.
type Record struct {
	Type   string `json:"type"`
	Op     string `json:"op,omitempty"`
	Worker int    `json:"worker,omitempty"`
	T      int64  `json:"t"`
	Group  string `json:"group,omitempty"`
	Legs   []Leg  `json:"legs,omitempty"`
	Abort  bool   `json:"abort,omitempty"`
	Error  string `json:"error,omitempty"`
	Fault  string `json:"fault,omitempty"`
}

// History appends records to a JSONL file and keeps them in memory for the
// checker. It is safe for concurrent use.
type History struct {
	Path  string
	start time.Time

	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	recs []Record
	err  error
}

// OpenHistory creates (truncates) the JSONL file at path.
func OpenHistory(path string) (*History, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: open history: %w", err)
	}
	return &History{Path: path, start: time.Now(), f: f, w: bufio.NewWriter(f)}, nil
}

// Since returns the monotonic time since the history was opened.
func (h *History) Since() time.Duration { return time.Since(h.start) }

// Add stamps r with the current time, appends it and returns it.
func (h *History) Add(r Record) Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.T = int64(time.Since(h.start))
	h.recs = append(h.recs, r)
	if h.err == nil {
		b, err := json.Marshal(r)
		if err == nil {
			b = append(b, '\n')
			_, err = h.w.Write(b)
		}
		h.err = err
	}
	return r
}

// Records returns a copy of the records so far.
func (h *History) Records() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.recs...)
}

// Close flushes and closes the file; it returns the first write error.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return h.err
	}
	if err := h.w.Flush(); err != nil && h.err == nil {
		h.err = err
	}
	if err := h.f.Close(); err != nil && h.err == nil {
		h.err = err
	}
	h.f = nil
	if h.err != nil {
		return fmt.Errorf("chaos: write history %s: %w", h.Path, h.err)
	}
	return nil
}

// OpResult is a client operation folded from its invoke and completion
// records. Result is "ok", "fail", "info", or "" if it never completed
// (counted as info).
type OpResult struct {
	Op       string
	Group    string
	Legs     []Leg
	Abort    bool
	Result   string
	Invoke   time.Duration
	Complete time.Duration
}

// Ops folds a history's records into operations, in invoke order.
func Ops(recs []Record) []OpResult {
	idx := map[string]int{}
	var out []OpResult
	for _, r := range recs {
		switch r.Type {
		case "invoke":
			idx[r.Op] = len(out)
			out = append(out, OpResult{Op: r.Op, Legs: r.Legs, Abort: r.Abort, Invoke: time.Duration(r.T)})
		case "ok", "fail", "info":
			if i, ok := idx[r.Op]; ok {
				out[i].Result, out[i].Group, out[i].Complete = r.Type, r.Group, time.Duration(r.T)
			}
		}
	}
	return out
}
