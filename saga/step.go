package saga

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Step handles one CloudEvent and returns the event to reply with, or nil for
// no reply. It is the richest of the Knative func Go template's signatures,
// and the only one ksaga serves: the compiler checks it, not reflection.
//
// Return errors built with Invalid (the event can never succeed: HTTP 400, not
// retried, dead-lettered) or Transient (retry later: HTTP 503). Any other error
// is answered 500, which Knative also retries. A business failure (no money,
// no stock) is not an error: reply with a failure event that drives
// compensation.
type Step interface {
	Handle(ctx context.Context, e event.Event) (*event.Event, error)
}

// StepFunc adapts a function to Step.
type StepFunc func(ctx context.Context, e event.Event) (*event.Event, error)

// Handle calls f.
func (f StepFunc) Handle(ctx context.Context, e event.Event) (*event.Event, error) { return f(ctx, e) }
