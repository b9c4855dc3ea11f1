package redisacl_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/redisacl"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

var aclIncr = saga.Effect{Name: "acl.incr", Lua: `redis.call('INCRBY', keys.n, args.by)`}

// TestStoreOnClusterAsACLUser: on a Redis Cluster, a user with exactly
// StoreCommands and StoreKeys (set on every node by Apply) runs the
// store's cluster paths: a creation, a change whose effect is on another
// node (prepare, effect with its barrier, commit, and the barrier's
// shorter life once committed), a duplicate, a change that resolves a
// pending one, the reads across shards, and Compact.
func TestStoreOnClusterAsACLUser(t *testing.T) {
	ctx := context.Background()
	c := testredis.StartCluster(t, 3, 0)
	admin := c.Client(t)
	u := redisacl.User{Name: "store", Commands: append(slices.Clone(redisacl.StoreCommands), "+incrby")}
	for _, k := range redisacl.StoreKeys {
		u.Keys = append(u.Keys, "~"+k)
	}
	u.Keys = append(u.Keys, "~acl:*")
	if err := redisacl.Apply(ctx, admin, []redisacl.User{u}, map[string]string{"store": "s-secret"}); err != nil {
		t.Fatal(err)
	}
	url, err := redisacl.URLFor(c.URL(), "store", "s-secret")
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := redisstore.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(ch saga.Change) saga.Result {
		t.Helper()
		r, err := s.Apply(ctx, ch)
		if err != nil {
			t.Fatalf("%s: %v", ch.Event.ID, err)
		}
		return r
	}
	must(saga.Change{SagaID: "c1", Saga: "acl", Key: "k1", Event: saga.EventRef{Source: "/t", ID: "start", Type: "t.start"},
		Create: &saga.Create{Saga: "acl", Key: "k1", Data: []byte(`{}`), Deadline: time.Now().Add(time.Hour)}, Step: "a",
		Success: saga.Move{Outcome: "started", Status: saga.StatusRunning, Push: true, Emit: &saga.Emit{Type: "t.go", ID: "go", Source: "/t"}}})
	step := saga.Change{SagaID: "c1", Saga: "acl", Event: saga.EventRef{Source: "/t", ID: "go", Type: "t.go"}, Version: 1,
		Allow: []saga.Status{saga.StatusRunning}, Step: "b", Effect: aclIncr.Call().Key("n", "acl:{n}").Arg("by", 5),
		Success: saga.Move{Outcome: "done", Status: saga.StatusCompleted, ClearStack: true}}
	if r := must(step); !r.Applied {
		t.Fatalf("the step: %+v", r)
	}
	if r := must(step); !r.Duplicate {
		t.Fatalf("again: %+v", r)
	}
	if n, _ := admin.Get(ctx, "acl:{n}").Int(); n != 5 {
		t.Fatalf("the effect ran to %d, want 5", n)
	}
	if p, err := s.List(ctx, saga.Query{Saga: "acl"}); err != nil || len(p.Sagas) != 1 {
		t.Fatalf("list: %+v %v", p, err)
	}
	if st, err := s.Stats(ctx, "acl", time.Now()); err != nil || st.ByStatus[saga.StatusCompleted] != 1 {
		t.Fatalf("stats: %+v %v", st, err)
	}
	if id, err := s.ByKey(ctx, "acl", "k1"); err != nil || id != "c1" {
		t.Fatalf("by key: %q %v", id, err)
	}
	if _, err := s.Due(ctx, time.Now(), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, time.Now().Add(time.Hour), 100); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := s.KeepDeadLetter(ctx, saga.DeadLetter{EventType: "t.x", EventID: "x", EventSource: "/t", Reason: "r", Handling: "kept"}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.DeadLetters(ctx, saga.DeadLetterQuery{}); err != nil || len(p.DeadLetters) != 1 {
		t.Fatalf("dead letters: %+v %v", p, err)
	}
	// the committed attempt's barrier is given its shorter life (PEXPIRE
	// LT, in the background: a refusal would go unnoticed)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var short bool
		for _, k := range barriers(t, c) {
			ttl, _ := admin.PTTL(ctx, k).Result()
			short = ttl > 0 && ttl <= time.Hour
		}
		if short {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the barrier kept its full life: PEXPIRE refused?")
		}
		time.Sleep(20 * time.Millisecond) // poll, bounded by the deadline
	}
}

// barriers lists the barrier keys of every node.
func barriers(t *testing.T, c *testredis.Cluster) []string {
	t.Helper()
	var out []string
	for _, n := range c.Nodes {
		cl := testredis.NodeClient(n.Addr())
		keys, err := cl.Keys(context.Background(), "ksaga:b:*").Result()
		_ = cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, keys...)
	}
	if len(out) != 1 {
		t.Fatalf("%d barriers, want 1: %q", len(out), out)
	}
	return out
}
