package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Aborting a running saga. The order function fails a saga that is still
// running for two causes: its deadline passed (the sweeper, sweeper.go), or
// its order was cancelled (POST /orders/{id}/cancel). Either way the step
// the saga waits on is recorded as failed, and that step's failure event is
// published to the Broker by the caller, so the saga compensates as after
// any other failure, in both modes. The transition is a compare-and-set on
// the saga's version through the Store: a step that answers late finds the
// saga moved on and changes nothing. A cause has one input event id per
// saga, so aborting again is a duplicate that the Store answers with the
// stored failure event, to be sent again if it was lost.

// cause is why a saga is aborted.
type cause struct {
	name    string // ksaga_sagas_aborted_total's cause label
	typ     string // the input event's type (never sent)
	source  string // the input event's source
	outcome string // recorded in the history at the step the saga waited on
}

var (
	deadlineCause = cause{name: "deadline", typ: ordersaga.DeadlinePassed, source: ordersaga.SourceSweeper, outcome: "timed_out"}
	cancelCause   = cause{name: "cancel", typ: ordersaga.CancelRequested, source: ordersaga.SourceOrderAPI, outcome: "cancel_requested"}
)

// eventSender publishes events to the Broker (knfunc.Sink).
type eventSender interface {
	Send(ctx context.Context, e event.Event) error
}

type aborter struct {
	store   saga.Store
	def     ordersaga.Definition
	logger  *slog.Logger
	aborted *prometheus.CounterVec // ksaga_sagas_aborted_total{cause}
}

// newAbortedCounter is the aborter's counter, for the function's registry.
func newAbortedCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ksaga_sagas_aborted_total",
		Help: "Running sagas the order function failed into compensation, by cause: deadline or cancel."}, []string{"cause"})
	for _, cause := range []cause{deadlineCause, cancelCause} {
		c.WithLabelValues(cause.name) // exported at 0 from the start, so rate() sees the first one
	}
	return c
}

// abort fails the running saga st for c, with the reason reason gives for
// the step it waits on; or, if c failed it before, returns that failure
// event again. It returns the failure event and whether it was applied
// now, or nil when the saga is no longer at st's version (read it again).
func (a *aborter) abort(ctx context.Context, st saga.State, c cause, reason func(waiting string) string, now time.Time) (*event.Event, bool, error) {
	ctx, in := ownEvent(ctx, st, c.name+"-"+st.ID, c.source, c.typ, now)
	var why string
	p := &saga.Participant{Source: c.source, Store: a.store, Logger: a.logger,
		Actions: map[string]saga.Action{c.typ: func(context.Context, saga.Input) (saga.Transition, error) {
			next, ok := a.def.Next(st.Compensate)
			if !ok || next.Failed == "" {
				return saga.Transition{}, fmt.Errorf("saga %s: no failure event for the step after %v", st.ID, st.Compensate)
			}
			why = reason(next.Name)
			return saga.Transition{
				Step:  next.Name,
				Allow: []saga.Status{saga.StatusRunning},
				OnSuccess: saga.Outcome{Outcome: c.outcome, Status: saga.StatusCompensating, Reason: why,
					Reply: &saga.Reply{Type: next.Failed}},
			}, nil
		}}}
	rctx, rep := saga.WithReport(ctx)
	failure, err := p.Handle(rctx, in)
	if err != nil || failure == nil {
		return nil, false, err
	}
	applied := rep.Result.Applied
	if applied {
		a.aborted.WithLabelValues(c.name).Inc()
		a.logger.WarnContext(ctx, "saga aborted", "cause", c.name, "failure", failure.Type(), "reason", why)
	}
	return failure, applied, nil
}

// ownEvent is an event the order function makes about st: an input it
// hands a Participant of its own (never sent: its id makes a repeat a
// duplicate, and its sagaversion makes the transition a compare-and-set on
// st's version), or the sweeper's nudge. The context returned logs it (the
// caller's carries the correlationid).
func ownEvent(ctx context.Context, st saga.State, id, source, typ string, now time.Time) (context.Context, event.Event) {
	in := event.New()
	in.SetID(id)
	in.SetSource(source)
	in.SetType(typ)
	in.SetTime(now)
	in.SetExtension(saga.ExtCorrelationID, st.ID)
	in.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(st.Version, 10))
	return telemetry.WithAttrs(ctx, slog.String(telemetry.AttrEventID, id), slog.String(telemetry.AttrEventType, typ),
		slog.String(telemetry.AttrEventSource, source)), in
}

// newest returns the position of the saga's newest history entry with
// outcome, or -1.
func newest(st saga.State, outcome string) int {
	for i := len(st.Steps) - 1; i >= 0; i-- {
		if st.Steps[i].Outcome == outcome {
			return i
		}
	}
	return -1
}

// abortedBy reports whether c aborted the saga.
func abortedBy(st saga.State, c cause) bool { return newest(st, c.outcome) >= 0 }

// waitsOn reports whether the saga has not moved since the failure event
// was emitted: its compensation has not started, so the event may have
// been lost and can be sent again.
func waitsOn(st saga.State, failure *event.Event) bool {
	return st.Status == saga.StatusCompensating && failure.Extensions()[saga.ExtSagaVersion] == strconv.FormatInt(st.Version, 10)
}
