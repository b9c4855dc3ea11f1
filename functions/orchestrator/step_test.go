package main

import (
	"context"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func TestDecide(t *testing.T) {
	o := &orchestrator{def: ordersaga.OrderSaga}
	running := saga.State{Status: saga.StatusRunning, Compensate: []string{"order"}}
	tests := []struct {
		name   string
		state  saga.State
		result string
		want   string
	}{
		{"created → authorize payment", running, ordersaga.Created, ordersaga.AuthorizePay},
		{"authorized → reserve stock", saga.State{Status: saga.StatusRunning, Compensate: []string{"payment", "order"}}, ordersaga.PayAuthorized, ordersaga.ReserveStock},
		{"reserved → confirm", saga.State{Status: saga.StatusRunning, Compensate: []string{"inventory", "payment", "order"}}, ordersaga.StockReserved, ordersaga.Confirm},
		{"confirmed → notify", saga.State{Status: saga.StatusCompleted}, ordersaga.Confirmed, ordersaga.SendNotification},
		{"notified after completion → completed", saga.State{Status: saga.StatusCompleted}, ordersaga.NotificationSent, ordersaga.SagaCompleted},
		{"payment failed → cancel order", saga.State{Status: saga.StatusCompensating, Compensate: []string{"order"}}, ordersaga.PayFailed, ordersaga.Cancel},
		{"stock failed → refund first (reverse order)", saga.State{Status: saga.StatusCompensating, Compensate: []string{"payment", "order"}}, ordersaga.StockFailed, ordersaga.RefundPay},
		{"confirm failed → release stock first", saga.State{Status: saga.StatusCompensating, Compensate: []string{"inventory", "payment", "order"}}, ordersaga.ConfirmFailed, ordersaga.ReleaseStock},
		{"released → refund", saga.State{Status: saga.StatusCompensating, Compensate: []string{"payment", "order"}}, ordersaga.StockReleased, ordersaga.RefundPay},
		{"refunded → cancel order", saga.State{Status: saga.StatusCompensating, Compensate: []string{"order"}}, ordersaga.PayRefunded, ordersaga.Cancel},
		{"cancelled → notify", saga.State{Status: saga.StatusCompensated}, ordersaga.Cancelled, ordersaga.SendNotification},
		{"notified after compensation → compensated", saga.State{Status: saga.StatusCompensated}, ordersaga.NotificationSent, ordersaga.SagaCompensated},
		{"rejected at start → compensated at once", saga.State{Status: saga.StatusCompensated}, ordersaga.Rejected, ordersaga.SagaCompensated},
		{"success after the saga moved on → nothing", saga.State{Status: saga.StatusCompensating, Compensate: []string{"payment", "order"}}, ordersaga.PayAuthorized, ""},
		{"notified after compensation failed → nothing", saga.State{Status: saga.StatusCompensationFailed}, ordersaga.NotificationSent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := o.decide(tt.state, tt.result)
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := o.decide(running, "io.ksaga.unrelated"); saga.Code(err) != saga.EInvalid {
		t.Fatalf("unknown result: %v", err)
	}
}

func TestCommandsOverHTTP(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	store, _ := redisstore.New(rdb, redisstore.Options{})
	fn := sagatest.Start(t, run, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "orchestrator"})
	o := ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1}}}
	if _, err := store.Apply(context.Background(), saga.Transition{SagaID: "s1", EventSource: ordersaga.SourceOrder, EventID: "c",
		Create: true, Data: o.Marshal(), Deadline: time.Now().Add(time.Minute), Step: ordersaga.StepOrder,
		OnSuccess: saga.Outcome{Outcome: "created", Compensable: true}}); err != nil {
		t.Fatal(err)
	}
	created := sagatest.Event("created-1", ordersaga.Created, o, saga.ExtCorrelationID, "s1", saga.ExtSagaVersion, "1")
	r1 := sagatest.Post(t, fn.URL, created, false)
	r2 := sagatest.Post(t, fn.URL, created, true) // redelivered, in structured mode
	if r1.Reply == nil || r1.Reply.Type() != ordersaga.AuthorizePay || r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() {
		t.Fatalf("%d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	if r1.Reply.Extensions()[saga.ExtSagaVersion] != "2" || r1.Reply.Source() != ordersaga.SourceOrchestrator || string(r1.Reply.Data()) != string(o.Marshal()) {
		t.Fatalf("command %v %s", r1.Reply.Extensions(), r1.Reply.Data())
	}
	// a stale result (the saga's version moved on) is acknowledged, no command
	stale := sagatest.Event("created-2", ordersaga.Created, o, saga.ExtCorrelationID, "s1", saga.ExtSagaVersion, "1")
	if r := sagatest.Post(t, fn.URL, stale, false); r.Status != 200 || r.Reply != nil {
		t.Fatalf("stale: %d %s", r.Status, r.Body)
	}
	// unknown saga: acknowledged, nothing sent
	ghost := sagatest.Event("g", ordersaga.Created, o, saga.ExtCorrelationID, "ghost", saga.ExtSagaVersion, "1")
	if r := sagatest.Post(t, fn.URL, ghost, false); r.Status != 200 || r.Reply != nil {
		t.Fatalf("ghost: %d %s", r.Status, r.Body)
	}
	if st, _ := store.Get(context.Background(), "s1"); st.Version != 2 || len(st.Steps) != 1 {
		t.Fatalf("the orchestrator must bump the version without writing history: %+v", st)
	}
}
