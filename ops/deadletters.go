package ops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/saga"
)

// Knative's dead-letter extensions.
const (
	ExtErrorDest = "knativeerrordest"
	ExtErrorCode = "knativeerrorcode"
	ExtErrorData = "knativeerrordata"
)

// Handlings of a dead letter, as recorded with it.
const (
	HandlingCompensationFailed = "compensation_failed" // the saga's compensation failed
	HandlingFailed             = "failed"              // a forward step could not be reached: the saga compensates
	HandlingKept               = "kept"                // kept for operators; the saga is untouched
)

// DeadLetters is the dead-letter sink of every saga it serves: it receives
// the events a Broker could not deliver, with Knative's knativeerror*
// extensions, records each one, and makes the saga face it. A compensation
// that could not be delivered marks the saga compensation_failed (step and
// reason in its record), to be redriven once the step is fixed; a forward
// step that could not be delivered fails the saga through that step's
// failure event, published to the Broker, so it compensates instead of
// hanging. Any other dead letter (its step ran, or the saga moved on) is
// only kept, and leaves the saga untouched, version included; if its step
// had handled the event, the step's stored reply is published again.
// Nothing is dropped silently.
type DeadLetters struct {
	op *Operator
}

// NewDeadLetters returns the dead-letter sink; op.Sink is required.
func NewDeadLetters(op *Operator) (*DeadLetters, error) {
	if op.Sink == nil {
		return nil, fmt.Errorf("the dead-letter sink publishes failure events: %w", ErrNoSink)
	}
	return &DeadLetters{op: op}, nil
}

// Handles reports whether eventType belongs to a saga the sink serves
// (metrics label those; any other type is "other").
func (d *DeadLetters) Handles(eventType string) bool {
	_, ok := d.op.Sagas.Owner(eventType)
	return ok
}

// Handle implements saga.Step.
func (d *DeadLetters) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	dl := newDeadLetter(e)
	def, route, routed := d.op.Sagas.Route(e.Type())
	if !routed && dl.SagaID != "" {
		if owner, ok := d.op.Sagas.Owner(e.Type()); ok { // a terminal event: no step runs on it
			def = owner
		}
	}
	if def == nil || dl.SagaID == "" {
		return nil, d.keep(ctx, dl, "outside any saga")
	}
	version, err := saga.SagaVersionOf(e)
	if err != nil {
		return nil, d.keep(ctx, dl, "with a malformed "+saga.ExtSagaVersion)
	}
	for range abortAttempts {
		rec, dup, err := d.op.Store.Load(ctx, dl.SagaID, e.Source(), e.ID())
		if errors.Is(err, saga.ErrNotFound) {
			return nil, d.keep(ctx, dl, "of a saga that does not exist")
		}
		if err != nil {
			return nil, err
		}
		if dup != nil { // its step handled it: the reply may have been lost
			if err := d.keep(ctx, dl, "of an event already handled (its reply is published again)"); err != nil {
				return nil, err
			}
			return nil, d.op.send(ctx, dl.SagaID, e.ID(), dup)
		}
		c, acts := d.decide(def, rec, e, route, routed, version, dl)
		if !acts {
			return nil, d.keep(ctx, dl, "of a step that has run, or of a saga that has moved on")
		}
		res, err := d.op.Store.Apply(ctx, c)
		if err != nil {
			return nil, err
		}
		if res.Skipped != "" || res.Duplicate {
			// the saga moved between the read and the change, or its step
			// handled this very event meanwhile (a late retry; on a Redis
			// Cluster, a change left pending that the Store resolved):
			// decide again, on a fresh read
			continue
		}
		saga.ReportResult(ctx, c.Step, res)
		d.op.logger().ErrorContext(ctx, "dead letter", "handling", c.DeadLetter.Handling, "reason", dl.Reason)
		if res.Reply == nil {
			return nil, nil
		}
		// On error the Broker retries this delivery; the Store then
		// returns the same reply, sent again.
		return nil, d.op.send(ctx, dl.SagaID, e.ID(), res.Reply)
	}
	return nil, saga.Transient(fmt.Errorf("saga %s kept moving while its dead letter was decided", dl.SagaID), "the saga")
}

// decide makes the change a dead letter brings about, if the saga still
// waits on its event: a compensation marks the saga compensation_failed;
// a forward step with a failure event fails it.
func (d *DeadLetters) decide(def *saga.Definition, rec saga.State, e event.Event, route saga.Route, routed bool, version int64, dl saga.DeadLetter) (saga.Change, bool) {
	if !routed || rec.Saga != def.Name || version != rec.Version || saga.Awaits(rec, e) != "" {
		return saga.Change{}, false
	}
	s := def.StepDef(route)
	c := saga.Change{SagaID: rec.ID, Saga: rec.Saga, Key: rec.Key, Event: saga.EventRef{Source: e.Source(), ID: e.ID(), Type: e.Type()},
		Version: rec.Version, Step: s.Name, DeadLetter: &dl}
	now := d.op.now()
	switch {
	case route.Kind == saga.Compensate && rec.Status == saga.StatusCompensating && len(rec.Compensate) > 0 && rec.Compensate[0] == s.Name:
		c.Allow = []saga.Status{saga.StatusCompensating}
		c.Success = saga.Move{Outcome: OutcomeCompensationFailed, Status: saga.StatusCompensationFailed, Reason: dl.Reason}
		dl.Handling = HandlingCompensationFailed
	case route.Kind == saga.Forward && s.Failed != "" && (rec.Status == saga.StatusRunning || (route.Step == 0 && rec.Status == saga.StatusAccepted)):
		c.Allow = []saga.Status{rec.Status}
		// This reason reaches the customer (an order cancelled and the
		// notification sent with it): the destination, code and body stay
		// with the dead letter and in the log.
		c.Success = saga.Move{Outcome: saga.OutcomeFailed, Status: saga.StatusCompensating, Reason: "the " + s.Name + " step could not be reached",
			Emit: &saga.Emit{Type: s.Failed, ID: saga.ReplyID(e.Source(), e.ID(), s.Failed), Source: d.op.Source}, Due: now.Add(d.op.nudge())}
		if len(rec.Compensate) == 0 {
			c.Success.Status, c.Success.Due = saga.StatusCompensated, time.Time{}
		}
		dl.Handling = HandlingFailed
	default:
		return saga.Change{}, false
	}
	c.DeadLetter = &dl
	return c, true
}

// keep records a dead letter that changes no saga.
func (d *DeadLetters) keep(ctx context.Context, dl saga.DeadLetter, where string) error {
	dl.Handling = HandlingKept
	d.op.logger().ErrorContext(ctx, "dead letter "+where, "reason", dl.Reason)
	if _, err := d.op.Store.KeepDeadLetter(ctx, dl); err != nil {
		return err
	}
	return nil
}

// newDeadLetter reads a dead letter from the event the Broker sent.
func newDeadLetter(e event.Event) saga.DeadLetter {
	dl := saga.DeadLetter{SagaID: saga.SagaIDOf(e), EventType: e.Type(), EventID: e.ID(), EventSource: e.Source(),
		Destination: ext(e, ExtErrorDest), Code: ext(e, ExtErrorCode), Body: errorBody(e), Reason: reason(e)}
	orig := e.Clone()
	for _, x := range []string{ExtErrorDest, ExtErrorCode, ExtErrorData} {
		orig.SetExtension(x, nil)
	}
	if b, err := json.Marshal(orig); err == nil {
		dl.Event = b
	}
	return dl
}

func ext(e event.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// errorBody is knativeerrordata decoded (base64 of the response body).
func errorBody(e event.Event) string {
	data := ext(e, ExtErrorData)
	if data == "" {
		return ""
	}
	body, err := base64.StdEncoding.DecodeString(data)
	if err != nil || !utf8.Valid(body) {
		body = []byte(data)
	}
	return strings.TrimSpace(string(body))
}

// reason describes why an event was dead-lettered, from Knative's extensions.
func reason(e event.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s could not be delivered", e.Type())
	if dest := ext(e, ExtErrorDest); dest != "" {
		fmt.Fprintf(&b, " to %s", dest)
	}
	if code := ext(e, ExtErrorCode); code != "" {
		fmt.Fprintf(&b, " (HTTP %s)", code)
	}
	if msg := errorBody(e); msg != "" {
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		fmt.Fprintf(&b, ": %s", msg)
	}
	return b.String()
}
