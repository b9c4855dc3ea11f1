// Package testredis starts a real redis-server for tests, on a free loopback
// port, in the test's temporary directory (internal/redisserver does the
// work). Nothing assumes port 6379.
package testredis

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/redisserver"
)

// Server is one redis-server process owned by a test.
type Server struct {
	tb testing.TB
	*redisserver.Server
}

// Option adds redis-server arguments, e.g. Option{"--appendonly", "yes"}.
type Option []string

// Start launches redis-server and registers its shutdown with tb.Cleanup.
// It fails the test with an install hint when redis-server is not on PATH.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var args []string
	for _, o := range opts {
		args = append(args, o...)
	}
	s, err := redisserver.Start(context.Background(), redisserver.Options{Dir: tb.TempDir(), Args: args})
	if errors.Is(err, redisserver.ErrNotInstalled) {
		tb.Fatal(err)
	}
	if err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	tb.Cleanup(s.Kill)
	return &Server{tb: tb, Server: s}
}

// Client returns a go-redis client closed at test cleanup.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server (SIGKILL, like a crash) and waits for it to exit.
func (s *Server) Stop() { s.Kill() }

// Restart starts the server again on the same port after Stop.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.Server.Restart(context.Background()); err != nil {
		s.tb.Fatalf("restart redis-server: %v", err)
	}
}

// Cluster is a Redis Cluster owned by a test.
type Cluster struct {
	tb testing.TB
	*redisserver.Cluster
}

// StartCluster starts a Redis Cluster of masters masters with replicas
// replicas each (redis-server processes on free ports, joined with
// redis-cli --cluster create) and registers its shutdown with tb.Cleanup.
func StartCluster(tb testing.TB, masters, replicas int, opts ...Option) *Cluster {
	tb.Helper()
	var args []string
	for _, o := range opts {
		args = append(args, o...)
	}
	c, err := redisserver.StartCluster(context.Background(), redisserver.ClusterOptions{Dir: tb.TempDir(), Masters: masters, Replicas: replicas, Args: args})
	if errors.Is(err, redisserver.ErrNotInstalled) {
		tb.Fatal(err)
	}
	if err != nil {
		tb.Fatalf("start redis cluster: %v", err)
	}
	tb.Cleanup(c.Kill)
	return &Cluster{tb: tb, Cluster: c}
}

// Client returns a cluster client closed at test cleanup.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cl := c.Cluster.Client()
	tb.Cleanup(func() { _ = cl.Close() })
	return cl
}

// NodeClient returns a client of one node of a cluster, by address (close
// it).
func NodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
}
