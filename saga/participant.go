package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/trace"
)

// Participant is a Step built from a saga's Definition and a step author's
// Actions. For every event it:
//
//  1. routes the event's type to an action through the Definition (a
//     choreography event or an orchestration command);
//  2. loads the saga's record: a redelivered event gets its stored reply; an
//     event of a version the saga has moved past changes nothing;
//  3. admits the event only if it is the very event the record says the
//     saga emitted at that version and waits on (type, id, source and data)
//     and the record's status and compensation stack justify the action —
//     anything else is refused (400) as a security event and changes
//     nothing: an event is a notification, the record decides;
//  4. calls the action with the record, and applies its Transition through
//     the Store as one compare-and-set on the saga's version, deriving the
//     status, the compensation stack, the reply and the deadline from the
//     Definition.
//
// A saga's start command is the one event whose data a step acts on: it
// creates the record. The start of a saga recorded Accepted runs on the
// data the saga was accepted with, whatever data the admitted command
// carries (none, or the same JSON value spelt otherwise).
type Participant struct {
	def     *Definition
	actions Actions
	source  string
	store   Store
	logger  *slog.Logger
	now     func() time.Time
	timeout time.Duration
	nudge   time.Duration
	before  func(ctx context.Context, in Input) error
}

// ParticipantOptions configure NewParticipant.
type ParticipantOptions struct {
	// Source is the CloudEvents source of the replies, e.g. "/ksaga/payment".
	Source string
	Store  Store
	Logger *slog.Logger // nil: slog.Default()
	// Timeout overrides the Definition's saga timeout for sagas this
	// participant starts (0: the Definition's).
	Timeout time.Duration
	// Nudge is how long a saga may wait on an event before the deadline
	// sweeper sends it again (0: NudgeAfter).
	Nudge time.Duration
	Now   func() time.Time // nil: time.Now
	// Before, if set, runs once an event is admitted, before its action:
	// an error fails the delivery as the action's would (knfunc's fault
	// injection uses it, so that forged events are still refused).
	Before func(ctx context.Context, in Input) error
}

// NewParticipant returns the Participant running actions for def. Every
// action's key must be a command of def.
func NewParticipant(def *Definition, actions Actions, o ParticipantOptions) (*Participant, error) {
	if err := def.Validate(); err != nil {
		return nil, err
	}
	if len(actions) == 0 {
		return nil, fmt.Errorf("saga %q: a participant needs at least one action", def.Name)
	}
	commands := map[string]bool{}
	for _, c := range def.Commands() {
		commands[c] = true
	}
	for c, a := range actions {
		if !commands[c] {
			return nil, fmt.Errorf("saga %q: %q is not a command of the saga (its steps' Command or Compensation, or the final step's Command)", def.Name, c)
		}
		if a == nil {
			return nil, fmt.Errorf("saga %q: nil action for %s", def.Name, c)
		}
	}
	if o.Source == "" || o.Store == nil {
		return nil, errors.New("saga: a participant needs a Source and a Store")
	}
	p := &Participant{def: def, actions: actions, source: o.Source, store: o.Store, logger: o.Logger, now: o.Now, timeout: o.Timeout, nudge: o.Nudge, before: o.Before}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.timeout <= 0 {
		p.timeout = time.Duration(def.Timeout)
	}
	if p.nudge <= 0 {
		p.nudge = NudgeAfter
	}
	return p, nil
}

var _ Step = (*Participant)(nil)

// Handles reports whether an event type runs one of the participant's
// actions (metrics label those types; any other is "other").
func (p *Participant) Handles(eventType string) bool {
	r, ok := p.def.Route(eventType)
	return ok && p.actions[r.Command] != nil
}

// loadAttempts bounds how often an event is decided again when the saga
// moved between reading its record and applying the change.
const loadAttempts = 3

// Handle implements Step.
func (p *Participant) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	route, ok := p.def.Route(e.Type())
	act := p.actions[route.Command]
	if !ok || act == nil {
		return nil, Invalid("no action for event type %q", e.Type())
	}
	if route.Start() {
		return p.start(ctx, e, route, act)
	}
	sagaID := SagaIDOf(e)
	if sagaID == "" {
		return nil, Invalid("event has no %s extension (the saga id)", ExtCorrelationID)
	}
	version, err := RequireVersion(e)
	if err != nil {
		return nil, err
	}
	for range loadAttempts {
		rec, dup, err := p.store.Load(ctx, sagaID, e.Source(), e.ID())
		if errors.Is(err, ErrNotFound) {
			p.stale(ctx, e, "unknown saga", version, State{})
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if dup != nil {
			return p.redelivered(ctx, e, sagaID, route, rec, dup)
		}
		switch {
		case version < rec.Version:
			p.stale(ctx, e, "version", version, rec)
			return nil, nil
		case version > rec.Version:
			return nil, p.refuse(ctx, e, rec, fmt.Sprintf("sagaversion %d is ahead of the saga's version %d", version, rec.Version))
		}
		if why := p.admit(rec, e, route); why != "" {
			return nil, p.refuse(ctx, e, rec, why)
		}
		t, err := p.act(ctx, act, Input{SagaID: sagaID, Command: route.Command, Saga: rec, Event: e})
		if err != nil {
			return nil, err
		}
		c, err := p.change(rec, e, route, t)
		if err != nil {
			return nil, err
		}
		res, err := p.store.Apply(ctx, c)
		if err != nil {
			return nil, err
		}
		if res.Skipped == "version" {
			continue // the saga moved between the read and the change: decide again
		}
		return p.answer(ctx, e, sagaID, c.Step, res, version)
	}
	return nil, Transient(fmt.Errorf("saga %s kept moving while %s was decided", sagaID, e.Type()), "the saga")
}

// start runs a saga's start command.
func (p *Participant) start(ctx context.Context, e event.Event, route Route, act Action) (*event.Event, error) {
	sagaID := SagaIDOf(e)
	if sagaID == "" {
		sagaID = IDFromEvent(e.Source(), e.ID())
	}
	rec, dup, err := p.store.Load(ctx, sagaID, e.Source(), e.ID())
	var version int64
	switch {
	case errors.Is(err, ErrNotFound):
		// A command that names a version was accepted (Accept sets it);
		// older than a saga's timeout, its saga ended by its deadline at
		// the latest (rejected, if its start never ran) and its record
		// has expired: starting it now would revive an order its client
		// was told is cancelled.
		if v, _ := SagaVersionOf(e); v > 0 && !e.Time().IsZero() && p.now().Sub(e.Time()) > p.timeout {
			p.stale(ctx, e, "expired", v, State{})
			return nil, nil
		}
		rec = State{ID: sagaID}
	case err != nil:
		return nil, err
	case dup != nil:
		return p.redelivered(ctx, e, sagaID, route, rec, dup)
	case rec.Status != StatusAccepted:
		p.stale(ctx, e, "exists", 0, rec)
		return nil, nil
	default: // accepted: this must be the very command it was accepted with
		if why := p.admit(rec, e, route); why != "" {
			return nil, p.refuse(ctx, e, rec, why)
		}
		version = rec.Version
		// The action runs on the data the saga was accepted with, never
		// on the event's: Awaits admits an event without data, or with
		// data that is only the same JSON value (1.0 for 1), which an
		// action could read otherwise, or refuse (400) — and the
		// dead-letter sink would then reject the accepted saga.
		e = e.Clone()
		e.DataEncoded = rec.Next.Data
		e.SetDataContentType(event.ApplicationJSON)
	}
	t, err := p.act(ctx, act, Input{SagaID: sagaID, Command: route.Command, Saga: rec, Event: e})
	if err != nil {
		return nil, err
	}
	if t.Data == nil {
		return nil, fmt.Errorf("saga %q: the start step's Transition has no Data", p.def.Name)
	}
	data, err := json.Marshal(t.Data)
	if err != nil {
		return nil, fmt.Errorf("saga data: %w", err)
	}
	now := p.now()
	c, err := p.change(rec, e, route, t)
	if err != nil {
		return nil, err
	}
	c.Create = &Create{Saga: p.def.Name, Key: t.Key, Data: data, Deadline: now.Add(p.timeout)}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		c.Create.TraceID = sc.TraceID().String()
	}
	c.Version = version
	if version == 0 { // a new saga: its deadline is now + timeout
		c.Success.Due = p.dueAwaiting(1, c.Create.Deadline, now)
	}
	res, err := p.store.Apply(ctx, c)
	if err != nil {
		return nil, err
	}
	return p.answer(ctx, e, sagaID, c.Step, res, version)
}

// act runs the Before hook, then the action.
func (p *Participant) act(ctx context.Context, act Action, in Input) (Transition, error) {
	if p.before != nil {
		if err := p.before(ctx, in); err != nil {
			return Transition{}, err
		}
	}
	return act(ctx, in)
}

// redelivered answers an event applied before with the reply stored for
// it, and has the Store count the redelivery in the saga's history
// (StepRecord.Redelivered): the Store counts a redelivery it is asked to
// apply again, which Load, a read, does not.
func (p *Participant) redelivered(ctx context.Context, e event.Event, sagaID string, route Route, rec State, dup *Emitted) (*event.Event, error) {
	res, err := p.store.Apply(ctx, Change{SagaID: sagaID, Saga: rec.Saga, Key: rec.Key,
		Event: EventRef{Source: e.Source(), ID: e.ID(), Type: e.Type()}})
	if err != nil {
		return nil, err
	}
	if res.Duplicate && res.Reply != nil {
		dup = res.Reply
	}
	report(ctx, p.def.StepDef(route).Name, Result{Duplicate: true, Version: dup.Version, Status: rec.Status, From: rec.Status, Reply: dup})
	return p.toEvent(sagaID, e, dup), nil
}

// answer turns the Store's result into the step's reply.
func (p *Participant) answer(ctx context.Context, e event.Event, sagaID, step string, res Result, version int64) (*event.Event, error) {
	report(ctx, step, res)
	if res.Skipped != "" {
		p.logger.WarnContext(ctx, "event not applied: the saga moved on", "skipped", res.Skipped,
			"saga_status", string(res.Status), "saga_version", res.Version, "event_version", version)
		return nil, nil
	}
	if res.Reply == nil {
		return nil, nil
	}
	return p.toEvent(sagaID, e, res.Reply), nil
}

// stale logs an event that changes nothing because the saga has moved past
// it (or is unknown): answered 200 with no reply, never retried.
func (p *Participant) stale(ctx context.Context, e event.Event, why string, version int64, rec State) {
	report(ctx, "", Result{Skipped: why, Version: rec.Version, Status: rec.Status, From: rec.Status})
	p.logger.WarnContext(ctx, "event not applied: the saga moved on or is unknown", "skipped", why,
		"saga_status", string(rec.Status), "saga_version", rec.Version, "event_version", version)
}

// refuse logs a security event and returns the 400 that refuses it.
func (p *Participant) refuse(ctx context.Context, e event.Event, rec State, why string) error {
	report(ctx, "", Result{Skipped: "refused", Version: rec.Version, Status: rec.Status, From: rec.Status})
	attrs := []any{"security_event", "refused", "why", why, "saga_status", string(rec.Status), "saga_version", rec.Version}
	if rec.Next != nil {
		attrs = append(attrs, "awaited_type", rec.Next.Type, "awaited_id", rec.Next.ID)
	}
	p.logger.WarnContext(ctx, "security: event refused, it contradicts the saga's record", attrs...)
	return Refused("event refused: %s", why)
}

// admit checks an event against the saga's record: it must be the event
// the saga emitted at its version and waits on, and the record must
// justify the route's action. It returns why not, or "".
func (p *Participant) admit(rec State, e event.Event, route Route) string {
	if why := Awaits(rec, e); why != "" {
		return why
	}
	if rec.Saga != p.def.Name {
		return fmt.Sprintf("the saga is a %q saga, not %q", rec.Saga, p.def.Name)
	}
	s := p.def.StepDef(route)
	switch route.Kind {
	case Forward:
		if route.Step == 0 {
			if rec.Status != StatusAccepted {
				return "the saga has started already"
			}
			return ""
		}
		if rec.Status != StatusRunning {
			return fmt.Sprintf("the saga is %s, not running", rec.Status)
		}
		if i, ok := p.def.Awaited(rec.Compensate); !ok || p.def.Steps[i].Command != s.Command {
			return fmt.Sprintf("the saga does not wait on step %d (%s)", route.Step, s.Name)
		}
	case Compensate:
		if rec.Status != StatusCompensating {
			return fmt.Sprintf("the saga is %s, not compensating", rec.Status)
		}
		if len(rec.Compensate) == 0 || rec.Compensate[0] != s.Name {
			return fmt.Sprintf("%s is not the next step to undo (left to undo: %v)", s.Name, rec.Compensate)
		}
	case Final:
		if rec.Status != StatusCompleted && rec.Status != StatusCompensated {
			return fmt.Sprintf("the saga is %s, not ended", rec.Status)
		}
	}
	return ""
}

// Awaits reports why e is not the event the saga's record says it emitted
// and waits on, or "" if it is: same type, id, source and version, and no
// data that differs from what was emitted.
func Awaits(rec State, e event.Event) string {
	n := rec.Next
	switch {
	case n == nil:
		return "the saga waits on no event"
	case e.Type() != n.Type:
		return fmt.Sprintf("the saga waits on %s, not %s", n.Type, e.Type())
	case e.ID() != n.ID || e.Source() != n.Source:
		return fmt.Sprintf("%s %s from %s is not the event the saga emitted", e.Type(), e.ID(), e.Source())
	}
	if v, err := SagaVersionOf(e); err != nil || v != n.Version {
		return "sagaversion is not the version the event was emitted at"
	}
	if data := e.Data(); len(data) > 0 && !SameJSON(data, n.Data) {
		return "the event's data differs from what the saga emitted"
	}
	return ""
}

// change builds the Store change for an admitted event and the action's
// Transition, from the Definition.
func (p *Participant) change(rec State, e event.Event, route Route, t Transition) (Change, error) {
	s := p.def.StepDef(route)
	if t.Outcome == "" {
		return Change{}, fmt.Errorf("saga %q step %s: the Transition has no Outcome", p.def.Name, s.Name)
	}
	now := p.now()
	c := Change{SagaID: rec.ID, Saga: p.def.Name, Key: rec.Key, Event: EventRef{Source: e.Source(), ID: e.ID(), Type: e.Type()},
		Version: rec.Version, Step: s.Name, Effect: t.Effect}
	var out []byte
	if t.Output != nil {
		var err error
		if out, err = json.Marshal(t.Output); err != nil {
			return Change{}, fmt.Errorf("step %s output: %w", s.Name, err)
		}
	}
	failOutcome := t.FailOutcome
	if failOutcome == "" {
		failOutcome = OutcomeFailed
	}
	emit := func(typ string) *Emit {
		if typ == "" {
			return nil
		}
		return &Emit{Type: typ, ID: ReplyID(e.Source(), e.ID(), typ), Source: p.source}
	}
	last := route.Step == len(p.def.Steps)-1
	switch route.Kind {
	case Forward:
		c.Allow = []Status{StatusRunning}
		c.Success = Move{Outcome: t.Outcome, Status: StatusRunning, Push: s.Compensable(), Output: out, Emit: emit(s.Succeeded)}
		if route.Step == 0 {
			c.Allow = []Status{StatusAccepted}
		}
		if last {
			c.Success.Status, c.Success.ClearStack = StatusCompleted, true
		} else {
			c.Success.Due = p.dueAwaiting(route.Step+1, rec.Deadline, now)
		}
		// A failure leaves the completed steps to undo: with none, the
		// saga has compensated at once.
		fail := Move{Outcome: failOutcome, Status: StatusCompensating, Reason: t.Fail, Emit: emit(s.Failed), Due: now.Add(p.nudge)}
		if len(rec.Compensate) == 0 {
			fail.Status, fail.Due = StatusCompensated, time.Time{}
		}
		c.Failure = &fail
		c.Fail = t.Fail != "" // decided in Go: the failure applies whatever the effect does
	case Compensate:
		if t.Fail != "" {
			return Change{}, fmt.Errorf("saga %q step %s: a compensation cannot fail; return an error to have it retried", p.def.Name, s.Name)
		}
		c.Allow = []Status{StatusCompensating}
		c.Success = Move{Outcome: t.Outcome, Pop: s.Name, Status: StatusCompensating, Output: out, Emit: emit(s.Compensated), Due: now.Add(p.nudge)}
		if len(rec.Compensate) == 1 {
			c.Success.Status, c.Success.Due = StatusCompensated, time.Time{}
		}
	case Final:
		if t.Fail != "" {
			return Change{}, fmt.Errorf("saga %q: the final step %s never fails", p.def.Name, s.Name)
		}
		c.Allow = []Status{StatusCompleted, StatusCompensated}
		c.Success = Move{Outcome: t.Outcome, Output: out, Emit: emit(s.Succeeded)}
	}
	return c, nil
}

// NudgeAfter is how long a saga may wait on its next event before the
// deadline sweeper sends it again (an event or a reply lost between a step
// and the broker), unless configured otherwise (KSAGA_NUDGE_AFTER).
const NudgeAfter = 30 * time.Second

// dueAwaiting is when the deadline sweeper should look at a running saga
// that waits on step i from now.
func (p *Participant) dueAwaiting(i int, deadline, now time.Time) time.Time {
	return DueAwaiting(p.def, i, deadline, now, p.nudge)
}

// DueAwaiting is when the deadline sweeper should look at a running saga
// of def that waits on step i from now: nudge from now (to send the
// awaited event again if it was lost; 0 means NudgeAfter), or earlier at
// the saga's deadline or the step's own timeout.
func DueAwaiting(def *Definition, i int, deadline, now time.Time, nudge time.Duration) time.Time {
	if nudge <= 0 {
		nudge = NudgeAfter
	}
	due := now.Add(nudge)
	if i >= 0 && i < len(def.Steps) {
		if t := time.Duration(def.Steps[i].Timeout); t > 0 && now.Add(t).Before(due) {
			due = now.Add(t)
		}
	}
	if !deadline.IsZero() && deadline.Before(due) {
		due = deadline
	}
	return due
}

// StepDeadline is when a running saga that has waited on step i since
// its last change (updated) times out at that step, or the zero time if
// the step has no timeout of its own.
func StepDeadline(def *Definition, i int, updated time.Time) time.Time {
	if i >= 0 && i < len(def.Steps) && def.Steps[i].Timeout > 0 {
		return updated.Add(time.Duration(def.Steps[i].Timeout))
	}
	return time.Time{}
}

// toEvent builds the CloudEvent of a stored reply. Everything in it comes
// from the incoming event and the stored reply, so it is identical on
// every redelivery.
func (p *Participant) toEvent(sagaID string, in event.Event, r *Emitted) *event.Event {
	return ToEvent(sagaID, in.ID(), r)
}

// ToEvent builds the CloudEvent of an emitted event of saga sagaID, caused
// by the event causation; nil if r is nil or has no type (a change that
// emitted nothing: its redelivery replies nothing either).
func ToEvent(sagaID, causation string, r *Emitted) *event.Event {
	if r == nil || r.Type == "" {
		return nil
	}
	out := event.New()
	out.SetID(r.ID)
	out.SetSource(r.Source)
	out.SetType(r.Type)
	out.SetTime(r.Time)
	out.SetExtension(ExtCorrelationID, sagaID)
	if causation != "" {
		out.SetExtension(ExtCausationID, causation)
	}
	out.SetExtension(ExtSagaVersion, strconv.FormatInt(r.Version, 10))
	if len(r.Data) > 0 {
		out.DataEncoded = r.Data
		out.SetDataContentType(event.ApplicationJSON)
	}
	return &out
}

// MergeReason returns JSON object data with "reason" set (see mergeReason).
func MergeReason(data []byte, reason string) []byte { return mergeReason(data, reason) }
