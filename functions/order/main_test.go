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
	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// env is one test's world: a real redis-server with the fixture, the real
// users function, a broker stand-in as K_SINK, and the order function.
type env struct {
	rdb   *redis.Client
	store *redisstore.Store
	users *fntest.Func
	sink  *fntest.Broker
	fn    *fntest.Func
}

// setup starts the world. extra overrides the order function's env (an
// empty K_SINK unsets it).
func setup(t *testing.T, extra map[string]string) env {
	t.Helper()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	if err := ordersaga.LoadFixture(context.Background(), rdb, true); err != nil {
		t.Fatal(err)
	}
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	users := fntest.Start(t, userserver.Run, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "users"})
	sink := fntest.NewBroker(t)
	cfg := map[string]string{
		"REDIS_URL": srv.URL(), "K_SERVICE": "order", "K_SINK": sink.URL,
		"USERS_URL": users.URL, "LOG_LEVEL": "debug",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	fn := fntest.Start(t, run, cfg)
	t.Cleanup(func() { // every log line of both functions is JSON
		fn.Out.Lines(t)
		users.Out.Lines(t)
	})
	return env{rdb, store, users, sink, fn}
}

// apiResponse is an answer of the REST API.
type apiResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// decode unmarshals the body into v.
func (r apiResponse) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
}

// request calls the order function's REST API.
func (e env) request(t *testing.T, method, path, body string, header map[string]string) apiResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, e.fn.URL+path, rd)
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
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json (body %q)", method, path, ct, b)
	}
	return apiResponse{resp.StatusCode, resp.Header, b}
}

// post sends a CloudEvent to the order function's CloudEvents endpoint.
func (e env) post(t *testing.T, ev event.Event) fntest.Response {
	t.Helper()
	return fntest.Post(t, e.fn.URL, ev, false)
}

// sagaEvent builds an event of the saga sagaID at version.
func sagaEvent(id, typ, sagaID string, version int64, data any) event.Event {
	return fntest.Event(id, typ, data, saga.ExtCorrelationID, sagaID, saga.ExtSagaVersion, strconv.FormatInt(version, 10))
}

// order returns the order hash.
func (e env) order(t *testing.T, orderID string) map[string]string {
	t.Helper()
	m, err := e.rdb.HGetAll(context.Background(), ordersaga.OrderKey(orderID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// saga returns the saga's state.
func (e env) saga(t *testing.T, sagaID string) saga.State {
	t.Helper()
	st, err := e.store.Get(context.Background(), sagaID)
	if err != nil {
		t.Fatalf("saga %s: %v", sagaID, err)
	}
	return st
}

// orderKeys counts the order hashes in Redis.
func (e env) orderKeys(t *testing.T) int {
	t.Helper()
	keys, err := e.rdb.Keys(context.Background(), ordersaga.OrderKey("*")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// create starts a saga through the order function, as the broker would
// deliver POST /orders' command, and returns the saga id and order id.
func (e env) create(t *testing.T, sagaID string, req ordersaga.OrderRequest) (string, ordersaga.Order) {
	t.Helper()
	r := e.post(t, fntest.Event("create-"+sagaID, ordersaga.Create, req, saga.ExtCorrelationID, sagaID))
	if r.Status != http.StatusOK || r.Reply == nil || r.Reply.Type() != ordersaga.Created {
		t.Fatalf("create %s: %d %s", sagaID, r.Status, r.Body)
	}
	var o ordersaga.Order
	if err := json.Unmarshal(r.Reply.Data(), &o); err != nil {
		t.Fatal(err)
	}
	return sagaID, o
}

// apply drives a saga as another step would.
func (e env) apply(t *testing.T, tr saga.Transition) saga.Result {
	t.Helper()
	tr.EventSource = "/test"
	if tr.EventID == "" {
		tr.EventID = "apply-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	res, err := e.store.Apply(context.Background(), tr)
	if err != nil || !res.Applied {
		t.Fatalf("apply %+v: %+v %v", tr, res, err)
	}
	return res
}
