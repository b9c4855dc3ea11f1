package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestForgedEventsMoveNothing is the attacker inside the cluster: while a
// saga waits (a step held failing by fault injection, then let go), forged,
// tampered and replayed events are posted to the broker and straight to the
// functions, with sender identity on (ksaga dev's default) and off
// (--oidc=false). Every one is refused and the sagas end exactly as genuine
// runs do: balances, stock and histories to the cent.
//
//   - Off, sender identity does not stand in the way: the saga record
//     does. A function answers 400 (a security event in its log); the
//     broker takes the event (202), its step refuses it and the dead-letter
//     sink keeps it.
//   - On, nobody without a saga identity gets that far: a function answers
//     401 (no token for its audience), the broker 403 (the outside producer
//     may start sagas only), so nothing is stored and nothing dead-lettered;
//     a stolen SinkBinding token (order-api's) is 403 at the broker for a
//     step result and 401 at a function (another audience).
func TestForgedEventsMoveNothing(t *testing.T) {
	t.Parallel()
	for _, oidc := range []bool{true, false} {
		t.Run(map[bool]string{true: "sender identity on", false: "sender identity off"}[oidc], func(t *testing.T) {
			t.Parallel()
			forgedEventsMoveNothing(t, oidc)
		})
	}
}

func forgedEventsMoveNothing(t *testing.T, oidc bool) {
	args := []string{"--fault-injection"}
	if !oidc {
		args = append(args, "--oidc=false")
	}
	s := start(t, "choreography", nil, args...)
	ctx := context.Background()

	// hold pins a step failing on an event type until release.
	hold := func(service, typ string) (release func()) {
		key := knfunc.FaultKey(service, typ)
		if err := s.rdb.Set(ctx, key, -1, 0).Err(); err != nil {
			t.Fatal(err)
		}
		return func() { s.rdb.Set(ctx, key, 0, 0) }
	}
	// waiting returns the saga once it waits on an event of type typ.
	waiting := func(sagaID, typ string) saga.State {
		var st saga.State
		sagatest.Eventually(t, 10*time.Second, func() error {
			got, err := s.store.Get(ctx, sagaID)
			if err != nil {
				return err
			}
			if got.Next == nil || got.Next.Type != typ {
				return fmt.Errorf("saga %s waits on %v", sagaID, got.Next)
			}
			st = got
			return nil
		})
		return st
	}
	// forged builds an event as an attacker would.
	forged := func(id, typ, sagaID string, version int64, data any) event.Event {
		e := sagatest.Event(id, typ, data, saga.ExtCorrelationID, sagaID)
		e.SetSource("/ksaga/inventory")
		if version > 0 {
			e.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(version, 10))
		}
		return e
	}
	// genuine is the very event the saga waits on.
	genuine := func(st saga.State) event.Event { return *saga.ToEvent(st.ID, "", st.Next) }
	// refused posts e straight to service and to the broker. Sender
	// identity off: the function answers 400; the broker takes it (202)
	// and, once the function refused it, keeps it as a dead letter; an
	// event of a version the saga has passed is inert instead: 200,
	// nothing done. On: 401 from the function, 403 from the broker.
	deadLettered, direct, viaBroker := 0, map[string]int{}, 0
	refusedWith := func(name, service string, e event.Event, want int) {
		t.Helper()
		wantBroker := http.StatusAccepted
		if oidc {
			want, wantBroker = http.StatusUnauthorized, http.StatusForbidden
		}
		if code := s.dev.Send(t, service, e, false); code != want {
			t.Errorf("%s: %s answered %d, want %d", name, service, code, want)
		}
		direct[service]++
		if e.Type() == ordersaga.RefundPay && !oidc {
			return // no choreography Trigger takes an orchestration command
		}
		e.SetID(fmt.Sprintf("%s-via-broker-%d", e.ID(), viaBroker)) // a dead letter is kept once per id
		viaBroker++
		if code := s.dev.Publish(t, e, true); code != wantBroker {
			t.Errorf("%s: the broker answered %d, want %d", name, code, wantBroker)
		}
		if !oidc && want == http.StatusBadRequest {
			deadLettered++
		}
	}
	refused := func(name, service string, e event.Event) {
		t.Helper()
		refusedWith(name, service, e, http.StatusBadRequest)
	}
	unchanged := func(name string, before saga.State) {
		t.Helper()
		after := s.record(t, before.ID)
		if after.Version != before.Version || len(after.Steps) != len(before.Steps) || after.Status != before.Status {
			t.Errorf("%s moved saga %s: %s v%d → %s v%d", name, before.ID, before.Status, before.Version, after.Status, after.Version)
		}
	}

	// 1. carol (balance 0) orders 40 books; payment is held. Forged
	// results try to confirm her unpaid order.
	release := hold("payment", ordersaga.Created)
	carol, code := s.order(t, 3, item("book", 40))
	if code != http.StatusAccepted {
		t.Fatalf("POST /orders %d", code)
	}
	st := waiting(carol.SagaID, ordersaga.Created)
	refused("inventory.reserved without sagaversion", "order", forged("f1", ordersaga.StockReserved, carol.SagaID, 0, map[string]any{"order_id": carol.OrderID}))
	refused("inventory.reserved at the saga's version", "order", forged("f2", ordersaga.StockReserved, carol.SagaID, st.Version, json.RawMessage(st.Data)))
	// 2. the awaited order.created, tampered: a 1-cent total, alice as the payer
	var order ordersaga.Order
	if err := json.Unmarshal(st.Data, &order); err != nil {
		t.Fatal(err)
	}
	cheap, other := order, order
	cheap.TotalCents, other.UserID, other.TotalCents = 1, 1, 90000
	for name, data := range map[string]ordersaga.Order{"a 1-cent total": cheap, "alice pays": other} {
		e := genuine(st)
		if err := e.SetData(event.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
		refused("order.created with "+name, "payment", e)
	}
	// 3. the genuine event with its version changed
	e := genuine(st)
	e.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(st.Version+1, 10))
	refused("order.created at another version", "payment", e)
	if oidc {
		// order-api's identity, stolen (its SinkBinding's token, for the
		// Broker's audience): the Broker takes its starts and abort
		// failures only, a function no token for another audience.
		b, err := os.ReadFile(devtest.Environ(t, s.dev.Pids()["saga/order-api"])["KSAGA_SINK_TOKEN_FILE"])
		if err != nil {
			t.Fatal(err)
		}
		stolen := http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(b))}}
		e := forged("f5", ordersaga.StockReserved, carol.SagaID, st.Version, json.RawMessage(st.Data))
		if code := s.dev.PublishHeader(t, e, stolen); code != http.StatusForbidden {
			t.Errorf("inventory.reserved with order-api's token, to the broker: %d, want 403", code)
		}
		if code := s.dev.SendHeader(t, "order", e, stolen); code != http.StatusUnauthorized {
			t.Errorf("inventory.reserved with order-api's token, to order: %d, want 401", code)
		}
		direct["order"]++
		viaBroker++
	}
	unchanged("the attacks on carol's order", st)
	release()
	v := s.settled(t, carol.OrderID, 30*time.Second)
	if v.Status != "cancelled" || v.Saga.Reason != "insufficient funds" {
		t.Fatalf("carol's order: %s (%s)", v.Status, v.Saga.Reason)
	}

	// 4. alice orders two lamps: paid, then no stock, so payment refunds;
	// the refund is held. A forged inventory.failed tries to send her
	// refund to carol, a forged refund command a made-up amount, and the
	// genuine event is replayed into carol's (ended) saga.
	release = hold("payment", ordersaga.StockFailed)
	alice, code := s.order(t, 1, item("lamp", 2))
	if code != http.StatusAccepted {
		t.Fatalf("POST /orders %d", code)
	}
	st = waiting(alice.SagaID, ordersaga.StockFailed)
	if err := json.Unmarshal(st.Data, &order); err != nil {
		t.Fatal(err)
	}
	toCarol := order
	toCarol.UserID = 3
	e = genuine(st)
	if err := e.SetData(event.ApplicationJSON, map[string]any{"order_id": order.OrderID, "user_id": 3, "total_cents": order.TotalCents, "items": order.Items, "reason": "x"}); err != nil {
		t.Fatal(err)
	}
	refused("inventory.failed naming carol", "payment", e)
	refused("inventory.failed forged without a version", "payment", forged("f3", ordersaga.StockFailed, alice.SagaID, 0, toCarol))
	refused("a refund command with a made-up amount", "payment", forged("f4", ordersaga.RefundPay, alice.SagaID, st.Version, map[string]any{"user_id": 3, "amount_cents": 999999}))
	replay := genuine(st)
	replay.SetExtension(saga.ExtCorrelationID, carol.SagaID)
	refusedWith("the genuine event replayed into another (ended) saga", "payment", replay, http.StatusOK)
	unchanged("the attacks on alice's refund", st)
	release()
	v = s.settled(t, alice.OrderID, 30*time.Second)
	if v.Status != "cancelled" || !strings.Contains(v.Saga.Reason, "insufficient stock") {
		t.Fatalf("alice's order: %s (%s)", v.Status, v.Saga.Reason)
	}
	refunds := 0
	for _, step := range v.Saga.Steps {
		if step.Outcome == "refunded" {
			refunds++
		}
	}
	if refunds != 1 {
		t.Errorf("alice's saga recorded %d refunds", refunds)
	}

	// 5. the books, to the cent: nothing moved but what the genuine runs did.
	for name, got := range map[string][2]int64{
		"alice": {s.balance(t, 1), 100000}, "bob": {s.balance(t, 2), 500}, "carol": {s.balance(t, 3), 0},
		"book stock": {s.stock(t, "book"), 1000}, "lamp stock": {s.stock(t, "lamp"), 1},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: %d, want %d", name, got[0], got[1])
		}
	}
	// off, every forged delivery through the broker was refused by its step
	// and kept as a dead letter; on, none was even stored; none changed a
	// saga
	sagatest.Eventually(t, 20*time.Second, func() error {
		p, err := s.store.DeadLetters(ctx, saga.DeadLetterQuery{Limit: 100})
		if err != nil {
			return err
		}
		n := 0
		for _, dl := range p.DeadLetters {
			if strings.Contains(dl.EventID, "-via-broker-") {
				if !strings.Contains(dl.Reason, "400") || dl.Handling != "kept" {
					return fmt.Errorf("dead letter %+v", dl)
				}
				n++
			}
		}
		if n != deadLettered {
			return fmt.Errorf("%d forged events dead-lettered, want %d", n, deadLettered)
		}
		return nil
	})
	// and each refusal was logged as a security event: off, by the saga
	// record's checks in the step; on, by the token check before it, and
	// by the broker ingress
	if oidc {
		for svc, want := range direct {
			n := 0
			for _, l := range s.dev.Lines(t, svc) {
				if l["msg"] == "security: request refused" && l["status"] == float64(http.StatusUnauthorized) {
					n++
				}
			}
			if n != want {
				t.Errorf("%s logged %d refused requests, want %d", svc, n, want)
			}
		}
		if n := strings.Count(s.dev.Log(), `msg="ingress: sender refused"`); n < viaBroker {
			t.Errorf("the broker logged %d refusals, want at least %d", n, viaBroker)
		}
		return
	}
	n := 0
	for _, svc := range []string{"order", "payment"} {
		for _, l := range s.dev.Lines(t, svc) {
			if l["security_event"] == "refused" {
				n++
			}
		}
	}
	if n < 2*(deadLettered-2) { // all but the two without a sagaversion, directly and through the broker
		t.Errorf("%d security events logged, want at least %d", n, 2*(deadLettered-2))
	}
}
