// Package ops holds the generic operations on sagas, driven by any
// saga.Definition and knowing no saga: the orchestrator, the dead-letter
// sink, the deadline sweeper, abort (cancel), redrive and dead-letter
// replay, accepting a saga before its start command runs, and the admin
// HTTP API. Generic functions (functions/orchestrator, deadletter, sweeper,
// console) serve them for the definitions they are configured with.
//
// Every operation reads the saga's record and changes it as one
// compare-and-set on its version through the saga.Store; an operator
// action (abort, redrive) applies at the version it read, whatever event
// the saga waits on — the only changes not driven by the awaited event.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/saga"
)

// Sender publishes events to the Broker (knfunc.Sink).
type Sender interface {
	Send(ctx context.Context, e event.Event) error
}

// Registry holds the definitions an operation serves, by name.
type Registry struct {
	defs  map[string]*saga.Definition
	names []string
}

// NewRegistry returns a registry of defs; their event types must not
// overlap (an event must name one saga's step).
func NewRegistry(defs ...*saga.Definition) (*Registry, error) {
	r := &Registry{defs: map[string]*saga.Definition{}}
	types := map[string]string{}
	var errs []error
	for _, d := range defs {
		if err := d.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := r.defs[d.Name]; dup {
			errs = append(errs, fmt.Errorf("saga %q registered twice", d.Name))
			continue
		}
		for _, t := range d.Types() {
			if other, ok := types[t]; ok {
				errs = append(errs, fmt.Errorf("event type %s belongs to both saga %q and saga %q", t, other, d.Name))
			}
			types[t] = d.Name
		}
		r.defs[d.Name] = d
		r.names = append(r.names, d.Name)
	}
	if len(r.defs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no saga definitions"))
	}
	slices.Sort(r.names)
	return r, errors.Join(errs...)
}

// Get returns the definition named name.
func (r *Registry) Get(name string) (*saga.Definition, bool) {
	d, ok := r.defs[name]
	return d, ok
}

// Names lists the definitions' names, sorted.
func (r *Registry) Names() []string { return r.names }

// Definitions lists the definitions, sorted by name.
func (r *Registry) Definitions() []*saga.Definition {
	out := make([]*saga.Definition, len(r.names))
	for i, n := range r.names {
		out[i] = r.defs[n]
	}
	return out
}

// Route finds the definition and route of an event type.
func (r *Registry) Route(eventType string) (*saga.Definition, saga.Route, bool) {
	for _, n := range r.names {
		if route, ok := r.defs[n].Route(eventType); ok {
			return r.defs[n], route, true
		}
	}
	return nil, saga.Route{}, false
}

// Owner returns the definition that has eventType among its types.
func (r *Registry) Owner(eventType string) (*saga.Definition, bool) {
	for _, n := range r.names {
		if slices.Contains(r.defs[n].Types(), eventType) {
			return r.defs[n], true
		}
	}
	return nil, false
}

// Operator runs the operations that act on one saga: accept, abort,
// redrive, replay, resend.
type Operator struct {
	Sagas  *Registry
	Store  saga.Store
	Sink   Sender // nil: nothing can be published (the operations that must, fail)
	Source string // CloudEvents source of the events operations emit
	Logger *slog.Logger
	Now    func() time.Time
	// Timeout overrides the definitions' saga timeout for the sagas Accept
	// records (0: the definition's).
	Timeout time.Duration
	// Nudge is how long a saga may wait on an event before the sweeper
	// sends it again (0: saga.NudgeAfter).
	Nudge time.Duration
}

func (o *Operator) nudge() time.Duration {
	if o.Nudge > 0 {
		return o.Nudge
	}
	return saga.NudgeAfter
}

// Errors of operator actions, which an API maps to HTTP statuses.
var (
	// ErrConflict: the saga is not in a state the action applies to.
	ErrConflict = errors.New("conflict")
	// ErrNoSink: nothing to publish with.
	ErrNoSink = errors.New("no K_SINK: the function is not bound to a Broker")
)

func (o *Operator) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Operator) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o *Operator) def(rec saga.State) (*saga.Definition, error) {
	d, ok := o.Sagas.Get(rec.Saga)
	if !ok {
		return nil, fmt.Errorf("saga %s is a %q saga, which this function does not serve", rec.ID, rec.Saga)
	}
	return d, nil
}

// send publishes a saga's emitted event (nothing if it emitted none).
func (o *Operator) send(ctx context.Context, sagaID, causation string, r *saga.Emitted) error {
	if r == nil || r.Type == "" {
		return nil
	}
	if o.Sink == nil {
		return saga.Transient(ErrNoSink, "the broker")
	}
	if err := o.Sink.Send(ctx, *saga.ToEvent(sagaID, causation, r)); err != nil {
		return fmt.Errorf("publish %s: %w", r.Type, err)
	}
	return nil
}

// Cause is why an operator action aborts a saga.
type Cause struct {
	Name    string // short name, e.g. "cancel", "deadline" (metrics label, event id prefix)
	Outcome string // recorded in the history at the awaited step, e.g. "cancel_requested"
	Type    string // the type recorded for the (never sent) input event
}

// Causes of aborts.
var (
	CauseDeadline = Cause{Name: "deadline", Outcome: "timed_out", Type: "io.ksaga.saga.deadlinepassed"}
	CauseCancel   = Cause{Name: "cancel", Outcome: "cancel_requested", Type: "io.ksaga.saga.cancelrequested"}
	CauseAbort    = Cause{Name: "abort", Outcome: "aborted", Type: "io.ksaga.saga.abortrequested"}
)

// Aborted is what Abort did.
type Aborted struct {
	Event   *saga.Emitted // the failure event published
	Applied bool          // aborted now (false: aborted before by the same cause; its event sent again if nothing moved)
	Step    string        // the step the saga waited on
}

// abortAttempts bounds how often an abort reads the saga again when a
// step moved it meanwhile.
const abortAttempts = 4

// Abort fails a saga that has not ended at the step it waits on, for
// cause, with reason(step) as the reason, and publishes that step's
// failure event, so the saga compensates as after any other failure, in
// both modes. An accepted saga whose start has not run ends compensated at
// once. Aborting again for the same cause sends the same event again while
// nothing has moved. ErrConflict if the saga is compensating or has ended
// (or was aborted for another cause); saga.ErrNotFound if unknown.
func (o *Operator) Abort(ctx context.Context, sagaID string, cause Cause, actor string, reason func(step string) string) (Aborted, error) {
	for range abortAttempts {
		rec, err := o.Store.Get(ctx, sagaID)
		if err != nil {
			return Aborted{}, err
		}
		d, err := o.def(rec)
		if err != nil {
			return Aborted{}, err
		}
		step := 0
		switch rec.Status {
		case saga.StatusAccepted:
		case saga.StatusRunning:
			var ok bool
			if step, ok = d.Awaited(rec.Compensate); !ok {
				return Aborted{}, fmt.Errorf("saga %s: no step awaited after %v", sagaID, rec.Compensate)
			}
		default:
			// aborted before for this cause: its failure event, again
			in := saga.EventRef{Source: o.Source, ID: cause.Name + "-" + sagaID, Type: cause.Type}
			_, dup, err := o.Store.Load(ctx, sagaID, in.Source, in.ID)
			if err != nil {
				return Aborted{}, err
			}
			if dup == nil {
				return Aborted{}, fmt.Errorf("%w: the saga is %s", ErrConflict, rec.Status)
			}
			a := Aborted{Event: dup, Step: rec.FailedStep}
			if rec.Version == dup.Version { // nothing has moved: the event may have been lost
				return a, o.send(ctx, sagaID, in.ID, dup)
			}
			return a, nil
		}
		s := d.Steps[step]
		in := saga.EventRef{Source: o.Source, ID: cause.Name + "-" + sagaID, Type: cause.Type}
		now := o.now()
		why := reason(s.Name)
		m := saga.Move{Outcome: cause.Outcome, Status: saga.StatusCompensating, Reason: why, Due: now.Add(o.nudge())}
		if len(rec.Compensate) == 0 {
			m.Status, m.Due = saga.StatusCompensated, time.Time{}
		}
		if s.Failed != "" {
			m.Emit = &saga.Emit{Type: s.Failed, ID: saga.ReplyID(in.Source, in.ID, s.Failed), Source: o.Source}
		}
		res, err := o.Store.Apply(ctx, saga.Change{SagaID: sagaID, Saga: rec.Saga, Key: rec.Key, Event: in, Actor: actor,
			Version: rec.Version, Allow: []saga.Status{rec.Status}, Step: s.Name, Success: m})
		if err != nil {
			return Aborted{}, err
		}
		if res.Skipped != "" {
			continue // a step moved the saga between the read and the abort
		}
		a := Aborted{Event: res.Reply, Applied: res.Applied, Step: s.Name}
		if res.Applied {
			o.logger().WarnContext(ctx, "saga aborted", "cause", cause.Name, "step", s.Name, "reason", why, "actor", actor)
		}
		if a.Event == nil {
			return a, nil
		}
		return a, o.send(ctx, sagaID, in.ID, a.Event)
	}
	return Aborted{}, saga.Transient(fmt.Errorf("saga %s kept moving", sagaID), "the saga")
}

// OutcomeCompensationFailed is the history outcome the dead-letter sink
// records for a compensation that ran out of retries; Redrive resumes the
// newest one.
const OutcomeCompensationFailed = "compensation_failed"

// OutcomeRedriven is the history outcome of a redrive.
const OutcomeRedriven = "redriven"

// Redrive resumes a saga whose compensation failed: it puts the saga back
// to compensating and publishes the event its compensation could not get
// (the one the dead-letter sink recorded) again, at the saga's new
// version, so the compensation resumes where it stopped, in either mode.
// A repeated redrive sends the same event again while nothing has moved.
// ErrConflict unless the saga's compensation failed.
func (o *Operator) Redrive(ctx context.Context, sagaID, actor string) (*saga.Emitted, error) {
	rec, err := o.Store.Get(ctx, sagaID)
	if err != nil {
		return nil, err
	}
	failed, redriven := newest(rec, OutcomeCompensationFailed), newest(rec, OutcomeRedriven)
	again := false
	switch {
	case failed >= 0 && redriven < failed && rec.Status == saga.StatusCompensationFailed:
	case failed >= 0 && redriven > failed && rec.Status == saga.StatusCompensating:
		again = true
	default:
		return nil, fmt.Errorf("%w: saga %s is %s: only a saga whose compensation failed can be redriven", ErrConflict, sagaID, rec.Status)
	}
	f := rec.Steps[failed]
	in := saga.EventRef{Source: o.Source, ID: fmt.Sprintf("redrive-%s-%d", sagaID, failed), Type: "io.ksaga.saga.redriverequested"}
	reason, failedStep := compensationReason(rec)
	res, err := o.Store.Apply(ctx, saga.Change{SagaID: sagaID, Saga: rec.Saga, Key: rec.Key, Event: in, Actor: actor,
		Version: rec.Version, Allow: []saga.Status{saga.StatusCompensationFailed}, Step: f.Step,
		Success: saga.Move{Outcome: OutcomeRedriven, Status: saga.StatusCompensating, Reason: reason, FailedStep: failedStep,
			Emit: &saga.Emit{Type: f.EventType, ID: saga.ReplyID(in.Source, in.ID, f.EventType), Source: o.Source},
			Due:  o.now().Add(o.nudge())}})
	if err != nil {
		return nil, err
	}
	switch {
	case res.Skipped != "":
		return nil, saga.Transient(fmt.Errorf("saga %s moved while redriven", sagaID), "the saga")
	case res.Applied:
		o.logger().WarnContext(ctx, "saga redriven", "step", f.Step, "event", f.EventType, "actor", actor)
	case again && rec.Version != res.Reply.Version:
		return res.Reply, nil // its compensation is under way
	}
	return res.Reply, o.send(ctx, sagaID, in.ID, res.Reply)
}

// newest returns the position of the saga's newest history entry with
// outcome, or -1.
func newest(st saga.State, outcome string) int {
	for i := len(st.Steps) - 1; i >= 0; i-- {
		if st.Steps[i].Outcome == outcome && !st.Steps[i].Note {
			return i
		}
	}
	return -1
}

// compensationReason is why the saga began to compensate, and the step
// that failed: the first history entry with a reason, other than a failed
// compensation or a redrive (those carry the dead letter's text).
func compensationReason(st saga.State) (string, string) {
	for _, s := range st.Steps {
		if s.Reason != "" && !s.Note && s.Outcome != OutcomeCompensationFailed && s.Outcome != OutcomeRedriven {
			return s.Reason, s.Step
		}
	}
	return "", ""
}

// Accept records a saga of def as accepted before its start command is
// published (see saga.StatusAccepted): from then on the saga is visible
// and always reaches a terminal status — the deadline sweeper sends the
// command again until its start runs, and rejects the saga at its
// deadline. start is the command, with its id, source and data; Accept
// sets its sagaversion to the accepted record's, so the start step acts on
// it. Accepting the same saga again with the same command is a duplicate
// and changes nothing. Publish start after Accept; if that fails, call
// Withdraw.
func (o *Operator) Accept(ctx context.Context, def *saga.Definition, sagaID, key string, start *event.Event) (saga.Result, error) {
	if start.Type() != def.Steps[0].Command {
		return saga.Result{}, fmt.Errorf("saga %q starts with %s, not %s", def.Name, def.Steps[0].Command, start.Type())
	}
	now := o.now()
	timeout := time.Duration(def.Timeout)
	if o.Timeout > 0 {
		timeout = o.Timeout
	}
	deadline := now.Add(timeout)
	data := start.Data()
	if data == nil {
		data = []byte("null")
	}
	in := saga.EventRef{Source: start.Source(), ID: start.ID() + ".accept", Type: start.Type()}
	res, err := o.Store.Apply(ctx, saga.Change{SagaID: sagaID, Saga: def.Name, Key: key, Event: in,
		Create: &saga.Create{Saga: def.Name, Key: key, Data: data, Deadline: deadline, Accept: true},
		Step:   def.Steps[0].Name,
		Success: saga.Move{Outcome: "accepted", Status: saga.StatusAccepted, Due: saga.DueAwaiting(def, 0, deadline, now, o.Nudge),
			Emit: &saga.Emit{Type: start.Type(), ID: start.ID(), Source: start.Source(), Data: data}}})
	if err == nil && res.Reply != nil {
		start.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(res.Reply.Version, 10))
	}
	return res, err
}

// Withdraw ends an accepted saga whose start command could not be
// published: it is recorded rejected (compensated, nothing to undo) with
// reason. If the command was published after all (an ambiguous failure)
// and its start has run, the saga is no longer accepted and Withdraw
// reports false: the saga goes on. Withdrawing a withdrawn saga again
// reports true.
func (o *Operator) Withdraw(ctx context.Context, sagaID, reason string) (bool, error) {
	in := saga.EventRef{Source: o.Source, ID: "withdraw-" + sagaID, Type: "io.ksaga.saga.withdrawn"}
	rec, dup, err := o.Store.Load(ctx, sagaID, in.Source, in.ID)
	if err != nil {
		return false, err
	}
	if rec.Status != saga.StatusAccepted {
		return dup != nil, nil
	}
	d, err := o.def(rec)
	if err != nil {
		return false, err
	}
	res, err := o.Store.Apply(ctx, saga.Change{SagaID: sagaID, Saga: rec.Saga, Key: rec.Key, Event: in, Version: rec.Version,
		Allow: []saga.Status{saga.StatusAccepted}, Step: d.Steps[0].Name,
		Success: saga.Move{Outcome: "rejected", Status: saga.StatusCompensated, Reason: reason}})
	if err != nil {
		return false, err
	}
	return res.Applied || res.Duplicate, nil
}

// Resend publishes the event a saga waits on again (the broker lost it, or
// a step's reply was lost), if the saga still waits on it: the same id, so
// a step that handled it answers with its stored reply.
func (o *Operator) Resend(ctx context.Context, rec saga.State) error {
	if rec.Next == nil || rec.Next.Version != rec.Version {
		return nil
	}
	return o.send(ctx, rec.ID, "", rec.Next)
}

// OutcomeReplayed is the history note of a replayed dead letter.
const OutcomeReplayed = "dead_letter_replayed"

// Replay publishes a dead letter's event again, as it was first sent (the
// knativeerror* extensions removed), records who did it on the dead letter
// and, as a note, in its saga's history. A step that has handled the event
// answers with its stored reply; a saga that has moved on ignores it. A
// replayed start command's saga may not exist yet when the note is
// written: the note is then left out, and the dead letter keeps who
// replayed it.
func (o *Operator) Replay(ctx context.Context, id, actor string) (saga.DeadLetter, error) {
	dl, err := o.Store.DeadLetter(ctx, id)
	if err != nil {
		return saga.DeadLetter{}, err
	}
	var e event.Event
	if err := json.Unmarshal(dl.Event, &e); err != nil {
		return dl, fmt.Errorf("dead letter %s: its event cannot be read: %w", id, err)
	}
	if o.Sink == nil {
		return dl, saga.Transient(ErrNoSink, "the broker")
	}
	if err := o.Sink.Send(ctx, e); err != nil {
		return dl, fmt.Errorf("publish %s: %w", e.Type(), err)
	}
	now := o.now()
	if err := o.Store.MarkReplayed(ctx, id, actor, now); err != nil {
		return dl, err
	}
	dl.ReplayedBy, dl.ReplayedAt = actor, now
	if dl.SagaID != "" {
		err := o.Store.Note(ctx, dl.SagaID, saga.StepRecord{At: now, Outcome: OutcomeReplayed, EventType: dl.EventType,
			EventID: dl.EventID, EventSource: dl.EventSource, Actor: actor, Reason: "dead letter " + id})
		if err != nil && !errors.Is(err, saga.ErrNotFound) {
			return dl, err
		}
	}
	o.logger().WarnContext(ctx, "dead letter replayed", "dead_letter", id, "type", dl.EventType, "actor", actor)
	return dl, nil
}

// EnvSagas is the environment variable that configures the generic
// functions with the definitions they serve: JSON, one saga.Definition or
// an array of them (in the manifests, from a ConfigMap).
const EnvSagas = "KSAGA_SAGAS"

// RegistryFromEnv reads the definitions of EnvSagas.
func RegistryFromEnv(getenv func(string) string) (*Registry, error) {
	raw := getenv(EnvSagas)
	if raw == "" {
		return nil, fmt.Errorf("%s is not set: give the saga definitions this function serves (JSON)", EnvSagas)
	}
	defs, err := saga.ParseDefinitions([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvSagas, err)
	}
	return NewRegistry(defs...)
}
