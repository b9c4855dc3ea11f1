package saga

import (
	"context"
	"time"
)

// Store keeps saga records. It is the only code that knows their layout
// (redisstore: Redis hashes, indexes and streams); everything else — steps,
// the generic operations, the console — goes through these methods.
type Store interface {
	// Apply applies c atomically and returns what happened. If the event
	// c.Event was applied to the saga before, Apply changes nothing (but
	// counts the redelivery) and returns the stored result with Duplicate
	// set.
	Apply(ctx context.Context, c Change) (Result, error)
	// Load returns the saga's record and, if the event (source, id) was
	// applied to it, the reply stored for it (a redelivery; its Type is
	// empty if the change emitted nothing): one read.
	// ErrNotFound if the saga does not exist (or has expired).
	Load(ctx context.Context, sagaID, source, id string) (State, *Emitted, error)
	// Get returns the saga's record, or ErrNotFound.
	Get(ctx context.Context, sagaID string) (State, error)
	// Reschedule sets when the deadline sweeper looks at an unfinished
	// saga of definition saga next, if it is still at version (the change
	// that moved it there set it first); it reports whether it did.
	Reschedule(ctx context.Context, saga, sagaID string, version int64, due time.Time) (bool, error)
	// Note appends an annotation to the saga's history without moving it
	// (its version, status and awaited event stay), e.g. "dead letter
	// replayed by alice". ErrNotFound if the saga does not exist.
	Note(ctx context.Context, sagaID string, r StepRecord) error

	// Due returns up to limit unfinished sagas of the named definitions
	// (of every definition when none is named) whose due time is before
	// now, the earliest first (what the deadline sweeper acts on).
	Due(ctx context.Context, now time.Time, limit int, sagas ...string) ([]string, error)
	// List answers a page of sagas matching q, from indexes (never a scan).
	List(ctx context.Context, q Query) (Page, error)
	// Stats answers counts by status, overdue sagas and recent durations
	// of the sagas of one definition.
	Stats(ctx context.Context, saga string, now time.Time) (Stats, error)
	// Compact removes index entries of sagas that have expired, reading
	// up to budget entries per index (the deadline sweeper calls it).
	Compact(ctx context.Context, now time.Time, budget int) (int, error)
	// ByKey returns the id of the saga of definition saga with business
	// key key, or ErrNotFound.
	ByKey(ctx context.Context, saga, key string) (string, error)

	// KeepDeadLetter records a dead letter that changes no saga, once per
	// (event source, id, destination); it reports whether it was new.
	KeepDeadLetter(ctx context.Context, dl DeadLetter) (bool, error)
	// DeadLetters answers a page of dead letters matching q, newest first.
	DeadLetters(ctx context.Context, q DeadLetterQuery) (DeadLetterPage, error)
	// DeadLetter returns one dead letter by id, or ErrNotFound.
	DeadLetter(ctx context.Context, id string) (DeadLetter, error)
	// MarkReplayed records that a dead letter was replayed, by whom.
	MarkReplayed(ctx context.Context, id, actor string, at time.Time) error
}

// Change is one atomic change to a saga, as a Store applies it: what the
// runtime (a Participant, the generic operations) decided from a step's
// Transition, the saga's Definition and its record. Step authors do not
// build Changes.
type Change struct {
	SagaID string
	// Saga is the saga's definition name (its record's), and Key its
	// business key, if any: the Store keeps them indexed.
	Saga, Key string
	// Event is the event being handled: the dedupe key is its source and
	// id; its type is recorded in the history.
	Event EventRef
	// Actor is who asked for an operator action ("" for events).
	Actor string

	// Create starts the saga (it must not exist yet) or, for a saga
	// recorded Accepted, runs its start.
	Create *Create
	// Version must equal the saga's version (compare-and-set); ignored for
	// a Create of a saga that does not exist.
	Version int64
	// Allow lists the statuses the saga must be in.
	Allow []Status

	// Step names the history entry this change records; "" records none
	// (the version still increments: an orchestrator's decision).
	Step string
	// Effect is the step's own domain write, run in the same atomic
	// operation; nil for none.
	Effect *Call

	// Success applies when there is no effect or it succeeded; Failure
	// when the effect reports a business failure (required if it can), or
	// when Fail is set (the effect still runs).
	Success Move
	Failure *Move
	Fail    bool

	// DeadLetter, if set, is recorded atomically with the change.
	DeadLetter *DeadLetter
}

// EventRef names an event.
type EventRef struct{ Source, ID, Type string }

// Create is what a saga starts with.
type Create struct {
	Saga     string // the definition's name
	Key      string // business key ("" for none)
	Data     []byte // the saga's data (JSON)
	Deadline time.Time
	TraceID  string // the W3C trace id of the saga's trace, if traced
	// Accept records the saga Accepted (its start command not run yet)
	// instead of applying the step: see StatusAccepted.
	Accept bool
}

// Move is where a change leads.
type Move struct {
	Outcome string // recorded in the step's history entry, e.g. "authorized"
	Status  Status // the saga's new status; "" keeps it
	Reason  string // recorded as the saga's reason; an effect's failure reason overrides it
	// FailedStep is recorded with Reason as the step that failed (default:
	// the change's step).
	FailedStep string
	// Push puts the step on the compensation stack: it must be undone if
	// the saga fails later.
	Push bool
	// Pop takes the named step off the top of the stack: it was undone. The
	// Store refuses the change (Skipped "stack") if it is not on top.
	Pop string
	// ClearStack empties the stack (a completed saga has nothing to undo).
	ClearStack bool
	// Output is recorded under the change's step (JSON); nil records none.
	Output []byte
	// Emit is the event the change replies with, which the saga then waits
	// on; nil emits none (and the saga waits on none).
	Emit *Emit
	// Due is when the deadline sweeper should look at the saga next (zero:
	// not before its deadline, or never once it has ended).
	Due time.Time
}

// Emit is an event a change replies with. Its id is derived from the
// handled event (ReplyID), so a redelivery gets the very same reply.
type Emit struct {
	Type   string
	ID     string
	Source string
	// Data is the reply's JSON data; nil means the saga's data. A failure
	// reason is merged into JSON object data as "reason".
	Data []byte
}

// Result is what Apply did.
type Result struct {
	Applied   bool   // the change was applied now
	Failed    bool   // applied via Failure: the effect reported a business failure
	Duplicate bool   // the event was applied before; Reply is the stored reply
	Skipped   string // non-empty when refused: "exists", "unknown saga", "version", "status", "stack"
	Version   int64  // the saga's version after the change (a duplicate: after its first application)
	Status    Status // the saga's status after the change
	From      Status // the saga's status before it ("" for a new saga)
	Reason    string // the failure reason, if any
	Reply     *Emitted
}

// Query selects sagas for Store.List. Results are ordered by creation
// time, newest first.
type Query struct {
	Saga    string   // definition name; "" for every definition
	Status  []Status // any of these; empty for every status
	Overdue bool     // only unfinished sagas past their due time
	From    time.Time
	To      time.Time // creation time range; zero for unbounded
	Limit   int       // page size (the Store caps it)
	Cursor  string    // from a previous Page's Next
	Now     time.Time // for Overdue
}

// Page is a page of sagas.
type Page struct {
	Sagas []State `json:"sagas"`
	Next  string  `json:"next,omitempty"` // cursor of the next page; "" at the end
}

// Stats summarises the sagas of one definition.
type Stats struct {
	Saga     string         `json:"saga"`
	ByStatus map[Status]int `json:"by_status"`
	Overdue  int            `json:"overdue"`
	// Recent are the durations of the most recently finished sagas.
	Recent []Finished `json:"-"`
}

// Finished is one finished saga, for throughput and duration figures.
type Finished struct {
	At       time.Time
	Duration time.Duration
	Status   Status
}

// DeadLetter is an event a Broker could not deliver, with Knative's
// knativeerror* extensions, kept for operators to inspect and replay.
type DeadLetter struct {
	ID     string    `json:"id"` // the Store's id
	At     time.Time `json:"at"`
	SagaID string    `json:"saga_id,omitempty"`
	// Event is the dead-lettered event as received (structured JSON,
	// without the knativeerror* extensions).
	Event       []byte `json:"event"`
	EventType   string `json:"event_type"`
	EventID     string `json:"event_id"`
	EventSource string `json:"event_source"`
	Destination string `json:"destination,omitempty"` // knativeerrordest
	Code        string `json:"code,omitempty"`        // knativeerrorcode
	Body        string `json:"body,omitempty"`        // knativeerrordata, decoded
	Reason      string `json:"reason"`
	// What the sink did with it: e.g. "compensation_failed", "failed",
	// "kept".
	Handling   string    `json:"handling"`
	ReplayedBy string    `json:"replayed_by,omitempty"`
	ReplayedAt time.Time `json:"replayed_at,omitzero"`
}

// DeadLetterQuery selects dead letters.
type DeadLetterQuery struct {
	SagaID      string
	Type        string
	Destination string
	Limit       int
	Cursor      string
}

// DeadLetterPage is a page of dead letters.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	Next        string       `json:"next,omitempty"`
}
