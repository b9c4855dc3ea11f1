package saga

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is the lifecycle state of a saga.
type Status string

// Saga statuses. Completed, Compensated and CompensationFailed are terminal.
const (
	// StatusAccepted: recorded when its start command was accepted (a REST
	// API answered 202), before the command ran. The deadline sweeper sends
	// the command again until it runs, or rejects the saga at its deadline:
	// an accepted saga always reaches a terminal status.
	StatusAccepted           Status = "accepted"
	StatusRunning            Status = "running"
	StatusCompensating       Status = "compensating"
	StatusCompleted          Status = "completed"
	StatusCompensated        Status = "compensated"
	StatusCompensationFailed Status = "compensation_failed"
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{StatusAccepted, StatusRunning, StatusCompensating, StatusCompleted, StatusCompensated, StatusCompensationFailed}

// Terminal reports whether no further forward or compensating work is expected.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusCompensated || s == StatusCompensationFailed
}

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// State is a saga's record, the one truth about it: what it started with,
// what each step produced, what happened, what is left to undo, the event it
// waits on, and the version every transition increments. Events are
// notifications; a step acts on the record.
type State struct {
	ID   string `json:"id"`
	Saga string `json:"saga"`          // its Definition's name
	Key  string `json:"key,omitempty"` // its business key (e.g. the order id), searchable
	// TraceID is the W3C trace id of the saga's one trace, when traced.
	TraceID string `json:"trace_id,omitempty"`
	Status  Status `json:"status"`
	// Step is the step of the latest recorded transition.
	Step    string `json:"step,omitempty"`
	Version int64  `json:"version"`
	// Deadline is the saga's own deadline; Due is when the deadline
	// sweeper looks at it next (the earlier of Deadline and the awaited
	// step's deadline); zero once the saga has ended.
	Deadline   time.Time `json:"deadline"`
	Due        time.Time `json:"due,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Reason     string    `json:"reason,omitempty"`      // why the saga failed or its compensation failed
	FailedStep string    `json:"failed_step,omitempty"` // the step that failed
	// Compensate lists the completed steps still to undo, next first.
	// Empty once the saga completed: nothing will be undone.
	Compensate []string        `json:"compensate"`
	Steps      []StepRecord    `json:"steps"`          // history, oldest first
	Data       json.RawMessage `json:"data,omitempty"` // what the saga started with
	// Outputs are what steps recorded, by step name (e.g. the payment's
	// charge): what their compensations undo.
	Outputs map[string]json.RawMessage `json:"outputs,omitempty"`
	// Next is the event the saga emitted last and waits on: the only event
	// a step may act on at this version. Nil when it waits on none.
	Next *Emitted `json:"next,omitempty"`
}

// Overdue reports whether an unfinished saga is past its due time.
func (s State) Overdue(now time.Time) bool {
	return !s.Status.Terminal() && !s.Due.IsZero() && now.After(s.Due)
}

// Decode unmarshals the saga's data into v.
func (s State) Decode(v any) error {
	if len(s.Data) == 0 {
		return fmt.Errorf("saga %s has no data", s.ID)
	}
	if err := json.Unmarshal(s.Data, v); err != nil {
		return fmt.Errorf("saga %s data: %w", s.ID, err)
	}
	return nil
}

// Output unmarshals what step recorded into v, and reports whether it
// recorded anything.
func (s State) Output(step string, v any) (bool, error) {
	raw, ok := s.Outputs[step]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("saga %s output of %s: %w", s.ID, step, err)
	}
	return true, nil
}

// StepRecord is one entry of a saga's history.
type StepRecord struct {
	Step    string    `json:"step"`
	Outcome string    `json:"outcome"`
	At      time.Time `json:"at"`
	// Version is the saga's version after this entry's transition; an
	// annotation (Note) carries the version it was made at.
	Version int64 `json:"version"`
	// The event handled: its type, id and source.
	EventType   string `json:"event_type"`
	EventID     string `json:"event_id,omitempty"`
	EventSource string `json:"event_source,omitempty"`
	// Emitted is the type of the event this transition emitted ("" none).
	Emitted string `json:"emitted,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Actor is who asked for an operator action (abort, redrive, replay).
	Actor string `json:"actor,omitempty"`
	// Redelivered counts the deliveries of the event after the first
	// (at-least-once delivery at work; each got the stored reply).
	Redelivered int `json:"redelivered,omitempty"`
	// Note marks an annotation: a record of an operator action that did
	// not move the saga (e.g. a dead letter replayed).
	Note bool `json:"note,omitempty"`
}

// Emitted is an event as a saga emitted it: enough to recognise it when it
// comes back, and to send it again.
type Emitted struct {
	Type    string    `json:"type"`
	ID      string    `json:"id"`
	Source  string    `json:"source"`
	Version int64     `json:"version"`
	Time    time.Time `json:"time"`
	// Data is the event's data (JSON), reason merged in.
	Data json.RawMessage `json:"data,omitempty"`
}
