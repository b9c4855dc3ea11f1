package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestRedisCrashesLoseNoAcceptedOrder is the chaos monkey: orders keep
// coming while redis-server (AOF, appendfsync always) is killed -9 twice
// and restarted on its data. Every order answered 202 ends confirmed or
// cancelled, and the books balance over every saga the store holds —
// including orders whose answer was lost in the outage: each user's
// balance is its initial balance minus exactly what completed sagas
// charged, and each SKU's stock its initial stock minus what they took.
// What carries the sagas through: the broker claims back the entries whose
// delivery the crash cut off, accepted orders are recorded before their
// command is sent, and the sweeper (its pings fired by the test, its nudge
// shortened) sends again whatever a saga waited on when Redis went away.
func TestRedisCrashesLoseNoAcceptedOrder(t *testing.T) {
	t.Parallel()
	// an ACL file, as a cluster's Redis has: the functions' users (ksaga
	// dev saves them there) come back with the data after each crash
	aclfile := filepath.Join(t.TempDir(), "users.acl")
	if err := os.WriteFile(aclfile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testredis.Start(t, testredis.Option{"--appendonly", "yes", "--appendfsync", "always", "--aclfile", aclfile})
	dev := devtest.Start(t, nil, "--redis-url", srv.URL(), "--seed", "deploy/demo/seed.redis",
		"--env", "KSAGA_NUDGE_AFTER=2s", "--duplicate-deliveries=0.2")
	rdb := srv.Client(t)
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := system{dev: dev, rdb: rdb, store: store}
	ctx := context.Background()

	// the load: orders from 6 clients until told to stop
	var (
		mu       sync.Mutex
		accepted []accepted
		refused  atomic.Int64 // answered anything but 202: an outage
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for c := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 99))
			for {
				select {
				case <-stop:
					return
				default:
				}
				req := ordersaga.OrderRequest{UserID: int32(1 + rng.IntN(3)), Items: []ordersaga.LineItem{item([]string{"book", "lamp"}[rng.IntN(2)], 1+rng.IntN(2))}}
				a, code := s.orderQuietly(req)
				if code != http.StatusAccepted {
					refused.Add(1)
					continue
				}
				mu.Lock()
				accepted = append(accepted, a)
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	// crash twice, each time once orders flow, and let it come back once
	// the outage is seen (an order refused)
	for crash := 1; crash <= 2; crash++ {
		before := count()
		sagatest.Eventually(t, 60*time.Second, func() error {
			if n := count(); n < before+20 {
				return fmt.Errorf("crash %d: %d orders accepted so far", crash, n)
			}
			return nil
		})
		refusedBefore := refused.Load()
		srv.Stop() // SIGKILL
		sagatest.Eventually(t, 30*time.Second, func() error {
			if refused.Load() == refusedBefore {
				return fmt.Errorf("crash %d: no order refused yet", crash)
			}
			return nil
		})
		srv.Restart()
		t.Logf("crash %d: redis-server killed after %d accepted orders, restarted", crash, count())
	}
	before := count()
	sagatest.Eventually(t, 60*time.Second, func() error { // orders flow again
		if count() < before+20 {
			return fmt.Errorf("%d orders accepted since the last restart", count()-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()

	// every accepted order ends confirmed or cancelled
	ping := func() { s.sweep(t) }
	for _, a := range accepted {
		var v orderView
		sagatest.Eventually(t, 3*time.Minute, func() error {
			var code int
			v, code = s.getOrder(t, a.OrderID)
			if code == http.StatusOK && v.Saga != nil && v.Saga.Status.Terminal() && (v.Status == "confirmed" || v.Status == "cancelled") {
				return nil
			}
			ping() // the sweeper sends again what the saga waits on, once due
			return fmt.Errorf("order %s: %d %s (saga %v)", a.OrderID, code, v.Status, v.Saga)
		})
		want := map[string]saga.Status{"confirmed": saga.StatusCompleted, "cancelled": saga.StatusCompensated}[v.Status]
		if v.Saga.Status != want {
			t.Errorf("order %s is %s but its saga is %s", a.OrderID, v.Status, v.Saga.Status)
		}
	}

	// A saga stored whose 202 was lost in a crash (the client saw an error)
	// is not among the accepted orders: the sweeper ends it too.
	sagatest.Eventually(t, 3*time.Minute, func() error {
		var open []string
		for cursor := ""; ; {
			p, err := store.List(ctx, saga.Query{Saga: ordersaga.Saga.Name, Limit: 500, Cursor: cursor})
			if err != nil {
				return err
			}
			for _, st := range p.Sagas {
				if !st.Status.Terminal() {
					open = append(open, st.ID+" "+string(st.Status))
				}
			}
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		if len(open) > 0 {
			ping()
			return fmt.Errorf("%d sagas not ended: %v", len(open), open)
		}
		return nil
	})

	if strings.Contains(dev.Log(), "ACL users were gone") {
		t.Error("redis-server came back without the functions' users: they were not saved to its ACL file")
	}

	// the books, over every saga in the store
	charged := map[int32]int64{}
	taken := map[string]int64{}
	sagas := 0
	for cursor := ""; ; {
		p, err := store.List(ctx, saga.Query{Saga: ordersaga.Saga.Name, Limit: 500, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range p.Sagas {
			sagas++
			if !st.Status.Terminal() {
				t.Errorf("saga %s is still %s", st.ID, st.Status)
				continue
			}
			if st.Status != saga.StatusCompleted {
				continue // compensated: charged and refunded, taken and put back
			}
			var c ordersaga.Charge
			if ok, err := st.Output(ordersaga.StepPayment, &c); !ok || err != nil {
				t.Errorf("completed saga %s has no charge recorded: %v", st.ID, err)
				continue
			}
			charged[c.UserID] += c.AmountCents
			var o ordersaga.Order
			if err := json.Unmarshal(st.Data, &o); err != nil {
				t.Fatal(err)
			}
			for _, it := range o.Items {
				taken[it.SKU] += int64(it.Qty)
			}
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	for _, u := range ordersaga.Fixture.Users {
		if got, want := s.balance(t, u.ID), u.BalanceCents-charged[u.ID]; got != want {
			t.Errorf("%s: balance %d, want %d (initial %d - charged %d): money not conserved", u.Username, got, want, u.BalanceCents, charged[u.ID])
		}
	}
	for _, p := range ordersaga.Fixture.Products {
		if got, want := s.stock(t, p.SKU), p.Stock-taken[p.SKU]; got != want || got < 0 {
			t.Errorf("%s: stock %d, want %d (initial %d - taken %d)", p.SKU, got, want, p.Stock, taken[p.SKU])
		}
	}
	t.Logf("%d orders accepted, %d refused during the outages, %d sagas in the store", len(accepted), refused.Load(), sagas)
}

// orderQuietly places an order, reporting a failed request as status 0
// (the outage) instead of failing the test.
func (s system) orderQuietly(req ordersaga.OrderRequest) (accepted, int) {
	code, body, err := s.dev.TryDo("order-api", http.MethodPost, "/orders", req)
	if err != nil || code != http.StatusAccepted {
		return accepted{}, code
	}
	var a accepted
	if json.Unmarshal(body, &a) != nil {
		return accepted{}, 0
	}
	return a, code
}
