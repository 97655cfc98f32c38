package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds how long a server may take to answer after launch.
	startTimeout = 60 * time.Second
	// pollInterval is the readiness polling period.
	pollInterval = 50 * time.Millisecond
	// probeTimeout bounds one readiness probe.
	probeTimeout = 2 * time.Second
	// stopTimeout bounds a graceful shutdown before it turns into SIGKILL.
	stopTimeout = 60 * time.Second
	// killTimeout bounds waiting for a SIGKILLed process to be reaped.
	killTimeout = 30 * time.Second
	// portAttempts is how many fresh ports a first start tries on a clash.
	portAttempts = 5
	// logTailBytes is how much of a server log goes into error messages.
	logTailBytes = 4096
)

// proc is a running server process. Its wait goroutine is the only caller of
// cmd.Wait; it ends when the process exits, which Stop/Kill wait for.
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // valid after done is closed
}

// startProc runs bin with args in its own process group, appending its
// stdout and stderr to logPath.
func startProc(bin string, args []string, dir, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor after Start

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies (e.g. go test -timeout panic) the server
		// dies with it instead of lingering as an orphan.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process group unless the leader is already reaped.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := syscall.Kill(-p.pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, p.pid(), err)
	}
	return nil
}

// wait waits up to timeout for the process to be reaped.
func (p *proc) wait(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// kill SIGKILLs the process group and waits until the process is reaped.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.wait(killTimeout) {
		return fmt.Errorf("pid %d not reaped %v after SIGKILL", p.pid(), killTimeout)
	}
	return nil
}

// stop sends SIGTERM and waits for a graceful exit; after stopTimeout it
// falls back to SIGKILL and reports an error.
func (p *proc) stop() error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.wait(stopTimeout) {
		return nil
	}
	if err := p.kill(); err != nil {
		return err
	}
	return fmt.Errorf("pid %d ignored SIGTERM for %v; killed", p.pid(), stopTimeout)
}

// exitedError is returned by waitReady when the server exits during start.
type exitedError struct{ waitErr error }

func (e *exitedError) Error() string {
	return fmt.Sprintf("server exited during start: %v", e.waitErr)
}

// waitReady polls probe until it succeeds, the process exits or
// startTimeout passes. The probe must check that it reached this process
// and not some other server that holds the port.
func waitReady(p *proc, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Abort an in-flight probe as soon as the process exits.
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
		err := probe(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		lastErr = err
		if p.exited() {
			return &exitedError{waitErr: p.waitErr}
		}
		select {
		case <-p.done:
			return &exitedError{waitErr: p.waitErr}
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: last probe error: %w", startTimeout, lastErr)
		case <-ticker.C:
		}
	}
}

// logSize returns the current size of a log file (0 if absent).
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readLogFrom returns the content of path from offset on.
func readLogFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// logTail returns the last lines of a log file, formatted for an error.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("\n(no log %s: %v)", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("\n(stat log %s: %v)", path, err)
	}
	off := fi.Size() - logTailBytes
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	buf = buf[:n]
	if off > 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	return fmt.Sprintf("\n--- tail of %s ---\n%s\n--- end of log ---",
		path, strings.TrimRight(string(buf), "\n"))
}

// isAddrInUse reports whether a server log shows a failed bind.
func isAddrInUse(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "Bind on TCP/IP port")
}

var ports struct {
	sync.Mutex
	given map[int]bool
}

// freePort returns a port that was free on 127.0.0.1 a moment ago and that
// this process has not handed out before.
func freePort() (int, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.given == nil {
		ports.given = make(map[int]bool)
	}
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("close probe listener: %w", err)
		}
		if !ports.given[port] {
			ports.given[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no unused free port after 100 attempts")
}

// FreePort returns a TCP port on 127.0.0.1 that is currently free and has not
// been returned before by this package in this process. Another process may
// still take it before the caller binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	return port
}

// mkTempDir creates a fresh directory under os.TempDir().
func mkTempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp(os.TempDir(), prefix)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	return dir, nil
}

// copyDir copies the regular files and directories of src to dst (which must
// not exist), keeping permission bits.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return fmt.Errorf("copy %s: unsupported file type %v", path, info.Mode().Type())
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
