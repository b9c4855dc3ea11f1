package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// world is one test's world: a real redis-server, the notification
// function under test (real HTTP, its relay running), and the saga kit and
// an orchestrator on the same Redis.
type world struct {
	kit  *sagatest.Kit
	rdb  *redis.Client
	fn   *sagatest.Func
	orch saga.Step
}

func newWorld(t *testing.T) *world {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	w := &world{kit: sagatest.New(t, ordersaga.Saga, rdb), rdb: rdb,
		fn: sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "notification", "K_REVISION": "notification-00001"})}
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	w.orch = ops.NewOrchestrator(reg, w.kit.Store, "/ksaga/orchestrator", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { w.fn.Out.Lines(t) }) // every log line is JSON
	return w
}

func order(id string) ordersaga.Order {
	return ordersaga.Order{OrderID: "o-" + id, UserID: 7, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1, PriceCents: 1250}}}
}

func (w *world) post(t *testing.T, e event.Event, structured bool) sagatest.Response {
	t.Helper()
	return sagatest.Post(t, w.fn.URL, e, structured)
}

// outbox returns every outbox entry's fields.
func (w *world) outbox(t *testing.T) []map[string]any {
	t.Helper()
	msgs, err := w.rdb.XRange(context.Background(), ordersaga.OutboxKey, "-", "+").Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range msgs {
		out = append(out, m.Values)
	}
	return out
}

// TestNotify: the final step records one outbox entry per saga, whose kind
// comes from the saga's status and whose reason is the saga's; the relay
// hands it to the sender. Confirmed and cancelled orders, on the
// choreography events and on the orchestrator's command; redeliveries add
// nothing.
func TestNotify(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		id     string
		until  string
		opts   []sagatest.Option
		status saga.Status
		kind   string
		reason string
	}{
		{"confirmed", ordersaga.Confirmed, nil, saga.StatusCompleted, "order_confirmed", ""},
		{"cancelled", ordersaga.Cancelled, []sagatest.Option{sagatest.Fail(ordersaga.StepPayment, "insufficient funds")},
			saga.StatusCompensated, "order_cancelled", "insufficient funds"},
		{"orchestrated", ordersaga.SendNotification, []sagatest.Option{sagatest.Orchestrated(w.orch), sagatest.Fail(ordersaga.StepInventory, "insufficient stock for book")},
			saga.StatusCompensated, "order_cancelled", "insufficient stock for book"},
	}
	for i, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			e := w.kit.Run(tt.id, order(tt.id), tt.until, tt.opts...)
			r := w.post(t, e, i%2 == 1)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.NotificationSent {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if again := w.post(t, e, i%2 == 0); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			entries := w.outbox(t)
			if len(entries) != i+1 {
				t.Fatalf("%d outbox entries, want %d: %v", len(entries), i+1, entries)
			}
			want := map[string]any{"saga_id": tt.id, "order_id": "o-" + tt.id, "user_id": "7", "kind": tt.kind, "reason": tt.reason}
			if got := entries[i]; !maps.Equal(got, want) {
				t.Fatalf("outbox entry %v, want %v", got, want)
			}
			st := w.kit.Record(tt.id)
			if last := st.Steps[len(st.Steps)-1]; st.Status != tt.status || last.Step != "notification" || last.Outcome != "sent" {
				t.Fatalf("saga %s %v", st.Status, sagatest.Outcomes(st))
			}
			sagatest.Eventually(t, 5*time.Second, func() error { // the relay hands it to the sender
				for _, l := range w.fn.Out.Lines(t) {
					if l["msg"] == "notification" && l["correlationid"] == tt.id && l["kind"] == tt.kind && l["reason"] == tt.reason {
						return nil
					}
				}
				return fmt.Errorf("no notification log line for %s", tt.id)
			})
		})
	}
}

// TestIntegrity: the notification is recorded only for the event the
// ended saga waits on, with what the saga recorded: a forged send while
// the saga runs, an awaited event whose data claims another order or
// reason, a replay into another saga and an event without sagaversion
// record nothing and leave the saga as it was.
func TestIntegrity(t *testing.T) {
	w := newWorld(t)
	w.kit.Run("running", order("running"), ordersaga.StockReserved)
	running := w.kit.Record("running")
	e := w.kit.Run("a", order("a"), ordersaga.Confirmed)
	w.kit.Run("b", order("b"), ordersaga.Confirmed)
	a, b := w.kit.Record("a"), w.kit.Record("b")

	tampered := func(o ordersaga.Order) event.Event {
		f := e.Clone()
		if err := f.SetData(event.ApplicationJSON, o); err != nil {
			t.Fatal(err)
		}
		return f
	}
	other := order("a")
	other.OrderID = "o-other"
	withReason := order("a")
	withReason.Reason = "your card was stolen, call us"
	replayed := e.Clone()
	replayed.SetExtension(saga.ExtCorrelationID, "b")
	noVersion := e.Clone()
	noVersion.SetExtension(saga.ExtSagaVersion, nil)
	forged := sagatest.Event("forged", ordersaga.SendNotification, order("running"),
		saga.ExtCorrelationID, "running", saga.ExtSagaVersion, strconv.FormatInt(running.Version, 10))
	for name, ev := range map[string]event.Event{
		"a send while running": forged, "another order": tampered(other), "a reason of its own": tampered(withReason),
		"a replay into another saga": replayed, "no sagaversion": noVersion,
	} {
		if r := w.post(t, ev, false); r.Status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	if got := w.outbox(t); len(got) != 0 {
		t.Fatalf("outbox %v", got)
	}
	for _, before := range []saga.State{running, a, b} {
		if after := w.kit.Record(before.ID); after.Version != before.Version || len(after.Steps) != len(before.Steps) {
			t.Fatalf("saga %s moved: %v → %v", before.ID, sagatest.Outcomes(before), sagatest.Outcomes(after))
		}
	}
	if r := w.post(t, e, false); r.Reply == nil || r.Reply.Type() != ordersaga.NotificationSent || len(w.outbox(t)) != 1 {
		t.Fatalf("the genuine event: %d %s, outbox %v", r.Status, r.Body, w.outbox(t))
	}
}
