package main

import (
	"context"
	"log/slog"
	"maps"
	"strconv"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// world is one test's world: a real redis-server with the demo fixture
// (alice 100000, bob 500, carol 0), the payment function under test (real
// HTTP), and the saga kit and an orchestrator on the same Redis.
type world struct {
	kit  *sagatest.Kit
	rdb  *redis.Client
	fn   *sagatest.Func
	orch saga.Step
}

func newWorld(t *testing.T) *world {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	if err := ordersaga.LoadFixture(context.Background(), rdb, true); err != nil {
		t.Fatal(err)
	}
	w := &world{kit: sagatest.New(t, ordersaga.Saga, rdb), rdb: rdb,
		fn: sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "payment"})}
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	w.orch = ops.NewOrchestrator(reg, w.kit.Store, "/ksaga/orchestrator", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { w.fn.Out.Lines(t) }) // every log line is JSON
	return w
}

// order is the saga's data: user buys books worth total.
func order(id string, user int32, total int64) ordersaga.Order {
	return ordersaga.Order{OrderID: "o-" + id, UserID: user, TotalCents: total,
		Items: []ordersaga.Item{{SKU: "book", Qty: int(total / 1250), PriceCents: 1250}}}
}

func (w *world) post(t *testing.T, e event.Event, structured bool) sagatest.Response {
	t.Helper()
	return sagatest.Post(t, w.fn.URL, e, structured)
}

// balances returns every balance by user id.
func (w *world) balances(t *testing.T) map[int32]int64 {
	t.Helper()
	out := map[int32]int64{}
	for _, u := range ordersaga.Fixture.Users {
		n, err := w.rdb.Get(context.Background(), ordersaga.BalanceKey(u.ID)).Int64()
		if err != nil {
			t.Fatal(err)
		}
		out[u.ID] = n
	}
	return out
}

// wantBalances fails the test unless the balances are the fixture's with
// the given changes.
func (w *world) wantBalances(t *testing.T, changes map[int32]int64) {
	t.Helper()
	want := map[int32]int64{}
	for _, u := range ordersaga.Fixture.Users {
		want[u.ID] = u.BalanceCents + changes[u.ID]
	}
	if got := w.balances(t); !maps.Equal(got, want) {
		t.Fatalf("balances %v, want %v", got, want)
	}
}

// charge is what payment recorded for saga id.
func (w *world) charge(t *testing.T, id string) (ordersaga.Charge, bool) {
	t.Helper()
	var c ordersaga.Charge
	ok, err := w.kit.Record(id).Output(ordersaga.StepPayment, &c)
	if err != nil {
		t.Fatal(err)
	}
	return c, ok
}

// sagaEvent is an event of saga sagaID at version.
func sagaEvent(id, typ, sagaID string, version int64, data any) event.Event {
	return sagatest.Event(id, typ, data, saga.ExtCorrelationID, sagaID, saga.ExtSagaVersion, strconv.FormatInt(version, 10))
}
