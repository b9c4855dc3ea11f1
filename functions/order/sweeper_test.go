package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

type sweepEnv struct {
	sw     *sweeper
	store  *redisstore.Store
	broker *fntest.Broker
	now    time.Time
}

func newSweepEnv(t *testing.T) *sweepEnv {
	t.Helper()
	rdb := testredis.Start(t).Client(t)
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := fntest.NewBroker(t)
	sink := knfunc.NewSink(b.URL, nil)
	sink.Attempts = 1
	e := &sweepEnv{store: store, broker: b, now: time.Now()}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	ab := &aborter{store: store, def: ordersaga.OrderSaga, logger: logger, aborted: newAbortedCounter()}
	e.sw = &sweeper{aborter: ab, rdb: rdb, sink: sink, logger: logger, now: func() time.Time { return e.now }}
	return e
}

var sweptOrder = ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1}}}

// start creates a running saga with the deadline given and the forward
// steps named, each completed and compensable.
func (e *sweepEnv) start(t *testing.T, id string, deadline time.Time, steps ...string) {
	t.Helper()
	for i, name := range steps {
		if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: id, EventSource: "/t", EventID: id + strconv.Itoa(i),
			Create: i == 0, Data: sweptOrder.Marshal(), Deadline: deadline, ExpectVersion: saga.AnyVersion, Step: name,
			OnSuccess: saga.Outcome{Outcome: "done", Compensable: true}}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *sweepEnv) sweep(t *testing.T) int {
	t.Helper()
	n, err := e.sw.sweep(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	return n
}

func (e *sweepEnv) deadlineAborts(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := e.sw.aborted.WithLabelValues(deadlineCause.name).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func (e *sweepEnv) saga(t *testing.T, id string) saga.State {
	t.Helper()
	st, err := e.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSweepFailsOverdueSagas: a running saga past its deadline fails with
// the failure event of the step it waits on (the one after its newest
// completed step); a saga within its deadline is left alone.
func TestSweepFailsOverdueSagas(t *testing.T) {
	e := newSweepEnv(t)
	past := e.now.Add(-time.Second)
	e.start(t, "waits-payment", past, ordersaga.StepOrder)
	e.start(t, "waits-inventory", past, ordersaga.StepOrder, ordersaga.StepPayment)
	e.start(t, "waits-confirm", past, ordersaga.StepOrder, ordersaga.StepPayment, ordersaga.StepInventory)
	e.start(t, "in-time", e.now.Add(time.Minute), ordersaga.StepOrder)

	if n := e.sweep(t); n != 3 {
		t.Fatalf("sent %d failure events, want 3", n)
	}
	want := map[string]struct{ typ, step string }{
		"waits-payment":   {ordersaga.PayFailed, ordersaga.StepPayment},
		"waits-inventory": {ordersaga.StockFailed, ordersaga.StepInventory},
		"waits-confirm":   {ordersaga.ConfirmFailed, ordersaga.StepOrder},
	}
	got := e.broker.Events()
	for _, ev := range got {
		id := saga.SagaIDOf(ev)
		w, ok := want[id]
		st := e.saga(t, id)
		if !ok || ev.Type() != w.typ || ev.Source() != ordersaga.SourceSweeper ||
			ev.Extensions()[saga.ExtSagaVersion] != strconv.FormatInt(st.Version, 10) {
			t.Errorf("published %s for saga %s (sagaversion %v, saga at %d)", ev.Type(), id, ev.Extensions()[saga.ExtSagaVersion], st.Version)
			continue
		}
		last := st.Steps[len(st.Steps)-1]
		if st.Status != saga.StatusCompensating || st.FailedStep != w.step || last.Outcome != deadlineCause.outcome ||
			!strings.Contains(st.Reason, "deadline") || !strings.Contains(st.Reason, w.step) {
			t.Errorf("saga %s: %s, failed step %q, reason %q, last %+v", id, st.Status, st.FailedStep, st.Reason, last)
		}
		var o ordersaga.Order
		if err := ev.DataAs(&o); err != nil || o.OrderID != sweptOrder.OrderID || o.Reason != st.Reason {
			t.Errorf("saga %s: data %s (%v)", id, ev.Data(), err)
		}
	}
	if st := e.saga(t, "in-time"); st.Status != saga.StatusRunning || st.Version != 1 || len(got) != 3 {
		t.Fatalf("in-time saga %+v; %d events", st, len(got))
	}
	if n := e.deadlineAborts(t); n != 3 {
		t.Fatalf("ksaga_sagas_aborted_total{cause=\"deadline\"} %v, want 3", n)
	}
}

// TestSweepResendsUntilCompensationMoves: a failure event whose send failed,
// or that was lost, is sent again by the next sweep, with the same id, and
// the saga is failed once; once its compensation has moved, nothing more.
func TestSweepResendsUntilCompensationMoves(t *testing.T) {
	e := newSweepEnv(t)
	e.start(t, "s1", e.now.Add(-time.Second), ordersaga.StepOrder, ordersaga.StepPayment)

	e.broker.Down.Store(true)
	if n, err := e.sw.sweep(context.Background()); n != 0 || err == nil {
		t.Fatalf("broker down: sent %d, error %v; want 0 and an error", n, err)
	}
	failed := e.saga(t, "s1")
	if failed.Status != saga.StatusCompensating {
		t.Fatalf("saga %+v", failed)
	}
	e.broker.Down.Store(false)
	if n := e.sweep(t); n != 1 {
		t.Fatalf("sent %d after the broker came back, want 1", n)
	}
	if n := e.sweep(t); n != 1 { // the event was lost, say: nothing moved
		t.Fatalf("sent %d on the next sweep, want 1", n)
	}
	got := e.broker.Events()
	if len(got) != 2 || got[0].ID() != got[1].ID() || got[0].Type() != ordersaga.StockFailed {
		t.Fatalf("published %v", got)
	}
	if st := e.saga(t, "s1"); st.Version != failed.Version || len(st.Steps) != len(failed.Steps) {
		t.Fatalf("a resend moved the saga: %+v", st)
	}

	// payment refunds: the compensation is under way, the sweeper stays out
	if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "s1", EventSource: "/t", EventID: "refund",
		ExpectVersion: failed.Version, Step: ordersaga.StepPayment, Allow: []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment}}); err != nil {
		t.Fatal(err)
	}
	if n := e.sweep(t); n != 0 || len(e.broker.Events()) != 2 {
		t.Fatalf("sent %d after the compensation moved", n)
	}
	if n := e.deadlineAborts(t); n != 1 {
		t.Fatalf("ksaga_sagas_aborted_total{cause=\"deadline\"} %v: resends counted as sagas", n)
	}
}

// TestLateStepAfterSweepChangesNothing: the step the saga waited on
// answers after the sweeper failed the saga: its transition is refused (the
// version moved), so nothing is charged after the saga gave up.
func TestLateStepAfterSweepChangesNothing(t *testing.T) {
	e := newSweepEnv(t)
	e.start(t, "s1", e.now.Add(-time.Second), ordersaga.StepOrder)
	if n := e.sweep(t); n != 1 {
		t.Fatalf("sent %d", n)
	}
	res, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "s1", EventSource: "/ksaga/order", EventID: "created-1",
		ExpectVersion: 1, Step: ordersaga.StepPayment, Allow: []saga.Status{saga.StatusRunning},
		OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true}})
	if err != nil || res.Applied || res.Skipped == "" {
		t.Fatalf("late payment: %+v %v", res, err)
	}
	if st := e.saga(t, "s1"); st.Status != saga.StatusCompensating || strings.Join(st.Compensate, ",") != ordersaga.StepOrder {
		t.Fatalf("saga %+v", st)
	}
}

// TestSweepResendsLostCancel: a cancel whose failure event never reached
// the broker (the client gave up) is completed by the sweeper once the
// saga is overdue: the same event, from the cancel.
func TestSweepResendsLostCancel(t *testing.T) {
	e := newSweepEnv(t)
	e.start(t, "s1", e.now.Add(-time.Second), ordersaga.StepOrder)
	st := e.saga(t, "s1")
	failure, applied, err := e.sw.abort(context.Background(), st, cancelCause, func(string) string { return "cancelled" }, e.now)
	if err != nil || !applied {
		t.Fatalf("cancel: %v %v", applied, err)
	}
	if n := e.sweep(t); n != 1 {
		t.Fatalf("sent %d, want 1", n)
	}
	got := e.broker.Events()
	if len(got) != 1 || got[0].ID() != failure.ID() || got[0].Type() != ordersaga.PayFailed {
		t.Fatalf("published %v, want %s", got, failure.ID())
	}
	if n := e.deadlineAborts(t); n != 0 {
		t.Fatalf("counted as %v deadline aborts", n)
	}
}

// TestSweepNudgesCompensationThatNeverStarted: a forward step failed (here
// the dead-letter sink failed it) but its failure event never reached the
// broker; past the deadline the sweeper publishes the awaited step's
// failure event again at the saga's version, the same event on every
// sweep, until the compensation moves.
func TestSweepNudgesCompensationThatNeverStarted(t *testing.T) {
	e := newSweepEnv(t)
	e.start(t, "stuck", e.now.Add(-time.Second), ordersaga.StepOrder, ordersaga.StepPayment)
	e.start(t, "in-time", e.now.Add(time.Minute), ordersaga.StepOrder, ordersaga.StepPayment)
	e.start(t, "under-way", e.now.Add(-time.Second), ordersaga.StepOrder, ordersaga.StepPayment)
	for _, id := range []string{"stuck", "in-time", "under-way"} {
		if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: id, EventSource: "/ksaga/deadletter", EventID: "dl-" + id,
			ExpectVersion: 2, Step: ordersaga.StepInventory, Allow: []saga.Status{saga.StatusRunning},
			OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "undeliverable"}}); err != nil {
			t.Fatal(err)
		}
	}
	// the orchestrator heard under-way's failure and sent the refund
	// command (a transition that records no history): it is under way
	if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "under-way", EventSource: "/ksaga/orchestrator", EventID: "o-3",
		ExpectVersion: 3, Allow: []saga.Status{saga.StatusCompensating}}); err != nil {
		t.Fatal(err)
	}
	if n := e.sweep(t) + e.sweep(t); n != 2 {
		t.Fatalf("sent %d in two sweeps, want 2 (for stuck only)", n)
	}
	got := e.broker.Events()
	if got[0].Type() != ordersaga.StockFailed || saga.SagaIDOf(got[0]) != "stuck" || got[0].Extensions()[saga.ExtSagaVersion] != "3" ||
		got[1].ID() != got[0].ID() || saga.SagaIDOf(got[1]) != "stuck" {
		t.Fatalf("published %v", got)
	}
	var o ordersaga.Order
	if err := got[0].DataAs(&o); err != nil || o.OrderID != sweptOrder.OrderID {
		t.Fatalf("data %s: %v", got[0].Data(), err)
	}
	if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "stuck", EventSource: "/t", EventID: "refund",
		ExpectVersion: 3, Step: ordersaga.StepPayment, Allow: []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment}}); err != nil {
		t.Fatal(err)
	}
	if n := e.sweep(t); n != 0 {
		t.Fatalf("sent %d after the compensation moved", n)
	}
}
