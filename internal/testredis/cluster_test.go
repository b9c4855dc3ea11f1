package testredis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/testredis"
)

// TestClusterMigrate: a cluster of three masters serves every slot; a slot
// moved with its keys is served by its new master, keys intact.
func TestClusterMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testredis.StartCluster(t, 3, 0)
	rdb := c.Client(t)
	for i := range 50 {
		if err := rdb.Set(ctx, fmt.Sprintf("{m}:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	slot := int(rdb.ClusterKeySlot(ctx, "{m}:0").Val())
	from, err := c.MasterOf(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	to := (from + 1) % len(c.Nodes)
	if err := c.MigrateSlots(ctx, []int{slot}, to); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOK(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if m, err := c.MasterOf(ctx, slot); err != nil || m != to {
		t.Fatalf("slot %d on node %d (%v), want %d", slot, m, err, to)
	}
	for i := range 50 {
		if n, err := rdb.Get(ctx, fmt.Sprintf("{m}:%d", i)).Int(); err != nil || n != i {
			t.Fatalf("{m}:%d = %d, %v after the move", i, n, err)
		}
	}
}

// TestClusterFailover: with a replica per master, a master killed (-9)
// is replaced by its replica, which has what it acknowledged with WAIT;
// the old master comes back as a replica.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testredis.StartCluster(t, 3, 1)
	rdb := c.Client(t)
	slot := int(rdb.ClusterKeySlot(ctx, "{f}").Val())
	victim, err := c.MasterOf(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	node, err := rdb.MasterForKey(ctx, "{f}")
	if err != nil {
		t.Fatal(err)
	}
	pipe := node.Pipeline()
	pipe.Set(ctx, "{f}", "kept", 0)
	wait := pipe.Do(ctx, "WAIT", 1, 2000)
	if _, err := pipe.Exec(ctx); err != nil || wait.Val() != int64(1) {
		t.Fatalf("WAIT: %v %v", wait.Val(), err)
	}
	c.Nodes[victim].Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, _ := c.MasterOf(ctx, slot); m >= 0 && m != victim {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica took over")
		}
		time.Sleep(50 * time.Millisecond) // poll, bounded by the deadline
	}
	if err := c.Nodes[victim].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOK(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, "{f}").Result(); err != nil || v != "kept" {
		t.Fatalf("after the failover: %q %v", v, err)
	}
	if m, _ := c.MasterOf(ctx, slot); m == victim {
		t.Fatal("the old master took its slots back")
	}
}
