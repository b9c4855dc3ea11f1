package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var modes = []string{"choreography", "orchestration"}

// system is ksaga dev with its own redis-server, the demo data, and the
// saga store on it (sagas are read through the store, never raw keys).
type system struct {
	dev   *devtest.Dev
	rdb   redis.UniversalClient
	store *redisstore.Store
}

// consoleToken is the console's action token in the manifests.
const consoleToken = "change-me"

func start(t *testing.T, mode string, env []string, args ...string) system {
	t.Helper()
	srv := testredis.Start(t)
	return startOn(t, srv.URL(), srv.Client(t), mode, env, args...)
}

// startOn is start on the Redis at redisURL (rdb a client of it).
func startOn(t *testing.T, redisURL string, rdb redis.UniversalClient, mode string, env []string, args ...string) system {
	t.Helper()
	dev := devtest.Start(t, env, append([]string{"--mode", mode, "--redis-url", redisURL, "--seed", "deploy/demo/seed.redis"}, args...)...)
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return system{dev: dev, rdb: rdb, store: store}
}

// console calls the console's admin API, as an operator with the token.
func (s system) console(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	return s.dev.DoHeader(t, "console", method, path, nil, http.Header{"Authorization": {"Bearer " + consoleToken}, "Ksaga-Actor": {"e2e"}})
}

// sweep wakes the deadline sweeper now, as its PingSource does every 15 s:
// ksaga dev fires the PingSource (with its identity's token when sender
// identity is on) and answers once the sweeper has run its pass.
func (s system) sweep(t *testing.T) {
	t.Helper()
	if code := s.dev.FirePingSource(t, "sweeper-ping"); code != http.StatusAccepted {
		t.Fatalf("fire the sweeper's PingSource: %d", code)
	}
}

type accepted struct {
	OrderID string `json:"order_id"`
	SagaID  string `json:"saga_id"`
}

// order places an order through the REST API and returns the 202's ids (or
// zero ids and the status when it is refused).
func (s system) order(t *testing.T, user int32, items ...ordersaga.LineItem) (accepted, int) {
	t.Helper()
	code, body := s.dev.Do(t, "order-api", http.MethodPost, "/orders", ordersaga.OrderRequest{UserID: user, Items: items})
	var a accepted
	if code == http.StatusAccepted {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("202 body %s: %v", body, err)
		}
	}
	return a, code
}

type orderView struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	TotalCents int64  `json:"total_cents"`
	Items      []ordersaga.Item
	Saga       *struct {
		ID         string            `json:"id"`
		Status     saga.Status       `json:"status"`
		Reason     string            `json:"reason"`
		FailedStep string            `json:"failed_step"`
		Steps      []saga.StepRecord `json:"steps"`
	} `json:"saga"`
}

// outcome is an order's terminal state, comparable across modes.
type outcome struct {
	Order, Saga string
	Steps       string // step/outcome history
}

func (o orderView) outcome() outcome {
	out := outcome{Order: o.Status}
	if o.Saga != nil {
		out.Saga = string(o.Saga.Status)
		for _, s := range o.Saga.Steps {
			if s.Outcome != "accepted" { // every order placed through the API starts so
				out.Steps += s.Step + "/" + s.Outcome + " "
			}
		}
	}
	return out
}

func (s system) getOrder(t *testing.T, id string) (orderView, int) {
	t.Helper()
	code, body := s.dev.Do(t, "order-api", http.MethodGet, "/orders/"+id, nil)
	var v orderView
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("GET /orders/%s: %v: %s", id, err, body)
		}
	}
	return v, code
}

// settled waits until the order's saga is terminal and its notification (if
// any) recorded, and returns the order.
func (s system) settled(t *testing.T, id string, timeout time.Duration) orderView {
	t.Helper()
	var v orderView
	sagatest.Eventually(t, timeout, func() error {
		var code int
		v, code = s.getOrder(t, id)
		switch {
		case code != http.StatusOK:
			return fmt.Errorf("GET /orders/%s: %d", id, code)
		case v.Saga == nil || !v.Saga.Status.Terminal():
			return fmt.Errorf("order %s not settled: %+v", id, v.outcome())
		case v.Saga.Status != saga.StatusCompensationFailed && v.Saga.Steps[len(v.Saga.Steps)-1].Step != ordersaga.StepNotification:
			return fmt.Errorf("order %s: notification pending: %+v", id, v.outcome())
		}
		return nil
	})
	return v
}

func (s system) balance(t *testing.T, user int32) int64 {
	t.Helper()
	n, err := s.rdb.Get(context.Background(), ordersaga.BalanceKey(user)).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s system) stock(t *testing.T, sku string) int64 {
	t.Helper()
	n, err := s.rdb.Get(context.Background(), ordersaga.StockKey(sku)).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// notifications counts outbox entries per order id.
func (s system) notifications(t *testing.T) map[string]int {
	t.Helper()
	msgs, err := s.rdb.XRange(context.Background(), ordersaga.OutboxKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		id, _ := m.Values["order_id"].(string)
		out[id]++
	}
	return out
}

// stats are the order saga's counts by status, from the store's indexes.
func (s system) stats(t *testing.T) saga.Stats {
	t.Helper()
	st, err := s.store.Stats(context.Background(), ordersaga.Saga.Name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (s system) sagaCount(t *testing.T) int {
	t.Helper()
	n := 0
	for _, c := range s.stats(t).ByStatus {
		n += c
	}
	return n
}

func (s system) inFlight(t *testing.T) int {
	t.Helper()
	st := s.stats(t)
	return st.ByStatus[saga.StatusAccepted] + st.ByStatus[saga.StatusRunning] + st.ByStatus[saga.StatusCompensating]
}

// record is a saga's record, from the store.
func (s system) record(t *testing.T, id string) saga.State {
	t.Helper()
	st, err := s.store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("saga %s: %v", id, err)
	}
	return st
}

func item(sku string, qty int) ordersaga.LineItem { return ordersaga.LineItem{SKU: sku, Qty: qty} }
