package main

import (
	"net/http"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// TestRedrive: a saga whose refund was dead-lettered (compensation_failed)
// is put back to compensating, and the event that could not be delivered
// is published again at the new version; a repeated request resends it
// until the compensation moves; a later failure is redriven anew; other
// sagas cannot be redriven.
func TestRedrive(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "s1", bookOrder())
	e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment, OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true}})
	e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepInventory, OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating,
		Reason: "insufficient stock for book"}})
	// the dead-letter sink, after io.ksaga.inventory.failed could not reach payment
	e.apply(t, saga.Transition{SagaID: sagaID, EventType: ordersaga.StockFailed, Step: ordersaga.StepPayment, ExpectVersion: saga.AnyVersion,
		Allow:     []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: ordersaga.OutcomeCompensationFailed, Status: saga.StatusCompensationFailed, Reason: "payment down"}})
	path := "/sagas/" + sagaID + "/redrive"

	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted || r.Header.Get("Location") != "/sagas/"+sagaID {
		t.Fatalf("redrive: %d %s", r.Status, r.Body)
	}
	got := e.sink.Received()
	st := e.saga(t, sagaID)
	if len(got) != 1 {
		t.Fatalf("%d events sent", len(got))
	}
	ev := got[0].Event
	var data struct {
		ordersaga.Order
		Reason string `json:"reason"`
	}
	// the business reason travels on, as it did with the first delivery,
	// not the dead letter's text
	if err := ev.DataAs(&data); err != nil || data.OrderID != o.OrderID || data.Reason != "insufficient stock for book" {
		t.Fatalf("data %s: %v", ev.Data(), err)
	}
	if ev.Type() != ordersaga.StockFailed || saga.SagaIDOf(ev) != sagaID || ev.Extensions()[saga.ExtSagaVersion] != "5" ||
		st.Status != saga.StatusCompensating || st.Steps[len(st.Steps)-1].Outcome != outcomeRedriven || st.Compensate[0] != ordersaga.StepPayment ||
		st.Reason != "insufficient stock for book" {
		t.Fatalf("sent %s; saga %+v", ev, st)
	}

	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted { // repeated
		t.Fatalf("repeated redrive: %d %s", r.Status, r.Body)
	}
	if got := e.sink.Received(); len(got) != 2 || got[1].Event.ID() != ev.ID() || e.saga(t, sagaID).Version != st.Version {
		t.Fatalf("repeated redrive: %d events, saga moved", len(got))
	}

	// payment refunds: the redrive took, a repeat sends nothing more
	e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment, Allow: []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment}})
	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted || len(e.sink.Received()) != 2 {
		t.Fatalf("redrive after the compensation moved: %d %s, %d events", r.Status, r.Body, len(e.sink.Received()))
	}

	// it fails again, and an operator's later redrive is a new one
	e.apply(t, saga.Transition{SagaID: sagaID, EventType: ordersaga.Cancel, Step: ordersaga.StepOrder, ExpectVersion: saga.AnyVersion,
		Allow:     []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: ordersaga.OutcomeCompensationFailed, Status: saga.StatusCompensationFailed, Reason: "order down"}})
	if r := e.request(t, http.MethodPost, path, "", nil); r.Status != http.StatusAccepted {
		t.Fatalf("second redrive: %d %s", r.Status, r.Body)
	}
	if got := e.sink.Received(); len(got) != 3 || got[2].Event.Type() != ordersaga.Cancel || got[2].Event.ID() == ev.ID() {
		t.Fatalf("second redrive sent %d events", len(got))
	}
	if st := e.saga(t, sagaID); st.Status != saga.StatusCompensating {
		t.Fatalf("after the second redrive: %s", st.Status)
	}

	// a saga that never failed cannot be redriven

	running, _ := e.create(t, "running", bookOrder())
	if r := e.request(t, http.MethodPost, "/sagas/"+running+"/redrive", "", nil); r.Status != http.StatusConflict {
		t.Fatalf("redrive a running saga: %d %s", r.Status, r.Body)
	}
	if r := e.request(t, http.MethodPost, "/sagas/nope/redrive", "", nil); r.Status != http.StatusNotFound {
		t.Fatalf("redrive an unknown saga: %d %s", r.Status, r.Body)
	}
}
