package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/saga"
)

// Orchestrator drives sagas in orchestration mode: it hears every step's
// result and replies with the next command (or the compensation of the
// newest completed step, or a terminal event), decided from the saga's
// Definition and record. It keeps nothing in memory: each decision is a
// change of the saga (no history entry, one more version), so the command
// it replies with is the only valid continuation. Like a step, it acts
// only on the event its saga waits on.
type Orchestrator struct {
	sagas  *Registry
	store  saga.Store
	source string
	logger *slog.Logger
	result map[string]*saga.Definition
}

// NewOrchestrator returns the orchestrator of the registry's sagas.
func NewOrchestrator(sagas *Registry, store saga.Store, source string, logger *slog.Logger) *Orchestrator {
	if logger == nil {
		logger = slog.Default()
	}
	o := &Orchestrator{sagas: sagas, store: store, source: source, logger: logger, result: map[string]*saga.Definition{}}
	for _, d := range sagas.Definitions() {
		for _, t := range d.Results() {
			o.result[t] = d
		}
	}
	return o
}

// Handles reports whether eventType is a result the orchestrator hears.
func (o *Orchestrator) Handles(eventType string) bool { _, ok := o.result[eventType]; return ok }

// ResultTypes lists every result the orchestrator hears (what its
// Triggers subscribe to).
func (o *Orchestrator) ResultTypes() []string {
	var out []string
	for t := range o.result {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Handle implements saga.Step.
func (o *Orchestrator) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	d, ok := o.result[e.Type()]
	if !ok {
		return nil, saga.Invalid("orchestrator: %s is not a result of any saga it serves", e.Type())
	}
	sagaID := saga.SagaIDOf(e)
	if sagaID == "" {
		return nil, saga.Invalid("event has no %s extension (the saga id)", saga.ExtCorrelationID)
	}
	version, err := saga.RequireVersion(e)
	if err != nil {
		return nil, err
	}
	for range abortAttempts {
		rec, dup, err := o.store.Load(ctx, sagaID, e.Source(), e.ID())
		switch {
		case errors.Is(err, saga.ErrNotFound):
			o.logger.WarnContext(ctx, "event not applied: unknown saga")
			return nil, nil
		case err != nil:
			return nil, err
		case dup != nil:
			saga.ReportResult(ctx, "", saga.Result{Duplicate: true, Version: dup.Version, Status: rec.Status, From: rec.Status, Reply: dup})
			return saga.ToEvent(sagaID, e.ID(), dup), nil
		case version < rec.Version:
			saga.ReportResult(ctx, "", saga.Result{Skipped: "version", Version: rec.Version, Status: rec.Status, From: rec.Status})
			o.logger.WarnContext(ctx, "event not applied: the saga moved on", "saga_version", rec.Version, "event_version", version)
			return nil, nil
		}
		why := saga.Awaits(rec, e)
		if why == "" && rec.Saga != d.Name {
			why = fmt.Sprintf("the saga is a %q saga, not %q", rec.Saga, d.Name)
		}
		if version > rec.Version {
			why = fmt.Sprintf("sagaversion %d is ahead of the saga's version %d", version, rec.Version)
		}
		if why != "" {
			saga.ReportResult(ctx, "", saga.Result{Skipped: "refused", Version: rec.Version, Status: rec.Status, From: rec.Status})
			o.logger.WarnContext(ctx, "security: event refused, it contradicts the saga's record", "security_event", "refused", "why", why)
			return nil, saga.Refused("event refused: %s", why)
		}
		typ, err := Decide(d, rec, e.Type())
		if err != nil {
			return nil, err
		}
		c := saga.Change{SagaID: sagaID, Saga: rec.Saga, Key: rec.Key, Event: saga.EventRef{Source: e.Source(), ID: e.ID(), Type: e.Type()},
			Version: rec.Version, Allow: saga.Statuses}
		if typ != "" {
			c.Success.Emit = &saga.Emit{Type: typ, ID: saga.ReplyID(e.Source(), e.ID(), typ), Source: o.source}
		}
		res, err := o.store.Apply(ctx, c)
		if err != nil {
			return nil, err
		}
		if res.Skipped == "version" {
			continue
		}
		saga.ReportResult(ctx, "", res)
		if res.Reply == nil {
			return nil, nil
		}
		return saga.ToEvent(sagaID, e.ID(), res.Reply), nil
	}
	return nil, saga.Transient(fmt.Errorf("saga %s kept moving while %s was decided", sagaID, e.Type()), "the saga")
}

// Decide maps a saga's record and the result it waits on to the next
// command or terminal event; "" means nothing more to send.
func Decide(d *saga.Definition, rec saga.State, result string) (string, error) {
	if d.Finally != nil && result == d.Finally.Succeeded {
		switch rec.Status {
		case saga.StatusCompleted:
			return d.Completed, nil
		case saga.StatusCompensated:
			return d.Compensated, nil
		}
		return "", nil
	}
	for i, s := range d.Steps {
		switch result {
		case s.Succeeded:
			if rec.Status != saga.StatusRunning && rec.Status != saga.StatusCompleted {
				return "", nil // the saga moved on (an abort); its compensation is under way
			}
			if i+1 < len(d.Steps) {
				return d.Steps[i+1].Command, nil
			}
			return finalOr(d, d.Completed), nil
		case s.Failed, s.Compensated:
			if len(rec.Compensate) > 0 {
				c, ok := d.Compensable(rec.Compensate[0])
				if !ok {
					return "", fmt.Errorf("orchestrator: step %q on the compensation stack has no compensation", rec.Compensate[0])
				}
				return c.Compensation, nil
			}
			if result == s.Compensated {
				return finalOr(d, d.Compensated), nil
			}
			return d.Compensated, nil // failed with nothing to undo (rejected at its start)
		}
	}
	return "", saga.Invalid("orchestrator: %s is not a result of saga %s", result, d.Name)
}

// finalOr is the final step's command, or terminal if there is none.
func finalOr(d *saga.Definition, terminal string) string {
	if d.Finally != nil {
		return d.Finally.Command
	}
	return terminal
}
