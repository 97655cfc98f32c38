//go:build failpoint

package failpoint

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether this is a failpoint build.
const Enabled = true

// point is one armed failpoint.
type point struct {
	nth  int64   // fire at this hit only (0: see prob)
	prob float64 // fire with this probability at each hit (1: always)
	hits int64
}

var (
	once   sync.Once
	mu     sync.Mutex
	points map[string]*point
	errEnv error
)

// Parse reads a TXM_FAILPOINT value (see the package doc).
func Parse(v string) (map[string]*point, error) {
	out := map[string]*point{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, spec, _ := strings.Cut(item, ":")
		p := &point{prob: 1}
		switch {
		case spec == "":
		case strings.HasPrefix(spec, "p"):
			f, err := strconv.ParseFloat(spec[1:], 64)
			if err != nil || f <= 0 || f > 1 {
				return nil, fmt.Errorf("%s=%q: %q: want pF with 0 < F ≤ 1", Env, v, item)
			}
			p.prob = f
		default:
			n, err := strconv.ParseInt(spec, 10, 64)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s=%q: %q: want a hit number ≥ 1 or pF", Env, v, item)
			}
			p.nth = n
		}
		if name == "" {
			return nil, fmt.Errorf("%s=%q: empty failpoint name", Env, v)
		}
		out[name] = p
	}
	return out, nil
}

// Hit fires the failpoint name if TXM_FAILPOINT arms it (see the package
// doc): it writes the failpoint line with detail (e.g. "group=...") and
// SIGKILLs the process.
func Hit(name, detail string) {
	if !Fire(name) {
		return
	}
	Note(name, detail)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way: never return into the protocol
}

// Fire reports whether the failpoint name fires at this hit (the caller
// then does the point's action: duplicate, delay, ...).
func Fire(name string) bool {
	once.Do(load)
	if errEnv != nil {
		panic(errEnv)
	}
	return fires(name)
}

// Note writes the failpoint line "failpoint: <name> fired <detail>" to
// standard error (one write, so lines of concurrent notes do not mix).
func Note(name, detail string) {
	fmt.Fprintf(os.Stderr, "failpoint: %s fired %s\n", name, detail)
}

// Delay is the duration delay points wait (TXM_FAILPOINT_DELAY, default
// 50ms).
func Delay() time.Duration {
	once.Do(load)
	if errEnv != nil {
		panic(errEnv)
	}
	return delay
}

var delay = 50 * time.Millisecond

func load() {
	points, errEnv = Parse(os.Getenv(Env))
	if v := os.Getenv(DelayEnv); v != "" && errEnv == nil {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errEnv = fmt.Errorf("%s=%q: want a duration ≥ 0", DelayEnv, v)
			return
		}
		delay = d
	}
}

func fires(name string) bool {
	mu.Lock()
	defer mu.Unlock()
	p := points[name]
	if p == nil {
		return false
	}
	p.hits++
	if p.nth > 0 {
		return p.hits == p.nth
	}
	return p.prob >= 1 || rand.Float64() < p.prob
}
