package uitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// requireEnv turns a missing browser from a skip into a failure (as in
// internal/testenv).
const requireEnv = "LCN_REQUIRE_INTEGRATION"

// defaultChromium is where Debian's chromium package installs the browser.
const defaultChromium = "/usr/bin/chromium"

// testBudget bounds one browser test, browser start included; stepBudget
// bounds one step (a failing wait reports, with a screenshot, well before
// the test's budget ends).
const (
	testBudget = time.Minute
	stepBudget = 15 * time.Second
)

// chromiumPath returns the browser to drive, or skips t (fails it with
// LCN_REQUIRE_INTEGRATION=1) when there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	want := defaultChromium
	if p := os.Getenv("LCN_CHROMIUM"); p != "" {
		want = p
	}
	path, err := exec.LookPath(want)
	if err == nil {
		return path
	}
	hint := "install Debian's chromium package (apt-get install -y chromium) or set LCN_CHROMIUM"
	if required, _ := strconv.ParseBool(os.Getenv(requireEnv)); required {
		t.Fatalf("INTEGRATION TEST FAILED: %s not found (%v) and %s=%s requires browser tests to run; %s",
			want, err, requireEnv, os.Getenv(requireEnv), hint)
	}
	t.Skipf("INTEGRATION TEST SKIPPED: %s not found (%v); %s, or set %s=1 to make this a failure",
		want, err, hint, requireEnv)
	return ""
}

// browser is one headless chromium tab for one test.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab; ends at testBudget

	artifacts string
	shots     int

	mu       sync.Mutex
	console  []chromedp.ConsoleMessage
	consoleW sync.WaitGroup
}

// newBrowser starts chromium (headless, its own profile directory) and
// opens a tab. Everything ends when the test does or after testBudget.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.WindowSize(1360, 900),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("lang", "en-US"),
	)
	budget, cancelBudget := context.WithTimeout(context.Background(), testBudget)
	alloc, cancelAlloc := chromedp.NewExecAllocator(budget, opts...)
	ctx, cancelTab := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	b := &browser{t: t, ctx: ctx, artifacts: artifactsDir(t)}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelBudget()
		b.consoleW.Wait()
	})
	started := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser and the tab
		t.Fatalf("start %s: %v", exe, err)
	}
	t.Logf("chromium %s started in %s", exe, time.Since(started).Round(time.Millisecond))
	messages := chromedp.Console(ctx)
	b.consoleW.Add(1)
	go func() {
		defer b.consoleW.Done()
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

func artifactsDir(t *testing.T) string {
	dir := os.Getenv("LCN_UI_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts directory: %v", err)
	}
	return dir
}

// do runs actions in the tab within stepBudget; a failure saves a
// screenshot and fails t with the page's text.
func (b *browser) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepBudget)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.failShot(step)
		if errors.Is(err, context.DeadlineExceeded) {
			b.t.Fatalf("%s: not done within %s (%v); page text:\n%s", step, stepBudget, err, b.pageText())
		}
		b.t.Fatalf("%s: %v; page text:\n%s", step, err, b.pageText())
	}
}

// text returns the text of the first element matching sel.
func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.failShot("text " + sel)
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// eval evaluates a JavaScript expression of type T (a promise is awaited).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (b *browser) pageText() string {
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	if len(s) > 3000 {
		s = s[:3000] + "…"
	}
	return s
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// shot saves a PNG of the whole page as NN-name.png and logs its path.
func (b *browser) shot(name string) string {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.shots++
	path := filepath.Join(b.artifacts, fmt.Sprintf("%02d-%s.png", b.shots, unsafeName.ReplaceAllString(strings.ToLower(name), "-")))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatalf("save screenshot: %v", err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// failShot saves a screenshot for a failing step, if it still can.
func (b *browser) failShot(step string) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(b.artifacts, "FAILED-"+unsafeName.ReplaceAllString(strings.ToLower(step), "-")+".png")
		if os.WriteFile(path, png, 0o644) == nil {
			b.t.Logf("screenshot of the failure: %s", path)
		}
	}
}

// checkConsole fails t on an uncaught exception or a Content-Security-Policy
// violation seen so far. Failed requests (the API's 4xx answers) are
// expected and ignored.
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		csp := m.Source == "security" || strings.Contains(m.Text, "Content Security Policy")
		if m.IsException() || csp {
			b.t.Errorf("browser console: %s at %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text)
		}
	}
}

// waitText waits until the element matching sel contains substr.
func waitText(sel, substr string) chromedp.Action[chromedp.Void] {
	return chromedp.PollFunction[chromedp.Void](`(sel, want) => {
		const n = document.querySelector(sel);
		return n !== null && n.textContent.includes(want);
	}`, chromedp.WithPollingArgs(sel, substr))
}
