package sagatest_test

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var order = ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1, PriceCents: 1250}}}

// TestRun: Run walks the saga with a real Participant to the event asked
// for, recording each step's output, and fails the step asked to fail —
// by name, or by command where a name repeats.
func TestRun(t *testing.T) {
	k := sagatest.New(t, ordersaga.Saga, sagatest.Miniredis(t))
	charge := ordersaga.Charge{UserID: 1, AmountCents: 1250}
	e := k.Run("s1", order, ordersaga.StockReserved, sagatest.Output(ordersaga.StepPayment, charge))
	st := k.Record("s1")
	if e.Type() != ordersaga.StockReserved || saga.SagaIDOf(e) != "s1" || st.Next == nil || st.Next.ID != e.ID() || st.Status != saga.StatusRunning ||
		!slices.Equal(sagatest.Outcomes(st), []string{"order/succeeded", "payment/succeeded", "inventory/succeeded"}) {
		t.Fatalf("walked to %s: %s %v", e.Type(), st.Status, sagatest.Outcomes(st))
	}
	var got ordersaga.Order
	var c ordersaga.Charge
	if err := st.Decode(&got); err != nil || got.OrderID != "o1" {
		t.Fatalf("data %s: %v", st.Data, err)
	}
	if ok, err := st.Output(ordersaga.StepPayment, &c); !ok || err != nil || c != charge {
		t.Fatalf("payment's output %+v %v %v", c, ok, err)
	}

	k.Run("s2", order, ordersaga.Cancelled, sagatest.Fail(ordersaga.StepInventory, "no stock"))
	if st := k.Record("s2"); st.Status != saga.StatusCompensated || st.Reason != "no stock" || st.FailedStep != ordersaga.StepInventory {
		t.Fatalf("s2 %s %v %q", st.Status, sagatest.Outcomes(st), st.Reason)
	}

	// "order" names the create and the confirm: the command says which
	k.Run("s3", order, ordersaga.StockReleased, sagatest.Fail(ordersaga.Confirm, "refused"))
	want := []string{"order/succeeded", "payment/succeeded", "inventory/succeeded", "order/failed", "inventory/compensated"}
	if st := k.Record("s3"); !slices.Equal(sagatest.Outcomes(st), want) || st.Reason != "refused" {
		t.Fatalf("s3 %v %q, want %v", sagatest.Outcomes(st), st.Reason, want)
	}
}

// TestContinue: Continue walks on from an event of the saga, as a step
// under test would reply with it.
func TestContinue(t *testing.T) {
	k := sagatest.New(t, ordersaga.Saga, sagatest.Miniredis(t))
	e := k.Run("s1", order, ordersaga.PayAuthorized)
	e = k.Continue(e, ordersaga.PayRefunded, sagatest.Fail(ordersaga.StepInventory, "no stock"))
	if st := k.Record("s1"); e.Type() != ordersaga.PayRefunded || st.Status != saga.StatusCompensating || !slices.Equal(st.Compensate, []string{"order"}) {
		t.Fatalf("%s: saga %s, left to undo %v", e.Type(), st.Status, st.Compensate)
	}
	e = k.Continue(e, ordersaga.NotificationSent)
	if st := k.Record("s1"); st.Status != saga.StatusCompensated || st.Steps[len(st.Steps)-1].Step != ordersaga.StepNotification {
		t.Fatalf("saga %s %v", st.Status, sagatest.Outcomes(st))
	}
}

// TestOrchestrated: in orchestration mode the walk goes through the
// orchestrator, and can stop at the command it sends a step.
func TestOrchestrated(t *testing.T) {
	k := sagatest.New(t, ordersaga.Saga, sagatest.Miniredis(t))
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	orch := ops.NewOrchestrator(reg, k.Store, "/ksaga/orchestrator", slog.New(slog.DiscardHandler))
	e := k.Run("s1", order, ordersaga.RefundPay, sagatest.Orchestrated(orch), sagatest.Fail(ordersaga.StepInventory, "no stock"))
	st := k.Record("s1")
	if e.Type() != ordersaga.RefundPay || e.Source() != "/ksaga/orchestrator" || st.Next == nil || st.Next.ID != e.ID() ||
		!slices.Equal(sagatest.Outcomes(st), []string{"order/succeeded", "payment/succeeded", "inventory/failed"}) {
		t.Fatalf("walked to %s from %s: %v", e.Type(), e.Source(), sagatest.Outcomes(st))
	}
	k.Continue(e, ordersaga.SagaCompensated, sagatest.Orchestrated(orch))
	if st := k.Record("s1"); st.Status != saga.StatusCompensated {
		t.Fatalf("saga %s %v", st.Status, sagatest.Outcomes(st))
	}
}
