package console_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// trip is the definition the console is tested with: nothing in the
// console knows it.
var trip = &saga.Definition{
	Name:    "trip",
	Timeout: saga.Duration(time.Hour),
	Steps: []saga.StepDef{
		{Name: "flight", Command: "test.flight.book", Succeeded: "test.flight.booked", Failed: "test.flight.failed",
			Compensation: "test.flight.cancel", Compensated: "test.flight.cancelled"},
		{Name: "hotel", Command: "test.hotel.book", Succeeded: "test.hotel.booked", Failed: "test.hotel.failed",
			Compensation: "test.hotel.cancel", Compensated: "test.hotel.cancelled"},
		{Name: "car", Command: "test.car.book", Succeeded: "test.car.booked", Failed: "test.car.failed"},
	},
	Finally: &saga.StepDef{Name: "mail", Command: "test.mail.send", Succeeded: "test.mail.sent"},
}

// token is the console's action token in the tests.
const token = "s3cret-token"

// fixture is a console over a real redis-server, served on a loopback
// port, with a Broker stand-in for what its actions publish.
type fixture struct {
	URL    string
	RDB    *redis.Client
	Store  *redisstore.Store
	Kit    *sagatest.Kit
	Broker *sagatest.Broker
	Op     *ops.Operator
}

func newFixture(t testing.TB, views []console.View, defs ...*saga.Definition) *fixture {
	t.Helper()
	rdb := sagatest.Redis(t)
	return serve(t, rdb, views, defs...)
}

// serve runs a console on rdb as functions/console wires it, for defs
// (default: trip); its Kit walks the first.
func serve(t testing.TB, rdb *redis.Client, views []console.View, defs ...*saga.Definition) *fixture {
	t.Helper()
	if len(defs) == 0 {
		defs = []*saga.Definition{trip}
	}
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := ops.NewRegistry(defs...)
	if err != nil {
		t.Fatal(err)
	}
	broker := sagatest.NewBroker(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	op := &ops.Operator{Sagas: reg, Store: store, Source: "/ksaga/console", Logger: logger, Sink: knfunc.NewSink(broker.URL, nil)}
	api := &ops.API{Op: op, Authorize: console.TokenAuth(token), TraceURL: "http://traces.example/trace/{trace_id}", Watch: 50 * time.Millisecond}
	c, err := console.New(console.Options{API: api, Views: views, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range c.Routes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	kit := sagatest.New(t, defs[0], rdb)
	return &fixture{URL: srv.URL, RDB: rdb, Store: store, Kit: kit, Broker: broker, Op: op}
}

// get reads a path of the console and decodes its JSON into v (if not
// nil); it returns the response.
func (f *fixture) get(t testing.TB, path string, v any) *http.Response {
	t.Helper()
	resp, err := http.Get(f.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %s: %v", path, resp.StatusCode, b, err)
		}
	}
	return resp
}

// record returns a saga's record.
func (f *fixture) record(t testing.TB, id string) saga.State {
	t.Helper()
	st, err := f.Store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
