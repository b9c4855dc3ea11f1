// Command hotel is the second step of the trip saga: it reserves a room
// per two travellers in the trip's city (or fails the trip: no rooms), and
// cancels exactly the rooms it recorded when the car cannot be had.
package main

import (
	"context"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return env.Step(trip.Saga, saga.Actions{trip.ReserveHotel: reserve, trip.CancelHotel: cancel})
}

// takeRooms takes args.n rooms in a city, or fails with the reason.
var takeRooms = saga.Effect{Name: "hotel.take", Lua: `
local rooms = tonumber(redis.call('GET', keys.rooms) or '0')
if rooms < tonumber(args.n) then return 'no rooms in ' .. args.city end
redis.call('DECRBY', keys.rooms, args.n)
`}

// giveRooms gives args.n rooms back.
var giveRooms = saga.Effect{Name: "hotel.give", Lua: `redis.call('INCRBY', keys.rooms, args.n)`}

// reserve reserves the rooms of the trip, as the saga recorded it.
func reserve(_ context.Context, in saga.Input) (saga.Transition, error) {
	var t trip.Trip
	if err := in.Saga.Decode(&t); err != nil {
		return saga.Transition{}, err
	}
	b := trip.Booking{City: t.City, Count: t.Rooms()}
	return saga.Transition{Outcome: "reserved", Output: b,
		Effect: takeRooms.Call().Key("rooms", trip.RoomsKey(b.City)).Arg("n", b.Count).Arg("city", b.City)}, nil
}

// cancel gives back the rooms the hotel step recorded.
func cancel(_ context.Context, in saga.Input) (saga.Transition, error) {
	var b trip.Booking
	if ok, err := in.Saga.Output(trip.StepHotel, &b); err != nil || !ok {
		return saga.Transition{}, saga.Invalid("trip %s: no rooms recorded to cancel (%v)", in.SagaID, err)
	}
	return saga.Transition{Outcome: "cancelled",
		Effect: giveRooms.Call().Key("rooms", trip.RoomsKey(b.City)).Arg("n", b.Count)}, nil
}
