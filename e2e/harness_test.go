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
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var modes = []string{"choreography", "orchestration"}

// system is ksaga dev with its own redis-server.
type system struct {
	dev *devtest.Dev
	rdb *redis.Client
}

func start(t *testing.T, mode string, env []string, args ...string) system {
	t.Helper()
	srv := testredis.Start(t)
	dev := devtest.Start(t, env, append([]string{"--mode", mode, "--redis-url", srv.URL()}, args...)...)
	return system{dev: dev, rdb: srv.Client(t)}
}

type accepted struct {
	OrderID string `json:"order_id"`
	SagaID  string `json:"saga_id"`
}

// order places an order through the REST API and returns the 202's ids (or
// zero ids and the status when it is refused).
func (s system) order(t *testing.T, user int32, items ...ordersaga.LineItem) (accepted, int) {
	t.Helper()
	code, body := s.dev.Do(t, "order", http.MethodPost, "/orders", ordersaga.OrderRequest{UserID: user, Items: items})
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
			out.Steps += s.Step + "/" + s.Outcome + " "
		}
	}
	return out
}

func (s system) getOrder(t *testing.T, id string) (orderView, int) {
	t.Helper()
	code, body := s.dev.Do(t, "order", http.MethodGet, "/orders/"+id, nil)
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

func (s system) sagaCount(t *testing.T) int {
	t.Helper()
	keys, err := s.rdb.Keys(context.Background(), "ksaga:{*}").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

func item(sku string, qty int) ordersaga.LineItem { return ordersaga.LineItem{SKU: sku, Qty: qty} }
