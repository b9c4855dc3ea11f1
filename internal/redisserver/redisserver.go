// Package redisserver runs a real redis-server as a child process on a free
// loopback port: the tests (through internal/testredis) and `ksaga bench`
// start theirs the same way. Nothing assumes port 6379.
package redisserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled is returned when redis-server is not on PATH.
var ErrNotInstalled = errors.New("redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or run make test, which does")

// Options configure a server.
type Options struct {
	// Dir holds its files (log, AOF). Required.
	Dir string
	// Args are added to the defaults (no persistence: --save "" --appendonly
	// no; later arguments win), e.g. "--appendonly", "yes".
	Args []string
}

// Server is one redis-server process.
type Server struct {
	dir  string
	args []string
	port int

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error         // set before done is closed
}

// Start launches redis-server on a free loopback port and waits until it
// answers PING (an authentication error counts: the server is up).
func Start(ctx context.Context, o Options) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNotInstalled
	}
	s := &Server{dir: o.Dir, args: o.Args}
	var lastErr error
	for range 5 { // a freed port can be taken by someone else before redis binds it
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.port = port
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for the server (database 0).
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// PID is the running process's id (0 when stopped).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill stops the server with SIGKILL, like a crash, and waits for it. Data
// survives only with persistence options.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

// Restart starts the server again on the same port after Kill.
func (s *Server) Restart(ctx context.Context) error { return s.start(ctx) }

func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("redis-server already running")
	}
	logfile := filepath.Join(s.dir, "redis.log")
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--logfile", logfile,
	}, s.args...)
	var logFrom int64 // a restart appends to the same log
	if fi, err := os.Stat(logfile); err == nil {
		logFrom = fi.Size()
	}
	cmd := exec.Command("redis-server", args...)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { s.exitErr = cmd.Wait(); close(done) }()

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	var answeredAt time.Time
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(logfile)
			return fmt.Errorf("redis-server exited: %v\n%s", s.exitErr, tail(string(log), 2000))
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := c.Ping(pctx).Err()
		cancel()
		var answered redis.Error // NOAUTH and the like: the server is up
		if err == nil || errors.As(err, &answered) {
			// Up, but is it ours? Another server may hold the port (it was
			// free a moment ago): then ours fails to bind and exits. Ours
			// logs that it accepts connections once it listens; a version
			// that words it otherwise is taken as ours once it has stayed
			// up a while.
			if answeredAt.IsZero() {
				answeredAt = time.Now()
			}
			if logSince(logfile, logFrom, "Ready to accept connections") || time.Since(answeredAt) > 2*time.Second {
				s.cmd, s.done = cmd, done
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on %s not answering PING: %w", s.Addr(), err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline above
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logSince reports whether the log at path has line after offset from.
func logSince(path string, from int64, line string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return false
	}
	return strings.Contains(string(b[from:]), line)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
