package main

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

type env struct{ fntest.Step }

func setup(t *testing.T) env {
	t.Helper()
	return env{fntest.StartStep(t, run, true, map[string]string{"K_SERVICE": "inventory"})}
}

// startSaga creates a saga whose payment is authorised, at version 2.
func (e env) startSaga(t *testing.T, sagaID string, items ...ordersaga.Item) ordersaga.Order {
	t.Helper()
	o := ordersaga.Order{OrderID: "o-" + sagaID, UserID: 1, TotalCents: 1, Items: items}
	ctx := context.Background()
	for i, step := range []string{ordersaga.StepOrder, ordersaga.StepPayment} {
		_, err := e.Store.Apply(ctx, saga.Transition{SagaID: sagaID, EventSource: "/test", EventID: sagaID + step,
			Create: i == 0, Data: o.Marshal(), Deadline: time.Now().Add(time.Minute), Step: step,
			OnSuccess: saga.Outcome{Outcome: "done", Compensable: true}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func (e env) stock(t *testing.T, sku string) int {
	t.Helper()
	n, err := e.RDB.Get(context.Background(), ordersaga.StockKey(sku)).Int()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) post(t *testing.T, id, typ, sagaID string, version int64, o ordersaga.Order) fntest.Response {
	t.Helper()
	return e.PostSaga(t, id, typ, sagaID, version, o, true)
}

func TestReserve(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s1", ordersaga.Item{SKU: "book", Qty: 2}, ordersaga.Item{SKU: "book", Qty: 1}, ordersaga.Item{SKU: "lamp", Qty: 1})
	r := e.post(t, "ev1", ordersaga.PayAuthorized, "s1", 2, o)
	again := e.post(t, "ev1", ordersaga.PayAuthorized, "s1", 2, o)
	if r.Reply == nil || r.Reply.Type() != ordersaga.StockReserved || again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
		t.Fatalf("%d %s / %d %s", r.Status, r.Body, again.Status, again.Body)
	}
	if e.stock(t, "book") != 997 || e.stock(t, "lamp") != 0 {
		t.Fatalf("stock book %d lamp %d", e.stock(t, "book"), e.stock(t, "lamp"))
	}
	if ttl := e.RDB.TTL(context.Background(), ordersaga.ReservationKey("s1")).Val(); ttl < 24*time.Hour || ttl > 24*time.Hour+5*time.Minute {
		t.Fatalf("reservation ttl %v, want the saga timeout plus retention", ttl)
	}
}

func TestReserveIsAllOrNothing(t *testing.T) {
	tests := []struct {
		name   string
		items  []ordersaga.Item
		reason string
	}{
		{"two lamps, one in stock", []ordersaga.Item{{SKU: "book", Qty: 1}, {SKU: "lamp", Qty: 2}}, "insufficient stock for lamp"},
		{"unknown sku", []ordersaga.Item{{SKU: "book", Qty: 1}, {SKU: "nope", Qty: 1}}, "unknown sku nope"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			sagaID := "f" + strconv.Itoa(i)
			o := e.startSaga(t, sagaID, tt.items...)
			r := e.post(t, "ev", ordersaga.ReserveStock, sagaID, 2, o)
			if r.Reply == nil || r.Reply.Type() != ordersaga.StockFailed {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			var data ordersaga.Order
			_ = json.Unmarshal(r.Reply.Data(), &data)
			if data.Reason != tt.reason {
				t.Fatalf("reason %q, want %q", data.Reason, tt.reason)
			}
			if e.stock(t, "book") != 1000 || e.stock(t, "lamp") != 1 {
				t.Fatal("a failed reservation moved stock")
			}
			st, _ := e.Store.Get(context.Background(), sagaID)
			if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepInventory {
				t.Fatalf("saga %+v", st)
			}
		})
	}
}

func TestReleaseOnce(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s2", ordersaga.Item{SKU: "book", Qty: 5})
	e.post(t, "ev1", ordersaga.ReserveStock, "s2", 2, o)
	if _, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: "s2", EventSource: "/t", EventID: "fail", Step: "later",
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating}}); err != nil {
		t.Fatal(err)
	}
	r := e.post(t, "ev2", ordersaga.ReleaseStock, "s2", 4, o)
	e.post(t, "ev2", ordersaga.ReleaseStock, "s2", 4, o)
	e.post(t, "ev3", ordersaga.ReleaseStock, "s2", 0, o)
	if r.Reply == nil || r.Reply.Type() != ordersaga.StockReleased || e.stock(t, "book") != 1000 {
		t.Fatalf("%d %s, stock %d", r.Status, r.Body, e.stock(t, "book"))
	}
}

func TestReserveRefusedWhileCompensating(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s3", ordersaga.Item{SKU: "book", Qty: 1})
	if _, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: "s3", EventSource: "/t", EventID: "timeout", Step: "deadline",
		OnSuccess: saga.Outcome{Outcome: "expired", Status: saga.StatusCompensating}}); err != nil {
		t.Fatal(err)
	}
	r := e.post(t, "late", ordersaga.ReserveStock, "s3", 0, o)
	if r.Status != 200 || r.Reply != nil || e.stock(t, "book") != 1000 {
		t.Fatalf("late reserve: %d %q, stock %d", r.Status, r.Body, e.stock(t, "book"))
	}
}

// A release whose reservation record is gone (it expired before a late
// redrive) still puts the stock back: inventory is on the compensation
// stack, so the order's quantities were taken and not released. Once.
func TestReleaseWithoutItsRecordUsesTheOrder(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s9", ordersaga.Item{SKU: "book", Qty: 2}, ordersaga.Item{SKU: "book", Qty: 3})
	e.post(t, "ev1", ordersaga.ReserveStock, "s9", 2, o)
	if _, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: "s9", EventSource: "/t", EventID: "fail", Step: "later",
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating}}); err != nil {
		t.Fatal(err)
	}
	if got := e.stock(t, "book"); got != 995 {
		t.Fatalf("stock %d after the reservation", got)
	}
	if err := e.RDB.Del(context.Background(), ordersaga.ReservationKey("s9")).Err(); err != nil { // expired
		t.Fatal(err)
	}
	r := e.post(t, "ev2", ordersaga.ReleaseStock, "s9", 4, o)
	e.post(t, "ev2", ordersaga.ReleaseStock, "s9", 4, o) // redelivery
	e.post(t, "ev3", ordersaga.ReleaseStock, "s9", 0, o) // another release request
	if r.Reply == nil || r.Reply.Type() != ordersaga.StockReleased || e.stock(t, "book") != 1000 {
		t.Fatalf("%d %s, stock %d: want released once, from the order's quantities", r.Status, r.Body, e.stock(t, "book"))
	}
}
