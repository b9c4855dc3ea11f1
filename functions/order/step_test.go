package main

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// bookOrder is alice buying one book.
func bookOrder() ordersaga.OrderRequest {
	return ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}}
}

func TestCreateWithoutCorrelationID(t *testing.T) {
	e := setup(t, nil)
	ev := fntest.Event("client-1", ordersaga.Create, bookOrder()) // a client POSTing to the broker
	r1, r2 := e.post(t, ev), e.post(t, ev)                        // and its redelivery
	if r1.Reply == nil || r1.Reply.Type() != ordersaga.Created {
		t.Fatalf("%d %s", r1.Status, r1.Body)
	}
	sagaID := sagaIDForEvent("/fntest", "client-1")
	if saga.SagaIDOf(*r1.Reply) != sagaID || r1.Reply.Extensions()[saga.ExtCausationID] != "client-1" {
		t.Fatalf("reply %v", r1.Reply)
	}
	if r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() || string(r2.Reply.Data()) != string(r1.Reply.Data()) {
		t.Fatalf("redelivery: %+v", r2)
	}
	if st := e.saga(t, sagaID); st.Version != 1 || st.Status != saga.StatusRunning {
		t.Fatalf("saga %+v", st)
	}
	if rec := e.order(t, orderIDFor(sagaID)); rec["status"] != "pending" || e.orderKeys(t) != 1 {
		t.Fatalf("order %v", rec)
	}
}

func TestCreateRejected(t *testing.T) {
	tests := map[string]struct {
		req    ordersaga.OrderRequest
		reason string
	}{
		"unknown user": {ordersaga.OrderRequest{UserID: 999, Items: bookOrder().Items}, "unknown user 999"},
		"unknown SKU":  {ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "nope", Qty: 1}}}, `unknown SKU "nope"`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			e := setup(t, nil)
			ev := fntest.Event("c1", ordersaga.Create, tt.req, saga.ExtCorrelationID, "s1")
			r := e.post(t, ev)
			if r.Status != http.StatusOK || r.Reply == nil || r.Reply.Type() != ordersaga.Rejected {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			var data ordersaga.Order
			if err := json.Unmarshal(r.Reply.Data(), &data); err != nil {
				t.Fatal(err)
			}
			if data.Reason != tt.reason || data.OrderID != orderIDFor("s1") {
				t.Fatalf("reply data %s", r.Reply.Data())
			}
			st := e.saga(t, "s1")
			if st.Status != saga.StatusCompensated || st.Reason != tt.reason || st.FailedStep != ordersaga.StepOrder || len(st.Compensate) != 0 {
				t.Fatalf("saga %+v", st)
			}
			rec := e.order(t, orderIDFor("s1"))
			if rec["status"] != "cancelled" || rec["reason"] != tt.reason {
				t.Fatalf("order %v", rec)
			}
			again := e.post(t, ev) // redelivery: the same reply, still one order
			if again.Reply == nil || again.Reply.ID() != r.Reply.ID() || string(again.Reply.Data()) != string(r.Reply.Data()) {
				t.Fatalf("redelivery %+v", again)
			}
			if n := e.orderKeys(t); n != 1 {
				t.Fatalf("%d orders", n)
			}
			g := e.request(t, http.MethodGet, "/orders/"+orderIDFor("s1"), "", nil)
			var view orderView
			g.decode(t, &view)
			if view.Status != "cancelled" || view.Reason != tt.reason || view.Saga == nil || view.Saga.Status != saga.StatusCompensated {
				t.Fatalf("GET %s", g.Body)
			}
		})
	}
}

// TestCreateAfterSagaExpiredIsRejected: a Create that arrives after its
// saga expired (its dedupe record is gone, the order is not) must not run
// the order's saga again: it is recorded rejected and the order is left as
// it was.
func TestCreateAfterSagaExpiredIsRejected(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "stale", bookOrder())
	if err := e.rdb.Del(t.Context(), redisstore.Key(sagaID)).Err(); err != nil {
		t.Fatal(err)
	}
	before := e.order(t, o.OrderID)
	r := e.post(t, fntest.Event("create-"+sagaID, ordersaga.Create, bookOrder(), saga.ExtCorrelationID, sagaID))
	if r.Status != http.StatusOK || r.Reply == nil || r.Reply.Type() != ordersaga.Rejected {
		t.Fatalf("replayed Create: %d %s", r.Status, r.Body)
	}
	st := e.saga(t, sagaID)
	if st.Status != saga.StatusCompensated || !strings.Contains(st.Reason, "order exists already") || len(st.Compensate) != 0 {
		t.Fatalf("saga %+v", st)
	}
	if after := e.order(t, o.OrderID); !maps.Equal(after, before) {
		t.Fatalf("order changed: %v → %v", before, after)
	}
}

func TestCreateInvalid(t *testing.T) {
	e := setup(t, nil)
	tests := map[string][]byte{
		"not JSON":      []byte(`{"user_id":`),
		"unknown field": []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 1}], "x": 1}`),
		"qty 0":         []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 0}]}`),
		"no items":      []byte(`{"user_id": 1}`),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.post(t, fntest.Event("bad-"+name, ordersaga.Create, data, saga.ExtCorrelationID, "bad-"+name))
			if r.Status != http.StatusBadRequest {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
		})
	}
	if r := e.post(t, fntest.Event("nodata", ordersaga.Create, nil)); r.Status != http.StatusBadRequest {
		t.Fatalf("no data: %d %s", r.Status, r.Body)
	}
	if n := e.orderKeys(t); n != 0 {
		t.Fatalf("%d orders", n)
	}
}

// reserve drives a created saga as payment and inventory would, and
// returns its version.
func (e env) reserve(t *testing.T, sagaID string) int64 {
	t.Helper()
	e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment,
		OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true}})
	return e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepInventory,
		OnSuccess: saga.Outcome{Outcome: "reserved", Compensable: true}}).Version
}

func TestConfirm(t *testing.T) {
	for _, typ := range []string{ordersaga.StockReserved, ordersaga.Confirm} { // choreography event, orchestration command
		t.Run(typ, func(t *testing.T) {
			e := setup(t, nil)
			sagaID, o := e.create(t, "s-"+typ, bookOrder())
			v := e.reserve(t, sagaID)
			ev := sagaEvent("ev-"+typ, typ, sagaID, v, o)
			r := e.post(t, ev)
			if r.Reply == nil || r.Reply.Type() != ordersaga.Confirmed {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			var data ordersaga.Order
			if err := json.Unmarshal(r.Reply.Data(), &data); err != nil || data.OrderID != o.OrderID || data.TotalCents != 1250 {
				t.Fatalf("reply data %s: %v", r.Reply.Data(), err)
			}
			if again := e.post(t, ev); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %+v", again)
			}
			if st := e.saga(t, sagaID); st.Status != saga.StatusCompleted || st.Version != v+1 {
				t.Fatalf("saga %+v", st)
			}
			if rec := e.order(t, o.OrderID); rec["status"] != "confirmed" {
				t.Fatalf("order %v", rec)
			}
		})
	}
}

func TestConfirmNeedsARunningSaga(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "s1", bookOrder())
	v := e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment,
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "insufficient funds"}}).Version
	r := e.post(t, sagaEvent("ev1", ordersaga.StockReserved, sagaID, v, o))
	if r.Status != http.StatusOK || r.Reply != nil || r.Body != "" {
		t.Fatalf("confirm of a compensating saga: %d %q", r.Status, r.Body)
	}
	if rec := e.order(t, o.OrderID); rec["status"] != "pending" {
		t.Fatalf("order %v", rec)
	}
}

func TestCancel(t *testing.T) {
	tests := map[string]struct {
		typ    string
		failed string // the step that failed the saga
		data   func(o ordersaga.Order) any
	}{
		// payment failed: its event carries the reason.
		ordersaga.PayFailed: {ordersaga.PayFailed, ordersaga.StepPayment, func(o ordersaga.Order) any { o.Reason = "insufficient funds"; return o }},
		// inventory failed, payment refunded: the reason is the saga's.
		ordersaga.PayRefunded: {ordersaga.PayRefunded, ordersaga.StepInventory, func(o ordersaga.Order) any { return o }},
		// the orchestrator's command.
		ordersaga.Cancel: {ordersaga.Cancel, ordersaga.StepPayment, func(o ordersaga.Order) any { return o }},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			e := setup(t, nil)
			sagaID, o := e.create(t, "s1", bookOrder())
			v := e.apply(t, saga.Transition{SagaID: sagaID, Step: tt.failed,
				OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "insufficient funds"}}).Version
			ev := sagaEvent("ev1", tt.typ, sagaID, v, tt.data(o))
			r := e.post(t, ev)
			if r.Reply == nil || r.Reply.Type() != ordersaga.Cancelled {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if again := e.post(t, ev); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %+v", again)
			}
			st := e.saga(t, sagaID)
			if st.Status != saga.StatusCompensated || len(st.Compensate) != 0 || st.FailedStep != tt.failed || st.Reason != "insufficient funds" {
				t.Fatalf("saga %+v", st)
			}
			if rec := e.order(t, o.OrderID); rec["status"] != "cancelled" || rec["reason"] != "insufficient funds" {
				t.Fatalf("order %v", rec)
			}
		})
	}
}

func TestCancelOnlyFromPending(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "s1", bookOrder())
	// An order that is no longer pending (here: confirmed by hand) is not
	// cancelled; the saga still records the compensation.
	if err := e.rdb.HSet(t.Context(), ordersaga.OrderKey(o.OrderID), "status", "confirmed").Err(); err != nil {
		t.Fatal(err)
	}
	v := e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment,
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "insufficient funds"}}).Version
	r := e.post(t, sagaEvent("ev1", ordersaga.Cancel, sagaID, v, o))
	if r.Reply == nil || r.Reply.Type() != ordersaga.Cancelled {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if rec := e.order(t, o.OrderID); rec["status"] != "confirmed" || rec["reason"] != "" {
		t.Fatalf("order %v", rec)
	}
}

func TestCancelNeedsACompensatingSaga(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "s1", bookOrder())
	for _, typ := range []string{ordersaga.Cancel, ordersaga.PayFailed} {
		r := e.post(t, sagaEvent("ev-"+typ, typ, sagaID, 1, o)) // the saga is running
		if r.Status != http.StatusOK || r.Reply != nil || r.Body != "" {
			t.Fatalf("%s on a running saga: %d %q", typ, r.Status, r.Body)
		}
	}
	if r := e.post(t, sagaEvent("ev-unknown", ordersaga.Cancel, "nope", 1, o)); r.Status != http.StatusOK || r.Reply != nil {
		t.Fatalf("cancel of an unknown saga: %d %q", r.Status, r.Body)
	}
	if rec := e.order(t, o.OrderID); rec["status"] != "pending" {
		t.Fatalf("order %v", rec)
	}
	if st := e.saga(t, sagaID); st.Status != saga.StatusRunning || st.Version != 1 {
		t.Fatalf("saga %+v", st)
	}
}

func TestEventWithoutSagaIDIsInvalid(t *testing.T) {
	e := setup(t, nil)
	for _, typ := range []string{ordersaga.Confirm, ordersaga.Cancel} {
		if r := e.post(t, fntest.Event("x-"+typ, typ, ordersaga.Order{})); r.Status != http.StatusBadRequest {
			t.Fatalf("%s without correlationid: %d %s", typ, r.Status, r.Body)
		}
	}
}
