package e2e

import (
	"context"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
)

// The order saga on a Redis Cluster: ksaga dev, its broker and every
// function on a 3-master cluster (REDIS_URL in its cluster form), with
// the same outcomes as on one primary.

// startCluster is start on the Redis Cluster c.
func startCluster(t *testing.T, c *testredis.Cluster, mode string, env []string, args ...string) system {
	t.Helper()
	return startOn(t, c.URL(), c.Client(t), mode, env, args...)
}

func flush(t *testing.T, c *testredis.Cluster) {
	t.Helper()
	err := c.Client(t).ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() })
	if err != nil {
		t.Fatal(err)
	}
}

// TestClusterScenarios runs the scenario table on a cluster in both modes,
// with and without duplicate deliveries: all four end as on one primary.
func TestClusterScenarios(t *testing.T) {
	t.Parallel()
	got := map[string][]outcome{}
	for _, mode := range modes {
		c := testredis.StartCluster(t, 3, 0)
		for _, dup := range []bool{false, true} {
			variant := mode
			var args []string
			if dup {
				variant += "/duplicate-deliveries"
				args = append(args, "--duplicate-deliveries")
			}
			t.Run(variant, func(t *testing.T) {
				flush(t, c)
				got[variant] = runScenarios(t, startCluster(t, c, mode, nil, args...))
			})
		}
	}
	want := map[string][]outcome{}
	for v := range got {
		want[v] = got["choreography"]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the variants end differently: %+v", got)
	}
}

// TestClusterRandomOrders: the 500 random orders on a cluster, in both
// modes: every saga ends terminal, money and stock are conserved, one
// notification per order.
func TestClusterRandomOrders(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			randomOrders(t, startCluster(t, testredis.StartCluster(t, 3, 0), mode, nil), 500)
		})
	}
}
