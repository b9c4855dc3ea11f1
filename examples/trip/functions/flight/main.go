// Command flight is the first step of the trip saga: a Book command starts
// a trip, and the flight function reserves a seat per traveller to the
// trip's city (or fails the trip: no seats). When a later step fails, it
// cancels exactly the seats it recorded.
package main

import (
	"context"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return env.Step(trip.Saga, saga.Actions{trip.Book: reserve, trip.CancelFlight: cancel})
}

// takeSeats takes args.n seats to a city, or fails with the reason.
var takeSeats = saga.Effect{Name: "flight.take", Lua: `
local seats = tonumber(redis.call('GET', keys.seats) or '')
if seats == nil then return 'no flights to ' .. args.city end
if seats < tonumber(args.n) then return 'no seats to ' .. args.city end
redis.call('DECRBY', keys.seats, args.n)
`}

// giveSeats gives args.n seats back.
var giveSeats = saga.Effect{Name: "flight.give", Lua: `redis.call('INCRBY', keys.seats, args.n)`}

// reserve starts a trip from a Book command, the one event whose data a
// step acts on, and reserves its seats.
func reserve(_ context.Context, in saga.Input) (saga.Transition, error) {
	var t trip.Trip
	if err := in.Decode(&t); err != nil {
		return saga.Transition{}, err
	}
	if err := t.Validate(); err != nil {
		return saga.Transition{}, saga.Invalid("%s: %v", trip.Book, err)
	}
	b := trip.Booking{City: t.City, Count: t.Travellers}
	return saga.Transition{Outcome: "reserved", Data: t, Output: b,
		Effect: takeSeats.Call().Key("seats", trip.SeatsKey(b.City)).Arg("n", b.Count).Arg("city", b.City)}, nil
}

// cancel gives back the seats the flight step recorded. The runtime runs
// it once, and only while the flight is the next step to undo.
func cancel(_ context.Context, in saga.Input) (saga.Transition, error) {
	var b trip.Booking
	if ok, err := in.Saga.Output(trip.StepFlight, &b); err != nil || !ok {
		return saga.Transition{}, saga.Invalid("trip %s: no seats recorded to cancel (%v)", in.SagaID, err)
	}
	return saga.Transition{Outcome: "cancelled",
		Effect: giveSeats.Call().Key("seats", trip.SeatsKey(b.City)).Arg("n", b.Count)}, nil
}
