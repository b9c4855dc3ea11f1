// Command car is the last step of the trip saga (its pivot): it reserves a
// car in the trip's city, and then the trip is booked; or there is no car
// (none in Oslo, say), and the trip fails, so the hotel and the flight are
// cancelled. A reserved car is never undone.
package main

import (
	"context"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return env.Step(trip.Saga, saga.Actions{trip.ReserveCar: reserve})
}

// takeCar takes one car in a city, or fails with the reason.
var takeCar = saga.Effect{Name: "car.take", Lua: `
if tonumber(redis.call('GET', keys.cars) or '0') < 1 then return 'no cars in ' .. args.city end
redis.call('DECR', keys.cars)
`}

// reserve reserves a car in the trip's city, as the saga recorded it.
func reserve(_ context.Context, in saga.Input) (saga.Transition, error) {
	var t trip.Trip
	if err := in.Saga.Decode(&t); err != nil {
		return saga.Transition{}, err
	}
	return saga.Transition{Outcome: "reserved", Output: trip.Booking{City: t.City, Count: 1},
		Effect: takeCar.Call().Key("cars", trip.CarsKey(t.City)).Arg("city", t.City)}, nil
}
