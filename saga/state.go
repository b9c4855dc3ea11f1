package saga

import (
	"encoding/json"
	"time"
)

// Status is the lifecycle state of a saga.
type Status string

// Saga statuses. Completed, Compensated and CompensationFailed are terminal.
const (
	StatusRunning            Status = "running"
	StatusCompensating       Status = "compensating"
	StatusCompleted          Status = "completed"
	StatusCompensated        Status = "compensated"
	StatusCompensationFailed Status = "compensation_failed"
)

// Terminal reports whether no further forward or compensating work is expected.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusCompensated || s == StatusCompensationFailed
}

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusRunning, StatusCompensating, StatusCompleted, StatusCompensated, StatusCompensationFailed:
		return true
	}
	return false
}

// State is a saga as stored: what happened, what is left to undo, and the
// version every transition increments.
type State struct {
	ID         string          `json:"id"`
	Status     Status          `json:"status"`
	Step       string          `json:"step,omitempty"` // the step of the latest recorded transition
	Version    int64           `json:"version"`
	Deadline   time.Time       `json:"deadline"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Reason     string          `json:"reason,omitempty"`      // why the saga failed or compensation failed
	FailedStep string          `json:"failed_step,omitempty"` // the step that failed
	Compensate []string        `json:"compensate"`            // completed steps still to undo, next first
	Steps      []StepRecord    `json:"steps"`                 // history, oldest first
	Data       json.RawMessage `json:"data,omitempty"`        // the saga's data, set when it started
}

// Overdue reports whether a non-terminal saga is past its deadline.
func (s State) Overdue(now time.Time) bool {
	return !s.Status.Terminal() && !s.Deadline.IsZero() && now.After(s.Deadline)
}

// StepRecord is one entry of a saga's history.
type StepRecord struct {
	Step      string    `json:"step"`
	Outcome   string    `json:"outcome"`
	At        time.Time `json:"at"`
	EventType string    `json:"event_type"`
	Reason    string    `json:"reason,omitempty"`
	// Version is the saga's version after this entry's transition, where
	// the Store knows it (redisstore: entries with a reason); 0 otherwise.
	Version int64 `json:"-"`
}
