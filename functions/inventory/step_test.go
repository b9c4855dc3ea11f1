package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"slices"
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
// (book 1000, lamp 1), the inventory function under test (real HTTP), and
// the saga kit and an orchestrator on the same Redis.
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
		fn: sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "inventory"})}
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	w.orch = ops.NewOrchestrator(reg, w.kit.Store, "/ksaga/orchestrator", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { w.fn.Out.Lines(t) }) // every log line is JSON
	return w
}

// order is the saga's data with items.
func order(id string, items ...ordersaga.Item) ordersaga.Order {
	return ordersaga.Order{OrderID: "o-" + id, UserID: 1, TotalCents: 1, Items: items}
}

func item(sku string, qty int) ordersaga.Item {
	return ordersaga.Item{SKU: sku, Qty: qty, PriceCents: 1}
}

func (w *world) post(t *testing.T, e event.Event, structured bool) sagatest.Response {
	t.Helper()
	return sagatest.Post(t, w.fn.URL, e, structured)
}

// wantStock fails the test unless the stock is the fixture's with the
// given changes.
func (w *world) wantStock(t *testing.T, changes map[string]int64) {
	t.Helper()
	want, got := map[string]int64{}, map[string]int64{}
	for _, p := range ordersaga.Fixture.Products {
		want[p.SKU] = p.Stock + changes[p.SKU]
		n, err := w.rdb.Get(context.Background(), ordersaga.StockKey(p.SKU)).Int64()
		if err != nil {
			t.Fatal(err)
		}
		got[p.SKU] = n
	}
	if !maps.Equal(got, want) {
		t.Fatalf("stock %v, want %v", got, want)
	}
}

// TestReserve: the order's items are taken from stock, lines of one SKU
// merged, once whatever the redeliveries; on the choreography event and
// on the orchestrator's command, in both HTTP modes.
func TestReserve(t *testing.T) {
	w := newWorld(t)
	tests := map[string]struct {
		until      string
		orch       bool
		structured bool
	}{
		"authorized, structured": {ordersaga.PayAuthorized, false, true},
		"command, binary":        {ordersaga.ReserveStock, true, false},
	}
	taken := int64(0)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id := "s-" + tt.until
			var opts []sagatest.Option
			if tt.orch {
				opts = append(opts, sagatest.Orchestrated(w.orch))
			}
			e := w.kit.Run(id, order(id, item("book", 2), item("book", 1), item("lamp", 1)), tt.until, opts...)
			r := w.post(t, e, tt.structured)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.StockReserved || r.Reply.Source() != "/ksaga/inventory" {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if again := w.post(t, e, !tt.structured); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			taken += 3
			w.wantStock(t, map[string]int64{"book": -taken, "lamp": -1})
			st := w.kit.Record(id)
			if st.Status != saga.StatusRunning || !slices.Equal(st.Compensate, []string{"inventory", "payment", "order"}) {
				t.Fatalf("saga %s %v, left to undo %v", st.Status, sagatest.Outcomes(st), st.Compensate)
			}
			// the one lamp is gone: the next order with a lamp fails
			if err := w.rdb.Set(t.Context(), ordersaga.StockKey("lamp"), 1, 0).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReserveIsAllOrNothing: an order that cannot be served whole takes
// nothing and fails the saga with the reason.
func TestReserveIsAllOrNothing(t *testing.T) {
	w := newWorld(t)
	for name, tt := range map[string]struct {
		items  []ordersaga.Item
		reason string
	}{
		"two lamps, one in stock": {[]ordersaga.Item{item("book", 1), item("lamp", 1), item("lamp", 1)}, "insufficient stock for lamp"},
		"an unknown SKU":          {[]ordersaga.Item{item("book", 1), item("nope", 1)}, "unknown sku nope"},
	} {
		t.Run(name, func(t *testing.T) {
			id := "s-" + name
			r := w.post(t, w.kit.Run(id, order(id, tt.items...), ordersaga.PayAuthorized), false)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.StockFailed {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			var data ordersaga.Order
			if err := json.Unmarshal(r.Reply.Data(), &data); err != nil || data.Reason != tt.reason {
				t.Fatalf("reply data %s, want reason %q", r.Reply.Data(), tt.reason)
			}
			w.wantStock(t, nil)
			st := w.kit.Record(id)
			if st.Status != saga.StatusCompensating || st.FailedStep != "inventory" || st.Reason != tt.reason ||
				!slices.Equal(st.Compensate, []string{"payment", "order"}) {
				t.Fatalf("saga %+v", st)
			}
		})
	}
}

// TestRelease: when the confirm fails, inventory puts back exactly what it
// took — even when other orders took stock meanwhile — once; on the
// choreography event and on the orchestrator's command.
func TestRelease(t *testing.T) {
	w := newWorld(t)
	for name, opts := range map[string][]sagatest.Option{
		ordersaga.ConfirmFailed: nil,
		ordersaga.ReleaseStock:  {sagatest.Orchestrated(w.orch)},
	} {
		t.Run(name, func(t *testing.T) {
			if err := ordersaga.LoadFixture(t.Context(), w.rdb, true); err != nil {
				t.Fatal(err)
			}
			id := "s-" + name
			reserve := ordersaga.PayAuthorized
			if opts != nil {
				reserve = ordersaga.ReserveStock
			}
			r := w.post(t, w.kit.Run(id, order(id, item("book", 4), item("lamp", 1), item("book", 1)), reserve, opts...), false)
			if r.Reply == nil || r.Reply.Type() != ordersaga.StockReserved {
				t.Fatalf("reserve: %d %s", r.Status, r.Body)
			}
			// another order takes books meanwhile
			if err := w.rdb.DecrBy(t.Context(), ordersaga.StockKey("book"), 10).Err(); err != nil {
				t.Fatal(err)
			}
			e := w.kit.Continue(*r.Reply, name, append(opts, sagatest.Fail(ordersaga.Confirm, "confirm failed"))...)
			rel := w.post(t, e, true)
			if rel.Status != 200 || rel.Reply == nil || rel.Reply.Type() != ordersaga.StockReleased {
				t.Fatalf("release: %d %s", rel.Status, rel.Body)
			}
			if again := w.post(t, e, false); again.Reply == nil || again.Reply.ID() != rel.Reply.ID() {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			w.wantStock(t, map[string]int64{"book": -10})
			st := w.kit.Record(id)
			if st.Status != saga.StatusCompensating || !slices.Equal(st.Compensate, []string{"payment", "order"}) ||
				st.Steps[len(st.Steps)-1].Outcome != "released" {
				t.Fatalf("saga %s %v, left to undo %v", st.Status, sagatest.Outcomes(st), st.Compensate)
			}
		})
	}
}

// TestIntegrity: inventory takes or puts back stock only on the event its
// saga waits on, as the saga's record says: forged items, a release the
// saga did not emit (while running, or while payment is next to undo), a
// replay into another saga and an event without sagaversion move no
// stock and leave the saga as it was.
func TestIntegrity(t *testing.T) {
	w := newWorld(t)
	e := w.kit.Run("s1", order("s1", item("book", 2)), ordersaga.PayAuthorized)
	w.kit.Run("s2", order("s2", item("book", 5)), ordersaga.PayAuthorized)
	s1, s2 := w.kit.Record("s1"), w.kit.Record("s2")
	forged := e.Clone()
	if err := forged.SetData(event.ApplicationJSON, order("s1", item("book", 900))); err != nil {
		t.Fatal(err)
	}
	replayed := e.Clone()
	replayed.SetExtension(saga.ExtCorrelationID, "s2")
	noVersion := e.Clone()
	noVersion.SetExtension(saga.ExtSagaVersion, nil)
	release := sagatest.Event("forged-release", ordersaga.ReleaseStock, order("s1", item("book", 2)),
		saga.ExtCorrelationID, "s1", saga.ExtSagaVersion, strconv.FormatInt(s1.Version, 10))
	for name, ev := range map[string]event.Event{
		"forged items": forged, "a replay into another saga": replayed, "no sagaversion": noVersion, "a release while running": release,
	} {
		if r := w.post(t, ev, false); r.Status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	w.wantStock(t, nil)
	w.kit.Unchanged(s1)
	w.kit.Unchanged(s2)

	// s3 failed at inventory: payment, not inventory, is next to undo
	w.kit.Run("s3", order("s3", item("book", 1)), ordersaga.StockFailed, sagatest.Fail(ordersaga.StepInventory, "out of stock"))
	s3 := w.kit.Record("s3")
	release = sagatest.Event("forged-release-s3", ordersaga.ReleaseStock, order("s3", item("book", 1)),
		saga.ExtCorrelationID, "s3", saga.ExtSagaVersion, strconv.FormatInt(s3.Version, 10))
	if r := w.post(t, release, false); r.Status != http.StatusBadRequest {
		t.Fatalf("a release of a saga that reserved nothing: %d %s", r.Status, r.Body)
	}
	w.wantStock(t, nil)
	w.kit.Unchanged(s3)
}
