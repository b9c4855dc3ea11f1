package saga

import (
	"context"
	"time"
)

// Store keeps saga state. Implementations apply each Transition as one atomic
// operation (redisstore: one Lua script called by SHA).
type Store interface {
	// Apply applies t atomically and returns what happened. If the event
	// (t.EventSource, t.EventID) was applied before, Apply changes nothing and
	// returns the stored result with Duplicate set.
	Apply(ctx context.Context, t Transition) (Result, error)
	// Get returns the saga's state, or ErrNotFound.
	Get(ctx context.Context, sagaID string) (State, error)
}

// Transition is one step's atomic change to a saga: an optional domain write
// (Effect), then the outcome it leads to, chosen by whether the effect
// succeeded.
type Transition struct {
	SagaID string
	// The event being handled: the dedupe key is its source and id.
	EventSource, EventID, EventType string

	// Create starts the saga: it must not exist yet. Data and Deadline are
	// stored with it; Deadline is required (the saga is overdue after it and
	// expires the store's retention after it).
	Create   bool
	Data     []byte
	Deadline time.Time

	// ExpectVersion, when > 0, must equal the saga's version (compare-and-set).
	// 0 lets the Participant take it from the event's sagaversion; AnyVersion
	// (< 0) applies at whatever version the saga is.
	ExpectVersion int64
	// Allow lists the statuses the saga must be in; empty means any
	// non-terminal status (running or compensating).
	Allow []Status

	// Step names the history entry this transition records; "" records none
	// (the version still increments).
	Step string
	// Effect is the step's own domain write, run in the same atomic operation.
	Effect *Effect

	// OnSuccess applies when there is no effect or it succeeded.
	OnSuccess Outcome
	// OnFailure applies when the effect reports a business failure; required
	// if the effect can fail.
	OnFailure *Outcome
}

// AnyVersion as a Transition's ExpectVersion applies it at any version, e.g.
// for dead letters, which arrive late by nature.
const AnyVersion = -1

// Outcome is where a transition leads.
type Outcome struct {
	Outcome string // recorded in the step's history entry, e.g. "authorized"
	Status  Status // the saga's new status; "" keeps it (a new saga starts running)
	Reason  string // recorded as the saga's reason; an effect's failure reason overrides it
	// Compensable pushes the step onto the compensation stack: it must be
	// undone if the saga fails later. A step is on the stack once: applying
	// its forward transition again does not push it again (its effect must
	// then change nothing, as an idempotent effect does).
	Compensable bool
	// Compensates names the step this one undid; it leaves the stack. If the
	// step is not on the stack (it never applied, or was undone already),
	// there is nothing to undo: the Store does not run the transition's
	// Effect, and the transition applies as usual. (Only the success
	// outcome's Compensates counts for this.)
	Compensates string
	// Reply is the event to reply with; nil replies nothing.
	Reply *Reply
}

// Reply describes the event a transition replies with. The Participant turns
// it into a CloudEvent with a deterministic id, so a redelivered event gets
// the very same reply.
type Reply struct {
	Type string
	// Data is the JSON data of the reply; nil means the saga's own data.
	// A failure reason is merged into JSON object data as "reason".
	Data []byte
}

// Effect invokes a registered EffectScript with its keys and arguments.
type Effect struct {
	Name string
	Keys []string
	Args []any
}

// EffectScript is a step's domain write, in Lua, run by the Store inside the
// transition's atomic operation. The body sees `keys` and `args` (Lua arrays)
// and returns nothing (or true) on success, or a non-empty string: the
// business failure reason, which selects the transition's OnFailure outcome. A failing effect
// must check before it writes, since Redis does not roll scripts back.
// Scripts are constants of the program, never assembled from input.
type EffectScript struct {
	Name string
	Lua  string
}

// Call returns an Effect invoking s.
func (s EffectScript) Call(keys []string, args ...any) *Effect {
	return &Effect{Name: s.Name, Keys: keys, Args: args}
}

// Result is what Apply did.
type Result struct {
	Applied   bool   // the transition was applied now
	Failed    bool   // applied via OnFailure: the effect reported a business failure
	Duplicate bool   // the event was applied before; Reply is the stored reply
	Skipped   string // non-empty when the transition was refused: "exists", "unknown saga", "version", "status"
	Version   int64  // the saga's version after the transition (for a duplicate: after its first application)
	Status    Status // the saga's status after the transition
	From      Status // the saga's status before it ("" for a new saga)
	Reason    string // the failure reason, if any
	Reply     *StoredReply
}

// StoredReply is a reply as the Store keeps it for redelivery.
type StoredReply struct {
	Type string
	Time time.Time
	Data []byte // resolved: the saga's data when the Reply had none
}
