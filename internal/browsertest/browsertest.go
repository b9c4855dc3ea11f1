// Package browsertest drives a real headless Chromium (Debian's chromium
// package) with chromedp for tests and benchmarks of the console: one
// browser per test, a tab per page, and every console error, exception
// or failed load the page reports collected, so a test can fail on any.
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Path returns the Chromium to run: $KSAGA_CHROMIUM, /usr/bin/chromium,
// or chromium, chromium-browser or google-chrome on PATH; "" if none.
func Path() string {
	if p := os.Getenv("KSAGA_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Browser is a running headless Chromium.
type Browser struct {
	ctx context.Context
}

// Start runs a headless Chromium for the test, in a fresh profile, and
// stops it at cleanup. Without Chromium the test is skipped, except in CI
// (CI set), where it fails: .ci/run installs it.
func Start(t testing.TB) *Browser {
	t.Helper()
	path := Path()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed: .ci/run installs it (apt-get install chromium)")
		}
		t.Skip("chromium is not installed (Debian: apt-get install chromium; or set KSAGA_CHROMIUM): the browser tests need it")
	}
	// chromedp's defaults (Puppeteer's: headless, no first run, no
	// background networking or throttling, …) and what the tests need.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return &Browser{ctx: ctx}
}

// Tab is one page of the browser.
type Tab struct {
	// Ctx runs chromedp actions in the tab.
	Ctx  context.Context
	mu   sync.Mutex
	errs []string
}

// Tab opens a new tab. Every console error, uncaught exception and
// failed load (a CSP violation included) it reports is collected; at
// cleanup the test fails if there were any and the test did not take them
// (TakeErrors).
func (b *Browser) Tab(t testing.TB) *Tab {
	t.Helper()
	tab := &Tab{}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithListener(tab.listen))
	tab.Ctx = ctx
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if errs := tab.TakeErrors(); len(errs) > 0 {
			t.Errorf("the browser reported %d error(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
		}
	})
	return tab
}

// listen collects what the page reports as errors.
func (t *Tab) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		t.add(fmt.Sprintf("exception: %s (%s:%d)", msg, d.URL, d.LineNumber))
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, strings.Trim(string(a.Value), `"`))
				}
			}
			t.add("console." + string(ev.Type) + ": " + strings.Join(parts, " "))
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			t.add(fmt.Sprintf("log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	}
}

func (t *Tab) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = append(t.errs, s)
}

// TakeErrors returns the errors reported so far and forgets them.
func (t *Tab) TakeErrors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	errs := t.errs
	t.errs = nil
	return errs
}

// Do runs actions in the tab within timeout.
func (t *Tab) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(t.Ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Click clicks the element selector matches once there is one, with a
// click dispatched in the page in the same evaluation that finds it. An
// element a live update (server-sent events) may re-render is clicked this
// way: chromedp's Click resolves a node first and acts on it after, and a
// node replaced in between fails with "Could not find node with given id".
func (t *Tab) Click(timeout time.Duration, selector string) error {
	q, err := json.Marshal(selector)
	if err != nil {
		return err
	}
	return t.Poll(timeout, `(() => { const e = document.querySelector(`+string(q)+`); if (!e) return false; e.click(); return true })()`)
}

// Eval evaluates expr (JavaScript) in the tab and decodes its value; a
// promise is awaited.
func Eval[T any](t *Tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(t.Ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// Poll evaluates expr (JavaScript) until it returns true or timeout
// passes; it returns the last error or a timeout error.
func (t *Tab) Poll(timeout time.Duration, expr string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := Eval[bool](t, expr)
		if err == nil && ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last == nil {
				last = fmt.Errorf("still false: %s", expr)
			}
			return fmt.Errorf("after %v: %w", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
