package orders

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// mgets counts the MGET commands a client sends.
type mgets struct {
	mu sync.Mutex
	n  int
}

func (m *mgets) count() int { m.mu.Lock(); defer m.mu.Unlock(); return m.n }

func (m *mgets) DialHook(next redis.DialHook) redis.DialHook { return next }
func (m *mgets) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "mget" {
			m.mu.Lock()
			m.n++
			m.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (m *mgets) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCatalogueRemembersKnownPrices: a known price is read once per ttl, a
// change is seen after ttl, an unknown SKU is read every time (so a SKU
// added to the catalogue sells at once), and ttl 0 reads every time.
func TestCatalogueRemembersKnownPrices(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	rdb.Set(ctx, ordersaga.CatalogKey("a"), "100", 0)
	rdb.Set(ctx, ordersaga.CatalogKey("b"), "250", 0)

	counted := srv.Client(t)
	reads := &mgets{}
	counted.AddHook(reads)
	c := newCatalogue(counted, 5*time.Second)
	now := time.Unix(1_000_000, 0)
	c.now = func() time.Time { return now }

	check := func(skus []string, wantCents []int64, wantKnown []bool, wantReads int) {
		t.Helper()
		cents, known, err := c.lookup(ctx, skus)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cents, wantCents) || !slices.Equal(known, wantKnown) {
			t.Fatalf("lookup(%v) = %v %v, want %v %v", skus, cents, known, wantCents, wantKnown)
		}
		if got := reads.count(); got != wantReads {
			t.Fatalf("after lookup(%v): %d MGETs, want %d", skus, got, wantReads)
		}
	}
	check([]string{"a", "b"}, []int64{100, 250}, []bool{true, true}, 1)
	check([]string{"b", "a", "a"}, []int64{250, 100, 100}, []bool{true, true, true}, 1) // remembered

	rdb.Set(ctx, ordersaga.CatalogKey("a"), "120", 0)
	check([]string{"a"}, []int64{100}, []bool{true}, 1) // within ttl: the old price
	now = now.Add(5 * time.Second)
	check([]string{"a"}, []int64{120}, []bool{true}, 2) // expired: read again

	check([]string{"new", "b"}, []int64{0, 250}, []bool{false, true}, 3) // unknown: read
	rdb.Set(ctx, ordersaga.CatalogKey("new"), "7", 0)
	check([]string{"new"}, []int64{7}, []bool{true}, 4) // added: sold at once

	off := newCatalogue(counted, 0)
	for range 2 {
		if _, _, err := off.lookup(ctx, []string{"b"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reads.count(); got != 6 {
		t.Errorf("ttl 0: %d MGETs in all, want 6", got)
	}
}

// TestCatalogueErrors: a bad price is an error, and Redis being down is
// transient (503, retried); neither is remembered.
func TestCatalogueErrors(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	rdb.Set(ctx, ordersaga.CatalogKey("bad"), "cheap", 0)
	rdb.Set(ctx, ordersaga.CatalogKey("neg"), "-1", 0)
	c := newCatalogue(rdb, time.Minute)
	for _, sku := range []string{"bad", "neg"} {
		if _, _, err := c.lookup(ctx, []string{sku}); err == nil {
			t.Errorf("%s: no error", sku)
		}
	}
	rdb.Set(ctx, ordersaga.CatalogKey("bad"), "5", 0)
	if cents, _, err := c.lookup(ctx, []string{"bad"}); err != nil || cents[0] != 5 {
		t.Errorf("fixed price: %v %v", cents, err)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	_, _, err := newCatalogue(down, time.Minute).lookup(ctx, []string{"x"})
	if saga.Code(err) != saga.ETransient {
		t.Errorf("redis down: %v (code %q), want transient", err, saga.Code(err))
	}
}
