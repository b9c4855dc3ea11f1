package sagatest

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
)

// Redis starts a real redis-server on a free loopback port for the test
// and returns a client of it (closed, and the server killed, at cleanup).
// It fails the test when redis-server is not installed.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	srv := testredis.Start(t)
	return srv.Client(t)
}

// RedisURL starts a redis-server as Redis does and returns its URL, for a
// function under test (REDIS_URL), and a client of it.
func RedisURL(t testing.TB) (string, *redis.Client) {
	t.Helper()
	srv := testredis.Start(t)
	return srv.URL(), srv.Client(t)
}

// Miniredis starts an embedded miniredis (no server process, not every
// Redis behaviour) and returns a client of it.
func Miniredis(t testing.TB) *redis.Client {
	t.Helper()
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
