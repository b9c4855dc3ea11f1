package ordersaga

import (
	"fmt"
	"slices"
)

// StepDef describes one step of a saga as data.
type StepDef struct {
	Name string // participant step name, as in the saga's history
	// Command is what the orchestrator sends to run the step ("" for the
	// step that starts the saga).
	Command string
	// Triggers are every event type that runs the step, in either mode
	// (choreography events and the orchestration command).
	Triggers []string
	// Succeeded and Failed are the step's result event types.
	Succeeded, Failed string
	// Compensation undoes the step: the command the orchestrator sends, the
	// events that trigger it in choreography, and its result.
	Compensation         string
	CompensationTriggers []string
	Compensated          string
}

// Definition is a saga as data: its forward steps in order, and a final
// step that runs whatever the outcome (it never fails the saga).
type Definition struct {
	Name    string
	Steps   []StepDef
	Finally StepDef
	// Completed and Compensated are the orchestrator's terminal events.
	Completed, Compensated string
}

// OrderSaga is the reference order saga.
var OrderSaga = Definition{
	Name: "order",
	Steps: []StepDef{
		{Name: StepOrder, Triggers: []string{Create}, Succeeded: Created, Failed: Rejected,
			Compensation: Cancel, CompensationTriggers: []string{Cancel, PayFailed, PayRefunded}, Compensated: Cancelled},
		{Name: StepPayment, Command: AuthorizePay, Triggers: []string{AuthorizePay, Created}, Succeeded: PayAuthorized, Failed: PayFailed,
			Compensation: RefundPay, CompensationTriggers: []string{RefundPay, StockFailed, StockReleased}, Compensated: PayRefunded},
		{Name: StepInventory, Command: ReserveStock, Triggers: []string{ReserveStock, PayAuthorized}, Succeeded: StockReserved, Failed: StockFailed,
			Compensation: ReleaseStock, CompensationTriggers: []string{ReleaseStock, ConfirmFailed}, Compensated: StockReleased},
		{Name: StepOrder, Command: Confirm, Triggers: []string{Confirm, StockReserved}, Succeeded: Confirmed, Failed: ConfirmFailed},
	},
	Finally:     StepDef{Name: StepNotification, Command: SendNotification, Triggers: []string{SendNotification, Confirmed, Cancelled}, Succeeded: NotificationSent},
	Completed:   SagaCompleted,
	Compensated: SagaCompensated,
}

// Validate checks that a definition can drive an orchestrator.
func (d Definition) Validate() error {
	if len(d.Steps) == 0 {
		return fmt.Errorf("saga %q: no steps", d.Name)
	}
	seen := map[string]bool{}
	for i, s := range d.Steps {
		if s.Name == "" || s.Succeeded == "" {
			return fmt.Errorf("saga %q: step %d needs a name and a success event", d.Name, i)
		}
		if i > 0 && s.Command == "" {
			return fmt.Errorf("saga %q: step %d (%s) needs a command", d.Name, i, s.Name)
		}
		if (s.Compensation == "") != (s.Compensated == "") {
			return fmt.Errorf("saga %q: step %d (%s): compensation command and result go together", d.Name, i, s.Name)
		}
		for _, t := range []string{s.Succeeded, s.Failed, s.Compensated} {
			if t != "" && seen[t] {
				return fmt.Errorf("saga %q: result event %s used twice", d.Name, t)
			}
			seen[t] = t != ""
		}
	}
	if d.Finally.Command == "" || d.Finally.Succeeded == "" {
		return fmt.Errorf("saga %q: the final step needs a command and a success event", d.Name)
	}
	if d.Completed == "" || d.Compensated == "" {
		return fmt.Errorf("saga %q: terminal events missing", d.Name)
	}
	return nil
}

// Compensable returns the definition of the step named name that can be
// compensated.
func (d Definition) Compensable(name string) (StepDef, bool) {
	for _, s := range d.Steps {
		if s.Name == name && s.Compensation != "" {
			return s, true
		}
	}
	return StepDef{}, false
}

// Next returns the forward step a running saga waits on, given its
// compensation stack (newest completed step first): the step after the
// newest completed one, or the first step when none has completed. Every
// forward step of a definition but the last is compensable, so the stack
// tells how far a running saga got; the last one ends the saga.
func (d Definition) Next(compensate []string) (StepDef, bool) {
	if len(compensate) == 0 {
		return d.Steps[0], true
	}
	for i, s := range d.Steps {
		if s.Name == compensate[0] && s.Compensation != "" {
			if i+1 < len(d.Steps) {
				return d.Steps[i+1], true
			}
			break
		}
	}
	return StepDef{}, false
}

// Triggered returns the step an event type runs, and whether it runs the
// step's compensation.
func (d Definition) Triggered(eventType string) (s StepDef, compensation bool, ok bool) {
	for _, s := range append(slices.Clone(d.Steps), d.Finally) {
		if slices.Contains(s.Triggers, eventType) {
			return s, false, true
		}
		if slices.Contains(s.CompensationTriggers, eventType) {
			return s, true, true
		}
	}
	return StepDef{}, false, false
}

// ResultTypes lists every result event the steps emit (what the
// orchestrator subscribes to).
func (d Definition) ResultTypes() []string {
	var out []string
	for _, s := range append(slices.Clone(d.Steps), d.Finally) {
		for _, t := range []string{s.Succeeded, s.Failed, s.Compensated} {
			if t != "" && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}
