package ops_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestIndexesFollowEveryOperation drives sagas through every way their
// status moves — a start, an accepted saga started, withdrawn or aborted,
// an abort, a dead-lettered compensation, its redrive and the end of the
// compensation, the final step — each change sending the Store only the
// indexes it may write, and checks that List by status, Stats and Due
// then agree with every record: each saga in the index of its status and
// no other, the unfinished ones due, the finished ones not.
func TestIndexesFollowEveryOperation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cancel := func(string) string { return "cancelled" }
	steps := e.steps(abc, nil)

	e.abc.Run("done", order, "t.f.done")

	e.accept(abc, "withdrawn")
	if ok, err := e.op.Withdraw(ctx, "withdrawn", "could not publish"); err != nil || !ok {
		t.Fatalf("withdraw: %v %v", ok, err)
	}
	e.accept(abc, "rejected")
	if _, err := e.op.Abort(ctx, "rejected", ops.CauseCancel, "", cancel); err != nil {
		t.Fatal(err)
	}
	cmd := e.accept(abc, "started")
	if reply, err := steps.Handle(ctx, cmd); err != nil || reply == nil {
		t.Fatalf("start: %v %v", reply, err)
	}
	e.abc.Run("aborted", order, "t.b.done")
	if _, err := e.op.Abort(ctx, "aborted", ops.CauseCancel, "", cancel); err != nil {
		t.Fatal(err)
	}
	sink := e.deadLetterSink()
	for _, id := range []string{"stuck", "redriven"} {
		undo := e.abc.Run(id, order, "t.c.failed", sagatest.Fail("c", "no room"))
		if _, err := sink.Handle(ctx, deadLettered(undo, "http://b", "503", "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.op.Redrive(ctx, "redriven", "ops"); err != nil {
		t.Fatal(err)
	}
	e.abc.Resume("redriven", "t.f.done")

	want := map[string]saga.Status{"done": saga.StatusCompleted, "withdrawn": saga.StatusCompensated, "rejected": saga.StatusCompensated,
		"started": saga.StatusRunning, "aborted": saga.StatusCompensating, "stuck": saga.StatusCompensationFailed,
		"redriven": saga.StatusCompensated}
	for id, st := range want {
		if got := e.get(id).Status; got != st {
			t.Fatalf("saga %s is %s, want %s", id, got, st)
		}
	}
	stats, err := e.store.Stats(ctx, abc.Name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range saga.Statuses {
		p, err := e.store.List(ctx, saga.Query{Saga: abc.Name, Status: []saga.Status{st}, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var listed, wanted []string
		for _, s := range p.Sagas {
			listed = append(listed, s.ID)
		}
		for id, s := range want {
			if s == st {
				wanted = append(wanted, id)
			}
		}
		slices.Sort(listed)
		slices.Sort(wanted)
		if !slices.Equal(listed, wanted) || stats.ByStatus[st] != len(wanted) {
			t.Errorf("%s: listed %v, counted %d; want %v", st, listed, stats.ByStatus[st], wanted)
		}
	}
	due, err := e.store.Due(ctx, time.Now().Add(24*time.Hour), 100, abc.Name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(due)
	if !slices.Equal(due, []string{"aborted", "started"}) {
		t.Errorf("due %v, want the unfinished sagas [aborted started]", due)
	}
	if len(stats.Recent) != 6 {
		t.Errorf("%d finished sagas in stats, want 6 (a redriven saga counted again when it ends again)", len(stats.Recent))
	}
}
