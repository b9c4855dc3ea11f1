package ops_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ksaga/ksaga/ops"
	o "github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func (e *env) sweeper(op *ops.Operator) *ops.Sweeper {
	e.t.Helper()
	if op == nil {
		op = e.op
	}
	sw, err := ops.NewSweeper(op)
	if err != nil {
		e.t.Fatal(err)
	}
	return sw
}

// sweep runs one pass and returns on how many sagas it acted.
func (e *env) sweep(sw *ops.Sweeper) int {
	e.t.Helper()
	n, err := sw.Sweep(context.Background())
	if err != nil {
		e.t.Fatalf("sweep: %v", err)
	}
	return n
}

// aborted reads the sweeper's ksaga_sagas_aborted_total for a saga.
func aborted(t *testing.T, sw *ops.Sweeper, sagaName string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sw.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ksaga_sagas_aborted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["saga"] == sagaName && labels["cause"] == ops.CauseDeadline.Name {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no ksaga_sagas_aborted_total{saga=%q}", sagaName)
	return 0
}

// accept records saga id of def accepted and returns its start command,
// as an API would publish it.
func (e *env) accept(def *saga.Definition, id string) event.Event {
	e.t.Helper()
	cmd := start(def, id)
	res, err := e.op.Accept(context.Background(), def, id, "key-"+id, &cmd)
	if err != nil || !res.Applied {
		e.t.Fatalf("accept: %+v %v", res, err)
	}
	return cmd
}

// TestSweeperResendsAcceptedStart: an accepted saga whose start has not
// run by its due time gets its start command again, the very same one,
// and is looked at again later; the command then starts it.
func TestSweeperResendsAcceptedStart(t *testing.T) {
	e := newEnv(t)
	sw := e.sweeper(nil)
	cmd := e.accept(abc, "s1")
	before := e.get("s1")
	if e.sweep(sw) != 0 || len(e.sink.Events()) != 0 {
		t.Fatalf("a saga not yet due was acted on: %v", e.sink.Types())
	}
	e.later(saga.NudgeAfter + time.Second)
	from := e.now()
	if n := e.sweep(sw); n != 1 {
		t.Fatalf("acted on %d sagas, want 1", n)
	}
	to := e.now()
	pub := e.sink.Events()
	if len(pub) != 1 || !same(pub[0], cmd) {
		t.Fatalf("published %v, want the start command %v", pub, cmd)
	}
	st := e.get("s1")
	if st.Status != saga.StatusAccepted || st.Version != before.Version ||
		st.Due.Before(from.Add(saga.NudgeAfter).Truncate(time.Millisecond)) || st.Due.After(to.Add(saga.NudgeAfter)) {
		t.Fatalf("saga %s v%d due %v (pass at %v)", st.Status, st.Version, st.Due, from)
	}
	if e.sweep(sw) != 0 || len(e.sink.Events()) != 1 {
		t.Fatalf("rescheduled, it is not due again: published %v", e.sink.Types())
	}
	if reply, err := e.steps(abc, nil).Handle(context.Background(), pub[0]); err != nil || reply == nil || reply.Type() != "t.a.done" {
		t.Fatalf("the resent start: %v %v", reply, err)
	}
	if st := e.get("s1"); st.Status != saga.StatusRunning {
		t.Fatalf("status %s", st.Status)
	}
}

// TestSweeperRejectsAcceptedPastDeadline: an accepted saga whose start
// never ran is rejected at its deadline (compensated, nothing to undo),
// with its first step's failure event published.
func TestSweeperRejectsAcceptedPastDeadline(t *testing.T) {
	for _, def := range []*saga.Definition{abc, o.Saga} {
		t.Run(def.Name, func(t *testing.T) {
			e := newEnv(t)
			sw := e.sweeper(nil)
			e.accept(def, "s1")
			e.later(time.Duration(def.Timeout) + time.Second)
			if n := e.sweep(sw); n != 1 {
				t.Fatalf("acted on %d", n)
			}
			st := e.get("s1")
			s0 := def.Steps[0]
			last := st.Steps[len(st.Steps)-1]
			if st.Status != saga.StatusCompensated || st.FailedStep != s0.Name || last.Outcome != ops.CauseDeadline.Outcome ||
				!strings.HasPrefix(st.Reason, "deadline ") || !strings.HasSuffix(st.Reason, " passed waiting on the "+s0.Name+" step") {
				t.Fatalf("saga %+v", st)
			}
			if pub := e.sink.Events(); len(pub) != 1 || pub[0].Type() != s0.Failed || version(t, pub[0]) != st.Version {
				t.Fatalf("published %v", e.sink.Types())
			}
			if got := aborted(t, sw, def.Name); got != 1 {
				t.Fatalf("aborted metric %v", got)
			}
		})
	}
}

// TestSweeperAbortsRunningPastDeadline: a running saga past its deadline
// is failed at the step it waits on (timed_out), whose failure event is
// published and compensates it.
func TestSweeperAbortsRunningPastDeadline(t *testing.T) {
	tests := []struct {
		def    *saga.Definition
		seed   func(e *env) event.Event
		step   string
		failed string
	}{
		{abc, func(e *env) event.Event { return e.abc.Run("s1", order, "t.b.done") }, "c", "t.c.failed"},
		{o.Saga, func(e *env) event.Event { return e.order.Run("s1", order, o.PayAuthorized) }, o.StepInventory, o.StockFailed},
	}
	for _, tt := range tests {
		t.Run(tt.def.Name, func(t *testing.T) {
			e := newEnv(t)
			sw := e.sweeper(nil)
			tt.seed(e)
			before := e.get("s1")
			e.later(time.Duration(tt.def.Timeout) + time.Second)
			if n := e.sweep(sw); n != 1 {
				t.Fatalf("acted on %d", n)
			}
			st := e.get("s1")
			last := st.Steps[len(st.Steps)-1]
			if st.Status != saga.StatusCompensating || st.Version != before.Version+1 || last.Step != tt.step || last.Outcome != "timed_out" ||
				st.FailedStep != tt.step || st.Reason != "deadline "+before.Deadline.UTC().Format(time.RFC3339)+" passed waiting on the "+tt.step+" step" {
				t.Fatalf("saga %+v", st)
			}
			pub := e.sink.Events()
			if len(pub) != 1 || pub[0].Type() != tt.failed || version(t, pub[0]) != st.Version || saga.SagaIDOf(pub[0]) != "s1" {
				t.Fatalf("published %v", e.sink.Types())
			}
			if got := aborted(t, sw, tt.def.Name); got != 1 {
				t.Fatalf("aborted metric %v", got)
			}
			e.choreograph(tt.def, pub[0])
			if st := e.get("s1"); st.Status != saga.StatusCompensated {
				t.Fatalf("after the failure event: %s %v", st.Status, sagatest.Outcomes(st))
			}
		})
	}
}

// TestSweeperAbortsAtStepTimeout: a saga waiting on a step longer than
// the step's own timeout is aborted there, before its deadline; a saga
// waiting as long on a step without a timeout only gets its event again.
func TestSweeperAbortsAtStepTimeout(t *testing.T) {
	e := newEnv(t)
	sw := e.sweeper(nil)
	e.abc.Run("s1", order, "t.a.done") // waits on b (1m)
	waiting := e.abc.Run("s2", order, "t.b.done")
	e.later(time.Minute + time.Second)
	if n := e.sweep(sw); n != 2 {
		t.Fatalf("acted on %d, want 2", n)
	}
	st := e.get("s1")
	if st.Status != saga.StatusCompensating || st.FailedStep != "b" || st.Reason != "the b step did not answer within 1m0s waiting on the b step" {
		t.Fatalf("saga %+v", st)
	}
	if st := e.get("s2"); st.Status != saga.StatusRunning {
		t.Fatalf("s2 %s: it waits on c, which has no timeout", st.Status)
	}
	var types []string
	for _, ev := range e.sink.Events() {
		types = append(types, saga.SagaIDOf(ev)+":"+ev.Type())
		if saga.SagaIDOf(ev) == "s2" && !same(ev, waiting) {
			t.Fatalf("s2 resent %v, want %v", ev, waiting)
		}
	}
	if strings.Join(types, " ") != "s1:t.b.failed s2:t.b.done" {
		t.Fatalf("published %v", types)
	}
	if got := aborted(t, sw, abc.Name); got != 1 {
		t.Fatalf("aborted metric %v", got)
	}
}

// TestSweeperResendsAwaitedEvent: a running or compensating saga on
// which nothing moved by its due time, before its deadline, gets the
// event it waits on again — the same event, same id and version — and
// is rescheduled (to the step's timeout if that comes first).
func TestSweeperResendsAwaitedEvent(t *testing.T) {
	e := newEnv(t)
	sw := e.sweeper(nil)
	awaited := map[string]event.Event{
		"running":      e.abc.Run("running", order, "t.b.done"),
		"compensating": e.abc.Run("compensating", order, "t.c.failed", sagatest.Fail("c", "no")),
		"timed step":   e.abc.Run("timed step", order, "t.a.done"),
		"order":        e.order.Run("order", order, o.StockFailed, sagatest.Fail(o.StepInventory, "out of stock")),
	}
	before := map[string]saga.State{}
	for id := range awaited {
		before[id] = e.get(id)
	}
	e.later(saga.NudgeAfter + time.Second)
	from := e.now()
	if n := e.sweep(sw); n != len(awaited) {
		t.Fatalf("acted on %d, want %d", n, len(awaited))
	}
	to := e.now()
	pub := e.sink.Events()
	if len(pub) != len(awaited) {
		t.Fatalf("published %v", e.sink.Types())
	}
	for _, ev := range pub {
		id := saga.SagaIDOf(ev)
		if !same(ev, awaited[id]) {
			t.Fatalf("%s: resent %v, want %v", id, ev, awaited[id])
		}
		st := e.get(id)
		e.unchanged(id, before[id])
		var lo, hi time.Time
		if id == "timed step" { // b's timeout comes before the next nudge
			lo, hi = st.UpdatedAt.Add(time.Minute), st.UpdatedAt.Add(time.Minute)
		} else {
			lo, hi = from.Add(saga.NudgeAfter).Truncate(time.Millisecond), to.Add(saga.NudgeAfter)
		}
		if st.Due.Before(lo) || st.Due.After(hi) {
			t.Fatalf("%s due %v, want in [%v, %v]", id, st.Due, lo, hi)
		}
	}
	if n := e.sweep(sw); n != 0 || len(e.sink.Events()) != len(awaited) {
		t.Fatalf("a second pass acted on %d", n)
	}
}

// barrierStore holds every change until n records have been read: two
// sweepers read the same saga before either changes it.
type barrierStore struct {
	saga.Store
	reads   atomic.Int32
	n       int32
	release chan struct{}
	once    sync.Once
}

func (b *barrierStore) Get(ctx context.Context, id string) (saga.State, error) {
	st, err := b.Store.Get(ctx, id)
	if b.reads.Add(1) >= b.n {
		b.once.Do(func() { close(b.release) })
	}
	return st, err
}

func (b *barrierStore) Apply(ctx context.Context, c saga.Change) (saga.Result, error) {
	select {
	case <-b.release:
	case <-time.After(10 * time.Second):
		return saga.Result{}, errors.New("barrier: the other sweeper never read the saga")
	}
	return b.Store.Apply(ctx, c)
}

// TestTwoSweepersActOnce: two sweepers that read the same saga past its
// deadline before either acts abort it once: one history entry, one
// count, one failure event (published again by the loser, same id).
func TestTwoSweepersActOnce(t *testing.T) {
	e := newEnv(t)
	e.abc.Run("s1", order, "t.b.done")
	e.later(time.Duration(abc.Timeout) + time.Second)
	// each sweeper reads the record twice (the pass, then the abort)
	// before its change
	b := &barrierStore{Store: e.store, n: 4, release: make(chan struct{})}
	var sws [2]*ops.Sweeper
	var acted [2]int
	var errs [2]error
	var wg sync.WaitGroup
	for i := range sws {
		op := *e.op
		op.Store = b
		sws[i] = e.sweeper(&op)
		wg.Add(1)
		go func() {
			defer wg.Done()
			acted[i], errs[i] = sws[i].Sweep(context.Background())
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if acted[0]+acted[1] != 1 {
		t.Fatalf("the sweepers acted %d and %d times, want once in all", acted[0], acted[1])
	}
	if n := aborted(t, sws[0], abc.Name) + aborted(t, sws[1], abc.Name); n != 1 {
		t.Fatalf("aborted metric %v, want 1", n)
	}
	st := e.get("s1")
	timedOut := 0
	for _, s := range st.Steps {
		if s.Outcome == "timed_out" {
			timedOut++
		}
	}
	pub := e.sink.Events()
	if timedOut != 1 || len(pub) == 0 {
		t.Fatalf("history %v, published %v", sagatest.Outcomes(st), e.sink.Types())
	}
	for _, ev := range pub {
		if !same(ev, pub[0]) {
			t.Fatalf("published %v and %v", pub[0], ev)
		}
	}
}

// TestSweeperCompactsIndexes: once sagas have expired, a pass removes
// their index entries: they are no longer counted, nor due.
func TestSweeperCompactsIndexes(t *testing.T) {
	e := newEnv(t)
	// Long enough for the sagas to run and be counted on a slow machine.
	short, err := redisstore.New(e.rdb, redisstore.Options{Retention: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// a saga left running, due at its deadline, expires then; a
	// completed one a retention after it completed
	p := steps(t, abc, short, nil, time.Millisecond)
	if _, err := p.Handle(ctx, start(abc, "running")); err != nil {
		t.Fatal(err)
	}
	ev, err := p.Handle(ctx, start(abc, "done"))
	if err != nil {
		t.Fatal(err)
	}
	for ev != nil && ev.Type() != "t.f.done" {
		if ev, err = p.Handle(ctx, *ev); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := short.Stats(ctx, abc.Name, time.Now())
	if err != nil || stats.ByStatus[saga.StatusRunning] != 1 || stats.ByStatus[saga.StatusCompleted] != 1 {
		t.Fatalf("before: %+v %v", stats, err)
	}
	sagatest.Eventually(t, 20*time.Second, func() error {
		for _, id := range []string{"running", "done"} {
			if _, err := short.Get(ctx, id); !errors.Is(err, saga.ErrNotFound) {
				return errors.New(id + " has not expired yet")
			}
		}
		return nil
	})
	stats, err = short.Stats(ctx, abc.Name, time.Now())
	if err != nil || stats.ByStatus[saga.StatusRunning] != 1 || stats.Overdue != 1 {
		t.Fatalf("expired, before the pass, the indexes still name it: %+v %v", stats, err)
	}
	op := *e.op
	op.Store = short
	if n := e.sweep(e.sweeper(&op)); n != 0 {
		t.Fatalf("acted on %d expired sagas", n)
	}
	stats, err = short.Stats(ctx, abc.Name, time.Now())
	if err != nil || stats.ByStatus[saga.StatusRunning] != 0 || stats.Overdue != 0 {
		t.Fatalf("after the pass: %+v %v", stats, err)
	}
	if n, err := short.Compact(ctx, time.Now(), 1000); n != 0 || err != nil {
		t.Fatalf("compacted again: %d %v", n, err)
	}
	if len(e.sink.Events()) != 0 {
		t.Fatalf("published %v", e.sink.Types())
	}
}

// TestSweeperPublishFailsThenResends: the Broker is down when the sweeper
// aborts a saga: the pass fails (the PingSource's next ping comes), the
// saga is aborted nonetheless, and a later pass sends its failure event.
func TestSweeperPublishFailsThenResends(t *testing.T) {
	e := newEnv(t)
	sw := e.sweeper(nil)
	e.abc.Run("s1", order, "t.b.done")
	e.later(time.Duration(abc.Timeout) + time.Second)
	e.sink.down.Store(true)
	if _, err := sw.Sweep(context.Background()); err == nil {
		t.Fatal("a pass that could not publish reports no error")
	}
	st := e.get("s1")
	if st.Status != saga.StatusCompensating || aborted(t, sw, abc.Name) != 1 {
		t.Fatalf("saga %s, metric %v", st.Status, aborted(t, sw, abc.Name))
	}
	e.sink.down.Store(false)
	e.later(time.Duration(abc.Timeout) + saga.NudgeAfter + 2*time.Second)
	if n := e.sweep(sw); n != 1 {
		t.Fatalf("acted on %d", n)
	}
	pub := e.sink.Events()
	if len(pub) != 1 || pub[0].Type() != "t.c.failed" || pub[0].ID() != st.Next.ID || version(t, pub[0]) != st.Version {
		t.Fatalf("published %v", pub)
	}
	if aborted(t, sw, abc.Name) != 1 {
		t.Fatal("a resend counted as another abort")
	}
}

// TestSweeperServes: any event (a PingSource's) runs a pass; the sweeper
// needs a sink; a due saga of a definition it does not serve is left
// alone.
func TestSweeperServes(t *testing.T) {
	e := newEnv(t)
	op := *e.op
	op.Sink = nil
	if _, err := ops.NewSweeper(&op); !errors.Is(err, ops.ErrNoSink) {
		t.Fatalf("%v, want ErrNoSink", err)
	}
	e.accept(abc, "s1")
	e.accept(o.Saga, "o1")
	onlyOrders, err := ops.NewRegistry(o.Saga)
	if err != nil {
		t.Fatal(err)
	}
	op = *e.op
	op.Sagas = onlyOrders
	sw := e.sweeper(&op)
	e.later(saga.NudgeAfter + time.Second)
	ping := sagatest.Event("p1", "dev.knative.sources.ping", map[string]string{"hello": "sweeper"})
	if !sw.Handles(ping.Type()) {
		t.Fatal("the sweeper must take a ping")
	}
	if got, err := sw.Handle(context.Background(), ping); got != nil || err != nil {
		t.Fatalf("%v %v", got, err)
	}
	pub := e.sink.Events()
	if len(pub) != 1 || saga.SagaIDOf(pub[0]) != "o1" || pub[0].Type() != o.Create {
		t.Fatalf("published %v", pub)
	}
	if st := e.get("s1"); !st.Overdue(e.now()) || len(e.sink.Events()) != 1 {
		t.Fatalf("the abc saga was acted on by a sweeper that does not serve it: %+v", st)
	}
}

// TestSweeperIsNotBlockedByOthersSagas: sagas of a definition the sweeper
// does not serve (another deployment on the same Redis, with its own
// sweeper; a definition since removed) are due like any other, and left
// alone. A full page of them, due first, must not hide the sagas it
// serves: they are still aborted past their deadline.
func TestSweeperIsNotBlockedByOthersSagas(t *testing.T) {
	e := newEnv(t)
	mine, err := ops.NewRegistry(abc)
	if err != nil {
		t.Fatal(err)
	}
	op := *e.op
	op.Sagas = mine
	sw := e.sweeper(&op)
	sw.Page = 2
	others := sagatest.New(t, xy, e.rdb)
	for _, id := range []string{"x1", "x2", "x3"} { // due first
		others.Run(id, order, "t.x.done")
	}
	e.abc.Run("s1", order, "t.a.done")
	e.later(time.Duration(abc.Timeout) + time.Second)
	n, err := sw.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st := e.get("s1"); n != 1 || st.Status != saga.StatusCompensating || st.Steps[len(st.Steps)-1].Outcome != "timed_out" {
		t.Fatalf("acted on %d; the served saga is %s %v", n, st.Status, sagatest.Outcomes(st))
	}
	for _, id := range []string{"x1", "x2", "x3"} {
		if st := e.get(id); st.Status != saga.StatusRunning {
			t.Fatalf("the sweeper moved %s of another definition: %s", id, st.Status)
		}
	}
}

// TestSweeperReschedulesAcceptedPastItsFirstStepTimeout: an accepted saga
// whose first step has a timeout of its own, still not started once that
// timeout has passed since it was accepted, gets its start command again
// and is looked at again later — not rescheduled into the past, where
// every pass would send the command again and it would stay at the head of
// the due index (with a page of such sagas, the sweeper would reach no
// other).
func TestSweeperReschedulesAcceptedPastItsFirstStepTimeout(t *testing.T) {
	e := newEnv(t)
	gated := *abc
	gated.Name = "gated"
	gated.Steps = append([]saga.StepDef(nil), abc.Steps...)
	gated.Steps[0].Timeout = saga.Duration(time.Minute)
	reg, err := ops.NewRegistry(&gated)
	if err != nil {
		t.Fatal(err)
	}
	op := *e.op
	op.Sagas = reg
	sw := e.sweeper(&op)
	cmd := e.accept(&gated, "s1")
	e.later(2 * time.Minute) // past the first step's timeout, not the saga's deadline
	if n := e.sweep(sw); n != 1 {
		t.Fatalf("acted on %d sagas, want 1", n)
	}
	if pub := e.sink.Events(); len(pub) != 1 || !same(pub[0], cmd) {
		t.Fatalf("published %v, want the start command", e.sink.Types())
	}
	if st := e.get("s1"); st.Status != saga.StatusAccepted || !st.Due.After(e.now()) {
		t.Fatalf("saga %s due %v, the pass ran at %v: rescheduled into the past", st.Status, st.Due, e.now())
	}
	if n := e.sweep(sw); n != 0 || len(e.sink.Events()) != 1 {
		t.Fatalf("the next pass acted on %d sagas, published %v", n, e.sink.Types())
	}
}

// TestSweeperReadsPastExpiredEntries: a full page of due index entries
// whose records have expired does not end a pass before the live due saga
// behind them.
func TestSweeperReadsPastExpiredEntries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	short, err := redisstore.New(e.rdb, redisstore.Options{Retention: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	gone := steps(t, abc, short, nil, time.Millisecond)
	for _, id := range []string{"gone1", "gone2"} {
		if _, err := gone.Handle(ctx, start(abc, id)); err != nil {
			t.Fatal(err)
		}
	}
	sagatest.Eventually(t, 20*time.Second, func() error {
		for _, id := range []string{"gone1", "gone2"} {
			if _, err := short.Get(ctx, id); !errors.Is(err, saga.ErrNotFound) {
				return errors.New(id + " has not expired yet")
			}
		}
		return nil
	})
	if _, err := steps(t, abc, e.store, nil, time.Millisecond).Handle(ctx, start(abc, "live")); err != nil {
		t.Fatal(err)
	}
	sagatest.Eventually(t, 5*time.Second, func() error { // its 1 ms deadline has passed
		if ids, err := e.store.Due(ctx, time.Now(), 3); err != nil || !slices.Contains(ids, "live") {
			return fmt.Errorf("due: %v %v", ids, err)
		}
		return nil
	})
	sw := e.sweeper(nil)
	sw.Page = 2 // one page holds exactly the expired entries
	if n := e.sweep(sw); n != 1 {
		t.Fatalf("acted on %d sagas, want 1 (the live one behind a page of expired entries)", n)
	}
	if st := e.get("live"); st.Status == saga.StatusRunning {
		t.Fatalf("live saga still %s: %v", st.Status, sagatest.Outcomes(st))
	}
}
