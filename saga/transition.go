package saga

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Action decides what a step does to one saga. It reads what it needs from
// the saga's record (in.Saga): the event that woke it is only a
// notification. Return an Invalid error for an event that can never be
// processed, a Transient one to be retried.
type Action func(ctx context.Context, in Input) (Transition, error)

// Actions are a step's actions, by the command each runs on (a
// StepDef's Command or Compensation, or the final step's Command); the
// Definition maps every choreography event to its command.
type Actions map[string]Action

// Input is what an Action acts on.
type Input struct {
	SagaID string
	// Command is the command the event runs (a step's Command or
	// Compensation, or the final step's Command), whichever event of
	// either mode carried it.
	Command string
	// Saga is the saga's record at the event's version: the truth. For the
	// start of a saga it holds only the id (or, for a saga recorded
	// Accepted, that record).
	Saga State
	// Event is the event that woke the step. Only a saga's start command
	// carries data a step may act on (the request; for a saga recorded
	// Accepted, the data it was accepted with, set here by the runtime);
	// any other event's data has been checked to be what the saga emitted.
	Event event.Event
}

// Decode unmarshals the event's JSON data into v (for a start command),
// strictly: unknown fields and trailing data are Invalid too.
func (in Input) Decode(v any) error {
	if err := decodeStrict(in.Event.Data(), v); err != nil {
		return Invalid("event %s data: %v", in.Event.Type(), err)
	}
	return nil
}

// Transition is what a step author decides for one saga; the runtime
// derives everything else (status, compensation stack, the reply, the
// version check) from the saga's Definition.
type Transition struct {
	// Outcome is recorded in the saga's history when the step succeeds,
	// e.g. "authorized". Required.
	Outcome string
	// Effect is the step's own domain write, atomic with the transition.
	Effect *Call
	// Output is recorded in the saga's record under the step's name (as
	// JSON) when the step succeeds: what it produced, e.g. the charge, for
	// its compensation to read.
	Output any
	// Fail, if set, fails the step with this reason (its Effect still
	// runs, e.g. to record a rejected order). An Effect that returns a
	// reason fails it too.
	Fail string
	// FailOutcome is the history outcome of a failure (default "failed").
	FailOutcome string

	// Data is what the saga starts with, recorded by its start step and
	// read by every later step (required for a start, ignored otherwise).
	Data any
	// Key is the saga's business key (e.g. the order id), recorded by its
	// start step: sagas can be searched by it.
	Key string
}

// OutcomeFailed is a failed step's default history outcome.
const OutcomeFailed = "failed"
