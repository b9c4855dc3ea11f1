package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Redriving a saga whose compensation failed. The dead-letter sink marks a
// saga compensation_failed when a compensation ran out of retries, and
// records the event it could not deliver in the saga's history. Once the
// cause is fixed (the step is back, its bug fixed), POST /sagas/{id}/redrive
// puts the saga back to compensating and publishes that event again, at the
// saga's new version, so the compensation resumes where it stopped, in
// either mode (the event is the choreography event or the orchestrator's
// command, whichever was dead-lettered).

// outcomeRedriven is the history outcome of a redrive.
const outcomeRedriven = "redriven"

// redrive answers POST /sagas/{id}/redrive: 202 (the compensation resumes:
// follow GET /sagas/{id}), also for a repeated request; 409 when the saga's
// compensation has not failed; 404 unknown or expired saga; 503 no K_SINK,
// Redis or the broker unavailable.
func (a *api) redrive(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	r = r.WithContext(telemetry.WithAttrs(r.Context(), slog.String(telemetry.AttrCorrelationID, id)))
	if a.sink == nil {
		a.fail(w, r, saga.Transient(errors.New("K_SINK is not set"), "the broker"))
		return
	}
	st, ok := a.sagaOr404(w, r, id)
	if !ok {
		return
	}
	// the newest failed compensation, and whether it was redriven since
	failed, redriven := newest(st, ordersaga.OutcomeCompensationFailed), newest(st, outcomeRedriven)
	var again bool
	switch {
	case failed >= 0 && redriven < failed && st.Status == saga.StatusCompensationFailed:
	case failed >= 0 && redriven > failed && st.Status == saga.StatusCompensating:
		again = true // a repeated request: send the same event if nothing moved
	default:
		writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("saga %q is %s: only a saga whose compensation failed can be redriven", id, st.Status)})
		return
	}
	out, err := a.redriveEvent(r.Context(), st, failed, again)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if out == nil { // the saga moved between the read and the redrive
		a.fail(w, r, saga.Transient(errors.New("saga "+id+" moved while redriven"), "the saga"))
		return
	}
	if !again || waitsOn(st, out) {
		if err := a.sink.Send(r.Context(), *out); err != nil {
			a.failSend(w, r, out, err)
			return
		}
	}
	w.Header().Set("Location", "/sagas/"+id)
	writeJSON(w, http.StatusAccepted, map[string]string{"saga_id": id, "event_type": out.Type()})
}

// redriveEvent applies the redrive of the compensation failure recorded at
// history position pos, or returns the event of the redrive already
// applied: one input id per failure, so a repeated request is a duplicate.
func (a *api) redriveEvent(ctx context.Context, st saga.State, pos int, again bool) (*event.Event, error) {
	failed := st.Steps[pos]
	ctx, in := ownEvent(ctx, st, "redrive-"+st.ID+"-"+strconv.Itoa(pos), ordersaga.SourceOrderAPI, ordersaga.RedriveRequested, a.orders.now())
	p := &saga.Participant{Source: ordersaga.SourceOrderAPI, Store: a.store, Logger: a.logger,
		Actions: map[string]saga.Action{ordersaga.RedriveRequested: func(context.Context, saga.Input) (saga.Transition, error) {
			return saga.Transition{
				Step:  failed.Step,
				Allow: []saga.Status{saga.StatusCompensationFailed},
				// The reason the saga compensates, not the dead letter's: the
				// order is cancelled, and the customer told, with it.
				OnSuccess: saga.Outcome{Outcome: outcomeRedriven, Status: saga.StatusCompensating, Reason: compensationReason(st),
					Reply: &saga.Reply{Type: failed.EventType}},
			}, nil
		}}}
	out, err := p.Handle(ctx, in)
	if err == nil && out != nil && !again {
		a.logger.WarnContext(ctx, "saga redriven", "step", failed.Step, "event", out.Type())
	}
	return out, err
}

// compensationReason is why the saga began to compensate: the reason of
// its first history entry that has one, other than a failed compensation
// or a redrive (those carry the dead letter's text).
func compensationReason(st saga.State) string {
	for _, s := range st.Steps {
		if s.Reason != "" && s.Outcome != ordersaga.OutcomeCompensationFailed && s.Outcome != outcomeRedriven {
			return s.Reason
		}
	}
	return ""
}
