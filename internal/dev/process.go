package dev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
)

// Backoff is the restart policy of a crashed function: the first restart
// waits Initial, each further one twice as long up to Max, and a process that
// ran for ResetAfter or longer starts over at Initial.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
}

// DefaultBackoff is 100ms doubling to 10s, reset after 30s up.
func DefaultBackoff() Backoff {
	return Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, ResetAfter: 30 * time.Second}
}

// Next returns the delay before the next restart, given the previous delay
// (0 if there was none) and how long the process that just exited ran.
func (b Backoff) Next(prev, uptime time.Duration) time.Duration {
	if prev <= 0 || uptime >= b.ResetAfter {
		return b.Initial
	}
	return min(prev*2, b.Max)
}

// function is one Knative Service run as a local process.
type function struct {
	nn         types.NamespacedName
	importPath string
	binary     string
	port       int  // the process's own port, stable across its restarts
	h2c        bool // the container port is named h2c
	env        []string
	url        *apis.URL // dev URL

	mu       sync.Mutex
	pid      int
	state    string // starting, running, ready, exited, stopped
	restarts int
	lastExit string
}

// addr is the process's listen address.
func (f *function) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port)) }

func (f *function) set(fn func(f *function)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// status is a snapshot for the index page and errors.
type functionStatus struct {
	PID      int
	State    string
	Restarts int
	LastExit string
}

func (f *function) status() functionStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return functionStatus{PID: f.pid, State: f.state, Restarts: f.restarts, LastExit: f.lastExit}
}

// spawner starts processes from one goroutine locked to its OS thread.
// Linux delivers a child's parent-death signal (Pdeathsig) when the thread
// that forked it exits, and the Go runtime may retire other threads; this one
// lives until close, which is called once every child has been reaped.
type spawner struct {
	reqs chan spawnReq
	once sync.Once
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		// Never unlocked: the thread ends with this goroutine, after close.
		runtime.LockOSThread()
		for r := range s.reqs {
			r.errc <- r.cmd.Start()
		}
	}()
	return s
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, errc: errc}
	return <-errc
}

func (s *spawner) close() { s.once.Do(func() { close(s.reqs) }) }

// supervisor runs functions and restarts them when they crash.
type supervisor struct {
	log             *slog.Logger
	dir             string
	stdout, stderr  io.Writer
	width           int // of the service names in output prefixes
	backoff         Backoff
	shutdownTimeout time.Duration
	spawn           *spawner
}

// run keeps f running until ctx is done, then stops it: SIGTERM to its
// process group, SIGKILL after shutdownTimeout. It returns once the process
// has been reaped.
func (s *supervisor) run(ctx context.Context, f *function) {
	name := f.nn.Name
	prefix := fmt.Sprintf("%-*s | ", s.width, name)
	var delay time.Duration
	for {
		out, errw := newLineWriter(s.stdout, prefix), newLineWriter(s.stderr, prefix)
		cmd := exec.Command(f.binary)
		cmd.Dir, cmd.Env = s.dir, f.env
		cmd.Stdout, cmd.Stderr = out, errw
		cmd.SysProcAttr = sysProcAttr()
		cmd.WaitDelay = time.Second // a grandchild holding the pipes cannot block Wait
		started := time.Now()
		var status string
		if err := s.spawn.start(cmd); err != nil {
			status = err.Error()
			s.log.Error("function failed to start", "service", f.nn.String(), "error", err)
		} else {
			pid := cmd.Process.Pid
			f.set(func(f *function) { f.pid, f.state = pid, "running" })
			s.log.Info("function started", "service", f.nn.String(), "pid", pid, "addr", f.addr())
			// Wait's error says no more than ProcessState, read once waited.
			waited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-ctx.Done():
				s.stop(f, pid, waited)
				out.Flush()
				errw.Flush()
				f.set(func(f *function) { f.state, f.lastExit = "stopped", cmd.ProcessState.String() })
				s.log.Info("function stopped", "service", f.nn.String(), "pid", pid, "status", cmd.ProcessState.String())
				return
			}
			out.Flush()
			errw.Flush()
			status = cmd.ProcessState.String()
		}
		uptime := time.Since(started)
		f.set(func(f *function) { f.state, f.lastExit = "exited", status })
		if ctx.Err() != nil {
			return
		}
		delay = s.backoff.Next(delay, uptime)
		s.log.Warn("function exited; restarting", "service", f.nn.String(), "status", status,
			"uptime", uptime.Round(time.Millisecond), "restart_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.set(func(f *function) { f.state = "stopped" })
			return
		}
		f.set(func(f *function) { f.restarts++ })
	}
}

// stop terminates a running function and waits for it.
func (s *supervisor) stop(f *function, pid int, waited <-chan struct{}) {
	if err := terminate(pid); err != nil {
		s.log.Warn("SIGTERM failed", "service", f.nn.String(), "pid", pid, "error", err)
	}
	t := time.NewTimer(s.shutdownTimeout)
	defer t.Stop()
	select {
	case <-waited:
		return
	case <-t.C:
	}
	s.log.Warn("function did not stop in time; killing it", "service", f.nn.String(), "pid", pid, "timeout", s.shutdownTimeout)
	if err := kill(pid); err != nil {
		s.log.Warn("SIGKILL failed", "service", f.nn.String(), "pid", pid, "error", err)
	}
	<-waited
}

// waitReady polls GET /readyz of every function until each answers 200, or
// fails when timeout passes (naming the functions that are not ready and
// why) or ctx is done.
func waitReady(ctx context.Context, log *slog.Logger, fs []*function, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	start := time.Now()
	var (
		mu      sync.Mutex
		pending = make(map[*function]string)
		wg      sync.WaitGroup
	)
	for _, f := range fs {
		pending[f] = "no answer yet"
		wg.Go(func() {
			for {
				why, ok := probe(ctx, client, "http://"+f.addr()+"/readyz")
				if ok {
					mu.Lock()
					delete(pending, f)
					mu.Unlock()
					f.set(func(f *function) { f.state = "ready" })
					log.Debug("function ready", "service", f.nn.String(), "after", time.Since(start).Round(time.Millisecond))
					return
				}
				mu.Lock()
				pending[f] = why
				mu.Unlock()
				t := time.NewTimer(50 * time.Millisecond)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
		})
	}
	wg.Wait()
	if len(pending) == 0 {
		return nil
	}
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var lines []string
	for f, why := range pending {
		st := f.status()
		line := fmt.Sprintf("%s (GET /readyz: %s", f.nn, why)
		if st.Restarts > 0 || st.LastExit != "" {
			line += fmt.Sprintf("; restarted %d times, last exit: %s", st.Restarts, st.LastExit)
		}
		lines = append(lines, line+")")
	}
	slices.Sort(lines)
	return fmt.Errorf("functions not ready after %s: %s", timeout, strings.Join(lines, "; "))
}

// probe is one readiness request.
func probe(ctx context.Context, client *http.Client, url string) (why string, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error(), false
	}
	resp, err := client.Do(req)
	if err != nil {
		return err.Error(), false
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body))), false
	}
	return "", true
}

// maxLine is the longest line a lineWriter holds before writing it out.
const maxLine = 64 << 10

// lineWriter prefixes every line written to it and writes each whole line
// to out in one Write, so that lines of concurrent functions do not mix.
// Write errors of out are ignored: a closed terminal must not make a
// function's own writes fail.
type lineWriter struct {
	mu     sync.Mutex
	out    io.Writer
	prefix string
	buf    []byte
}

func newLineWriter(out io.Writer, prefix string) *lineWriter {
	return &lineWriter{out: out, prefix: prefix}
}

// Write implements io.Writer.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) >= maxLine {
				w.emit()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

// Flush writes a final line that has no newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	line := make([]byte, 0, len(w.prefix)+len(w.buf)+1)
	line = append(append(append(line, w.prefix...), w.buf...), '\n')
	_, _ = w.out.Write(line)
	w.buf = w.buf[:0]
}
