package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

type env struct{ fntest.Step }

func setup(t *testing.T) env {
	t.Helper()
	return env{fntest.StartStep(t, run, false, map[string]string{"K_SERVICE": "notification", "K_REVISION": "notification-00001"})}
}

// finishedSaga creates a saga that ended with status st, at version 2.
func (e env) finishedSaga(t *testing.T, sagaID string, st saga.Status) ordersaga.Order {
	t.Helper()
	o := ordersaga.Order{OrderID: "o-" + sagaID, UserID: 1, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1}}}
	ctx := context.Background()
	for i, s := range []saga.Status{saga.StatusRunning, st} {
		_, err := e.Store.Apply(ctx, saga.Transition{SagaID: sagaID, EventSource: "/test", EventID: fmt.Sprint(sagaID, i),
			Create: i == 0, Data: o.Marshal(), Deadline: time.Now().Add(time.Minute), Step: ordersaga.StepOrder,
			OnSuccess: saga.Outcome{Outcome: "x", Status: s}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func (e env) post(t *testing.T, id, typ, sagaID string, version int64, o ordersaga.Order) fntest.Response {
	t.Helper()
	return e.PostSaga(t, id, typ, sagaID, version, o, false)
}

func (e env) outbox(t *testing.T, orderID string) []redis.XMessage {
	t.Helper()
	all, err := e.RDB.XRange(context.Background(), ordersaga.OutboxKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []redis.XMessage
	for _, m := range all {
		if m.Values["order_id"] == orderID {
			out = append(out, m)
		}
	}
	return out
}

func TestOneNotificationPerSaga(t *testing.T) {
	e := setup(t)
	tests := []struct {
		sagaID string
		status saga.Status
		typ    string
		kind   string
	}{
		{"ok", saga.StatusCompleted, ordersaga.Confirmed, "order_confirmed"},
		{"ko", saga.StatusCompensated, ordersaga.Cancelled, "order_cancelled"},
		{"orch", saga.StatusCompleted, ordersaga.SendNotification, "order_confirmed"},
	}
	for _, tt := range tests {
		t.Run(tt.sagaID, func(t *testing.T) {
			o := e.finishedSaga(t, tt.sagaID, tt.status)
			r := e.post(t, "ev", tt.typ, tt.sagaID, 2, o)
			e.post(t, "ev", tt.typ, tt.sagaID, 2, o)                          // redelivery
			e.post(t, "another", ordersaga.SendNotification, tt.sagaID, 0, o) // a different request for the same saga
			if r.Reply == nil || r.Reply.Type() != ordersaga.NotificationSent {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			msgs := e.outbox(t, o.OrderID)
			if len(msgs) != 1 || msgs[0].Values["kind"] != tt.kind {
				t.Fatalf("outbox %v", msgs)
			}
			st, _ := e.Store.Get(context.Background(), tt.sagaID)
			if st.Status != tt.status || st.Steps[len(st.Steps)-1].Step != ordersaga.StepNotification {
				t.Fatalf("saga %+v", st)
			}
			fntest.Eventually(t, 5*time.Second, func() error { // the relay hands it to the sender
				for _, l := range e.Out.Lines(t) {
					if l["msg"] == "notification" && l["order_id"] == o.OrderID && l["correlationid"] == tt.sagaID {
						return nil
					}
				}
				return fmt.Errorf("no notification log line for %s", o.OrderID)
			})
		})
	}
}

func TestNoNotificationWhileRunning(t *testing.T) {
	e := setup(t)
	o := e.finishedSaga(t, "run", saga.StatusRunning)
	if r := e.post(t, "ev", ordersaga.SendNotification, "run", 0, o); r.Status != 200 || r.Reply != nil {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if len(e.outbox(t, o.OrderID)) != 0 {
		t.Fatal("notified a running saga")
	}
}
