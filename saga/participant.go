package saga

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Action decides the transition for one incoming event. Return an Invalid
// error for an event that can never be processed.
type Action func(ctx context.Context, in Input) (Transition, error)

// Input is the event an Action handles, with its saga protocol attributes.
type Input struct {
	Event   event.Event
	SagaID  string // correlationid; "" if absent (e.g. a command that starts a saga)
	Version int64  // sagaversion; 0 if absent
}

// Decode unmarshals the event's JSON data into v; failure is Invalid.
func (in Input) Decode(v any) error {
	if err := json.Unmarshal(in.Event.Data(), v); err != nil {
		return Invalid("event %s data: %v", in.Event.Type(), err)
	}
	return nil
}

// Participant is a Step made of declarative transitions: it routes each event
// by type to an Action, applies the Action's Transition atomically through
// the Store, and replies with the transition's reply. Dedupe, version checks
// and redelivery are the Store's job; the reply's id, correlationid,
// causationid and sagaversion are the Participant's.
type Participant struct {
	Source  string // CloudEvents source of the replies, e.g. "/ksaga/payment"
	Store   Store
	Actions map[string]Action // by incoming event type
	Logger  *slog.Logger      // nil: slog.Default()
}

var _ Step = (*Participant)(nil)

// Handle implements Step.
func (p *Participant) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	act, ok := p.Actions[e.Type()]
	if !ok {
		return nil, Invalid("no action for event type %q", e.Type())
	}
	version, err := SagaVersionOf(e)
	if err != nil {
		return nil, err
	}
	in := Input{Event: e, SagaID: SagaIDOf(e), Version: version}
	t, err := act(ctx, in)
	if err != nil {
		return nil, err
	}
	if t.SagaID == "" {
		t.SagaID = in.SagaID
	}
	if t.SagaID == "" {
		return nil, Invalid("event has no %s extension (the saga id)", ExtCorrelationID)
	}
	t.EventSource, t.EventID, t.EventType = e.Source(), e.ID(), e.Type()
	if !t.Create && t.ExpectVersion == 0 {
		t.ExpectVersion = in.Version
	}
	res, err := p.Store.Apply(ctx, t)
	if err != nil {
		return nil, err
	}
	report(ctx, t.Step, res)
	if res.Skipped != "" {
		p.logger().WarnContext(ctx, "event not applied: saga moved on or unknown",
			"skipped", res.Skipped, "saga_status", string(res.Status), "saga_version", res.Version,
			"event_version", in.Version)
		return nil, nil
	}
	if res.Reply == nil {
		return nil, nil
	}
	return p.reply(e, t.SagaID, res), nil
}

// Handles reports whether the participant has an action for eventType.
func (p *Participant) Handles(eventType string) bool {
	_, ok := p.Actions[eventType]
	return ok
}

func (p *Participant) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// reply builds the CloudEvent for a stored reply. Everything in it is derived
// from the incoming event and the stored reply, so it is identical on every
// redelivery.
func (p *Participant) reply(in event.Event, sagaID string, res Result) *event.Event {
	r := res.Reply
	out := event.New()
	out.SetID(ReplyID(in.Source(), in.ID(), r.Type))
	out.SetSource(p.Source)
	out.SetType(r.Type)
	out.SetTime(r.Time)
	out.SetExtension(ExtCorrelationID, sagaID)
	out.SetExtension(ExtCausationID, in.ID())
	out.SetExtension(ExtSagaVersion, strconv.FormatInt(res.Version, 10))
	if len(r.Data) > 0 {
		out.DataEncoded = mergeReason(r.Data, res.Reason)
		out.SetDataContentType(event.ApplicationJSON)
	}
	return &out
}
