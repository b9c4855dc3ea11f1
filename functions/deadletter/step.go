package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// StreamKey is the stream of every dead letter, for operators.
const StreamKey = "ksaga:deadletters"

// Knative's dead-letter extensions.
const (
	extDest = "knativeerrordest"
	extCode = "knativeerrorcode"
	extData = "knativeerrordata"
)

// record appends a dead letter to the stream. keys: stream; args: type, id,
// source, saga id, destination, code, reason.
var record = saga.EffectScript{Name: "deadletter.record", Lua: `
redis.call('XADD', keys[1], 'MAXLEN', '~', '10000', '*', 'type', args[1], 'id', args[2], 'source', args[3],
  'saga_id', args[4], 'dest', args[5], 'code', args[6], 'reason', args[7])
`}

var anyStatus = []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusCompleted,
	saga.StatusCompensated, saga.StatusCompensationFailed}

// sender publishes the failure events the dead-letter sink decides on: a
// dead-letter sink's reply is not routed by the Broker.
type sender interface {
	Send(ctx context.Context, e event.Event) error
}

func newStep(store saga.Store, rdb redis.UniversalClient, sink sender, def ordersaga.Definition, logger *slog.Logger) saga.Step {
	d := &deadLetters{store: store, def: def}
	p := &saga.Participant{Source: ordersaga.SourceDeadLetter, Store: store, Logger: logger,
		Actions: map[string]saga.Action{}}
	for _, s := range append(slices.Clone(def.Steps), def.Finally) {
		for _, t := range append(slices.Clone(s.Triggers), s.CompensationTriggers...) {
			p.Actions[t] = d.handle
		}
	}
	return saga.StepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
		_, known := p.Actions[e.Type()]
		where := "outside any saga"
		if id := saga.SagaIDOf(e); !known || id == "" {
			known = false
		} else if _, err := store.Get(ctx, id); errors.Is(err, saga.ErrNotFound) {
			// e.g. a dead-lettered Create: the saga never started (or has
			// expired), so no transition can record it.
			known, where = false, "of a saga that does not exist"
		} else if err != nil {
			return nil, err
		}
		if !known {
			// not a saga event we can place: keep it for operators, acknowledge
			logger.ErrorContext(ctx, "dead letter "+where, "reason", reason(e))
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: StreamKey, MaxLen: 10000, Approx: true, Values: []any{
				"type", e.Type(), "id", e.ID(), "source", e.Source(), "saga_id", saga.SagaIDOf(e),
				"dest", ext(e, extDest), "code", ext(e, extCode), "reason", reason(e)}}).Err(); err != nil {
				return nil, saga.Transient(err, "redis")
			}
			return nil, nil
		}
		logger.ErrorContext(ctx, "dead letter", "reason", reason(e))
		reply, err := p.Handle(ctx, e)
		if err != nil || reply == nil {
			return nil, err
		}
		// A failure event to publish. On error the Broker retries this
		// delivery; the Store then returns the same reply, sent again.
		if err := sink.Send(ctx, *reply); err != nil {
			return nil, fmt.Errorf("publish %s: %w", reply.Type(), err)
		}
		return nil, nil
	})
}

type deadLetters struct {
	store saga.Store
	def   ordersaga.Definition
}

func (d *deadLetters) handle(ctx context.Context, in saga.Input) (saga.Transition, error) {
	e := in.Event
	why := reason(e)
	step, compensation, _ := d.def.Triggered(e.Type())
	t := saga.Transition{
		Step:          step.Name,
		ExpectVersion: saga.AnyVersion,
		Allow:         anyStatus,
		Effect:        record.Call([]string{StreamKey}, e.Type(), e.ID(), e.Source(), in.SagaID, ext(e, extDest), ext(e, extCode), why),
		OnSuccess:     saga.Outcome{Outcome: "dead_lettered", Reason: why},
	}
	switch {
	case compensation:
		t.Allow = []saga.Status{saga.StatusCompensating, saga.StatusCompensationFailed}
		t.OnSuccess = saga.Outcome{Outcome: "compensation_failed", Status: saga.StatusCompensationFailed, Reason: why}
	case step.Failed != "":
		st, err := d.store.Get(ctx, in.SagaID)
		if errors.Is(err, saga.ErrNotFound) {
			return t, nil // gone since the step checked (it expired): the Store skips it
		}
		if err != nil {
			return saga.Transition{}, err
		}
		if st.Status == saga.StatusRunning && notRunYet(st, step, in.Version) {
			t.Allow = []saga.Status{saga.StatusRunning}
			if in.Version > 0 {
				t.ExpectVersion = in.Version // compare-and-set: the step has still not run
			}
			t.OnSuccess = saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: why,
				Reply: &saga.Reply{Type: step.Failed}}
		}
	}
	return t, nil
}

// notRunYet reports whether the step the dead letter was meant to run has
// not run. An event's sagaversion is the saga's version when it was sent:
// if the saga is still at that version, nothing has happened since, so the
// step cannot have run (running it would have moved the version). An event
// without one (sent by a client) falls back to the compensation stack, which
// cannot tell a step from another of the same name (the order's create and
// confirm): then the dead letter is only recorded.
func notRunYet(st saga.State, step ordersaga.StepDef, version int64) bool {
	if version > 0 {
		return st.Version == version
	}
	return !slices.Contains(st.Compensate, step.Name)
}

func ext(e event.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// reason describes why an event was dead-lettered, from Knative's extensions.
func reason(e event.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s could not be delivered", e.Type())
	if dest := ext(e, extDest); dest != "" {
		fmt.Fprintf(&b, " to %s", dest)
	}
	if code := ext(e, extCode); code != "" {
		fmt.Fprintf(&b, " (HTTP %s)", code)
	}
	if data := ext(e, extData); data != "" {
		body, err := base64.StdEncoding.DecodeString(data)
		if err != nil || !utf8.Valid(body) {
			body = []byte(data)
		}
		msg := strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg != "" {
			fmt.Fprintf(&b, ": %s", msg)
		}
	}
	return b.String()
}
