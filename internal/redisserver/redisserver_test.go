package redisserver

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRestartOnATakenPort: when another redis-server holds the port (it was
// free a moment ago), Restart reports that its own server could not start,
// instead of taking the other one's PING for its own.
func TestRestartOnATakenPort(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not on PATH")
	}
	ctx := context.Background()
	s, err := Start(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s.Kill()

	other := exec.Command("redis-server", "--port", strconv.Itoa(s.Port()), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	for deadline := time.Now().Add(10 * time.Second); c.Ping(ctx).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the other redis-server does not answer")
		}
		time.Sleep(10 * time.Millisecond) // poll, bounded by the deadline
	}

	if err := s.Restart(ctx); err == nil {
		s.Kill()
		t.Fatal("Restart took another server's PING for its own")
	}
	if pid := s.PID(); pid != 0 {
		t.Errorf("a server is recorded as running: pid %d", pid)
	}
}
