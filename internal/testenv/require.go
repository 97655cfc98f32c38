package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// RequireEnv is the environment variable that turns a missing binary from a
// skip into a test failure.
const RequireEnv = "LCN_REQUIRE_INTEGRATION"

// binary describes an executable the harness needs.
type binary struct {
	name   string // executable name looked up in PATH
	envVar string // variable that may hold an explicit path
	hint   string // how to get it
}

var (
	binMariaDBD  = binary{"mariadbd", "LCN_MARIADBD", "install the mariadb-server package"}
	binInstallDB = binary{"mariadb-install-db", "LCN_MARIADB_INSTALL_DB", "install the mariadb-server package"}
	binRedis     = binary{"redis-server", "LCN_REDIS_SERVER", "install the redis-server package"}
)

// extraBinDirs are searched after PATH: sbin directories are often missing
// from PATH for non-root users.
var extraBinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin"}

// lookPath returns the absolute path of b.
func (b binary) lookPath() (string, error) {
	if p := os.Getenv(b.envVar); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", b.envVar, p, err)
		}
		return path, nil
	}
	path, err := exec.LookPath(b.name)
	if err == nil {
		return path, nil
	}
	for _, dir := range extraBinDirs {
		if p, err2 := exec.LookPath(filepath.Join(dir, b.name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// requireAction is the outcome of requireDecision.
type requireAction int

const (
	actionRun requireAction = iota
	actionSkip
	actionFail
)

func (a requireAction) String() string {
	switch a {
	case actionRun:
		return "run"
	case actionSkip:
		return "skip"
	case actionFail:
		return "fail"
	}
	return "requireAction(" + strconv.Itoa(int(a)) + ")"
}

// requireDecision decides what to do given the result of looking up a
// binary (lookErr is nil when it was found) and the value of
// LCN_REQUIRE_INTEGRATION. It is pure so it can be tested without binaries.
func requireDecision(name, hint string, lookErr error, requireEnv string) (requireAction, string) {
	if lookErr == nil {
		return actionRun, ""
	}
	if required, _ := strconv.ParseBool(requireEnv); required {
		return actionFail, fmt.Sprintf(
			"INTEGRATION TEST FAILED: %s not found (%v) and %s=%s requires integration tests to run; %s",
			name, lookErr, RequireEnv, requireEnv, hint)
	}
	return actionSkip, fmt.Sprintf(
		"INTEGRATION TEST SKIPPED: %s not found (%v); %s, or set %s=1 to make this a failure",
		name, lookErr, hint, RequireEnv)
}

// require looks up each binary and skips or fails t if one is missing.
// It returns the resolved paths in order.
func require(t testing.TB, bins ...binary) []string {
	t.Helper()
	paths := make([]string, len(bins))
	for i, b := range bins {
		p, err := b.lookPath()
		action, msg := requireDecision(b.name, b.hint, err, os.Getenv(RequireEnv))
		switch action {
		case actionSkip:
			t.Skip(msg)
		case actionFail:
			t.Fatal(msg)
		}
		paths[i] = p
	}
	return paths
}

// RequireMariaDB skips t (or, with LCN_REQUIRE_INTEGRATION=1, fails it) unless
// mariadbd and mariadb-install-db are available.
func RequireMariaDB(t testing.TB) {
	t.Helper()
	require(t, binMariaDBD, binInstallDB)
}

// RequireRedis skips t (or, with LCN_REQUIRE_INTEGRATION=1, fails it) unless
// redis-server is available.
func RequireRedis(t testing.TB) {
	t.Helper()
	require(t, binRedis)
}
