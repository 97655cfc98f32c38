package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// maxSocketPath keeps the unix socket path below the sun_path limit (108).
const maxSocketPath = 100

// installTimeout bounds one mariadb-install-db run.
const installTimeout = 3 * time.Minute

// mariadbServerOpts are passed to both mariadb-install-db (for its bootstrap
// server) and mariadbd: small sizes start fast.
var mariadbServerOpts = []string{
	"--skip-log-bin",
	"--innodb-buffer-pool-size=32M",
	"--innodb-log-file-size=16M",
	"--innodb-log-buffer-size=4M",
}

// MariaDB is a private mariadbd started by StartMariaDB or SharedMariaDB.
type MariaDB struct {
	Addr    string // "127.0.0.1:port"
	Port    int
	Dir     string // directory owning all of the server's files
	DataDir string
	Socket  string // unix socket path
	LogFile string // server stdout/stderr

	bin     string // mariadbd
	tmpDir  string
	sockDir string // separate short directory for Socket, if Dir was too long
	shared  bool

	mu      sync.Mutex
	proc    *proc // nil when not running
	removed bool
}

// StartMariaDB starts a private mariadbd owned by t: it initialises a fresh
// data directory, starts the server on a free port, waits until it answers
// SELECT 1 over TCP and registers a cleanup that kills the server and removes
// its files. It skips t if MariaDB is not installed (see RequireMariaDB).
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	paths := require(t, binMariaDBD, binInstallDB)
	began := time.Now()
	m, err := startMariaDB(paths[0], paths[1])
	if err != nil {
		t.Fatalf("testenv: start MariaDB: %v", err)
	}
	t.Cleanup(func() {
		if err := m.destroy(); err != nil {
			t.Errorf("testenv: clean up MariaDB: %v", err)
		}
	})
	t.Logf("testenv: MariaDB on %s started in %v (dir %s)", m.Addr, time.Since(began).Round(time.Millisecond), m.Dir)
	return m
}

func startMariaDB(mariadbd, installDB string) (m *MariaDB, err error) {
	dir, err := mkTempDir("lcn-mdb-")
	if err != nil {
		return nil, err
	}
	m = &MariaDB{
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		Socket:  filepath.Join(dir, "mariadbd.sock"),
		LogFile: filepath.Join(dir, "mariadbd.log"),
		tmpDir:  filepath.Join(dir, "tmp"),
		bin:     mariadbd,
	}
	defer func() {
		if err != nil {
			if derr := m.destroy(); derr != nil {
				err = fmt.Errorf("%w (and cleanup: %v)", err, derr)
			}
			m = nil
		}
	}()
	if len(m.Socket) > maxSocketPath {
		// TMPDIR is too long for a unix socket; use /tmp for the socket only.
		sockDir, err := os.MkdirTemp("/tmp", "lcn-s-")
		if err != nil {
			return m, fmt.Errorf("create socket dir: %w", err)
		}
		m.sockDir = sockDir
		m.Socket = filepath.Join(sockDir, "s")
	}
	if err := os.Mkdir(m.tmpDir, 0o700); err != nil {
		return m, fmt.Errorf("create tmpdir: %w", err)
	}
	if err := m.initDataDir(installDB); err != nil {
		return m, err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return m, err
		}
		m.Port = port
		m.Addr = hostPort(port)
		clash, err := m.launch()
		if err == nil {
			return m, nil
		}
		if !clash || attempt == portAttempts {
			return m, err
		}
	}
}

func hostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// initDataDir fills m.DataDir, from the per-binary template when Main is in
// use and by running mariadb-install-db otherwise.
func (m *MariaDB) initDataDir(installDB string) error {
	if mainActive.Load() {
		tmpl, err := mariadbTemplate(installDB)
		if err != nil {
			return err
		}
		if err := copyDir(tmpl, m.DataDir); err != nil {
			return fmt.Errorf("copy template data dir: %w", err)
		}
		return nil
	}
	return installDataDir(installDB, m.DataDir, filepath.Join(m.Dir, "install.log"))
}

// installDataDir runs mariadb-install-db. Root gets no password and the
// mysql_native_password plugin ("normal"), not the unix_socket default, so
// it can log in over TCP.
func installDataDir(installDB, dataDir, logPath string) error {
	args := []string{
		"--no-defaults",
		"--datadir=" + dataDir,
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, mariadbServerOpts...)

	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open install log: %w", err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, installDB, args...)
	cmd.Dir = filepath.Dir(dataDir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w%s", installDB, err, logTail(logPath))
	}
	return nil
}

// launch starts mariadbd on m.Port and waits until it is ready. clash reports
// whether it failed because the port was taken. On error the process has
// been reaped. The caller must not hold m.mu.
func (m *MariaDB) launch() (clash bool, err error) {
	args := []string{
		"--no-defaults",
		"--datadir=" + m.DataDir,
		"--socket=" + m.Socket,
		"--pid-file=" + filepath.Join(m.Dir, "mariadbd.pid"),
		"--tmpdir=" + m.tmpDir,
		"--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1",
		"--innodb-flush-log-at-trx-commit=1",
		"--skip-name-resolve",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, mariadbServerOpts...)

	logStart := logSize(m.LogFile)
	p, err := startProc(m.bin, args, m.Dir, m.LogFile)
	if err != nil {
		return false, err
	}
	if err := waitReady(p, m.probe); err != nil {
		if kerr := p.kill(); kerr != nil {
			err = fmt.Errorf("%w (and %v)", err, kerr)
		}
		var exited *exitedError
		clash = errors.As(err, &exited) && isAddrInUse(readLogFrom(m.LogFile, logStart))
		return clash, fmt.Errorf("mariadbd on %s: %w%s", m.Addr, err, logTail(m.LogFile))
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return false, nil
}

// nopLogger silences the driver's connection-error logging while polling.
type nopLogger struct{}

func (nopLogger) Print(...any) {}

// probe connects over TCP as root and runs SELECT 1. It also checks
// @@datadir so that another server which grabbed the port (say, another test
// binary's private MariaDB) is not mistaken for this one.
func (m *MariaDB) probe(ctx context.Context) error {
	cfg := m.config("")
	cfg.Logger = nopLogger{}
	cfg.Timeout = probeTimeout
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var one int
	var dataDir string
	if err := db.QueryRowContext(ctx, "SELECT 1, @@datadir").Scan(&one, &dataDir); err != nil {
		return err
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 returned %d", one)
	}
	if filepath.Clean(dataDir) != filepath.Clean(m.DataDir) {
		return fmt.Errorf("%s is another server (datadir %s)", m.Addr, dataDir)
	}
	return nil
}

func (m *MariaDB) config(db string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = m.Addr
	cfg.DBName = db
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.Timeout = 10 * time.Second
	return cfg
}

// DSN returns a go-sql-driver/mysql DSN for database db (may be empty) as
// root over TCP, e.g. "root@tcp(127.0.0.1:port)/db?parseTime=true&timeout=10s".
func (m *MariaDB) DSN(db string) string {
	return m.config(db).FormatDSN()
}

var dbSeq atomic.Int64

// CreateDatabase creates a fresh, uniquely named schema and returns its name
// and DSN. It is dropped when t's cleanup runs (if the server is running).
func (m *MariaDB) CreateDatabase(t testing.TB) (name string, dsn string) {
	t.Helper()
	name = fmt.Sprintf("t_%s_%d", sanitizeName(t.Name()), dbSeq.Add(1))
	if err := m.exec("CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !m.running() {
			return // killed or removed: nothing to drop (or nothing to drop from)
		}
		if err := m.exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	return name, m.DSN(name)
}

// sanitizeName turns a test name into a short identifier fragment.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

// exec runs one statement on a short-lived connection.
func (m *MariaDB) exec(stmt string) error {
	conn, err := mysql.NewConnector(m.config(""))
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

func (m *MariaDB) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && !m.removed
}

// takeProc detaches the running process for Kill/Stop.
func (m *MariaDB) takeProc(t testing.TB, op string) *proc {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shared {
		t.Fatalf("testenv: %s on the shared MariaDB is not allowed; use StartMariaDB", op)
	}
	if m.removed {
		t.Fatalf("testenv: %s on a MariaDB that was already cleaned up", op)
	}
	p := m.proc
	m.proc = nil
	return p
}

// Kill sends SIGKILL to the server's process group and waits until it has
// exited. It does nothing if the server is not running.
func (m *MariaDB) Kill(t testing.TB) {
	t.Helper()
	if p := m.takeProc(t, "Kill"); p != nil {
		if err := p.kill(); err != nil {
			t.Fatalf("testenv: kill MariaDB on %s: %v", m.Addr, err)
		}
	}
}

// Stop shuts the server down gracefully (SIGTERM) and waits until it has
// exited. It does nothing if the server is not running.
func (m *MariaDB) Stop(t testing.TB) {
	t.Helper()
	if p := m.takeProc(t, "Stop"); p != nil {
		if err := p.stop(); err != nil {
			t.Fatalf("testenv: stop MariaDB on %s: %v%s", m.Addr, err, logTail(m.LogFile))
		}
	}
}

// Restart starts the server again on the same port and data directory and
// waits until it is ready. A running server is stopped gracefully first.
func (m *MariaDB) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	began := time.Now()
	if _, err := m.launch(); err != nil {
		t.Fatalf("testenv: restart MariaDB: %v", err)
	}
	t.Logf("testenv: MariaDB on %s restarted in %v", m.Addr, time.Since(began).Round(time.Millisecond))
}

// destroy kills the server and removes its files. It is idempotent.
func (m *MariaDB) destroy() error {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	already := m.removed
	m.removed = true
	m.mu.Unlock()
	if already {
		return nil
	}
	var errs []error
	if p != nil {
		if err := p.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(m.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", m.Dir, err))
	}
	if m.sockDir != "" {
		if err := os.RemoveAll(m.sockDir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", m.sockDir, err))
		}
	}
	return errors.Join(errs...)
}

// The data directory template, created once per test binary when Main is in
// use and removed by StopShared.
var tmpl struct {
	sync.Mutex
	dir     string // parent directory to remove
	dataDir string
	err     error
}

func mariadbTemplate(installDB string) (string, error) {
	tmpl.Lock()
	defer tmpl.Unlock()
	if tmpl.dataDir != "" || tmpl.err != nil {
		return tmpl.dataDir, tmpl.err
	}
	dir, err := mkTempDir("lcn-mdbtmpl-")
	if err != nil {
		tmpl.err = err
		return "", err
	}
	dataDir := filepath.Join(dir, "data")
	if err := installDataDir(installDB, dataDir, filepath.Join(dir, "install.log")); err != nil {
		os.RemoveAll(dir)
		tmpl.err = fmt.Errorf("initialise template data dir: %w", err)
		return "", tmpl.err
	}
	tmpl.dir, tmpl.dataDir = dir, dataDir
	return dataDir, nil
}

func removeTemplate() error {
	tmpl.Lock()
	defer tmpl.Unlock()
	dir := tmpl.dir
	tmpl.dir, tmpl.dataDir, tmpl.err = "", "", nil
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove template %s: %w", dir, err)
	}
	return nil
}
