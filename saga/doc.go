// Package saga is the domain core of ksaga: the step contract, the saga
// protocol on CloudEvents, saga state, and the declarative transitions a step
// applies atomically to that state.
//
// A step is a Knative function: it receives one CloudEvent and replies with
// the next one (see Step). Most steps are built as a Participant: a table from
// incoming event type to an Action that returns a Transition. The Store
// applies a Transition as one atomic operation (in Redis: one Lua script):
// dedupe on the incoming event's source+id, check the saga's version and
// status, run the step's own domain write (an Effect), record the outcome,
// and store the reply. A redelivered event gets the stored reply back and
// changes nothing.
//
// Protocol (docs/protocol.md): the saga id travels in the CloudEvents
// correlation extension (correlationid); every emitted event carries
// causationid = the id of the event that caused it, and sagaversion = the
// saga's version after the transition that emitted it.
package saga
