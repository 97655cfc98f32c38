package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Redis is a private redis-server started by StartRedis or SharedRedis.
type Redis struct {
	Addr    string // "127.0.0.1:port"
	Port    int
	Dir     string // working directory; holds appendonlydir and the log
	LogFile string // server stdout/stderr

	bin    string
	shared bool

	mu      sync.Mutex
	proc    *proc // nil when not running
	removed bool
}

// StartRedis starts a private redis-server owned by t on a free port with
// AOF persistence (appendonly yes, appendfsync always, no RDB snapshots), so
// acknowledged writes survive Kill+Restart. It waits until PING answers and
// registers a cleanup that kills the server and removes its files. It skips t
// if Redis is not installed (see RequireRedis).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	paths := require(t, binRedis)
	began := time.Now()
	r, err := startRedis(paths[0])
	if err != nil {
		t.Fatalf("testenv: start Redis: %v", err)
	}
	t.Cleanup(func() {
		if err := r.destroy(); err != nil {
			t.Errorf("testenv: clean up Redis: %v", err)
		}
	})
	t.Logf("testenv: Redis on %s started in %v (dir %s)", r.Addr, time.Since(began).Round(time.Millisecond), r.Dir)
	return r
}

func startRedis(bin string) (r *Redis, err error) {
	dir, err := mkTempDir("lcn-redis-")
	if err != nil {
		return nil, err
	}
	r = &Redis{Dir: dir, LogFile: filepath.Join(dir, "redis.log"), bin: bin}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err == nil {
			r.Port, r.Addr = port, hostPort(port)
			var clash bool
			clash, err = r.launch()
			if err == nil {
				return r, nil
			}
			if clash && attempt < portAttempts {
				continue
			}
		}
		if derr := r.destroy(); derr != nil {
			err = fmt.Errorf("%w (and cleanup: %v)", err, derr)
		}
		return nil, err
	}
}

// launch starts redis-server on r.Port and waits until PING answers. clash
// reports whether it failed because the port was taken. On error the process
// has been reaped.
func (r *Redis) launch() (clash bool, err error) {
	args := []string{
		"--port", strconv.Itoa(r.Port),
		"--bind", "127.0.0.1",
		"--dir", r.Dir,
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--daemonize", "no",
		"--logfile", "",
	}
	logStart := logSize(r.LogFile)
	p, err := startProc(r.bin, args, r.Dir, r.LogFile)
	if err != nil {
		return false, err
	}
	if err := waitReady(p, func(ctx context.Context) error { return r.probe(ctx, p) }); err != nil {
		if kerr := p.kill(); kerr != nil {
			err = fmt.Errorf("%w (and %v)", err, kerr)
		}
		var exited *exitedError
		clash = errors.As(err, &exited) && isAddrInUse(readLogFrom(r.LogFile, logStart))
		return clash, fmt.Errorf("redis-server on %s: %w%s", r.Addr, err, logTail(r.LogFile))
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return false, nil
}

// probe sends PING and INFO server over a fresh TCP connection. It expects
// +PONG (a server still loading its AOF answers -LOADING) and the pid of p,
// so that another server which grabbed the port is not mistaken for this one.
func (r *Redis) probe(ctx context.Context, p *proc) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")); err != nil {
		return err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimRight(line, "\r\n"); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	line, err = rd.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "$"))
	if !strings.HasPrefix(line, "$") || err != nil || n < 0 || n > 1<<20 {
		return fmt.Errorf("INFO answered %q", line)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rd, body); err != nil {
		return err
	}
	want := "process_id:" + strconv.Itoa(p.pid())
	for _, l := range strings.Split(string(body), "\n") {
		if strings.TrimSpace(l) == want {
			return nil
		}
	}
	return fmt.Errorf("%s is another server (INFO lacks %s)", r.Addr, want)
}

func (r *Redis) takeProc(t testing.TB, op string) *proc {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shared {
		t.Fatalf("testenv: %s on the shared Redis is not allowed; use StartRedis", op)
	}
	if r.removed {
		t.Fatalf("testenv: %s on a Redis that was already cleaned up", op)
	}
	p := r.proc
	r.proc = nil
	return p
}

// Kill sends SIGKILL to the server's process group and waits until it has
// exited. It does nothing if the server is not running.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	if p := r.takeProc(t, "Kill"); p != nil {
		if err := p.kill(); err != nil {
			t.Fatalf("testenv: kill Redis on %s: %v", r.Addr, err)
		}
	}
}

// Stop shuts the server down gracefully (SIGTERM: fsync AOF, exit) and waits
// until it has exited. It does nothing if the server is not running.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	if p := r.takeProc(t, "Stop"); p != nil {
		if err := p.stop(); err != nil {
			t.Fatalf("testenv: stop Redis on %s: %v%s", r.Addr, err, logTail(r.LogFile))
		}
	}
}

// Restart starts the server again on the same port and directory (so it
// reloads its AOF) and waits until PING answers. A running server is stopped
// gracefully first.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop(t)
	began := time.Now()
	if _, err := r.launch(); err != nil {
		t.Fatalf("testenv: restart Redis: %v", err)
	}
	t.Logf("testenv: Redis on %s restarted in %v", r.Addr, time.Since(began).Round(time.Millisecond))
}

// destroy kills the server and removes its files. It is idempotent.
func (r *Redis) destroy() error {
	r.mu.Lock()
	p := r.proc
	r.proc = nil
	already := r.removed
	r.removed = true
	r.mu.Unlock()
	if already {
		return nil
	}
	var errs []error
	if p != nil {
		if err := p.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(r.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", r.Dir, err))
	}
	return errors.Join(errs...)
}

// RestartEmpty kills the server, deletes its data (the AOF directory and
// any RDB file) and starts it again on the same port: a server that lost
// its memory. It waits until PING answers.
func (r *Redis) RestartEmpty(t testing.TB) {
	t.Helper()
	r.Kill(t)
	for _, name := range []string{"appendonlydir", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(r.Dir, name)); err != nil {
			t.Fatalf("testenv: empty Redis on %s: %v", r.Addr, err)
		}
	}
	if _, err := r.launch(); err != nil {
		t.Fatalf("testenv: restart Redis empty: %v", err)
	}
}
