package dev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
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

	"github.com/ksaga/ksaga/internal/devscale"
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

// function is one Knative Service: the processes (replicas) that run it and
// the Pool every request to it goes through (devscale: the activator and
// queue-proxy of ksaga dev).
type function struct {
	nn         types.NamespacedName
	importPath string
	binary     string
	port       int      // the first replica's port (picked with the others' at start)
	h2c        bool     // the container port is named h2c
	env        []string // with PORT and LISTEN_ADDRESS of port
	url        *apis.URL
	settings   *devscale.Settings   // the Service's autoscaling
	alwaysOn   bool                 // --scale=always-on: one replica, no limit
	pool       *devscale.Pool       // set before any request arrives
	scaler     *devscale.Autoscaler // nil with alwaysOn

	// Set by attach, before the first Scale.
	ctx  context.Context
	sup  *supervisor
	reps *sync.WaitGroup

	mu       sync.Mutex
	replicas []*replica // starting, running, ready or being stopped
	last     replicaStatus
	portUsed bool // port has had a replica: the next ones take fresh ports
}

// replica is one process of a function. Its fields are guarded by the
// function's mu.
type replica struct {
	id     int // 1, 2, ...: the lowest free one
	port   int // kept across restarts of the process
	cancel context.CancelFunc
	done   chan struct{} // closed when the process is gone for good

	pid      int
	state    string // starting, running, ready, exited (restarting), draining, stopped
	restarts int
	lastExit string
	probe    string    // why the last readiness probe failed
	started  time.Time // of the current process
	ep       *devscale.Endpoint
	retiring bool // being scaled down
}

// addr is the replica's listen address.
func (r *replica) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// attach gives the function what it needs to start replicas: they live
// until ctx is done, supervised by sup, counted in wg.
func (f *function) attach(ctx context.Context, sup *supervisor, wg *sync.WaitGroup) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctx, f.sup, f.reps = ctx, sup, wg
}

// initialReplicas is how many ready replicas start-up waits for.
func (f *function) initialReplicas() int {
	if f.alwaysOn {
		return 1
	}
	return int(f.settings.InitialReplicas())
}

// Scale implements devscale.Target: it starts replicas or stops some until
// n are starting, running or ready. A replica stopped is first taken out of
// the Pool, then drained (its requests in flight finish, for at most the
// revision's timeout), then sent SIGTERM, as Knative removes a pod from the
// endpoints before the kubelet stops it. Unready replicas go first, then
// the newest (Kubernetes' ReplicaSet prefers those too).
func (f *function) Scale(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil || f.ctx.Err() != nil {
		return
	}
	var live []*replica
	for _, r := range f.replicas {
		if !r.retiring {
			live = append(live, r)
		}
	}
	for len(live) < n {
		r, err := f.startLocked()
		if err != nil {
			f.sup.log.Error("cannot start a replica", "service", f.nn.String(), "error", err)
			return
		}
		live = append(live, r)
	}
	for len(live) > n {
		i := victim(live)
		r := live[i]
		live = append(live[:i], live[i+1:]...)
		r.retiring = true
		f.reps.Go(func() { f.retire(r) })
	}
}

// victim picks the replica to stop: not ready first, then the highest id.
func victim(live []*replica) int {
	best := 0
	for i, r := range live {
		b := live[best]
		if (r.ep == nil) != (b.ep == nil) {
			if r.ep == nil {
				best = i
			}
			continue
		}
		if r.id > b.id {
			best = i
		}
	}
	return best
}

// startLocked starts one replica (f.mu held).
func (f *function) startLocked() (*replica, error) {
	used := map[int]bool{}
	ports := map[int]bool{}
	for _, r := range f.replicas {
		used[r.id] = true
		ports[r.port] = true
	}
	id := 1
	for used[id] {
		id++
	}
	// Only the first replica takes the port picked at start. Any later one
	// (scale out, or from zero) takes a fresh port, as a new pod gets a new
	// address: a port left free at zero may have been taken since, and the
	// function would fail to bind it again and again.
	port := f.port
	if ports[port] || f.portUsed {
		p, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		port = p[0]
	}
	f.portUsed = true
	ctx, cancel := context.WithCancel(f.ctx)
	r := &replica{id: id, port: port, cancel: cancel, done: make(chan struct{}), state: "starting"}
	f.replicas = append(f.replicas, r)
	f.reps.Go(func() {
		defer close(r.done)
		defer cancel()
		f.sup.run(ctx, f, r)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.last = f.statusLocked(r)
		for i, o := range f.replicas {
			if o == r {
				f.replicas = append(f.replicas[:i], f.replicas[i+1:]...)
				break
			}
		}
	})
	return r, nil
}

// retire stops a replica that is no longer wanted: out of the Pool, drained,
// then stopped.
func (f *function) retire(r *replica) {
	f.mu.Lock()
	ep := r.ep
	r.ep = nil
	if r.state == "ready" {
		r.state = "draining"
	}
	f.mu.Unlock()
	if ep != nil {
		drained := f.pool.Remove(ep)
		t := time.NewTimer(f.drainTimeout())
		select {
		case <-drained:
		case <-t.C:
			f.sup.log.Warn("replica still busy after the drain timeout; stopping it", "service", f.nn.String(), "replica", r.id, "timeout", f.drainTimeout())
		case <-f.ctx.Done():
		}
		t.Stop()
	}
	r.cancel()
	<-r.done
}

func (f *function) drainTimeout() time.Duration {
	if f.settings != nil {
		return f.settings.Timeout
	}
	return devscale.DefaultHoldTimeout
}

// ready makes a replica whose readiness probe passed take requests, unless
// it is being stopped.
func (f *function) ready(ctx context.Context, r *replica) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.retiring || ctx.Err() != nil || r.ep != nil {
		return
	}
	r.state = "ready"
	r.probe = ""
	r.ep = f.pool.Add(r.addr())
}

// unready takes a replica out of the Pool (its process exited).
func (f *function) unready(r *replica) {
	f.mu.Lock()
	ep := r.ep
	r.ep = nil
	f.mu.Unlock()
	if ep != nil {
		f.pool.Remove(ep)
	}
}

func (f *function) setReplica(r *replica, fn func(r *replica)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(r)
}

// replicaStatus is a snapshot of one replica, for the index page, the JSON
// API and errors.
type replicaStatus struct {
	ID       int     `json:"id"`
	PID      int     `json:"pid"`
	Port     int     `json:"port"`
	State    string  `json:"state"`
	Restarts int     `json:"restarts"`
	LastExit string  `json:"last_exit,omitempty"`
	Probe    string  `json:"readiness,omitempty"`
	UptimeS  float64 `json:"uptime_seconds"`
}

func (f *function) statusLocked(r *replica) replicaStatus {
	st := replicaStatus{ID: r.id, PID: r.pid, Port: r.port, State: r.state, Restarts: r.restarts, LastExit: r.lastExit, Probe: r.probe}
	if !r.started.IsZero() && (r.state == "running" || r.state == "ready" || r.state == "draining") {
		st.UptimeS = roundTo(time.Since(r.started).Seconds(), 3)
	}
	return st
}

// status returns the replicas, by id, and the last replica that ended (its
// ID is 0 if none has).
func (f *function) status() ([]replicaStatus, replicaStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]replicaStatus, 0, len(f.replicas))
	for _, r := range f.replicas {
		out = append(out, f.statusLocked(r))
	}
	slices.SortFunc(out, func(a, b replicaStatus) int { return a.ID - b.ID })
	return out, f.last
}

// readyCount is the number of ready replicas.
func (f *function) readyCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.replicas {
		if r.ep != nil {
			n++
		}
	}
	return n
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

// withPort returns env with PORT and LISTEN_ADDRESS moved from the
// function's first port to port (values set otherwise, by --env, are
// kept).
func withPort(env []string, from, port int) []string {
	if from == port {
		return env
	}
	out := slices.Clone(env)
	oldPort, oldAddr := strconv.Itoa(from), net.JoinHostPort("127.0.0.1", strconv.Itoa(from))
	for i, kv := range out {
		switch kv {
		case "PORT=" + oldPort:
			out[i] = "PORT=" + strconv.Itoa(port)
		case "LISTEN_ADDRESS=" + oldAddr:
			out[i] = "LISTEN_ADDRESS=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
	}
	return out
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

// supervisor runs the replicas of functions and restarts them when they
// crash.
type supervisor struct {
	log             *slog.Logger
	dir             string
	stdout, stderr  io.Writer
	width           int // of the service names in output prefixes
	backoff         Backoff
	shutdownTimeout time.Duration
	spawn           *spawner
}

// run keeps replica r of f running until ctx is done, then stops it:
// SIGTERM to its process group, SIGKILL after shutdownTimeout. While a
// process runs, its GET /readyz is probed until it answers 200; the replica
// then joins f's Pool, and leaves it when the process exits. run returns
// once the process has been reaped.
func (s *supervisor) run(ctx context.Context, f *function, r *replica) {
	name := f.nn.Name
	if r.id > 1 {
		name += "#" + strconv.Itoa(r.id)
	}
	prefix := fmt.Sprintf("%-*s | ", s.width, name)
	var delay time.Duration
	for {
		out, errw := newLineWriter(s.stdout, prefix), newLineWriter(s.stderr, prefix)
		cmd := exec.Command(f.binary)
		cmd.Dir, cmd.Env = s.dir, withPort(f.env, f.port, r.port)
		cmd.Stdout, cmd.Stderr = out, errw
		cmd.SysProcAttr = sysProcAttr()
		cmd.WaitDelay = time.Second // a grandchild holding the pipes cannot block Wait
		started := time.Now()
		var status string
		if err := s.spawn.start(cmd); err != nil {
			status = err.Error()
			s.log.Error("function failed to start", "service", f.nn.String(), "replica", r.id, "error", err)
		} else {
			pid := cmd.Process.Pid
			f.setReplica(r, func(r *replica) { r.pid, r.state, r.started = pid, "running", started })
			s.log.Info("function started", "service", f.nn.String(), "pid", pid, "replica", r.id, "addr", r.addr())
			// Wait's error says no more than ProcessState, read once waited.
			waited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(waited) }()
			pctx, stopProbe := context.WithCancel(ctx)
			probed := make(chan struct{})
			go func() { defer close(probed); s.awaitReady(pctx, f, r, started) }()
			select {
			case <-waited:
				stopProbe()
				<-probed
				f.unready(r)
			case <-ctx.Done():
				stopProbe()
				<-probed
				f.unready(r)
				s.stop(f, pid, waited)
				out.Flush()
				errw.Flush()
				f.setReplica(r, func(r *replica) { r.state, r.lastExit = "stopped", cmd.ProcessState.String() })
				s.log.Info("function stopped", "service", f.nn.String(), "pid", pid, "replica", r.id, "status", cmd.ProcessState.String())
				return
			}
			out.Flush()
			errw.Flush()
			status = cmd.ProcessState.String()
		}
		uptime := time.Since(started)
		f.setReplica(r, func(r *replica) { r.state, r.lastExit = "exited", status })
		if ctx.Err() != nil {
			f.setReplica(r, func(r *replica) { r.state = "stopped" })
			return
		}
		delay = s.backoff.Next(delay, uptime)
		s.log.Warn("function exited; restarting", "service", f.nn.String(), "replica", r.id, "status", status,
			"uptime", uptime.Round(time.Millisecond), "restart_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.setReplica(r, func(r *replica) { r.state = "stopped" })
			return
		}
		f.setReplica(r, func(r *replica) { r.restarts++ })
	}
}

// Readiness probing of a starting process: the first probe at once, then
// at growing intervals, so that a function that is up in a few
// milliseconds is found ready in about as much.
const (
	probeFirst = time.Millisecond
	probeMax   = 25 * time.Millisecond
)

// awaitReady probes GET /readyz of a replica's process until it answers
// 200 (the replica then joins the Pool) or ctx is done.
func (s *supervisor) awaitReady(ctx context.Context, f *function, r *replica, started time.Time) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	url := "http://" + r.addr() + "/readyz"
	wait := probeFirst
	for {
		why, ok := probe(ctx, client, url)
		if ok {
			f.ready(ctx, r)
			s.log.Debug("function ready", "service", f.nn.String(), "replica", r.id, "after", time.Since(started).Round(time.Millisecond))
			return
		}
		f.setReplica(r, func(r *replica) { r.probe = why })
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, probeMax)
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

// waitReady waits until every function has its initial replicas ready,
// or fails when timeout passes (naming the functions that are not ready and
// why) or ctx is done.
func waitReady(ctx context.Context, fs []*function, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var pending []*function
		for _, f := range fs {
			if f.readyCount() < f.initialReplicas() {
				pending = append(pending, f)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		var lines []string
		for _, f := range pending {
			reps, last := f.status()
			var why []string
			for _, r := range reps {
				w := fmt.Sprintf("replica %d %s", r.ID, r.State)
				if r.Probe != "" {
					w += " (GET /readyz: " + r.Probe + ")"
				}
				if r.Restarts > 0 || r.LastExit != "" {
					w += fmt.Sprintf("; restarted %d times, last exit: %s", r.Restarts, r.LastExit)
				}
				why = append(why, w)
			}
			if len(reps) == 0 && last.ID != 0 {
				why = append(why, "last exit: "+last.LastExit)
			}
			lines = append(lines, fmt.Sprintf("%s (%d of %d ready: %s)", f.nn, f.readyCount(), f.initialReplicas(), strings.Join(why, "; ")))
		}
		slices.Sort(lines)
		return fmt.Errorf("functions not ready after %s: %s", timeout, strings.Join(lines, "; "))
	}
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
