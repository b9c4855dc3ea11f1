package ops_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ops"
	o "github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

const orchestratorSource = "/ksaga/orchestrator"

// TestDecide is the orchestrator's decision table: for every result of
// both definitions (and one without a final step or terminal events), in
// every status the saga can be in when it waits on that result, the next
// command or terminal event.
func TestDecide(t *testing.T) {
	st := func(s saga.Status, stack ...string) saga.State {
		return saga.State{Status: s, Compensate: append([]string{}, stack...)}
	}
	const (
		running      = saga.StatusRunning
		compensating = saga.StatusCompensating
		completed    = saga.StatusCompleted
		compensated  = saga.StatusCompensated
		failed       = saga.StatusCompensationFailed
	)
	tests := []struct {
		def    *saga.Definition
		state  saga.State
		result string
		want   string
	}{
		// abc: forward
		{abc, st(running, "a"), "t.a.done", "t.b.do"},
		{abc, st(running, "b", "a"), "t.b.done", "t.c.do"},
		{abc, st(completed), "t.c.done", "t.f.do"},
		// abc: a success the saga has moved past (aborted meanwhile)
		{abc, st(compensating, "a"), "t.a.done", ""},
		{abc, st(compensating, "b", "a"), "t.b.done", ""},
		{abc, st(compensated), "t.a.done", ""},
		{abc, st(failed, "a"), "t.b.done", ""},
		// abc: failures undo the newest completed step first
		{abc, st(compensated), "t.a.failed", "t.abc.compensated"}, // rejected at its start: nothing to undo, no final step
		{abc, st(compensating, "a"), "t.b.failed", "t.a.undo"},
		{abc, st(compensating, "b", "a"), "t.c.failed", "t.b.undo"},
		{abc, st(compensating, "a"), "t.b.undone", "t.a.undo"},
		{abc, st(compensated), "t.a.undone", "t.f.do"},
		// abc: the final step's result ends the saga as it ended
		{abc, st(completed), "t.f.done", "t.abc.completed"},
		{abc, st(compensated), "t.f.done", "t.abc.compensated"},
		{abc, st(failed), "t.f.done", ""},
		{abc, st(running, "a"), "t.f.done", ""},

		// the order saga
		{o.Saga, st(running, o.StepOrder), o.Created, o.AuthorizePay},
		{o.Saga, st(running, o.StepPayment, o.StepOrder), o.PayAuthorized, o.ReserveStock},
		{o.Saga, st(running, o.StepInventory, o.StepPayment, o.StepOrder), o.StockReserved, o.Confirm},
		{o.Saga, st(completed), o.Confirmed, o.SendNotification},
		{o.Saga, st(compensating, o.StepPayment, o.StepOrder), o.PayAuthorized, ""},
		{o.Saga, st(compensated), o.Rejected, o.SagaCompensated},
		{o.Saga, st(compensating, o.StepOrder), o.PayFailed, o.Cancel},
		{o.Saga, st(compensating, o.StepPayment, o.StepOrder), o.StockFailed, o.RefundPay},
		{o.Saga, st(compensating, o.StepInventory, o.StepPayment, o.StepOrder), o.ConfirmFailed, o.ReleaseStock},
		{o.Saga, st(compensating, o.StepPayment, o.StepOrder), o.StockReleased, o.RefundPay},
		{o.Saga, st(compensating, o.StepOrder), o.PayRefunded, o.Cancel},
		{o.Saga, st(compensated), o.Cancelled, o.SendNotification},
		{o.Saga, st(completed), o.NotificationSent, o.SagaCompleted},
		{o.Saga, st(compensated), o.NotificationSent, o.SagaCompensated},
		{o.Saga, st(failed), o.NotificationSent, ""},

		// xy: no final step, no terminal events: nothing to send at the end
		{xy, st(running, "x"), "t.x.done", "t.y.do"},
		{xy, st(completed), "t.y.done", ""},
		{xy, st(compensating, "x"), "t.y.failed", "t.x.undo"},
		{xy, st(compensated), "t.x.undone", ""},
		{xy, st(compensated), "t.x.failed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.def.Name+"/"+string(tt.state.Status)+"/"+tt.result, func(t *testing.T) {
			got, err := ops.Decide(tt.def, tt.state, tt.result)
			if err != nil || got != tt.want {
				t.Fatalf("Decide(%v %v, %s) = %q, %v; want %q", tt.state.Status, tt.state.Compensate, tt.result, got, err, tt.want)
			}
		})
	}
	// every result of every definition is in the table
	for _, def := range []*saga.Definition{abc, o.Saga, xy} {
		for _, r := range def.Results() {
			if !slices.ContainsFunc(tests, func(tt struct {
				def    *saga.Definition
				state  saga.State
				result string
				want   string
			}) bool {
				return tt.def == def && tt.result == r
			}) {
				t.Errorf("saga %s: result %s has no row", def.Name, r)
			}
		}
	}
	if _, err := ops.Decide(abc, st(running, "a"), "t.unrelated"); saga.Code(err) != saga.EInvalid {
		t.Errorf("a type that is no result of the saga: %v, want an Invalid error", err)
	}
	if _, err := ops.Decide(abc, st(compensating, "nosuchstep"), "t.b.failed"); err == nil {
		t.Error("a stack naming a step without compensation must be an error")
	}
}

// orchestrate runs saga id of def in orchestration mode: steps handle
// commands, the orchestrator every result, until the orchestrator sends
// nothing more. It checks every command the orchestrator sends — the next
// version, a deterministic id, its own source, caused by the result — and
// that a redelivered result gets the very same command. It returns the
// types of the events in order.
func orchestrate(t *testing.T, e *env, orch *ops.Orchestrator, def *saga.Definition, id string, fail map[string]string) []string {
	t.Helper()
	ctx := context.Background()
	p := e.steps(def, fail)
	cmd := start(def, id)
	var types []string
	for range 20 {
		types = append(types, cmd.Type())
		res, err := p.Handle(ctx, cmd)
		if err != nil || res == nil {
			t.Fatalf("step on %s: %v %v", cmd.Type(), res, err)
		}
		types = append(types, res.Type())
		next, err := orch.Handle(ctx, *res)
		if err != nil {
			t.Fatalf("orchestrator on %s: %v", res.Type(), err)
		}
		if next == nil {
			return types
		}
		if v, w := version(t, *next), version(t, *res)+1; v != w {
			t.Fatalf("%s after %s: sagaversion %d, want %d", next.Type(), res.Type(), v, w)
		}
		if next.ID() != saga.ReplyID(res.Source(), res.ID(), next.Type()) || next.Source() != orchestratorSource ||
			saga.SagaIDOf(*next) != id || next.Extensions()[saga.ExtCausationID] != res.ID() {
			t.Fatalf("command %s: id %s source %s ext %v", next.Type(), next.ID(), next.Source(), next.Extensions())
		}
		again, err := orch.Handle(ctx, *res) // redelivered
		if err != nil || again == nil || !same(*again, *next) {
			t.Fatalf("a redelivered %s: %v %v, want the same %s", res.Type(), again, err, next.Type())
		}
		if def.Completed == next.Type() || def.Compensated == next.Type() {
			types = append(types, next.Type())
			return types
		}
		cmd = *next
	}
	t.Fatalf("saga %s never ended: %v", id, types)
	return nil
}

// TestOrchestratorRunsSagas: a saga of either definition runs end to end
// with the orchestrator deciding every step from its record.
func TestOrchestratorRunsSagas(t *testing.T) {
	tests := []struct {
		name   string
		def    *saga.Definition
		fail   map[string]string
		want   []string
		status saga.Status
	}{
		{"abc completes", abc, nil, []string{"t.a.do", "t.a.done", "t.b.do", "t.b.done", "t.c.do", "t.c.done", "t.f.do", "t.f.done", "t.abc.completed"}, saga.StatusCompleted},
		{"abc fails at its pivot", abc, map[string]string{"c": "no"},
			[]string{"t.a.do", "t.a.done", "t.b.do", "t.b.done", "t.c.do", "t.c.failed", "t.b.undo", "t.b.undone", "t.a.undo", "t.a.undone", "t.f.do", "t.f.done", "t.abc.compensated"},
			saga.StatusCompensated},
		{"abc rejected at its start", abc, map[string]string{"a": "no"}, []string{"t.a.do", "t.a.failed", "t.abc.compensated"}, saga.StatusCompensated},
		{"order completes", o.Saga, nil,
			[]string{o.Create, o.Created, o.AuthorizePay, o.PayAuthorized, o.ReserveStock, o.StockReserved, o.Confirm, o.Confirmed, o.SendNotification, o.NotificationSent, o.SagaCompleted},
			saga.StatusCompleted},
		{"order out of stock", o.Saga, map[string]string{o.StepInventory: "out of stock"},
			[]string{o.Create, o.Created, o.AuthorizePay, o.PayAuthorized, o.ReserveStock, o.StockFailed, o.RefundPay, o.PayRefunded, o.Cancel, o.Cancelled, o.SendNotification, o.NotificationSent, o.SagaCompensated},
			saga.StatusCompensated},
		{"xy ends with nothing to send", xy, nil, []string{"t.x.do", "t.x.done", "t.y.do", "t.y.done"}, saga.StatusCompleted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			orch := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil)
			got := orchestrate(t, e, orch, tt.def, "s1", tt.fail)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("events\n got %v\nwant %v", got, tt.want)
			}
			st := e.get("s1")
			if st.Status != tt.status {
				t.Fatalf("status %s, want %s", st.Status, tt.status)
			}
			// the orchestrator's decisions record no history: one entry per step run
			steps := 0
			for _, ty := range got {
				if r, ok := tt.def.Route(ty); ok && r.Command == ty {
					steps++
				}
			}
			if len(st.Steps) != steps {
				t.Fatalf("history %v: %d entries, want %d (one per step run)", sagatest.Outcomes(st), len(st.Steps), steps)
			}
			if tt.def == xy && st.Next != nil {
				t.Fatalf("a saga the orchestrator ends with nothing waits on nothing, not %+v", st.Next)
			}
		})
	}
}

// TestOrchestratorNothingToSendTwice: a result after which there is
// nothing to send (a saga without terminal events ended), redelivered, is
// answered with no reply either — not with an event without a type.
func TestOrchestratorNothingToSendTwice(t *testing.T) {
	e := newEnv(t)
	orch := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, nil)
	ctx := context.Background()
	p := e.steps(xy, nil)
	res, err := p.Handle(ctx, start(xy, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := orch.Handle(ctx, *res)
	if err != nil || cmd == nil || cmd.Type() != "t.y.do" {
		t.Fatalf("%v %v", cmd, err)
	}
	done, err := p.Handle(ctx, *cmd)
	if err != nil || done == nil || done.Type() != "t.y.done" {
		t.Fatalf("%v %v", done, err)
	}
	for i := range 2 {
		got, err := orch.Handle(ctx, *done)
		if err != nil || got != nil {
			t.Fatalf("delivery %d of the last result: %v %v, want no reply", i+1, got, err)
		}
	}
}

// TestOrchestratorRefusesWhatTheSagaDoesNotAwait: a result that is not the
// event its saga emitted and waits on is refused as a security event
// (400) and changes nothing; a result of a version the saga has moved past
// is acknowledged with no reply.
func TestOrchestratorRefusesWhatTheSagaDoesNotAwait(t *testing.T) {
	e := newEnv(t)
	orch := ops.NewOrchestrator(e.sagas, e.store, orchestratorSource, e.op.Logger)
	ctx := context.Background()
	awaited := e.abc.Run("s1", order, "t.a.done")
	other := e.abc.Run("s2", order, "t.a.done")
	orderAwaited := e.order.Run("o1", order, o.Created)
	tamper := func(f func(ev *event.Event)) event.Event {
		c := awaited.Clone()
		f(&c)
		return c
	}
	refused := []struct {
		name string
		ev   event.Event
	}{
		{"another id", tamper(func(ev *event.Event) { ev.SetID("forged") })},
		{"another source", tamper(func(ev *event.Event) { ev.SetSource("/attacker") })},
		{"another result type", tamper(func(ev *event.Event) { ev.SetType("t.b.done") })},
		{"a failure instead", tamper(func(ev *event.Event) { ev.SetType("t.b.failed") })},
		{"other data", tamper(func(ev *event.Event) { _ = ev.SetData(event.ApplicationJSON, map[string]int{"total": 0}) })},
		{"a version ahead", withVersion(awaited, version(t, awaited)+1)},
		{"another saga's event", func() event.Event {
			c := other.Clone()
			c.SetExtension(saga.ExtCorrelationID, "s1")
			return c
		}()},
		{"another definition's event", func() event.Event {
			c := orderAwaited.Clone()
			c.SetExtension(saga.ExtCorrelationID, "s1")
			return c
		}()},
	}
	before := e.get("s1")
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			got, err := orch.Handle(ctx, tt.ev)
			if got != nil || !saga.IsSecurity(err) || saga.StatusCode(err) != 400 {
				t.Fatalf("got %v, %v; want a 400 security refusal", got, err)
			}
			e.unchanged("s1", before)
		})
	}
	if !strings.Contains(e.logs.String(), `"security_event":"refused"`) {
		t.Errorf("refusals are logged as security events:\n%s", e.logs)
	}

	invalid := []struct {
		name string
		ev   event.Event
	}{
		{"no saga id", tamper(func(ev *event.Event) { ev.SetExtension(saga.ExtCorrelationID, nil) })},
		{"no sagaversion", tamper(func(ev *event.Event) { ev.SetExtension(saga.ExtSagaVersion, nil) })},
		{"a malformed sagaversion", tamper(func(ev *event.Event) { ev.SetExtension(saga.ExtSagaVersion, "2x") })},
		{"a command, not a result", tamper(func(ev *event.Event) { ev.SetType("t.b.do") })},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			got, err := orch.Handle(ctx, tt.ev)
			if got != nil || saga.Code(err) != saga.EInvalid {
				t.Fatalf("got %v, %v; want Invalid", got, err)
			}
			e.unchanged("s1", before)
		})
	}

	// the awaited event is admitted; then the same result under another id,
	// at the version the saga has moved past, is stale: no reply, no change
	cmd, err := orch.Handle(ctx, awaited)
	if err != nil || cmd == nil || cmd.Type() != "t.b.do" {
		t.Fatalf("awaited: %v %v", cmd, err)
	}
	moved := e.get("s1")
	stale := tamper(func(ev *event.Event) { ev.SetID("late") })
	if got, err := orch.Handle(ctx, stale); got != nil || err != nil {
		t.Fatalf("stale: %v %v, want no reply", got, err)
	}
	e.unchanged("s1", moved)
	ghost := tamper(func(ev *event.Event) { ev.SetExtension(saga.ExtCorrelationID, "ghost") })
	if got, err := orch.Handle(ctx, ghost); got != nil || err != nil {
		t.Fatalf("unknown saga: %v %v, want no reply", got, err)
	}
	if _, err := e.store.Get(ctx, "ghost"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("an unknown saga's result created it: %v", err)
	}
}

// TestOrchestratorHears lists what the orchestrator subscribes to: every
// result of every definition it serves, and nothing else.
func TestOrchestratorHears(t *testing.T) {
	sagas, err := ops.NewRegistry(abc, o.Saga)
	if err != nil {
		t.Fatal(err)
	}
	orch := ops.NewOrchestrator(sagas, nil, orchestratorSource, nil)
	want := append(abc.Results(), o.Saga.Results()...)
	slices.Sort(want)
	if got := orch.ResultTypes(); !slices.Equal(got, want) {
		t.Fatalf("result types %v, want %v", got, want)
	}
	for _, ty := range []string{"t.a.do", o.Create, o.SagaCompleted, "t.abc.completed", "com.example.other"} {
		if orch.Handles(ty) {
			t.Errorf("the orchestrator must not hear %s", ty)
		}
	}
}
