package main

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// The order step acts only on the event its saga's record says the saga
// waits on; everything else is refused (400) or, when the saga has moved
// past it, ignored (200, no reply), and changes neither the saga nor the
// order.

// TestConfirmRefusesATamperedEvent: the awaited io.ksaga.inventory.reserved
// with data that is not what the saga emitted (another order, another
// total) is refused; the genuine one still confirms.
func TestConfirmRefusesATamperedEvent(t *testing.T) {
	w := newWorld(t, nil)
	e := w.kit.Continue(w.create(t, "s1", books(1)), ordersaga.StockReserved)
	before := w.kit.Record("s1")
	o := decodeOrder(t, &e)
	for name, forged := range map[string]ordersaga.Order{
		"another order": {OrderID: orders.OrderIDFor("other"), UserID: o.UserID, Items: o.Items, TotalCents: o.TotalCents},
		"another total": {OrderID: o.OrderID, UserID: o.UserID, Items: o.Items, TotalCents: 1},
	} {
		if r := w.post(t, withData(t, e, forged), false); r.Status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	w.kit.Unchanged(before)
	if s := w.order(t, o.OrderID)["status"]; s != "pending" || !w.fn.Refused(t, "data differs") {
		t.Fatalf("order %s after the forged events, or no security log line", s)
	}
	if r := w.post(t, e, false); r.Reply == nil || r.Reply.Type() != ordersaga.Confirmed {
		t.Fatalf("the genuine event after the forged ones: %d %s", r.Status, r.Body)
	}
}

// TestCancelRefusedWhileRunning: a cancel (the orchestrator's command or
// a payment failure) that the running saga did not emit cancels nothing,
// even at the saga's version.
func TestCancelRefusedWhileRunning(t *testing.T) {
	w := newWorld(t, nil)
	created := w.create(t, "s1", books(1))
	before := w.kit.Record("s1")
	o := decodeOrder(t, &created)
	for _, typ := range []string{ordersaga.Cancel, ordersaga.PayFailed, ordersaga.PayRefunded} {
		r := w.post(t, sagaEvent("forged-"+typ, typ, "s1", before.Version, o), false)
		if r.Status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", typ, r.Status, r.Body)
		}
	}
	w.kit.Unchanged(before)
	if s := w.order(t, o.OrderID)["status"]; s != "pending" {
		t.Fatalf("order %s", s)
	}
}

// TestReplayIntoAnotherSaga: a genuine event of one saga, replayed with
// another saga's id, is refused; neither order moves.
func TestReplayIntoAnotherSaga(t *testing.T) {
	w := newWorld(t, nil)
	a := w.kit.Continue(w.create(t, "a", books(1)), ordersaga.StockReserved)
	w.kit.Continue(w.create(t, "b", books(1)), ordersaga.StockReserved)
	before := w.kit.Record("b")
	replayed := a.Clone()
	replayed.SetExtension(saga.ExtCorrelationID, "b")
	if r := w.post(t, replayed, true); r.Status != http.StatusBadRequest {
		t.Fatalf("replay into b: %d %s", r.Status, r.Body)
	}
	w.kit.Unchanged(before)
	for _, id := range []string{"a", "b"} {
		if s := w.order(t, orders.OrderIDFor(id))["status"]; s != "pending" {
			t.Fatalf("order of %s is %s", id, s)
		}
	}
}

// TestEventsThatNameNoVersionOrSaga: every event after the start carries
// the saga's id and the version it was emitted at; without them it is 400.
func TestEventsThatNameNoVersionOrSaga(t *testing.T) {
	w := newWorld(t, nil)
	e := w.kit.Continue(w.create(t, "s1", books(1)), ordersaga.StockReserved)
	before := w.kit.Record("s1")
	for _, ext := range []string{saga.ExtSagaVersion, saga.ExtCorrelationID} {
		bare := e.Clone()
		bare.SetExtension(ext, nil) // removes it
		if _, ok := bare.Extensions()[ext]; ok {
			t.Fatal("extension not removed")
		}
		if r := w.post(t, bare, false); r.Status != http.StatusBadRequest {
			t.Fatalf("without %s: %d %s", ext, r.Status, r.Body)
		}
	}
	w.kit.Unchanged(before)
}

// TestVersions: an event of a version the saga has moved past, or of an
// unknown saga, changes nothing and is acknowledged (200, no reply: the
// broker must not retry it); one ahead of the saga is refused.
func TestVersions(t *testing.T) {
	w := newWorld(t, nil)
	created := w.create(t, "s1", books(1))
	e := w.kit.Continue(created, ordersaga.StockReserved)
	o := decodeOrder(t, &e)
	v := versionOf(t, e)
	if r := w.post(t, sagaEvent("ahead", ordersaga.StockReserved, "s1", v+1, o), false); r.Status != http.StatusBadRequest {
		t.Fatalf("version ahead: %d %s", r.Status, r.Body)
	}
	if r := w.post(t, e, false); r.Reply == nil || r.Reply.Type() != ordersaga.Confirmed {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}
	done := w.kit.Record("s1")
	for name, stale := range map[string]sagatest.Response{
		"a reserved of version 1": w.post(t, sagaEvent("late-1", ordersaga.StockReserved, "s1", versionOf(t, created), o), false),
		"a Confirm of version 3":  w.post(t, sagaEvent("late-3", ordersaga.Confirm, "s1", v, o), false),
		"an unknown saga":         w.post(t, sagaEvent("ghost", ordersaga.Confirm, "ghost", 1, o), false),
	} {
		if stale.Status != 200 || stale.Reply != nil {
			t.Fatalf("%s: %d %s", name, stale.Status, stale.Body)
		}
	}
	w.kit.Unchanged(done)
	if w.orderCount(t) != 1 {
		t.Fatalf("%d orders", w.orderCount(t))
	}
}

// TestAcceptedStartActsOnTheAcceptedData: the start of a saga recorded
// accepted runs on the data it was accepted with. An attacker who knows
// the saga id derives the Create's id (orders.CreateEventID), source and
// version, and sends a copy without data, or with data that is the same
// JSON value but not what a step can decode ("1.0" for 1): the record
// admits both (an event may leave its data out; 1.0 and 1 are one
// number). Were the step to read the copy's data it would refuse it (400),
// the Broker would dead-letter it, and the dead-letter sink — the copy is
// the event the saga waits on — would reject the customer's accepted
// order. The copy must start the saga with the accepted order instead.
func TestAcceptedStartActsOnTheAcceptedData(t *testing.T) {
	w := newWorld(t, nil)
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	op := &ops.Operator{Sagas: reg, Store: w.kit.Store, Source: ordersaga.SourceOrderAPI, Sink: knfunc.NewSink(sagatest.NewBroker(t).URL, nil)}
	sink, err := ops.NewDeadLetters(&ops.Operator{Sagas: reg, Store: w.kit.Store, Source: "/ksaga/deadletter", Sink: op.Sink})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"no data":          nil,
		"1.0 for 1":        []byte(`{"user_id": 1.0, "items": [{"sku": "book", "qty": 2}]}`),
		"1e0 for quantity": []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 2e0}]}`),
	} {
		t.Run(name, func(t *testing.T) {
			sagaID := "copy-" + strings.ReplaceAll(name, " ", "-")
			orderID := orders.OrderIDFor(sagaID)
			cmd := sagatest.Event(orders.CreateEventID(sagaID), ordersaga.Create, books(2), saga.ExtCorrelationID, sagaID)
			cmd.SetSource(ordersaga.SourceOrderAPI)
			if _, err := op.Accept(t.Context(), ordersaga.Saga, sagaID, orderID, &cmd); err != nil {
				t.Fatal(err)
			}
			copied := cmd.Clone()
			copied.DataEncoded = data
			if data == nil {
				copied.SetDataContentType("")
			}
			if why := saga.Awaits(w.kit.Record(sagaID), copied); why != "" {
				t.Fatalf("the record does not wait on the copy (%s): the attack needs it to", why)
			}
			r := w.post(t, copied, false)
			if r.Status == http.StatusBadRequest { // what the Broker then dead-letters
				dl := copied.Clone()
				dl.SetExtension(ops.ExtErrorDest, w.fn.URL)
				dl.SetExtension(ops.ExtErrorCode, "400")
				if _, err := sink.Handle(t.Context(), dl); err != nil {
					t.Fatal(err)
				}
			}
			st := w.kit.Record(sagaID)
			o := w.order(t, orderID)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Created || st.Status != saga.StatusRunning ||
				o["user_id"] != "1" || o["total_cents"] != "2500" || o["status"] != "pending" {
				t.Fatalf("the copy: %d %s; saga %s %v (%s); order %v", r.Status, r.Body, st.Status, sagatest.Outcomes(st), st.Reason, o)
			}
			// the genuine command after the copy: its stored reply
			if again := w.post(t, cmd, false); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("the genuine Create: %d %s", again.Status, again.Body)
			}
		})
	}
}

// TestStartOfAnExpiredAcceptedSaga: an order accepted by order-api and
// rejected before its start ran (withdrawn, cancelled, past its deadline,
// or its Create dead-lettered) writes no order. Once its record has
// expired, its Create — an operator replaying the kept dead letter, a
// very late redelivery — must not start a new saga: the customer was told
// the order is cancelled, and it would be placed and charged after all.
// The Create names the accepted saga's version and is older than a saga's
// timeout: its saga ended by its deadline at the latest.
func TestStartOfAnExpiredAcceptedSaga(t *testing.T) {
	w := newWorld(t, map[string]string{"KSAGA_SAGA_TIMEOUT": "1s"})
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	store, err := redisstore.New(w.rdb, redisstore.Options{Retention: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	op := &ops.Operator{Sagas: reg, Store: store, Source: ordersaga.SourceOrderAPI, Timeout: time.Second}
	sagaID := "withdrawn"
	orderID := orders.OrderIDFor(sagaID)
	cmd := sagatest.Event(orders.CreateEventID(sagaID), ordersaga.Create, books(1), saga.ExtCorrelationID, sagaID)
	cmd.SetSource(ordersaga.SourceOrderAPI)
	cmd.SetTime(time.Now())
	if _, err := op.Accept(t.Context(), ordersaga.Saga, sagaID, orderID, &cmd); err != nil {
		t.Fatal(err)
	}
	if ok, err := op.Withdraw(t.Context(), sagaID, "the broker did not accept the order"); err != nil || !ok {
		t.Fatalf("withdraw: %v %v", ok, err)
	}
	if st := w.kit.Record(sagaID); st.Status != saga.StatusCompensated || w.orderCount(t) != 0 {
		t.Fatalf("withdrawn saga %s, %d orders", st.Status, w.orderCount(t))
	}
	sagatest.Eventually(t, 10*time.Second, func() error {
		if _, err := store.Get(t.Context(), sagaID); !errors.Is(err, saga.ErrNotFound) {
			return errors.New("the withdrawn saga has not expired yet")
		}
		if time.Since(cmd.Time()) <= time.Second {
			return errors.New("the command is not older than a saga's timeout yet")
		}
		return nil
	})

	r := w.post(t, cmd, false)
	if r.Status != 200 || r.Reply != nil {
		t.Fatalf("the Create of the expired accepted saga: %d %s", r.Status, r.Body)
	}
	if _, err := store.Get(t.Context(), sagaID); !errors.Is(err, saga.ErrNotFound) || w.orderCount(t) != 0 {
		t.Fatalf("the Create started the saga again (%v) or wrote an order (%d)", err, w.orderCount(t))
	}
}
