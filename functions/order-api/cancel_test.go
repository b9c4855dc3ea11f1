package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// cancel POSTs /orders/{id}/cancel.
func (w *world) cancel(t *testing.T, orderID string) (response, apiError) {
	t.Helper()
	r := w.request(t, http.MethodPost, "/orders/"+orderID+"/cancel", "", nil)
	var body apiError
	if r.Status >= 400 {
		r.decode(t, &body)
	}
	return r, body
}

// TestCancelOrder: cancelling an order whose saga runs aborts the saga at
// the step it waits on — recorded with who asked — and sends that step's
// failure event, so the saga compensates as after any failure. A repeated
// cancel answers 202 again and sends the same event while the saga has
// not moved, nothing once it has.
func TestCancelOrder(t *testing.T) {
	w := newWorld(t, nil)
	a, cmd := w.place(t, booksBody(1), "")
	w.start(t, a, cmd, books(1))

	r, _ := w.cancel(t, a.OrderID)
	var got accepted
	r.decode(t, &got)
	if r.Status != http.StatusAccepted || got != a || r.Header.Get("Location") != "/orders/"+a.OrderID {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	sent := w.broker.Events()
	if len(sent) != 2 {
		t.Fatalf("%d events sent, want the Create and the failure", len(sent))
	}
	failure := sent[1]
	st := w.kit.Record(a.SagaID)
	if failure.Type() != ordersaga.PayFailed || saga.SagaIDOf(failure) != a.SagaID || failure.Source() != ordersaga.SourceOrderAPI ||
		failure.Extensions()[saga.ExtSagaVersion] != "3" || st.Next == nil || st.Next.ID != failure.ID() {
		t.Fatalf("sent %s; the saga waits on %+v", failure, st.Next)
	}
	last := st.Steps[len(st.Steps)-1]
	if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepPayment || st.Reason != "cancelled by request, waiting on the payment step" ||
		last.Outcome != "cancel_requested" || last.Actor != "user 1" {
		t.Fatalf("saga %s at %s (%q), last %+v", st.Status, st.FailedStep, st.Reason, last)
	}

	if r, _ := w.cancel(t, a.OrderID); r.Status != http.StatusAccepted { // a retry
		t.Fatalf("repeated cancel: %d %s", r.Status, r.Body)
	}
	if sent := w.broker.Events(); len(sent) != 3 || sent[2].ID() != failure.ID() || w.kit.Record(a.SagaID).Version != st.Version {
		t.Fatalf("repeated cancel sent %d events / moved the saga", len(sent))
	}

	// the failure event reaches the order step: the saga compensates
	w.kit.Continue(failure, ordersaga.NotificationSent)
	if st := w.kit.Record(a.SagaID); st.Status != saga.StatusCompensated || st.Reason != "cancelled by request, waiting on the payment step" {
		t.Fatalf("saga %s %q", st.Status, st.Reason)
	}
	if r, _ := w.cancel(t, a.OrderID); r.Status != http.StatusAccepted || len(w.broker.Events()) != 3 {
		t.Fatalf("cancel after the compensation: %d %s, %d events", r.Status, r.Body, len(w.broker.Events()))
	}
}

// TestCancelBeforeTheStart: an order whose saga has not started is
// cancelled at once: its saga ends compensated, and its Create, when it
// comes, starts nothing.
func TestCancelBeforeTheStart(t *testing.T) {
	w := newWorld(t, nil)
	a, _ := w.place(t, booksBody(1), "")
	if r, _ := w.cancel(t, a.OrderID); r.Status != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	st := w.kit.Record(a.SagaID)
	if st.Status != saga.StatusCompensated || len(st.Compensate) != 0 || st.Steps[len(st.Steps)-1].Outcome != "cancel_requested" {
		t.Fatalf("saga %s %v", st.Status, sagatest.Outcomes(st))
	}
	if sent := w.broker.Events(); len(sent) != 2 || sent[1].Type() != ordersaga.Rejected {
		t.Fatalf("sent %v", sent)
	}
}

// TestCancelConflicts: an order whose saga completed, compensated for
// another reason, or compensates for another reason cannot be cancelled:
// 409 saying why; an unknown order is 404. Nothing is sent.
func TestCancelConflicts(t *testing.T) {
	w := newWorld(t, nil)
	place := func(until string, opts ...sagatest.Option) accepted {
		t.Helper()
		a, cmd := w.place(t, booksBody(1), "")
		w.kit.Continue(w.start(t, a, cmd, books(1)), until, opts...)
		return a
	}
	failed := sagatest.Fail(ordersaga.StepPayment, "insufficient funds")
	for status, a := range map[saga.Status]accepted{
		saga.StatusCompleted:    place(ordersaga.NotificationSent),
		saga.StatusCompensated:  place(ordersaga.NotificationSent, failed),
		saga.StatusCompensating: place(ordersaga.PayFailed, failed),
	} {
		before := w.kit.Record(a.SagaID)
		if before.Status != status {
			t.Fatalf("saga %s, want %s", before.Status, status)
		}
		r, body := w.cancel(t, a.OrderID)
		if r.Status != http.StatusConflict || !strings.Contains(body.Error, "the saga is "+string(status)) {
			t.Errorf("cancel of a %s order: %d %s", status, r.Status, r.Body)
		}
		if after := w.kit.Record(a.SagaID); after.Version != before.Version {
			t.Errorf("cancel of a %s order moved its saga", status)
		}
	}
	if r, body := w.cancel(t, "nope"); r.Status != http.StatusNotFound || body.Error == "" {
		t.Errorf("unknown order: %d %s", r.Status, r.Body)
	}
	if n := len(w.broker.Events()); n != 3 {
		t.Fatalf("%d events sent, want the 3 Creates", n)
	}
}

// TestCancelBrokerDown: the cancel is recorded before its failure event is
// sent; with the broker down the answer is 503, and a retry once it is
// back sends the same event (the saga is not aborted twice).
func TestCancelBrokerDown(t *testing.T) {
	w := newWorld(t, nil)
	a, cmd := w.place(t, booksBody(1), "")
	w.start(t, a, cmd, books(1))
	w.broker.Down.Store(true)
	r, body := w.cancel(t, a.OrderID)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || strings.Contains(body.Error, "127.0.0.1") {
		t.Fatalf("cancel with the broker down: %d %s", r.Status, r.Body)
	}
	st := w.kit.Record(a.SagaID)
	if st.Status != saga.StatusCompensating || st.Next == nil || st.Next.Type != ordersaga.PayFailed {
		t.Fatalf("saga %s, waits on %+v", st.Status, st.Next)
	}
	w.broker.Down.Store(false)
	if r, _ := w.cancel(t, a.OrderID); r.Status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", r.Status, r.Body)
	}
	if sent := w.broker.Events(); len(sent) != 2 || sent[1].ID() != st.Next.ID || w.kit.Record(a.SagaID).Version != st.Version {
		t.Fatalf("the retry sent %v", sent)
	}
}

// TestBrokerRefuses: a broker that refuses an event (4xx) is the broker's
// problem (502), never the client's (400): for a new order, which is
// withdrawn, and for a cancel, which stays recorded.
func TestBrokerRefuses(t *testing.T) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) }))
	t.Cleanup(refusing.Close)
	w := newWorld(t, map[string]string{"K_SINK": refusing.URL})
	r := w.request(t, http.MethodPost, "/orders", booksBody(1), map[string]string{"Idempotency-Key": "k"})
	if r.Status != http.StatusBadGateway {
		t.Fatalf("POST: %d %s, want 502", r.Status, r.Body)
	}
	sagas := w.sagas(t)
	if len(sagas) != 1 || sagas[0].Status != saga.StatusCompensated {
		t.Fatalf("sagas %v: want the order withdrawn", sagas)
	}

	// a running saga, accepted as POST /orders does it, then started
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	a := accepted{SagaID: "s1", OrderID: orders.OrderIDFor("s1")}
	cmd := sagatest.Event(orders.CreateEventID(a.SagaID), ordersaga.Create, ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}},
		saga.ExtCorrelationID, a.SagaID)
	cmd.SetSource(ordersaga.SourceOrderAPI)
	if _, err := (&ops.Operator{Sagas: reg, Store: w.kit.Store, Source: ordersaga.SourceOrderAPI}).Accept(t.Context(), ordersaga.Saga, a.SagaID, a.OrderID, &cmd); err != nil {
		t.Fatal(err)
	}
	w.start(t, a, cmd, books(1))
	if r, _ := w.cancel(t, a.OrderID); r.Status != http.StatusBadGateway {
		t.Fatalf("cancel: %d %s, want 502", r.Status, r.Body)
	}
	if st := w.kit.Record(a.SagaID); st.Status != saga.StatusCompensating || st.Next == nil || st.Next.Type != ordersaga.PayFailed {
		t.Fatalf("saga %s: the cancel must stay recorded", st.Status)
	}
}
