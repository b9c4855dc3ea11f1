package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// allStatuses: the orchestrator hears results in every status (the final
// step runs after the saga is completed or compensated).
var allStatuses = []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusCompleted,
	saga.StatusCompensated, saga.StatusCompensationFailed}

func newStep(store saga.Store, def ordersaga.Definition, logger *slog.Logger) *saga.Participant {
	o := &orchestrator{store: store, def: def, logger: logger}
	actions := map[string]saga.Action{}
	for _, t := range def.ResultTypes() {
		actions[t] = o.next
	}
	return &saga.Participant{Source: ordersaga.SourceOrchestrator, Store: store, Logger: logger, Actions: actions}
}

type orchestrator struct {
	store  saga.Store
	def    ordersaga.Definition
	logger *slog.Logger
}

// next decides the command that follows a step's result. The transition
// records nothing in the history (the steps do) but bumps the version, so
// the command it replies with is the only valid continuation.
func (o *orchestrator) next(ctx context.Context, in saga.Input) (saga.Transition, error) {
	st, err := o.store.Get(ctx, in.SagaID)
	if errors.Is(err, saga.ErrNotFound) {
		return saga.Transition{}, nil // the Store reports the unknown saga; nothing to send
	}
	if err != nil {
		return saga.Transition{}, err
	}
	typ, err := o.decide(st, in.Event.Type())
	if err != nil {
		return saga.Transition{}, err
	}
	t := saga.Transition{Allow: allStatuses}
	if typ != "" {
		t.OnSuccess.Reply = &saga.Reply{Type: typ}
	}
	return t, nil
}

// decide maps (state, result) to the next command or terminal event; ""
// means nothing more to send.
func (o *orchestrator) decide(st saga.State, result string) (string, error) {
	d := o.def
	switch {
	case result == d.Finally.Succeeded:
		switch st.Status {
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
			if st.Status != saga.StatusRunning && st.Status != saga.StatusCompleted {
				return "", nil // the saga moved on (e.g. a deadline); its compensation is under way
			}
			if i+1 < len(d.Steps) {
				return d.Steps[i+1].Command, nil
			}
			return d.Finally.Command, nil
		case s.Failed:
			return o.compensateNext(st, false)
		case s.Compensated:
			return o.compensateNext(st, true)
		}
	}
	return "", saga.Invalid("orchestrator: %s is not a result of saga %s", result, d.Name)
}

// compensateNext undoes the most recently completed step still on the
// stack. With nothing left: after a compensation, the final step runs; after
// a failure with nothing to undo (rejected at its start), the saga ends at
// once, as in choreography.
func (o *orchestrator) compensateNext(st saga.State, afterCompensation bool) (string, error) {
	if len(st.Compensate) > 0 {
		s, ok := o.def.Compensable(st.Compensate[0])
		if !ok {
			return "", fmt.Errorf("orchestrator: step %q on the compensation stack has no compensation", st.Compensate[0])
		}
		return s.Compensation, nil
	}
	if afterCompensation {
		return o.def.Finally.Command, nil
	}
	return o.def.Compensated, nil
}
