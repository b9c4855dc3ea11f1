package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// TestCancelOrder: POST /orders/{id}/cancel aborts a running saga at the
// step it waits on, whose failure event goes to the broker; the order step
// then cancels the order like after any failure. Repeating the cancel
// answers 202 again and sends the same event while the compensation has
// not started, nothing once it has.
func TestCancelOrder(t *testing.T) {
	e := setup(t, nil)
	sagaID, _ := e.create(t, "s1", bookOrder())
	orderID := orderIDFor(sagaID)
	path := "/orders/" + orderID + "/cancel"

	r := e.request(t, http.MethodPost, path, "", nil)
	var a accepted
	r.decode(t, &a)
	if r.Status != http.StatusAccepted || a.OrderID != orderID || a.SagaID != sagaID || r.Header.Get("Location") != "/orders/"+orderID {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	got := e.sink.Received()
	if len(got) != 1 {
		t.Fatalf("%d events sent, want 1", len(got))
	}
	failure := got[0].Event
	st := e.saga(t, sagaID)
	if failure.Type() != ordersaga.PayFailed || saga.SagaIDOf(failure) != sagaID || failure.Extensions()[saga.ExtSagaVersion] != "2" {
		t.Fatalf("sent %s", failure)
	}
	last := st.Steps[len(st.Steps)-1]
	if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepPayment || last.Outcome != cancelCause.outcome ||
		!strings.Contains(st.Reason, "cancelled by request") {
		t.Fatalf("saga %+v", st)
	}

	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted { // a retry
		t.Fatalf("repeated cancel: %d %s", r.Status, r.Body)
	}
	if got := e.sink.Received(); len(got) != 2 || got[1].Event.ID() != failure.ID() || e.saga(t, sagaID).Version != st.Version {
		t.Fatalf("repeated cancel sent %d events / moved the saga", len(got))
	}

	// the broker delivers the failure event to the order step: it cancels
	if rep := e.post(t, failure); rep.Reply == nil || rep.Reply.Type() != ordersaga.Cancelled {
		t.Fatalf("payment.failed → order: %d %s", rep.Status, rep.Body)
	}
	if o := e.order(t, orderID); o["status"] != "cancelled" || !strings.Contains(o["reason"], "cancelled by request") {
		t.Fatalf("order %v", o)
	}
	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted || len(e.sink.Received()) != 2 {
		t.Fatalf("cancel after the compensation: %d %s, %d events", r.Status, r.Body, len(e.sink.Received()))
	}
}

// TestCancelOrderRefused: an order whose saga completed, or compensates for
// another reason, cannot be cancelled (409); an unknown one is a 404.
func TestCancelOrderRefused(t *testing.T) {
	e := setup(t, nil)
	confirmed, _ := e.create(t, "confirmed", bookOrder())
	e.apply(t, saga.Transition{SagaID: confirmed, Step: ordersaga.StepOrder, OnSuccess: saga.Outcome{Outcome: "confirmed", Status: saga.StatusCompleted}})
	failing, _ := e.create(t, "failing", bookOrder())
	e.apply(t, saga.Transition{SagaID: failing, Step: ordersaga.StepPayment, OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating}})
	for sagaID, status := range map[string]saga.Status{confirmed: saga.StatusCompleted, failing: saga.StatusCompensating} {
		r := e.request(t, http.MethodPost, "/orders/"+orderIDFor(sagaID)+"/cancel", "", nil)
		var body apiError
		r.decode(t, &body)
		if r.Status != http.StatusConflict || !strings.Contains(body.Error, string(status)) {
			t.Errorf("%s: %d %s", sagaID, r.Status, r.Body)
		}
	}
	if r := e.request(t, http.MethodPost, "/orders/nope/cancel", "", nil); r.Status != http.StatusNotFound {
		t.Errorf("unknown order: %d %s", r.Status, r.Body)
	}
	if n := len(e.sink.Received()); n != 0 {
		t.Fatalf("%d events sent", n)
	}
}

// TestCancelBrokerRefuses: the cancel is applied before its failure event
// is published; a broker refusing that event is the broker's problem
// (502), never the client's (400).
func TestCancelBrokerRefuses(t *testing.T) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) }))
	t.Cleanup(refusing.Close)
	e := setup(t, map[string]string{"K_SINK": refusing.URL})
	sagaID, _ := e.create(t, "s1", bookOrder())
	r := e.request(t, http.MethodPost, "/orders/"+orderIDFor(sagaID)+"/cancel", "", nil)
	if r.Status != http.StatusBadGateway {
		t.Fatalf("cancel: %d %s, want 502", r.Status, r.Body)
	}
	if st := e.saga(t, sagaID); st.Status != saga.StatusCompensating {
		t.Fatalf("saga %s", st.Status)
	}
}
