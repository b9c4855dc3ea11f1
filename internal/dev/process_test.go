package dev

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

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

func TestSupervisorRestartsACrashedFunction(t *testing.T) {
	var logs, stdout, stderr sagatest.Buffer
	sup := &supervisor{
		log: slog.New(slog.NewTextHandler(&logs, nil)), dir: t.TempDir(), stdout: &stdout, stderr: &stderr, width: 6,
		backoff:         Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Minute},
		shutdownTimeout: 5 * time.Second, spawn: newSpawner(),
	}
	defer sup.spawn.close()
	f := &function{nn: types.NamespacedName{Namespace: "saga", Name: "crashy"}, port: 1,
		binary: script(t, `echo "started $K_SERVICE"; echo oops >&2; exit 3`), env: []string{"K_SERVICE=crashy"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.run(ctx, f); close(done) }()

	sagatest.Eventually(t, 10*time.Second, func() error {
		if n := f.status().Restarts; n < 3 {
			return fmt.Errorf("%d restarts so far", n)
		}
		return nil
	})
	cancel()
	<-done
	if !strings.Contains(stdout.String(), "crashy | started crashy\n") {
		t.Errorf("stdout: %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "crashy | oops\n") {
		t.Errorf("stderr: %q", stderr.String())
	}
	l := logs.String()
	if !strings.Contains(l, `msg="function exited; restarting" service=saga/crashy status="exit status 3"`) {
		t.Errorf("no restart log with the exit status:\n%s", l)
	}
	for _, d := range []string{"restart_in=10ms", "restart_in=20ms", "restart_in=40ms"} {
		if !strings.Contains(l, d) {
			t.Errorf("no %s in:\n%s", d, l)
		}
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
			var logs, stdout sagatest.Buffer
			sup := &supervisor{
				log: slog.New(slog.NewTextHandler(&logs, nil)), dir: t.TempDir(), stdout: &stdout, stderr: &stdout,
				backoff: DefaultBackoff(), shutdownTimeout: 300 * time.Millisecond, spawn: newSpawner(),
			}
			defer sup.spawn.close()
			f := &function{nn: types.NamespacedName{Namespace: "saga", Name: "fn"}, binary: script(t, tc.body)}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { sup.run(ctx, f); close(done) }()
			sagatest.Eventually(t, 10*time.Second, func() error {
				if !strings.Contains(stdout.String(), "up") {
					return fmt.Errorf("not up yet")
				}
				return nil
			})
			pid := f.status().PID
			cancel()
			<-done
			st := f.status()
			if st.State != "stopped" || st.LastExit != tc.status {
				t.Errorf("state %q, last exit %q; want stopped, %q\n%s", st.State, st.LastExit, tc.status, logs.String())
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

func TestWaitReady(t *testing.T) {
	var mu sync.Mutex
	ready := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/readyz" || !ready {
			http.Error(w, "redis down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	port, _ := strconv.Atoi(srv.URL[strings.LastIndexByte(srv.URL, ':')+1:])
	f := &function{nn: types.NamespacedName{Namespace: "saga", Name: "a"}, port: port}
	log := slog.New(slog.DiscardHandler)

	err := waitReady(context.Background(), log, []*function{f}, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "saga/a (GET /readyz: 503 redis down)") {
		t.Errorf("not ready: err = %v", err)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if err := waitReady(context.Background(), log, []*function{f}, 5*time.Second); err != nil {
		t.Errorf("ready: %v", err)
	}
	if st := f.status().State; st != "ready" {
		t.Errorf("state %q", st)
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
