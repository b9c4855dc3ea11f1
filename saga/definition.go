package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Definition is a saga as data: its forward steps in order, each with the
// command that runs it and the events it answers with, its compensation,
// and an optional final step that runs once the saga has ended. Everything
// generic — which event runs which action in choreography and in
// orchestration, which recorded outcome justifies an action, how the saga's
// status moves, what the orchestrator sends next, which step a stuck saga
// waits on — is derived from it, so a saga is declared, never coded.
//
// Rules (Validate): every forward step but the last is compensable (it has
// a Compensation and a Compensated event), so a saga that fails at any step
// can be undone; the last step is the pivot and is not. Every step after
// the first has a Failed event, which starts that undoing. Every event type is
// used once. A step name may repeat (one function serving two steps, as the
// order step creates and confirms the order), but the names of compensable
// steps are unique: the compensation stack holds names.
//
// Choreography wiring, derived: step i runs on Steps[i-1].Succeeded (step 0
// on its Command, which starts the saga); the compensation of step k runs on
// Steps[k+1].Failed and Steps[k+1].Compensated; the final step runs on the
// last step's Succeeded and the first step's Compensated. In orchestration
// every step runs on its Command and every compensation on its
// Compensation, sent by the orchestrator, which hears every result.
type Definition struct {
	// Name identifies the saga's definition; every saga records it.
	Name string `json:"name"`
	// Timeout is a saga's deadline after it starts: a saga still running
	// then is failed at the step it waits on and compensates.
	Timeout Duration `json:"timeout"`
	// Steps are the forward steps in order; Steps[0].Command starts a saga.
	Steps []StepDef `json:"steps"`
	// Finally, if set, runs once the saga has completed or compensated (a
	// notification, an audit record); it never fails the saga.
	Finally *StepDef `json:"finally,omitempty"`
	// Completed and Compensated are the terminal events the orchestrator
	// sends when a saga has ended (optional).
	Completed   string `json:"completed,omitempty"`
	Compensated string `json:"compensated,omitempty"`
}

// StepDef is one step of a Definition.
type StepDef struct {
	Name string `json:"name"` // as recorded in the saga's history
	// Command runs the step (the orchestrator sends it; for Steps[0] it is
	// the command a client sends to start a saga).
	Command string `json:"command"`
	// Succeeded and Failed are the step's result events. Failed is what
	// the step answers with when its effect reports a business failure, and
	// what an abort (deadline, cancel) or an undeliverable command records
	// for it.
	Succeeded string `json:"succeeded"`
	Failed    string `json:"failed,omitempty"`
	// Compensation is the command that undoes the step; Compensated its
	// result. Both or neither.
	Compensation string `json:"compensation,omitempty"`
	Compensated  string `json:"compensated,omitempty"`
	// Timeout bounds how long a saga may wait on this step (0: only the
	// saga's own deadline applies).
	Timeout Duration `json:"timeout,omitempty"`
}

// Compensable reports whether the step can be undone.
func (s StepDef) Compensable() bool { return s.Compensation != "" }

// Duration is a time.Duration that reads and writes JSON as "30s".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler: "30s", or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration: want a string like \"30s\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Kind says what an action does to a saga.
type Kind int

// Kinds of action.
const (
	Forward    Kind = iota // a forward step; for Steps[0], starting the saga
	Compensate             // undoing a step
	Final                  // the final step, after the saga ended
)

func (k Kind) String() string {
	switch k {
	case Forward:
		return "forward"
	case Compensate:
		return "compensate"
	case Final:
		return "final"
	}
	return "unknown"
}

// Route is what an event type runs: the step (its position in Steps, or -1
// for Finally), the kind of action, and the action's command (the key under
// which a participant registers it).
type Route struct {
	Step    int
	Kind    Kind
	Command string
}

// Start reports whether the route starts a saga.
func (r Route) Start() bool { return r.Step == 0 && r.Kind == Forward }

// StepDef returns the route's step.
func (d *Definition) StepDef(r Route) StepDef {
	if r.Step < 0 {
		return *d.Finally
	}
	return d.Steps[r.Step]
}

// Route returns what an event type runs, in either mode.
func (d *Definition) Route(eventType string) (Route, bool) {
	last := len(d.Steps) - 1
	for i, s := range d.Steps {
		switch {
		case eventType == s.Command:
			return Route{Step: i, Kind: Forward, Command: s.Command}, true
		case eventType == s.Compensation && s.Compensable():
			return Route{Step: i, Kind: Compensate, Command: s.Compensation}, true
		}
		if i > 0 && eventType == d.Steps[i-1].Succeeded {
			return Route{Step: i, Kind: Forward, Command: s.Command}, true
		}
		if i < last && s.Compensable() && (eventType == d.Steps[i+1].Failed || eventType == d.Steps[i+1].Compensated) && eventType != "" {
			return Route{Step: i, Kind: Compensate, Command: s.Compensation}, true
		}
	}
	if f := d.Finally; f != nil {
		if eventType == f.Command || eventType == d.Steps[last].Succeeded || (eventType == d.Steps[0].Compensated && eventType != "") {
			return Route{Step: -1, Kind: Final, Command: f.Command}, true
		}
	}
	return Route{}, false
}

// Commands lists every command of the definition: what participants
// register actions under.
func (d *Definition) Commands() []string {
	var out []string
	for _, s := range d.Steps {
		out = append(out, s.Command)
		if s.Compensable() {
			out = append(out, s.Compensation)
		}
	}
	if d.Finally != nil {
		out = append(out, d.Finally.Command)
	}
	return out
}

// Results lists every result event of the steps: what an orchestrator
// hears.
func (d *Definition) Results() []string {
	var out []string
	for _, s := range d.all() {
		for _, t := range []string{s.Succeeded, s.Failed, s.Compensated} {
			if t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// Types lists every event type of the definition.
func (d *Definition) Types() []string {
	out := append(d.Commands(), d.Results()...)
	for _, t := range []string{d.Completed, d.Compensated} {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

func (d *Definition) all() []StepDef {
	if d.Finally == nil {
		return d.Steps
	}
	return append(slices.Clone(d.Steps), *d.Finally)
}

// Compensable returns the compensable step named name.
func (d *Definition) Compensable(name string) (StepDef, bool) {
	for _, s := range d.Steps {
		if s.Name == name && s.Compensable() {
			return s, true
		}
	}
	return StepDef{}, false
}

// Awaited returns the position of the forward step a running saga waits
// on, given its compensation stack (newest completed step first): the step
// after the newest completed one, or Steps[0] when none completed. Every
// forward step but the last is compensable, so the stack tells how far a
// running saga got.
func (d *Definition) Awaited(compensate []string) (int, bool) {
	if len(compensate) == 0 {
		return 0, true
	}
	for i, s := range d.Steps {
		if s.Name == compensate[0] && s.Compensable() {
			if i+1 < len(d.Steps) {
				return i + 1, true
			}
			break
		}
	}
	return 0, false
}

// Validate checks the definition's rules (see Definition).
func (d *Definition) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("saga %q: "+format, append([]any{d.Name}, args...)...))
	}
	if !validName(d.Name) {
		bad("the name must be 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit")
	}
	if d.Timeout <= 0 {
		bad("timeout must be positive")
	}
	if len(d.Steps) == 0 {
		bad("no steps")
	}
	types := map[string]string{}
	use := func(where, t string) {
		if t == "" {
			return
		}
		if prev, dup := types[t]; dup {
			bad("event type %s is both %s and %s", t, prev, where)
		}
		types[t] = where
	}
	compensable := map[string]bool{}
	for i, s := range d.Steps {
		where := fmt.Sprintf("step %d (%s)", i, s.Name)
		if s.Name == "" || s.Command == "" || s.Succeeded == "" {
			bad("%s needs a name, a command and a success event", where)
		}
		if (s.Compensation == "") != (s.Compensated == "") {
			bad("%s: compensation command and result go together", where)
		}
		last := i == len(d.Steps)-1
		if !last && !s.Compensable() {
			bad("%s must be compensable: a later step can fail", where)
		}
		if last && s.Compensable() && len(d.Steps) > 1 {
			bad("%s is the last step (the pivot): nothing can fail after it, so it has no compensation", where)
		}
		if s.Failed == "" && i > 0 {
			// it starts the compensation of the steps before it, whether
			// the step failed, its command was dead-lettered or the saga
			// was aborted there
			bad("%s needs a failure event: it starts the compensation of the steps before it", where)
		}
		if s.Compensable() {
			if compensable[s.Name] {
				bad("compensable step name %q used twice", s.Name)
			}
			compensable[s.Name] = true
		}
		if s.Timeout < 0 {
			bad("%s: negative timeout", where)
		}
		use(where+" command", s.Command)
		use(where+" success", s.Succeeded)
		use(where+" failure", s.Failed)
		use(where+" compensation", s.Compensation)
		use(where+" compensated", s.Compensated)
	}
	if f := d.Finally; f != nil {
		if f.Name == "" || f.Command == "" || f.Succeeded == "" {
			bad("the final step needs a name, a command and a success event")
		}
		if f.Failed != "" || f.Compensable() {
			bad("the final step never fails and is never undone")
		}
		use("final command", f.Command)
		use("final success", f.Succeeded)
	}
	use("completed", d.Completed)
	use("compensated", d.Compensated)
	return errors.Join(errs...)
}

// ParseDefinitions reads definitions from JSON: one Definition object, or
// an array of them (how generic functions are configured), and validates
// each.
func ParseDefinitions(data []byte) ([]*Definition, error) {
	data = bytes.TrimSpace(data)
	var defs []*Definition
	dec := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(data))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	if len(data) > 0 && data[0] == '[' {
		if err := dec(&defs); err != nil {
			return nil, fmt.Errorf("saga definitions: %w", err)
		}
	} else {
		var d Definition
		if err := dec(&d); err != nil {
			return nil, fmt.Errorf("saga definition: %w", err)
		}
		defs = []*Definition{&d}
	}
	seen := map[string]bool{}
	var errs []error
	for _, d := range defs {
		if err := d.Validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[d.Name] {
			errs = append(errs, fmt.Errorf("saga %q defined twice", d.Name))
		}
		seen[d.Name] = true
	}
	return defs, errors.Join(errs...)
}

// validName reports whether a definition name can be part of keys and
// URLs: 1-63 of [a-z0-9._-], starting with [a-z0-9].
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}
