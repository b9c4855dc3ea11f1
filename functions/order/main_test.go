package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/functions/users/userserver"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// world is one test's world: a real redis-server with the demo fixture,
// the real users function, the order function under test (real HTTP), and
// the saga kit and an orchestrator on the same Redis to walk sagas to the
// event the order step acts on.
type world struct {
	kit  *sagatest.Kit
	rdb  *redis.Client
	fn   *sagatest.Func
	orch saga.Step
}

// newWorld starts the world; env overrides the order function's
// environment (a USERS_URL of its own: no users function is started).
func newWorld(t *testing.T, env map[string]string) *world {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	if err := ordersaga.LoadFixture(context.Background(), rdb, true); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{"REDIS_URL": url, "K_SERVICE": "order", "LOG_LEVEL": "debug"}
	if _, ok := env["USERS_URL"]; !ok {
		users := sagatest.Start(t, userserver.Setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "users"})
		cfg["USERS_URL"] = users.URL
		t.Cleanup(func() { users.Out.Lines(t) }) // every log line is JSON
	}
	for k, v := range env {
		cfg[k] = v
	}
	w := &world{kit: sagatest.New(t, ordersaga.Saga, rdb), rdb: rdb, fn: sagatest.Start(t, setup, cfg)}
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	w.orch = ops.NewOrchestrator(reg, w.kit.Store, "/ksaga/orchestrator", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { w.fn.Out.Lines(t) })
	return w
}

// post delivers e to the order function, in binary mode unless structured.
func (w *world) post(t *testing.T, e event.Event, structured bool) sagatest.Response {
	t.Helper()
	return sagatest.Post(t, w.fn.URL, e, structured)
}

// createCommand is a client's Create command for saga sagaID.
func createCommand(sagaID string, req ordersaga.OrderRequest) event.Event {
	return sagatest.Event("create-"+sagaID, ordersaga.Create, req, saga.ExtCorrelationID, sagaID)
}

// create starts saga sagaID through the order step and returns its
// io.ksaga.order.created event.
func (w *world) create(t *testing.T, sagaID string, req ordersaga.OrderRequest) event.Event {
	t.Helper()
	r := w.post(t, createCommand(sagaID, req), false)
	if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Created {
		t.Fatalf("create %s: %d %s", sagaID, r.Status, r.Body)
	}
	return *r.Reply
}

// order returns the order hash (empty if there is none).
func (w *world) order(t *testing.T, orderID string) map[string]string {
	t.Helper()
	m, err := w.rdb.HGetAll(context.Background(), ordersaga.OrderKey(orderID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// orderCount counts the order hashes.
func (w *world) orderCount(t *testing.T) int {
	t.Helper()
	keys, err := w.rdb.Keys(context.Background(), ordersaga.OrderKey("*")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// withData returns e with its data replaced by v (a forged notification).
func withData(t *testing.T, e event.Event, v any) event.Event {
	t.Helper()
	e = e.Clone()
	if err := e.SetData(event.ApplicationJSON, v); err != nil {
		t.Fatal(err)
	}
	return e
}

// decodeOrder decodes an event's data as the saga's order.
func decodeOrder(t *testing.T, e *event.Event) ordersaga.Order {
	t.Helper()
	var o ordersaga.Order
	if err := json.Unmarshal(e.Data(), &o); err != nil {
		t.Fatalf("event data %s: %v", e.Data(), err)
	}
	return o
}

// versionOf is an event's sagaversion.
func versionOf(t *testing.T, e event.Event) int64 {
	t.Helper()
	v, err := saga.RequireVersion(e)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sagaEvent is an event of saga sagaID at version, from the kit's source.
func sagaEvent(id, typ, sagaID string, version int64, data any) event.Event {
	return sagatest.Event(id, typ, data, saga.ExtCorrelationID, sagaID, saga.ExtSagaVersion, strconv.FormatInt(version, 10))
}

// downURL is the URL of a port nothing listens on.
func downURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}
