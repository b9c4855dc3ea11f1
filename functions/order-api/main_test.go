package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/functions/users/userserver"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// world is one test's world: a real redis-server with the demo fixture,
// the real users function, a Broker stand-in as K_SINK, the order-api
// function under test (real HTTP), and the saga kit on the same Redis to
// walk the sagas it accepts.
type world struct {
	kit    *sagatest.Kit
	rdb    *redis.Client
	broker *sagatest.Broker
	fn     *sagatest.Func
}

// newWorld starts the world; env overrides the function's environment (an
// empty K_SINK unsets it).
func newWorld(t *testing.T, env map[string]string) *world {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	if err := ordersaga.LoadFixture(context.Background(), rdb, true); err != nil {
		t.Fatal(err)
	}
	users := sagatest.Start(t, userserver.Setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "users"})
	broker := sagatest.NewBroker(t)
	cfg := map[string]string{"REDIS_URL": url, "K_SERVICE": "order-api", "K_SINK": broker.URL, "USERS_URL": users.URL, "LOG_LEVEL": "debug"}
	for k, v := range env {
		cfg[k] = v
	}
	w := &world{kit: sagatest.New(t, ordersaga.Saga, rdb), rdb: rdb, broker: broker, fn: sagatest.Start(t, setup, cfg)}
	t.Cleanup(func() { // every log line of both functions is JSON
		w.fn.Out.Lines(t)
		users.Out.Lines(t)
	})
	return w
}

// response is an answer of the REST API.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// decode unmarshals the body into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
}

// request calls the API; every answer must be JSON.
func (w *world) request(t *testing.T, method, path, body string, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, w.fn.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json (%d %q)", method, path, ct, resp.StatusCode, b)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// place POSTs an order (with an Idempotency-Key unless key is "") and
// returns the ids it was accepted with and the Create command the broker
// got for it.
func (w *world) place(t *testing.T, body, key string) (accepted, event.Event) {
	t.Helper()
	var h map[string]string
	if key != "" {
		h = map[string]string{"Idempotency-Key": key}
	}
	sent := len(w.broker.Received())
	r := w.request(t, http.MethodPost, "/orders", body, h)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %s", r.Status, r.Body)
	}
	var a accepted
	r.decode(t, &a)
	got := w.broker.Received()
	if len(got) != sent+1 {
		t.Fatalf("the broker got %d events, want %d", len(got), sent+1)
	}
	return a, got[sent].Event
}

// start runs the accepted saga's start as the order step does: the saga
// runs with the priced order as its data, and the order is written
// pending (see writeOrder). It returns the io.ksaga.order.created event.
func (w *world) start(t *testing.T, a accepted, cmd event.Event, o ordersaga.Order) event.Event {
	t.Helper()
	o.OrderID = a.OrderID
	e := w.kit.Run(a.SagaID, o, ordersaga.Created, sagatest.StartEvent(cmd))
	w.writeOrder(t, a, o, "pending", "")
	return e
}

// writeOrder writes the order record as the order step's effects do
// (functions/order: order.write, order.confirm, order.cancel): the
// fields GET /orders/{id} reads.
func (w *world) writeOrder(t *testing.T, a accepted, o ordersaga.Order, status, reason string) {
	t.Helper()
	items, err := json.Marshal(o.Items)
	if err != nil {
		t.Fatal(err)
	}
	fields := []any{"user_id", o.UserID, "items", string(items), "total_cents", o.TotalCents, "status", status,
		"saga_id", a.SagaID, "created_at", time.Now().UTC().Format(time.RFC3339Nano)}
	if reason != "" {
		fields = append(fields, "reason", reason)
	}
	if err := w.rdb.HSet(context.Background(), ordersaga.OrderKey(a.OrderID), fields...).Err(); err != nil {
		t.Fatal(err)
	}
}

// sagas lists every saga of the order saga's definition.
func (w *world) sagas(t *testing.T) []saga.State {
	t.Helper()
	p, err := w.kit.Store.List(context.Background(), saga.Query{Saga: ordersaga.Saga.Name, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return p.Sagas
}

// books is alice's priced order of n books.
func books(n int) ordersaga.Order {
	return ordersaga.Order{UserID: 1, TotalCents: int64(n) * 1250, Items: []ordersaga.Item{{SKU: "book", Qty: n, PriceCents: 1250}}}
}

// booksBody is the request body of alice's order of n books.
func booksBody(n int) string {
	return `{"user_id": 1, "items": [{"sku": "book", "qty": ` + strconv.Itoa(n) + `}]}`
}
