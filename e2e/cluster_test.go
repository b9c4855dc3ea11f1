package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
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

// TestClusterChaos: orders placed without pause while a running cluster
// (3 masters, a replica each) moves slots between masters (redis-cli
// --cluster reshard) and loses the master of the inventory's slot (kill
// -9: its replica takes over; the old master comes back as a replica).
// No saga answered 202 is lost: every one ends confirmed or cancelled;
// every saga ends terminal; money and stock are conserved — what the
// completed sagas charged and took is exactly what left balances and
// stock — and no order is notified twice.
func TestClusterChaos(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testredis.StartCluster(t, 3, 1)
	s := startCluster(t, c, "choreography", nil)
	// alice and bob can pay for everything, carol for nothing; one lamp
	balances := map[int32]int64{1: 1e12, 2: 1e12, 3: 0}
	stocks := map[string]int64{"book": 1e9, "lamp": 1}
	for u, b := range balances {
		if err := s.rdb.Set(ctx, ordersaga.BalanceKey(u), b, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for sku, n := range stocks {
		if err := s.rdb.Set(ctx, ordersaga.StockKey(sku), n, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu      sync.Mutex
		orders  []accepted
		refused int
		placed  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 20))
			for {
				select {
				case <-stop:
					return
				default:
				}
				req := ordersaga.OrderRequest{UserID: int32(1 + rng.IntN(3))}
				for range 1 + rng.IntN(2) {
					req.Items = append(req.Items, item([]string{"book", "book", "book", "lamp"}[rng.IntN(4)], 1+rng.IntN(3)))
				}
				a, code := s.orderQuietly(req) // a request cut by the failover is refused, not a test failure
				placed.Add(1)
				mu.Lock()
				if code == http.StatusAccepted {
					orders = append(orders, a)
				} else {
					refused++ // e.g. 503 while a master fails over: not accepted, nothing promised
				}
				mu.Unlock()
			}
		})
	}
	// more waits until k more orders were placed (the load goes on)
	more := func(k int64) {
		t.Helper()
		target := placed.Load() + k
		sagatest.Eventually(t, 2*time.Minute, func() error {
			if p := placed.Load(); p < target {
				return fmt.Errorf("%d orders placed, waiting for %d", p, target)
			}
			return nil
		})
	}

	// 1. move slots in use — the inventory's, and the busiest of its
	// master's (saga shards) — to another master, under load
	more(100)
	stock := int(s.rdb.ClusterKeySlot(ctx, ordersaga.StockKey("book")).Val())
	from, err := c.MasterOf(ctx, stock)
	if err != nil {
		t.Fatal(err)
	}
	to := -1
	for slot := 0; slot < 16384 && to < 0; slot += 4096 {
		if m, _ := c.MasterOf(ctx, slot); m != from && m >= 0 {
			to = m
		}
	}
	if to < 0 {
		t.Fatal("no other master")
	}
	slots := slices.DeleteFunc(busiest(t, c, from, 9), func(s int) bool { return s == stock })[:8]
	before := placed.Load()
	if err := c.MigrateSlots(ctx, append([]int{stock}, slots...), to); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOK(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("migrated slots %d and %v from node %d to node %d while %d orders were placed", stock, slots, from, to, placed.Load()-before)
	more(100)

	// 2. kill -9 the master of the inventory's slot; its replica takes over
	victim, err := c.MasterOf(ctx, stock)
	if err != nil {
		t.Fatal(err)
	}
	before = placed.Load()
	c.Nodes[victim].Kill()
	sagatest.Eventually(t, 30*time.Second, func() error {
		m, err := c.MasterOf(ctx, stock)
		if err != nil || m == victim || m < 0 {
			return fmt.Errorf("slot %d still on node %d (%v)", stock, m, err)
		}
		return nil
	})
	if err := c.Nodes[victim].Restart(ctx); err != nil { // back, as a replica of its replacement
		t.Fatal(err)
	}
	copyUsers(t, c, victim) // its ACL users were in memory only (an ACL file, in production)
	if err := c.WaitOK(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed master node %d; its replica took over; %d orders placed meanwhile", victim, placed.Load()-before)
	more(100)
	close(stop)
	wg.Wait()

	// every order answered 202 ends confirmed or cancelled
	for _, o := range orders {
		v := s.settled(t, o.OrderID, 3*time.Minute)
		if !(v.Status == "confirmed" && v.Saga.Status == saga.StatusCompleted) && !(v.Status == "cancelled" && v.Saga.Status == saga.StatusCompensated) {
			t.Errorf("order %s is %s but its saga is %s", o.OrderID, v.Status, v.Saga.Status)
		}
	}
	// every saga ends terminal; conservation from what completed sagas did
	var all []saga.State
	sagatest.Eventually(t, 3*time.Minute, func() error {
		all = all[:0]
		cursor := ""
		for {
			p, err := s.store.List(ctx, saga.Query{Saga: ordersaga.Saga.Name, Limit: 500, Cursor: cursor})
			if err != nil {
				return err
			}
			all = append(all, p.Sagas...)
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		for _, st := range all {
			if !st.Status.Terminal() {
				return fmt.Errorf("saga %s is %s", st.ID, st.Status)
			}
		}
		return nil
	})
	spent, sold := map[int32]int64{}, map[string]int64{}
	completed := 0
	for _, st := range all {
		if st.Status != saga.StatusCompleted {
			continue
		}
		completed++
		var o ordersaga.Order
		if err := st.Decode(&o); err != nil {
			t.Fatal(err)
		}
		spent[o.UserID] += o.TotalCents
		for _, it := range o.Items {
			sold[it.SKU] += int64(it.Qty)
		}
	}
	for u, b := range balances {
		if got, want := s.balance(t, u), b-spent[u]; got != want {
			t.Errorf("user %d: balance %d, want %d (initial %d - completed %d): money not conserved", u, got, want, b, spent[u])
		}
	}
	for sku, n := range stocks {
		if got := s.stock(t, sku); got < 0 || got != n-sold[sku] {
			t.Errorf("%s: stock %d, want %d (initial %d - sold %d)", sku, got, n-sold[sku], n, sold[sku])
		}
	}
	notes := s.notifications(t)
	for id, k := range notes {
		if k > 1 {
			t.Errorf("order %s notified %d times", id, k)
		}
	}
	if completed == 0 || completed == len(all) {
		t.Errorf("%d sagas, %d completed: the mix must hold both outcomes", len(all), completed)
	}
	waits := 0
	for _, n := range c.Nodes {
		info, err := redis.NewClient(&redis.Options{Addr: n.Addr()}).Info(ctx, "commandstats").Result()
		if err == nil {
			if _, v, ok := strings.Cut(info, "cmdstat_wait:calls="); ok {
				k, _ := strconv.Atoi(v[:strings.IndexByte(v, ',')])
				waits += k
			}
		}
	}
	if waits == 0 {
		t.Error("no write waited for a replica: the writes that must survive a failover were not made durable")
	}
	t.Logf("%d orders accepted (%d refused), %d sagas, %d completed; %d notifications; %d WAITs", len(orders), refused, len(all), completed, len(notes), waits)
}

// copyUsers gives node to the ACL users of another running node, as ksaga
// dev set them up (with --redis-acl, every function connects as its own
// user, on every node).
func copyUsers(t *testing.T, c *testredis.Cluster, to int) {
	t.Helper()
	ctx := context.Background()
	from := (to + 1) % len(c.Nodes)
	src := redis.NewClient(&redis.Options{Addr: c.Nodes[from].Addr()})
	dst := redis.NewClient(&redis.Options{Addr: c.Nodes[to].Addr()})
	defer func() { _ = src.Close(); _ = dst.Close() }()
	users, err := src.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		f := strings.Fields(u) // user <name> <rules...>
		args := []any{"ACL", "SETUSER"}
		for _, x := range f[1:] {
			args = append(args, x)
		}
		if err := dst.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER %s: %v", f[1], err)
		}
	}
}

// busiest returns the k slots of node's with the most keys.
func busiest(t *testing.T, c *testredis.Cluster, node, k int) []int {
	t.Helper()
	ctx := context.Background()
	cl := redis.NewClient(&redis.Options{Addr: c.Nodes[node].Addr()})
	defer func() { _ = cl.Close() }()
	pipe := cl.Pipeline()
	counts := make([]*redis.IntCmd, 16384)
	for slot := range counts {
		counts[slot] = pipe.ClusterCountKeysInSlot(ctx, slot)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	slots := make([]int, 16384)
	for i := range slots {
		slots[i] = i
	}
	slices.SortFunc(slots, func(a, b int) int { return int(counts[b].Val() - counts[a].Val()) })
	return slots[:k]
}
