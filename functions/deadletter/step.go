package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
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

// keepLua appends a dead letter to the stream once: unless its kept
// marker exists (a redelivery). keys: stream, marker; args: type, id,
// source, saga id, destination, code, reason, marker TTL (s). The body sees
// keys and args as an effect's does.
const keepLua = `
if not redis.call('SET', keys[2], '1', 'NX', 'EX', args[8]) then return true end
redis.call('XADD', keys[1], 'MAXLEN', '~', '10000', '*', 'type', args[1], 'id', args[2], 'source', args[3],
  'saga_id', args[4], 'dest', args[5], 'code', args[6], 'reason', args[7])
return true
`

// record keeps a dead letter inside the transition it makes; keepOnce
// keeps one that makes none.
var (
	record   = saga.EffectScript{Name: "deadletter.record", Lua: keepLua}
	keepOnce = redis.NewScript("local keys, args = KEYS, ARGV\n" + keepLua)
)

// sender publishes the failure events the dead-letter sink decides on: a
// dead-letter sink's reply is not routed by the Broker.
type sender interface {
	Send(ctx context.Context, e event.Event) error
}

// decideAttempts bounds how often a dead letter is decided again when the
// saga moved between the read and the transition.
const decideAttempts = 3

// noVersion is an expected version no saga reaches: a transition with it
// changes nothing, but the Store still answers a duplicate event with its
// stored reply (dedupe comes first).
const noVersion = 1 << 52

type deadLetters struct {
	store  saga.Store
	rdb    redis.UniversalClient
	sink   sender
	def    ordersaga.Definition
	logger *slog.Logger
}

func newStep(store saga.Store, rdb redis.UniversalClient, sink sender, def ordersaga.Definition, logger *slog.Logger) *deadLetters {
	return &deadLetters{store: store, rdb: rdb, sink: sink, def: def, logger: logger}
}

// Handles reports the event types of the saga, which label the step's
// metrics; any other type a sender dead-letters here counts as "other".
func (d *deadLetters) Handles(eventType string) bool {
	_, _, ok := d.def.Triggered(eventType)
	return ok
}

// Handle faces the saga with one dead letter. Only a dead letter that
// changes the saga's course (a compensation that failed, a forward step
// that did not run) is a transition, recorded in the saga's history; any
// other is only kept in the stream, so that it cannot move the saga's
// version under a failure event or a redrive already on its way.
func (d *deadLetters) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	step, compensation, known := d.def.Triggered(e.Type())
	sagaID := saga.SagaIDOf(e)
	if !known || sagaID == "" {
		return nil, d.keep(ctx, e, "outside any saga")
	}
	version, err := saga.SagaVersionOf(e)
	if err != nil { // the Participant would refuse it (400): keep it for operators
		return nil, d.keep(ctx, e, "with a malformed "+saga.ExtSagaVersion)
	}
	for range decideAttempts {
		st, err := d.store.Get(ctx, sagaID)
		if errors.Is(err, saga.ErrNotFound) {
			// e.g. a dead-lettered Create: the saga never started (or has
			// expired), so no transition can record it.
			return nil, d.keep(ctx, e, "of a saga that does not exist")
		}
		if err != nil {
			return nil, err
		}
		t, acts := d.transition(st, e, step, compensation, version)
		if !acts {
			// The step ran (its reply may have been lost: publish it
			// again), or the saga has moved on.
			t = saga.Transition{Step: step.Name, ExpectVersion: noVersion, Allow: []saga.Status{st.Status}}
		}
		p := &saga.Participant{Source: ordersaga.SourceDeadLetter, Store: d.store, Logger: d.logger,
			Actions: map[string]saga.Action{e.Type(): func(context.Context, saga.Input) (saga.Transition, error) { return t, nil }}}
		rctx, rep := saga.WithReport(ctx)
		reply, err := p.Handle(rctx, e)
		if err != nil {
			return nil, err
		}
		if acts && rep.Result.Skipped != "" {
			continue // the saga moved between the read and the transition: decide again
		}
		if !acts {
			where := "of a step that has run, or of a saga that has moved on"
			if rep.Result.Duplicate {
				where = "of an event already handled, by its step or this sink (its reply is published again)"
			}
			if err := d.keep(ctx, e, where); err != nil {
				return nil, err
			}
		}
		if acts {
			d.logger.ErrorContext(ctx, "dead letter", "reason", reason(e))
		}
		if reply == nil {
			return nil, nil
		}
		// A failure event, or the step's own lost reply, to publish. On
		// error the Broker retries this delivery; the Store then returns
		// the same reply, sent again.
		if err := d.sink.Send(ctx, *reply); err != nil {
			return nil, fmt.Errorf("publish %s: %w", reply.Type(), err)
		}
		return nil, nil
	}
	return nil, saga.Transient(fmt.Errorf("saga %s kept moving while its dead letter was decided", sagaID), "the saga")
}

// transition decides what a dead letter does to the saga: a compensation
// that could not be delivered, of a step still on the compensation stack,
// marks it compensation_failed; a forward step
// with a failure event that has not run fails it, at the dead-lettered
// event's version (compare-and-set). It reports false for anything else.
func (d *deadLetters) transition(st saga.State, e event.Event, step ordersaga.StepDef, compensation bool, version int64) (saga.Transition, bool) {
	why := reason(e)
	keys, args := keepArgs(e)
	t := saga.Transition{Step: step.Name, ExpectVersion: saga.AnyVersion, Effect: record.Call(keys, args...)}
	switch {
	case compensation && (st.Status == saga.StatusCompensating || st.Status == saga.StatusCompensationFailed) &&
		slices.Contains(st.Compensate, step.Name):
		// The step is still to be undone (another delivery of its
		// compensation, e.g. the sweeper's, may have undone it already).
		t.Allow = []saga.Status{saga.StatusCompensating, saga.StatusCompensationFailed}
		t.ExpectVersion = st.Version // as read: it must not be undone meanwhile
		t.OnSuccess = saga.Outcome{Outcome: ordersaga.OutcomeCompensationFailed, Status: saga.StatusCompensationFailed, Reason: why}
		return t, true
	case !compensation && step.Failed != "" && st.Status == saga.StatusRunning && notRunYet(st, step, version):
		t.Allow = []saga.Status{saga.StatusRunning}
		t.ExpectVersion = version // compare-and-set: the step has still not run
		if version == 0 {
			t.ExpectVersion = st.Version // as read: nothing may run meanwhile
		}
		// This reason reaches the customer (the order is cancelled, and the
		// notification sent, with it): the destination, code and body stay
		// in ksaga:deadletters and the log.
		t.OnSuccess = saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating,
			Reason: "the " + step.Name + " step could not be reached", Reply: &saga.Reply{Type: step.Failed}}
		return t, true
	}
	return saga.Transition{}, false
}

// keep records a dead letter in the stream only, and acknowledges it.
// A redelivered dead letter (the sink's answer lost) is kept once: its
// marker is kept this long.
const keptMarkerTTL = 24 * time.Hour

// keepArgs are keepLua's keys and args for the dead letter e.
func keepArgs(e event.Event) (keys []string, args []any) {
	return []string{StreamKey, keptMarker(e)}, []any{e.Type(), e.ID(), e.Source(), saga.SagaIDOf(e),
		ext(e, extDest), ext(e, extCode), reason(e), int64(keptMarkerTTL / time.Second)}
}

func (d *deadLetters) keep(ctx context.Context, e event.Event, where string) error {
	d.logger.ErrorContext(ctx, "dead letter "+where, "reason", reason(e))
	keys, args := keepArgs(e)
	if err := keepOnce.Run(ctx, d.rdb, keys, args...).Err(); err != nil {
		return saga.Transient(err, "redis")
	}
	return nil
}

// keptMarker is the key that marks the dead letter e (an event, for one
// destination) as kept in the stream, hash-tagged with the stream (one
// Redis Cluster slot).
func keptMarker(e event.Event) string {
	sum := sha256.Sum256([]byte(e.Source() + "\x00" + e.ID() + "\x00" + ext(e, extDest)))
	return "{" + StreamKey + "}:kept:" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// notRunYet reports whether the step the dead letter was meant to run has
// not run. An event's sagaversion is the saga's version when it was sent:
// if the saga is still at that version, nothing has happened since, so the
// step cannot have run (running it would have moved the version). An event
// without one (sent by a client) falls back to the compensation stack, which
// cannot tell a step from another of the same name (the order's create and
// confirm): then the dead letter is only kept.
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
