// Package devproc runs `ksaga dev` as a child process, for the end-to-end
// tests (through internal/devtest) and `ksaga bench`: build the binary,
// start it on a port it picks itself (--port 0, read back from its log, so
// no port can be taken in between), wait until GET /readyz answers, and
// stop it with SIGINT (or SIGKILL, like a crash).
package devproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles ./cmd/ksaga of the module in dir into out.
func Build(dir, out string) error {
	cmd := exec.Command("go", "build", "-o", out, "./cmd/ksaga")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/ksaga: %w\n%s", err, b)
	}
	return nil
}

// Options configure Start.
type Options struct {
	Binary string   // the ksaga binary
	Dir    string   // where it runs: the project (brokers/, triggers/, manifests/)
	Args   []string // flags of `ksaga dev`; Start adds --port 0
	Env    []string // added to os.Environ()
	// Stdout gets the functions' lines, Stderr ksaga's own log (nil:
	// discarded); the log is also kept for Log.
	Stdout, Stderr io.Writer
	ReadyTimeout   time.Duration // default 2 minutes
}

// Process is a running `ksaga dev`.
type Process struct {
	Port int // the ingress: brokers at /<ns>/<name>, services by Host

	cmd   *exec.Cmd
	log   lockedBuffer
	done  chan struct{}
	state *os.ProcessState
}

var listening = regexp.MustCompile(`msg="ingress listening" addr=127\.0\.0\.1:(\d+)`)

// Start runs `ksaga dev --port 0 args...` and waits until it is ready.
func Start(ctx context.Context, o Options) (*Process, error) {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.Command(o.Binary, append([]string{"dev", "--port", "0"}, o.Args...)...)
	p.cmd.Dir = o.Dir
	p.cmd.Env = append(os.Environ(), o.Env...)
	p.cmd.Stdout = discardIfNil(o.Stdout)
	p.cmd.Stderr = io.MultiWriter(&p.log, discardIfNil(o.Stderr))
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ksaga dev: %w", err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit status is read from ProcessState
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	if err := p.waitReady(ctx, o.ReadyTimeout); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

func discardIfNil(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// bannerEnd is the last line of ksaga dev's start-up banner.
const bannerEnd = "Ctrl-C stops everything."

// waitReady finds the ingress port in the log, then polls GET /readyz
// (every function ready, the broker delivering) until it answers 200 and
// the start-up output, which comes through a pipe, has reached the end of
// the banner (written after the "ready" log line): tests read what was
// written before it.
func (p *Process) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if p.Port == 0 {
			if m := listening.FindStringSubmatch(p.log.String()); m != nil {
				p.Port, _ = strconv.Atoi(m[1])
			}
		}
		if p.Port != 0 {
			if resp, err := client.Get(p.URL("/readyz")); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK && strings.Contains(p.log.String(), bannerEnd) {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ksaga dev not ready after %v:\n%s", timeout, Tail(p.log.String(), 60))
		}
		select {
		case <-p.done:
			return fmt.Errorf("ksaga dev exited during start-up (%v):\n%s", p.state, Tail(p.log.String(), 60))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval, bounded by the deadline
		}
	}
}

// URL is a URL on the ingress with Host 127.0.0.1 (the brokers and the
// index; services are reached with their Host header).
func (p *Process) URL(path string) string { return "http://127.0.0.1:" + strconv.Itoa(p.Port) + path }

// PID is ksaga dev's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Log is ksaga's own log so far.
func (p *Process) Log() string { return p.log.String() }

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Interrupt sends SIGINT (ksaga dev drains and stops its functions) and
// waits; after timeout it kills the process group and reports an error.
// It returns the exit code.
func (p *Process) Interrupt(timeout time.Duration) (int, error) {
	if !p.Running() {
		return p.state.ExitCode(), nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return -1, fmt.Errorf("SIGINT: %w", err)
	}
	select {
	case <-p.done:
		return p.state.ExitCode(), nil
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return p.state.ExitCode(), fmt.Errorf("ksaga dev did not stop within %v of SIGINT", timeout)
	}
}

// Kill sends SIGKILL to ksaga dev alone, like a crash (on Linux its
// functions die with it: Pdeathsig), and waits for it.
func (p *Process) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

var started = regexp.MustCompile(`msg="function started" service=(\S+) pid=(\d+)`)

// Pids returns the pid of every function started so far, by service
// (namespace/name); a restarted function has its latest pid.
func (p *Process) Pids() map[string]int {
	out := map[string]int{}
	for _, m := range started.FindAllStringSubmatch(p.log.String(), -1) {
		out[m[1]], _ = strconv.Atoi(m[2])
	}
	return out
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("... (%d lines before)\n%s", len(lines)-n, bytes.Join(lines[len(lines)-n:], []byte("\n")))
}

// lockedBuffer collects output across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Environ reads a process's environment (KEY=VALUE entries) from
// /proc/<pid>/environ (Linux): what ksaga dev gave a function's process.
func Environ(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil, err
	}
	var env []string
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	return env, nil
}
