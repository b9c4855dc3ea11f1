package dev

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ksaga/ksaga/sagatest"
)

func TestBackoff(t *testing.T) {
	b := DefaultBackoff()
	ms := time.Millisecond
	var got []time.Duration
	prev := time.Duration(0)
	for range 10 { // a process that crashes at once, again and again
		prev = b.Next(prev, 5*ms)
		got = append(got, prev)
	}
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("crash loop delays = %v, want %v", got, want)
	}
	if d := b.Next(10*time.Second, 29*time.Second); d != 10*time.Second {
		t.Errorf("after 29s up: %v, want the cap", d)
	}
	if d := b.Next(10*time.Second, 30*time.Second); d != 100*ms {
		t.Errorf("after 30s up: %v, want a reset to 100ms", d)
	}
	if d := b.Next(0, time.Hour); d != 100*ms {
		t.Errorf("first restart: %v", d)
	}
}

func TestLineWriter(t *testing.T) {
	var out bytes.Buffer
	w := newLineWriter(&out, "order | ")
	for _, s := range []string{"hel", "lo\nwor", "ld\n\nlast"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	w.Flush()
	w.Flush()
	want := "order | hello\norder | world\norder | \norder | last\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}

	out.Reset()
	// An unterminated line is not buffered without bound.
	_, _ = w.Write([]byte(strings.Repeat("x", maxLine+10)))
	if out.Len() == 0 {
		t.Errorf("%d bytes without a newline are still buffered", maxLine+10)
	}
	_, _ = w.Write([]byte("tail\n"))
	if !strings.HasSuffix(out.String(), "\norder | tail\n") {
		t.Errorf("the rest of a long line: %q", out.String()[out.Len()-20:])
	}
}

// script writes an executable shell script.
func script(t *testing.T, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("needs /bin/sh")
	}
	p := filepath.Join(t.TempDir(), "fn")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// testSupervisor returns a supervisor whose log and output go to the
// returned buffers.
func testSupervisor(t *testing.T, shutdown time.Duration, b Backoff) (*supervisor, *sagatest.Buffer, *sagatest.Buffer) {
	t.Helper()
	var logs, out sagatest.Buffer
	sup := &supervisor{
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), dir: t.TempDir(),
		stdout: &out, stderr: &out, width: 9, backoff: b, shutdownTimeout: shutdown, spawn: newSpawner(),
	}
	t.Cleanup(sup.spawn.close)
	return sup, &logs, &out
}

// runFunction attaches f to sup and asks for n replicas; the returned stop
// ends them all and waits.
func runFunction(t *testing.T, sup *supervisor, f *function, n int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.attach(ctx, sup, &wg)
	f.Scale(n)
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// testFunction is a function run by this test binary (testFn) on a free
// port, with extra environment.
func testFunction(t *testing.T, name string, env ...string) *function {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f := stand(name, false, 30*time.Second)
	f.binary, f.port = bin, freePortT(t)
	f.alwaysOn = true
	p := strconv.Itoa(f.port)
	f.env = append([]string{testFnEnv + "=1", "PORT=" + p, "LISTEN_ADDRESS=127.0.0.1:" + p}, env...)
	return f
}

func TestSupervisorRestartsACrashedFunction(t *testing.T) {
	sup, logs, out := testSupervisor(t, 5*time.Second, Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Minute})
	f := stand("crashy", false, time.Second)
	f.port, f.binary, f.env = 1, script(t, `echo "started $K_SERVICE"; echo oops >&2; exit 3`), []string{"K_SERVICE=crashy"}
	stop := runFunction(t, sup, f, 1)
	sagatest.Eventually(t, 10*time.Second, func() error {
		reps, _ := f.status()
		if len(reps) != 1 || reps[0].Restarts < 3 {
			return fmt.Errorf("replicas so far: %+v", reps)
		}
		return nil
	})
	stop()
	if !strings.Contains(out.String(), "crashy    | started crashy\n") {
		t.Errorf("stdout: %q", out.String())
	}
	if !strings.Contains(out.String(), "crashy    | oops\n") {
		t.Errorf("stderr: %q", out.String())
	}
	l := logs.String()
	if !strings.Contains(l, `msg="function exited; restarting" service=saga/crashy replica=1 status="exit status 3"`) {
		t.Errorf("no restart log with the exit status:\n%s", l)
	}
	for _, d := range []string{"restart_in=10ms", "restart_in=20ms", "restart_in=40ms"} {
		if !strings.Contains(l, d) {
			t.Errorf("no %s in:\n%s", d, l)
		}
	}
	if f.pool.Ready() != 0 {
		t.Error("a replica that never answered /readyz is in the pool")
	}
}

func TestSupervisorStopsWithSIGTERMThenSIGKILL(t *testing.T) {
	for _, tc := range []struct {
		name, body, status string
	}{
		{"exits on SIGTERM", `echo up; exec sleep 60`, "signal: terminated"},
		{"ignores SIGTERM", `trap '' TERM; echo up; while :; do sleep 0.05; done`, "signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sup, logs, out := testSupervisor(t, 300*time.Millisecond, DefaultBackoff())
			f := stand("fn", false, time.Second)
			f.port, f.binary = 1, script(t, tc.body)
			stop := runFunction(t, sup, f, 1)
			sagatest.Eventually(t, 10*time.Second, func() error {
				if !strings.Contains(out.String(), "up") {
					return fmt.Errorf("not up yet")
				}
				return nil
			})
			reps, _ := f.status()
			pid := reps[0].PID
			stop()
			reps, last := f.status()
			if len(reps) != 0 || last.State != "stopped" || last.LastExit != tc.status {
				t.Errorf("replicas %+v, last %+v; want none, stopped with %q\n%s", reps, last, tc.status, logs.String())
			}
			if processAlive(pid) {
				t.Errorf("pid %d still alive", pid)
			}
		})
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestWaitReady: start-up waits for GET /readyz of a real process, and
// names what is not ready when it gives up; a ready replica joins the Pool.
func TestWaitReady(t *testing.T) {
	notReady := filepath.Join(t.TempDir(), "not-ready")
	if err := os.WriteFile(notReady, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sup, logs, _ := testSupervisor(t, 5*time.Second, DefaultBackoff())
	f := testFunction(t, "a", "TESTFN_NOT_READY="+notReady)
	runFunction(t, sup, f, 1)

	// The process may take a while to start (a -race test binary, on a
	// busy machine): wait until its probe answers, then give up on it.
	sagatest.Eventually(t, 20*time.Second, func() error {
		err := waitReady(context.Background(), []*function{f}, 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "saga/a (0 of 1 ready: replica 1 running (GET /readyz: 503 redis down))") {
			return fmt.Errorf("not ready: err = %v", err)
		}
		return nil
	})
	if err := os.Remove(notReady); err != nil {
		t.Fatal(err)
	}
	if err := waitReady(context.Background(), []*function{f}, 10*time.Second); err != nil {
		t.Errorf("ready: %v\n%s", err, logs.String())
	}
	reps, _ := f.status()
	if len(reps) != 1 || reps[0].State != "ready" || f.pool.Ready() != 1 {
		t.Errorf("replicas %+v, pool %d ready", reps, f.pool.Ready())
	}
}

func TestGroupByBase(t *testing.T) {
	// a major version suffix is not the binary's name: b/order/v2 builds "order"
	got := groupByBase([]string{"a/x/order", "b/order/v2", "a/pay", "c/order", "a/users", "v2"})
	want := [][]string{{"a/x/order", "a/pay", "a/users", "v2"}, {"b/order/v2"}, {"c/order"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("groupByBase = %v, want %v", got, want)
	}
	for p, name := range map[string]string{"example.com/cmd/hello/v2": "hello", "example.com/cmd/v2x": "v2x", "example.com/v": "v", "v3": "v3"} {
		if got := binaryName(p); got != name {
			t.Errorf("binaryName(%q) = %q, want %q", p, got, name)
		}
	}
}
