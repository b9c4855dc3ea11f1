package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

type env struct {
	rdb    *redis.Client
	store  *redisstore.Store
	fn     *sagatest.Func
	broker *sagatest.Broker
}

func setup(t *testing.T) env {
	t.Helper()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	store, _ := redisstore.New(rdb, redisstore.Options{})
	b := sagatest.NewBroker(t)
	fn := sagatest.Start(t, run, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "deadletter", "K_SINK": b.URL})
	return env{rdb, store, fn, b}
}

var order = ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1}}}

type step struct {
	name    string
	outcome saga.Outcome
}

// saga drives a saga through steps.
func (e env) saga(t *testing.T, id string, steps ...step) {
	t.Helper()
	for i, s := range steps {
		if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: id, EventSource: "/t", EventID: id + string(rune('a'+i)),
			Create: i == 0, Data: order.Marshal(), Deadline: time.Now().Add(time.Minute), Step: s.name, OnSuccess: s.outcome}); err != nil {
			t.Fatal(err)
		}
	}
}

// deadLetter is the event as the Broker dead-letters it; version is its
// sagaversion (0: none, as a client's Create has none).
func deadLetter(id, typ, sagaID string, version int, dest string, code string, body string) event.Event {
	attrs := []string{saga.ExtCorrelationID, sagaID,
		extDest, dest, extCode, code, extData, base64.StdEncoding.EncodeToString([]byte(body))}
	if version > 0 {
		attrs = append(attrs, saga.ExtSagaVersion, strconv.Itoa(version))
	}
	return sagatest.Event(id, typ, order, attrs...)
}

func (e env) deadletters(t *testing.T) []redis.XMessage {
	t.Helper()
	m, err := e.rdb.XRange(context.Background(), StreamKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCompensationDeadLetteredMarksCompensationFailed(t *testing.T) {
	e := setup(t)
	e.saga(t, "s1",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating}})
	dl := deadLetter("cancel-1", ordersaga.Cancel, "s1", 2, "http://order.saga.svc.cluster.local", "503", "injected fault")
	r := sagatest.Post(t, e.fn.URL, dl, false)
	if r.Status != 200 || r.Reply != nil {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	st, _ := e.store.Get(context.Background(), "s1")
	if st.Status != saga.StatusCompensationFailed || st.FailedStep != ordersaga.StepOrder ||
		!strings.Contains(st.Reason, "HTTP 503") || !strings.Contains(st.Reason, "injected fault") || !strings.Contains(st.Reason, "order.saga") {
		t.Fatalf("saga %+v", st)
	}
	sagatest.Post(t, e.fn.URL, dl, false) // redelivered dead letter
	if n := len(e.deadletters(t)); n != 1 {
		t.Fatalf("%d dead-letter records, want 1", n)
	}
	if len(e.broker.Events()) != 0 {
		t.Fatal("a failed compensation must not publish anything")
	}
}

// A compensation whose step was undone by another delivery (the sweeper
// sends the awaited failure event again past the deadline) is only kept:
// the saga goes on compensating instead of stopping at compensation_failed.
func TestDeadLetterOfCompensationAlreadyDoneIsKept(t *testing.T) {
	e := setup(t)
	e.saga(t, "s9",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}},
		step{ordersaga.StepInventory, saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment}})
	// The first inventory.failed (version 3) never reached payment.
	dl := deadLetter("stockfailed-1", ordersaga.StockFailed, "s9", 3, "http://payment.saga.svc.cluster.local", "503", "down")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 || r.Reply != nil {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	st, _ := e.store.Get(context.Background(), "s9")
	if st.Status != saga.StatusCompensating || st.Version != 4 || len(st.Compensate) != 1 {
		t.Fatalf("saga %+v, want compensating at version 4 with [order] to undo", st)
	}
	if n := len(e.deadletters(t)); n != 1 {
		t.Fatalf("%d dead-letter records, want 1", n)
	}
}

func TestForwardStepDeadLetteredFailsTheSagaIntoCompensation(t *testing.T) {
	e := setup(t)
	e.saga(t, "s2",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}})
	// payment.authorized could not reach inventory: inventory's step failed
	dl := deadLetter("auth-1", ordersaga.PayAuthorized, "s2", 2, "http://inventory.saga.svc.cluster.local", "500", "boom")
	e.broker.Down.Store(true)
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("broker down: %d %s, want 503 so the dead letter is retried", r.Status, r.Body)
	}
	e.broker.Down.Store(false)
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if m := e.deadletters(t); len(m) != 1 { // the redelivery is not kept again
		t.Fatalf("%d dead letters kept, want 1", len(m))
	}
	got := e.broker.Events()
	if len(got) != 1 || got[0].Type() != ordersaga.StockFailed || saga.SagaIDOf(got[0]) != "s2" {
		t.Fatalf("published %v", got)
	}
	st, _ := e.store.Get(context.Background(), "s2")
	if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepInventory {
		t.Fatalf("saga %+v", st)
	}
	if got[0].Extensions()[saga.ExtSagaVersion] != "3" {
		t.Fatalf("sagaversion %v", got[0].Extensions()[saga.ExtSagaVersion])
	}
}

func TestDeadLetterWithoutSagaIsKept(t *testing.T) {
	e := setup(t)
	ev := sagatest.Event("x", "com.example.other", map[string]int{"a": 1}, extCode, "400")
	for range 2 { // redelivered (the sink's answer lost): kept once
		if r := sagatest.Post(t, e.fn.URL, ev, false); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	m := e.deadletters(t)
	if len(m) != 1 || m[0].Values["type"] != "com.example.other" || m[0].Values["code"] != "400" {
		t.Fatalf("%v", m)
	}
	// a type outside the saga is kept, but labels no metric series of its own
	resp, err := http.Get(e.fn.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(b), "com.example.other") || !strings.Contains(string(b), `ksaga_step_events_total{outcome="acked",service="deadletter",type="other"} 2`) {
		t.Fatalf("metrics:\n%s", b)
	}
}

// TestDeadLetterOfUnknownSagaIsKept: a dead-lettered Create (its saga never
// started) is recorded for operators like any other dead letter.
func TestDeadLetterOfUnknownSagaIsKept(t *testing.T) {
	e := setup(t)
	dl := deadLetter("create-1", ordersaga.Create, "never-started", 0, "http://order.saga.svc.cluster.local", "503", "")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	m := e.deadletters(t)
	if len(m) != 1 || m[0].Values["type"] != ordersaga.Create || m[0].Values["saga_id"] != "never-started" || m[0].Values["code"] != "503" {
		t.Fatalf("dead letters %v", m)
	}
	if n, _ := e.rdb.Exists(context.Background(), redisstore.Key("never-started")).Result(); n != 0 || len(e.broker.Events()) != 0 {
		t.Fatalf("a saga was created (%d) or an event published (%v)", n, e.broker.Events())
	}
}

func TestStepThatAlreadySucceededIsOnlyNoted(t *testing.T) {
	e := setup(t)
	e.saga(t, "s3",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}})
	before, _ := e.store.Get(context.Background(), "s3")
	dl := deadLetter("created-1", ordersaga.Created, "s3", 1, "http://payment.saga.svc.cluster.local", "502", "")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.onlyKept(t, "s3", before, 1)
}

// TestConfirmDeadLetteredCompensatesTheWholeSaga: the order's confirm is the
// saga's last forward step, with every other step on the compensation stack
// (the order's create among them, under the same step name). If it cannot
// be delivered, the saga fails with io.ksaga.order.confirmfailed and
// compensates all of them, rather than staying running with the payment
// charged and the stock reserved.
func TestConfirmDeadLetteredCompensatesTheWholeSaga(t *testing.T) {
	forward := []step{
		{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}},
		{ordersaga.StepInventory, saga.Outcome{Outcome: "reserved", Compensable: true}},
	}
	for _, tc := range []struct {
		mode    string
		steps   []step
		typ     string
		version int
	}{
		{"choreography", forward, ordersaga.StockReserved, 3},
		// the orchestrator's transition (no history entry) sent the command
		{"orchestration", append(forward, step{}), ordersaga.Confirm, 4},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := setup(t)
			e.saga(t, "s4", tc.steps...)
			dl := deadLetter("confirm-1", tc.typ, "s4", tc.version, "http://order.saga.svc.cluster.local", "503", "")
			if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			got := e.broker.Events()
			if len(got) != 1 || got[0].Type() != ordersaga.ConfirmFailed || saga.SagaIDOf(got[0]) != "s4" ||
				got[0].Extensions()[saga.ExtSagaVersion] != strconv.Itoa(tc.version+1) {
				t.Fatalf("published %v", got)
			}
			st, _ := e.store.Get(context.Background(), "s4")
			// the saga's reason reaches the customer: no destination URL; the
			// details are in the kept record
			if st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepOrder || st.Reason != "the order step could not be reached" ||
				strings.Join(st.Compensate, ",") != "inventory,payment,order" {
				t.Fatalf("saga %+v", st)
			}
			if m := e.deadletters(t); len(m) != 1 || !strings.Contains(fmt.Sprint(m[0].Values), tc.typ+" could not be delivered to http://order.saga") {
				t.Fatalf("kept records %v", m)
			}
			sagatest.Post(t, e.fn.URL, dl, false) // redelivered: the same failure event again
			if got := e.broker.Events(); len(got) != 2 || got[1].ID() != got[0].ID() {
				t.Fatalf("published %v", got)
			}
			if st2, _ := e.store.Get(context.Background(), "s4"); st2.Version != st.Version {
				t.Fatalf("redelivery moved the saga: version %d → %d", st.Version, st2.Version)
			}
		})
	}
}

// TestConfirmThatRanIsOnlyNoted: a dead letter for a confirm whose saga has
// moved on since it was sent must not fail the saga.
func TestConfirmThatRanIsOnlyNoted(t *testing.T) {
	e := setup(t)
	e.saga(t, "s5",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}},
		step{ordersaga.StepInventory, saga.Outcome{Outcome: "reserved", Compensable: true}},
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "confirmed", Status: saga.StatusCompleted}})
	before, _ := e.store.Get(context.Background(), "s5")
	dl := deadLetter("reserved-1", ordersaga.StockReserved, "s5", 3, "http://order.saga.svc.cluster.local", "504", "")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.onlyKept(t, "s5", before, 1)
}

// onlyKept checks that the saga is exactly as before (a dead letter that
// changes nothing must not move its version: a failure event or a redrive
// may be on its way at that version), nothing was published, and the
// stream holds n dead letters.
func (e env) onlyKept(t *testing.T, id string, before saga.State, n int) {
	t.Helper()
	st, _ := e.store.Get(context.Background(), id)
	if st.Version != before.Version || len(st.Steps) != len(before.Steps) || st.Status != before.Status || st.Reason != before.Reason {
		t.Fatalf("saga %s moved: %+v, was %+v", id, st, before)
	}
	if got := e.broker.Events(); len(got) != 0 {
		t.Fatalf("published %v", got)
	}
	if m := e.deadletters(t); len(m) != n {
		t.Fatalf("%d dead letters kept, want %d", len(m), n)
	}
}

// TestLateDeadLetterKeepsAbortedSagaMoving: a saga aborted (here at its
// deadline) while a forward event was still retrying; that event's dead
// letter must not move the saga's version, or the abort's failure event,
// on its way at that version, would be refused as stale and the saga would
// stay compensating.
func TestLateDeadLetterKeepsAbortedSagaMoving(t *testing.T) {
	e := setup(t)
	e.saga(t, "s6",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}},                // v2: payment.authorized@2 retrying
		step{ordersaga.StepInventory, saga.Outcome{Outcome: "timed_out", Status: saga.StatusCompensating}}) // v3: inventory.failed@3 out
	before, _ := e.store.Get(context.Background(), "s6")
	dl := deadLetter("auth-1", ordersaga.PayAuthorized, "s6", 2, "http://inventory.saga.svc.cluster.local", "503", "")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.onlyKept(t, "s6", before, 1)
	// the failure event at v3 is still current: payment refunds
	if res, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "s6", EventSource: "/ksaga/order/sweeper", EventID: "failed-3",
		ExpectVersion: 3, Step: ordersaga.StepPayment, Allow: []saga.Status{saga.StatusCompensating},
		OnSuccess: saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment}}); err != nil || !res.Applied {
		t.Fatalf("refund at v3: %+v %v", res, err)
	}
}

// TestDeadLetterOfAppliedEventRepublishesItsReply: the step applied the
// event but its answer was lost and its retries failed: the dead-letter
// sink publishes the step's stored reply, so the saga goes on.
func TestDeadLetterOfAppliedEventRepublishesItsReply(t *testing.T) {
	e := setup(t)
	e.saga(t, "s7", step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}})
	dl := deadLetter("created-1", ordersaga.Created, "s7", 1, "http://payment.saga.svc.cluster.local", "504", "")
	applied, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "s7", EventSource: dl.Source(), EventID: dl.ID(),
		ExpectVersion: 1, Step: ordersaga.StepPayment,
		OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true, Reply: &saga.Reply{Type: ordersaga.PayAuthorized}}})
	if err != nil || !applied.Applied {
		t.Fatalf("payment: %+v %v", applied, err)
	}
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	got := e.broker.Events()
	if len(got) != 1 || got[0].Type() != ordersaga.PayAuthorized || got[0].Extensions()[saga.ExtSagaVersion] != "2" {
		t.Fatalf("published %v", got)
	}
	if st, _ := e.store.Get(context.Background(), "s7"); st.Version != 2 || st.Status != saga.StatusRunning {
		t.Fatalf("saga %+v", st)
	}
	if m := e.deadletters(t); len(m) != 1 { // and kept for operators
		t.Fatalf("%d dead letters kept", len(m))
	}
}

// movingStore moves the saga once, between the sink's read and its
// transition, as a sweeper replica aborting it would.
type movingStore struct {
	*redisstore.Store
	move func()
}

func (m *movingStore) Apply(ctx context.Context, t saga.Transition) (saga.Result, error) {
	if m.move != nil {
		move := m.move
		m.move = nil
		move()
	}
	return m.Store.Apply(ctx, t)
}

// TestDeadLetterDecidedAgainWhenSagaMoves: the saga moves between the
// sink's read and its compare-and-set; the dead letter is decided again on
// a fresh read (now only kept), never acknowledged unrecorded.
func TestDeadLetterDecidedAgainWhenSagaMoves(t *testing.T) {
	e := setup(t)
	e.saga(t, "s8",
		step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}},
		step{ordersaga.StepPayment, saga.Outcome{Outcome: "authorized", Compensable: true}})
	withRecord, err := redisstore.New(e.rdb, redisstore.Options{Effects: []saga.EffectScript{record}})
	if err != nil {
		t.Fatal(err)
	}
	store := &movingStore{Store: withRecord, move: func() {
		if _, err := e.store.Apply(context.Background(), saga.Transition{SagaID: "s8", EventSource: "/ksaga/order/sweeper", EventID: "deadline-s8",
			ExpectVersion: 2, Step: ordersaga.StepInventory, Allow: []saga.Status{saga.StatusRunning},
			OnSuccess: saga.Outcome{Outcome: "timed_out", Status: saga.StatusCompensating}}); err != nil {
			t.Error(err)
		}
	}}
	sink := sagatest.NewBroker(t)
	step := newStep(store, e.rdb, knfunc.NewSink(sink.URL, nil), ordersaga.OrderSaga, slog.New(slog.NewTextHandler(t.Output(), nil)))
	dl := deadLetter("auth-1", ordersaga.PayAuthorized, "s8", 2, "http://inventory.saga.svc.cluster.local", "503", "")
	if _, err := step.Handle(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	st, _ := e.store.Get(context.Background(), "s8")
	if m := e.deadletters(t); len(m) != 1 || st.Steps[len(st.Steps)-1].Outcome != "timed_out" || len(sink.Events()) != 0 {
		t.Fatalf("dead letters %v, saga %+v, published %v", m, st, sink.Events())
	}
}

// TestDeadLetterWithMalformedVersionIsKept: its step refused it (400), and
// so would a Participant; the sink keeps it rather than answering 400,
// which nobody retries.
func TestDeadLetterWithMalformedVersionIsKept(t *testing.T) {
	e := setup(t)
	e.saga(t, "s9", step{ordersaga.StepOrder, saga.Outcome{Outcome: "created", Compensable: true}})
	before, _ := e.store.Get(context.Background(), "s9")
	dl := deadLetter("created-1", ordersaga.Created, "s9", 0, "http://payment.saga.svc.cluster.local", "400", "")
	dl.SetExtension(saga.ExtSagaVersion, "v2")
	if r := sagatest.Post(t, e.fn.URL, dl, false); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.onlyKept(t, "s9", before, 1)
}
