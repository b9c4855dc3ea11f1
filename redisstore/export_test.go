package redisstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/redisserver"
)

// The cluster tests share a pool of two 3-master Redis Clusters, started
// on first use (one cluster per test would be ten clusters at once on a
// small machine): a test takes one, flushed, and gives it back at its
// cleanup.
var clusters struct {
	once sync.Once
	dir  string
	all  []*redisserver.Cluster
	free chan *redisserver.Cluster
	err  error
}

// ClusterForTest gives the test a Redis Cluster of its own until it ends, and
// a client of it.
func ClusterForTest(t testing.TB) *redis.ClusterClient {
	t.Helper()
	clusters.once.Do(func() {
		clusters.dir, clusters.err = os.MkdirTemp("", "redisstore-cluster")
		clusters.free = make(chan *redisserver.Cluster, 2)
		for i := range 2 {
			if clusters.err != nil {
				return
			}
			var c *redisserver.Cluster
			c, clusters.err = redisserver.StartCluster(context.Background(), redisserver.ClusterOptions{Dir: fmt.Sprintf("%s/%d", clusters.dir, i)})
			if c != nil {
				clusters.all = append(clusters.all, c)
				clusters.free <- c
			}
		}
	})
	if clusters.err != nil {
		t.Fatalf("redis cluster: %v", clusters.err)
	}
	c := <-clusters.free
	rdb := c.Client()
	err := rdb.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() })
	if err != nil {
		clusters.free <- c
		t.Fatalf("flush the cluster: %v", err)
	}
	t.Cleanup(func() {
		_ = rdb.Close()
		clusters.free <- c
	})
	return rdb
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range clusters.all {
		c.Kill()
	}
	if clusters.dir != "" {
		_ = os.RemoveAll(clusters.dir)
	}
	os.Exit(code)
}
