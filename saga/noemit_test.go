package saga_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// quiet has no failure event for its first step: a rejected start emits
// nothing.
var quiet = &saga.Definition{
	Name:    "quiet",
	Timeout: saga.Duration(time.Minute),
	Steps: []saga.StepDef{
		{Name: "s", Command: "q.s.do", Succeeded: "q.s.done", Compensation: "q.s.undo", Compensated: "q.s.undone"},
		{Name: "t", Command: "q.t.do", Succeeded: "q.t.done", Failed: "q.t.failed"},
	},
}

// TestRedeliveredEventThatEmittedNothing: a start rejected without a
// failure event replies nothing, and so does its redelivery — not a
// CloudEvent without a type, which the function would answer with 500
// and Knative retry until it is dead-lettered.
func TestRedeliveredEventThatEmittedNothing(t *testing.T) {
	k := sagatest.New(t, quiet, sagatest.Redis(t))
	p, err := saga.NewParticipant(quiet, saga.Actions{
		"q.s.do": func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: "accepted", Data: map[string]int{"n": 1}, Fail: "no"}, nil
		},
		"q.s.undo": func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{Outcome: "undone"}, nil
		},
	}, saga.ParticipantOptions{Source: "/s", Store: k.Store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	start := sagatest.Event("c1", "q.s.do", map[string]int{"n": 1}, saga.ExtCorrelationID, "s1")
	for i := range 2 {
		reply, err := p.Handle(context.Background(), start)
		if reply != nil || err != nil {
			t.Fatalf("delivery %d: %v %v, want no reply", i+1, reply, err)
		}
	}
	if st := k.Record("s1"); st.Status != saga.StatusCompensated || st.Reason != "no" || st.Version != 1 {
		t.Fatalf("saga %+v", st)
	}
}

// TestEveryLaterStepAnnouncesItsFailure: a step after the first, the
// pivot included, must have a failure event: it is what starts the
// compensation of the steps before it, after the step fails, its command
// is dead-lettered, or the saga is aborted there. Without it the saga
// would be left compensating with nothing to drive it.
func TestEveryLaterStepAnnouncesItsFailure(t *testing.T) {
	pivotSilent := *quiet
	pivotSilent.Steps = []saga.StepDef{quiet.Steps[0], {Name: "t", Command: "q.t.do", Succeeded: "q.t.done"}}
	if err := pivotSilent.Validate(); err == nil || !strings.Contains(err.Error(), "failure event") {
		t.Fatalf("a pivot without a failure event: %v", err)
	}
	if err := quiet.Validate(); err != nil {
		t.Fatalf("a first step without a failure event: %v", err)
	}
	single := &saga.Definition{Name: "one", Timeout: saga.Duration(time.Minute), Steps: []saga.StepDef{{Name: "s", Command: "o.do", Succeeded: "o.done"}}}
	if err := single.Validate(); err != nil {
		t.Fatalf("a single step without a failure event: %v", err)
	}
}
