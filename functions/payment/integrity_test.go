package main

import (
	"net/http"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// Payment moves money only on the event its saga's record says the saga
// waits on, and only as the record says: an event is a notification.
// Every test asserts every balance and that the saga did not move.

// TestAuthorizeRefusesForgedData: the awaited event with data that claims
// another user or another total is refused and moves no money; the
// genuine event then charges what the saga recorded.
func TestAuthorizeRefusesForgedData(t *testing.T) {
	w := newWorld(t)
	e := w.kit.Run("s1", order("s1", 1, 2500), ordersaga.Created)
	before := w.kit.Record("s1")
	for name, forged := range map[string]ordersaga.Order{
		"another user":  order("s1", 2, 2500),
		"another total": order("s1", 1, 1),
	} {
		f := e.Clone()
		if err := f.SetData(event.ApplicationJSON, forged); err != nil {
			t.Fatal(err)
		}
		if r := w.post(t, f, false); r.Status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	w.wantBalances(t, nil)
	w.kit.Unchanged(before)
	if !w.fn.Refused(t, "data differs") {
		t.Fatal("no security log line for the forged events")
	}
	if r := w.post(t, e, false); r.Reply == nil || r.Reply.Type() != ordersaga.PayAuthorized {
		t.Fatalf("the genuine event: %d %s", r.Status, r.Body)
	}
	w.wantBalances(t, map[int32]int64{1: -2500})
}

// TestAuthorizeRefusesWhatTheSagaDidNotEmit: an authorize command the
// orchestrator did not send (the saga runs in choreography), one at a
// version ahead of the saga, one without sagaversion, and a start command
// sent to payment charge nothing.
func TestAuthorizeRefusesWhatTheSagaDidNotEmit(t *testing.T) {
	w := newWorld(t)
	e := w.kit.Run("s1", order("s1", 1, 2500), ordersaga.Created)
	before := w.kit.Record("s1")
	o := order("s1", 1, 2500)
	noVersion := e.Clone()
	noVersion.SetExtension(saga.ExtSagaVersion, nil)
	for name, ev := range map[string]event.Event{
		"a forged command":     sagaEvent("forged", ordersaga.AuthorizePay, "s1", before.Version, o),
		"a version ahead":      sagaEvent("ahead", ordersaga.Created, "s1", before.Version+1, o),
		"no sagaversion":       noVersion,
		"the start command":    sagatest.Event("start", ordersaga.Create, ordersaga.OrderRequest{UserID: 1}, saga.ExtCorrelationID, "s1"),
		"another saga's event": sagaEvent("other", ordersaga.Created, "nope", 1, o),
	} {
		r := w.post(t, ev, false)
		want := http.StatusBadRequest
		if name == "another saga's event" { // an unknown saga: acknowledged, nothing done
			want = http.StatusOK
		}
		if r.Status != want || r.Reply != nil {
			t.Fatalf("%s: %d %s, want %d", name, r.Status, r.Body, want)
		}
	}
	w.wantBalances(t, nil)
	w.kit.Unchanged(before)
}

// TestReplayIntoAnotherSaga: a genuine event of alice's saga replayed with
// the id of bob's saga (which waits on payment too) is refused: neither is
// charged by it. Replayed into alice's saga after it moved on, it gets the
// stored reply and charges nothing more.
func TestReplayIntoAnotherSaga(t *testing.T) {
	w := newWorld(t)
	alice := w.kit.Run("alice", order("alice", 1, 2500), ordersaga.Created)
	w.kit.Run("bob", order("bob", 2, 250), ordersaga.Created)
	before := w.kit.Record("bob")
	replayed := alice.Clone()
	replayed.SetExtension(saga.ExtCorrelationID, "bob")
	if r := w.post(t, replayed, true); r.Status != http.StatusBadRequest {
		t.Fatalf("replay into bob's saga: %d %s", r.Status, r.Body)
	}
	w.wantBalances(t, nil)
	w.kit.Unchanged(before)

	first := w.post(t, alice, false)
	if first.Reply == nil || first.Reply.Type() != ordersaga.PayAuthorized {
		t.Fatalf("alice's event: %d %s", first.Status, first.Body)
	}
	w.kit.Continue(*first.Reply, ordersaga.StockReserved)
	if r := w.post(t, alice, false); r.Reply == nil || r.Reply.ID() != first.Reply.ID() {
		t.Fatalf("alice's event again: %d %s", r.Status, r.Body)
	}
	w.wantBalances(t, map[int32]int64{1: -2500})
}

// TestRefundRefusedUnlessPaymentIsNextToUndo: a refund refunds nothing
// while the saga runs (payment charged, nothing failed), nor while
// inventory is still to be undone before payment (the confirm failed),
// even at the saga's version; and the failure event meant for inventory is
// not payment's to act on.
func TestRefundRefusedUnlessPaymentIsNextToUndo(t *testing.T) {
	w := newWorld(t)
	o := order("s1", 1, 2500)
	r := w.post(t, w.kit.Run("s1", o, ordersaga.Created), false)
	if r.Reply == nil || r.Reply.Type() != ordersaga.PayAuthorized {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	charged := map[int32]int64{1: -2500}
	refundsAt := func(when string, v int64) {
		t.Helper()
		before := w.kit.Record("s1")
		for _, typ := range []string{ordersaga.RefundPay, ordersaga.StockFailed, ordersaga.StockReleased} {
			if r := w.post(t, sagaEvent("forged-"+when+"-"+typ, typ, "s1", v, o), false); r.Status != http.StatusBadRequest {
				t.Fatalf("%s while %s: %d %s", typ, when, r.Status, r.Body)
			}
		}
		w.wantBalances(t, charged)
		w.kit.Unchanged(before)
	}
	refundsAt("running", versionOf(t, *r.Reply))

	failed := w.kit.Continue(*r.Reply, ordersaga.ConfirmFailed, sagatest.Fail(ordersaga.Confirm, "confirm failed"))
	if st := w.kit.Record("s1"); st.Status != saga.StatusCompensating || st.Compensate[0] != ordersaga.StepInventory {
		t.Fatalf("saga %s, left to undo %v", st.Status, st.Compensate)
	}
	if r := w.post(t, failed, false); r.Status != http.StatusBadRequest { // inventory's to act on
		t.Fatalf("the confirm's failure event: %d %s", r.Status, r.Body)
	}
	refundsAt("inventory is to be undone", versionOf(t, failed))

	// once inventory is undone, the refund is payment's
	released := w.kit.Continue(failed, ordersaga.StockReleased)
	if r := w.post(t, released, false); r.Reply == nil || r.Reply.Type() != ordersaga.PayRefunded {
		t.Fatalf("refund: %d %s", r.Status, r.Body)
	}
	w.wantBalances(t, nil)
}

// versionOf is an event's sagaversion.
func versionOf(t *testing.T, e event.Event) int64 {
	t.Helper()
	v, err := saga.RequireVersion(e)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
