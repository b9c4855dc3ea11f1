package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestAuthorize: payment charges the order's total, as the saga recorded
// it, to the order's user, records the charge as its output, and answers
// io.ksaga.payment.authorized; a redelivery charges nothing more. On the
// choreography event and on the orchestrator's command, in both HTTP modes.
func TestAuthorize(t *testing.T) {
	w := newWorld(t)
	tests := map[string]struct {
		until      string
		orch       bool
		structured bool
	}{
		"created, binary":     {ordersaga.Created, false, false},
		"command, structured": {ordersaga.AuthorizePay, true, true},
	}
	var charged int64
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id := "s-" + tt.until
			var opts []sagatest.Option
			if tt.orch {
				opts = append(opts, sagatest.Orchestrated(w.orch))
			}
			e := w.kit.Run(id, order(id, 1, 2500), tt.until, opts...)
			r := w.post(t, e, tt.structured)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.PayAuthorized || r.Reply.Source() != "/ksaga/payment" {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			charged += 2500
			again := w.post(t, e, !tt.structured) // a redelivery
			if again.Reply == nil || again.Reply.ID() != r.Reply.ID() || string(again.Reply.Data()) != string(r.Reply.Data()) {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			w.wantBalances(t, map[int32]int64{1: -charged})
			if c, ok := w.charge(t, id); !ok || c != (ordersaga.Charge{UserID: 1, AmountCents: 2500}) {
				t.Fatalf("charge recorded %+v (%v)", c, ok)
			}
			var data ordersaga.Order
			if err := json.Unmarshal(r.Reply.Data(), &data); err != nil || data.OrderID != "o-"+id || data.TotalCents != 2500 {
				t.Fatalf("reply data %s: %v", r.Reply.Data(), err)
			}
			st := w.kit.Record(id)
			if st.Status != saga.StatusRunning || !slices.Equal(st.Compensate, []string{"payment", "order"}) ||
				st.Steps[len(st.Steps)-1].Step != "payment" || st.Steps[len(st.Steps)-1].Outcome != "authorized" {
				t.Fatalf("saga %s %v, left to undo %v", st.Status, sagatest.Outcomes(st), st.Compensate)
			}
		})
	}
}

// TestAuthorizeFails: a balance too small, or no account, fails the saga
// with the reason; nothing is charged or recorded, and the order is left
// to undo.
func TestAuthorizeFails(t *testing.T) {
	w := newWorld(t)
	for name, tt := range map[string]struct {
		user   int32
		reason string
	}{
		"insufficient funds": {2, "insufficient funds"}, // bob has 500
		"unknown account":    {99, "unknown account"},
	} {
		t.Run(name, func(t *testing.T) {
			id := "s-" + name
			r := w.post(t, w.kit.Run(id, order(id, tt.user, 4999), ordersaga.Created), false)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.PayFailed {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			var data ordersaga.Order
			if err := json.Unmarshal(r.Reply.Data(), &data); err != nil || data.Reason != tt.reason {
				t.Fatalf("reply data %s", r.Reply.Data())
			}
			w.wantBalances(t, nil)
			if c, ok := w.charge(t, id); ok {
				t.Fatalf("a failed charge was recorded: %+v", c)
			}
			st := w.kit.Record(id)
			if st.Status != saga.StatusCompensating || st.Reason != tt.reason || st.FailedStep != "payment" || !slices.Equal(st.Compensate, []string{"order"}) {
				t.Fatalf("saga %+v", st)
			}
		})
	}
}

// TestRefund: when a later step fails, payment gives back exactly the
// charge it made, once, whatever the redeliveries; on the choreography
// event and on the orchestrator's command.
func TestRefund(t *testing.T) {
	w := newWorld(t)
	for name, opts := range map[string][]sagatest.Option{
		ordersaga.StockFailed: nil,
		ordersaga.RefundPay:   {sagatest.Orchestrated(w.orch)},
	} {
		t.Run(name, func(t *testing.T) {
			id := "s-" + name
			authorize := ordersaga.Created
			if opts != nil {
				authorize = ordersaga.AuthorizePay
			}
			r := w.post(t, w.kit.Run(id, order(id, 1, 3750), authorize, opts...), false)
			if r.Reply == nil || r.Reply.Type() != ordersaga.PayAuthorized {
				t.Fatalf("authorize: %d %s", r.Status, r.Body)
			}
			w.wantBalances(t, map[int32]int64{1: -3750})
			e := w.kit.Continue(*r.Reply, name, append(opts, sagatest.Fail(ordersaga.StepInventory, "insufficient stock for book"))...)
			refund := w.post(t, e, true)
			if refund.Status != 200 || refund.Reply == nil || refund.Reply.Type() != ordersaga.PayRefunded {
				t.Fatalf("refund: %d %s", refund.Status, refund.Body)
			}
			for range 2 { // redeliveries
				if again := w.post(t, e, false); again.Reply == nil || again.Reply.ID() != refund.Reply.ID() {
					t.Fatalf("redelivery %d %s", again.Status, again.Body)
				}
			}
			w.wantBalances(t, nil)
			st := w.kit.Record(id)
			if st.Status != saga.StatusCompensating || !slices.Equal(st.Compensate, []string{"order"}) ||
				st.Steps[len(st.Steps)-1].Outcome != "refunded" || st.Steps[len(st.Steps)-1].Redelivered != 2 {
				t.Fatalf("saga %s %v, left to undo %v", st.Status, sagatest.Outcomes(st), st.Compensate)
			}
		})
	}
}

// TestRefundIsTheRecordedCharge: the refund gives back the charge payment
// recorded, to whom it was charged — not what the order would come to now,
// nor to the order's user.
func TestRefundIsTheRecordedCharge(t *testing.T) {
	w := newWorld(t)
	// alice's order of 2500, but the charge recorded is 700 to carol
	e := w.kit.Run("s1", order("s1", 1, 2500), ordersaga.StockFailed,
		sagatest.Output(ordersaga.StepPayment, ordersaga.Charge{UserID: 3, AmountCents: 700}),
		sagatest.Fail(ordersaga.StepInventory, "insufficient stock for book"))
	r := w.post(t, e, false)
	if r.Reply == nil || r.Reply.Type() != ordersaga.PayRefunded {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	w.wantBalances(t, map[int32]int64{3: 700})
}

// TestRefundWithoutACharge: a saga that has payment to undo but no charge
// recorded contradicts itself: the refund is refused (400, dead-lettered
// for an operator) and gives nothing.
func TestRefundWithoutACharge(t *testing.T) {
	w := newWorld(t)
	e := w.kit.Run("s1", order("s1", 1, 2500), ordersaga.StockFailed, sagatest.Fail(ordersaga.StepInventory, "insufficient stock for book"))
	before := w.kit.Record("s1")
	if r := w.post(t, e, false); r.Status != http.StatusBadRequest {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	w.wantBalances(t, nil)
	w.kit.Unchanged(before)
}
