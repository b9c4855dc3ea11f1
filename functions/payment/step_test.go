package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

type env struct{ fntest.Step }

func setup(t *testing.T) env {
	t.Helper()
	return env{fntest.StartStep(t, run, true, map[string]string{"K_SERVICE": "payment"})}
}

// startSaga creates a saga as the order step would, and returns its order.
func (e env) startSaga(t *testing.T, sagaID string, user int32, total int64) ordersaga.Order {
	t.Helper()
	o := ordersaga.Order{OrderID: "o-" + sagaID, UserID: user, TotalCents: total, Items: []ordersaga.Item{{SKU: "book", Qty: 1}}}
	_, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: sagaID, EventSource: "/test", EventID: "create-" + sagaID,
		Create: true, Data: o.Marshal(), Deadline: time.Now().Add(time.Minute), Step: ordersaga.StepOrder,
		OnSuccess: saga.Outcome{Outcome: "created", Compensable: true}})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (e env) balance(t *testing.T, user int32) int64 {
	t.Helper()
	n, err := e.RDB.Get(context.Background(), ordersaga.BalanceKey(user)).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) post(t *testing.T, id, typ, sagaID string, version int64, o ordersaga.Order) fntest.Response {
	t.Helper()
	return e.PostSaga(t, id, typ, sagaID, version, o, false)
}

func TestAuthorize(t *testing.T) {
	e := setup(t)
	for _, typ := range []string{ordersaga.Created, ordersaga.AuthorizePay} { // choreography event, orchestration command
		t.Run(typ, func(t *testing.T) {
			sagaID := "s-" + typ
			before := e.balance(t, 1)
			o := e.startSaga(t, sagaID, 1, 1250)
			r1 := e.post(t, "ev-"+typ, typ, sagaID, 1, o)
			r2 := e.post(t, "ev-"+typ, typ, sagaID, 1, o) // redelivery
			if r1.Reply == nil || r1.Reply.Type() != ordersaga.PayAuthorized || r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() {
				t.Fatalf("replies: %+v / %+v", r1, r2)
			}
			if got := e.balance(t, 1); got != before-1250 {
				t.Fatalf("balance %d, want %d (charged once)", got, before-1250)
			}
			if ttl := e.RDB.TTL(context.Background(), ordersaga.ChargeKey(sagaID)).Val(); ttl < 24*time.Hour || ttl > 24*time.Hour+5*time.Minute {
				t.Fatalf("charge record ttl %v, want the saga timeout plus retention", ttl)
			}
			var data ordersaga.Order
			_ = json.Unmarshal(r1.Reply.Data(), &data)
			if data.OrderID != o.OrderID || data.TotalCents != 1250 {
				t.Fatalf("reply data %s", r1.Reply.Data())
			}
		})
	}
}

func TestInsufficientFundsFailsTheSaga(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "bob", 2, 4999)
	r := e.post(t, "ev1", ordersaga.Created, "bob", 1, o)
	if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.PayFailed {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var data ordersaga.Order
	_ = json.Unmarshal(r.Reply.Data(), &data)
	if data.Reason != "insufficient funds" {
		t.Fatalf("reason %q", data.Reason)
	}
	if e.balance(t, 2) != 500 {
		t.Fatal("bob's balance moved")
	}
	st, _ := e.Store.Get(context.Background(), "bob")
	if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepPayment {
		t.Fatalf("saga %+v", st)
	}
}

func TestRefundExactlyOnce(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s1", 1, 9998)
	e.post(t, "ev1", ordersaga.Created, "s1", 1, o)
	// inventory fails: the saga compensates
	if _, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: "s1", EventSource: "/test", EventID: "inv", Step: ordersaga.StepInventory,
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "out of stock"}}); err != nil {
		t.Fatal(err)
	}
	r := e.post(t, "ev2", ordersaga.StockFailed, "s1", 3, o)
	if r.Reply == nil || r.Reply.Type() != ordersaga.PayRefunded {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.post(t, "ev2", ordersaga.StockFailed, "s1", 3, o) // redelivery
	e.post(t, "other", ordersaga.RefundPay, "s1", 0, o) // a second, different refund request
	if got := e.balance(t, 1); got != 100000 {
		t.Fatalf("balance %d, want 100000: refunded exactly once", got)
	}
	st, _ := e.Store.Get(context.Background(), "s1")
	if len(st.Compensate) != 1 || st.Compensate[0] != ordersaga.StepOrder {
		t.Fatalf("compensation stack %v, want [order]", st.Compensate)
	}
}

func TestRefundWithoutChargeIsANoop(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s2", 3, 100)
	e.post(t, "ev1", ordersaga.Created, "s2", 1, o) // carol has 0: fails, compensating
	r := e.post(t, "ev2", ordersaga.RefundPay, "s2", 2, o)
	if r.Reply == nil || r.Reply.Type() != ordersaga.PayRefunded || e.balance(t, 3) != 0 {
		t.Fatalf("%d %s balance %d", r.Status, r.Body, e.balance(t, 3))
	}
}

func TestBadDataIs400(t *testing.T) {
	e := setup(t)
	r := fntest.Post(t, e.URL, fntest.Event("x", ordersaga.Created, []byte(`{"order_id":1`), saga.ExtCorrelationID, "s"), false)
	if r.Status != 400 {
		t.Fatalf("status %d", r.Status)
	}
	r = fntest.Post(t, e.URL, fntest.Event("y", ordersaga.Created, ordersaga.Order{OrderID: "o"}, saga.ExtCorrelationID, "s"), false)
	if r.Status != 400 {
		t.Fatalf("zero total: status %d", r.Status)
	}
}

// A refund whose charge record is gone (it expired before a late redrive)
// still gives the money back: payment is on the compensation stack, so the
// order's total was charged and not refunded. Once, whatever the deliveries.
func TestRefundWithoutItsChargeRecordUsesTheOrder(t *testing.T) {
	e := setup(t)
	o := e.startSaga(t, "s3", 1, 9998)
	e.post(t, "ev1", ordersaga.Created, "s3", 1, o)       // alice is charged
	e.post(t, "cmd1", ordersaga.AuthorizePay, "s3", 0, o) // another event for the step, without a version: no second charge
	if _, err := e.Store.Apply(context.Background(), saga.Transition{SagaID: "s3", EventSource: "/test", EventID: "inv", Step: ordersaga.StepInventory,
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "out of stock"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.Del(context.Background(), ordersaga.ChargeKey("s3")).Err(); err != nil { // expired
		t.Fatal(err)
	}
	r := e.post(t, "ev2", ordersaga.StockFailed, "s3", 4, o)
	if r.Reply == nil || r.Reply.Type() != ordersaga.PayRefunded {
		t.Fatalf("%d %s: want the refund reply", r.Status, r.Body)
	}
	e.post(t, "ev2", ordersaga.StockFailed, "s3", 4, o) // redelivery
	e.post(t, "other", ordersaga.RefundPay, "s3", 0, o) // another refund request
	if got := e.balance(t, 1); got != 100000 {
		t.Fatalf("balance %d, want 100000: refunded once, from the order's total", got)
	}
	if st, _ := e.Store.Get(context.Background(), "s3"); len(st.Compensate) != 1 || st.Compensate[0] != ordersaga.StepOrder {
		t.Fatalf("compensation stack %v, want [order]", st.Compensate)
	}
	if n := e.RDB.Exists(context.Background(), ordersaga.ChargeKey("s3")).Val(); n != 0 {
		t.Fatalf("a charge record without expiry was written back")
	}
}
