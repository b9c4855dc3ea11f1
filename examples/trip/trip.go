// Package trip is the textbook trip booking as a ksaga saga: reserve a
// flight, then a hotel, then a car. When a step cannot reserve (no car in
// the city), the steps that did are undone newest first: the hotel is
// cancelled, then the flight. It holds what the trip's three functions
// (functions/flight, hotel, car) share: the saga's Definition, its event
// types, its data and the Redis keys of each function's stock.
package trip

import (
	"fmt"
	"time"

	"github.com/ksaga/ksaga/saga"
)

// Step names, as recorded in a trip's history and compensation stack.
const (
	StepFlight = "flight"
	StepHotel  = "hotel"
	StepCar    = "car"
)

// Event types. Commands are imperative: a client sends Book to start a
// trip, the orchestrator sends the others in orchestration mode. Events
// are past tense: what the steps reply with.
const (
	Book            = "com.example.trip.book" // starts a trip (the flight step): data is a Trip
	FlightReserved  = "com.example.trip.flight.reserved"
	FlightFailed    = "com.example.trip.flight.failed"
	CancelFlight    = "com.example.trip.flight.cancel"
	FlightCancelled = "com.example.trip.flight.cancelled"

	ReserveHotel   = "com.example.trip.hotel.reserve"
	HotelReserved  = "com.example.trip.hotel.reserved"
	HotelFailed    = "com.example.trip.hotel.failed"
	CancelHotel    = "com.example.trip.hotel.cancel"
	HotelCancelled = "com.example.trip.hotel.cancelled"

	ReserveCar  = "com.example.trip.car.reserve"
	CarReserved = "com.example.trip.car.reserved"
	CarFailed   = "com.example.trip.car.failed"
)

// Saga is the trip saga. The car is the last step (the pivot): once it is
// reserved the trip is booked, so it has no compensation.
var Saga = &saga.Definition{
	Name:    "trip",
	Timeout: saga.Duration(2 * time.Minute),
	Steps: []saga.StepDef{
		{Name: StepFlight, Command: Book, Succeeded: FlightReserved, Failed: FlightFailed, Compensation: CancelFlight, Compensated: FlightCancelled},
		{Name: StepHotel, Command: ReserveHotel, Succeeded: HotelReserved, Failed: HotelFailed, Compensation: CancelHotel, Compensated: HotelCancelled},
		{Name: StepCar, Command: ReserveCar, Succeeded: CarReserved, Failed: CarFailed},
	},
}

// Trip is the data of a Book command and the saga's data: who travels
// where, and how many people.
type Trip struct {
	Traveller  string `json:"traveller"`
	City       string `json:"city"`
	Travellers int    `json:"travellers"`
}

// Validate says what is wrong with a requested trip, or nil.
func (t Trip) Validate() error {
	switch {
	case t.Traveller == "" || len(t.Traveller) > 100:
		return fmt.Errorf("traveller: 1 to 100 characters")
	case !cityName(t.City):
		return fmt.Errorf("city %q: 1 to 40 letters, spaces or '-'", t.City)
	case t.Travellers < 1 || t.Travellers > 9:
		return fmt.Errorf("travellers: 1 to 9")
	}
	return nil
}

// Rooms is how many hotel rooms the trip needs: one per two travellers.
func (t Trip) Rooms() int { return (t.Travellers + 1) / 2 }

// Booking is what a step records when it reserves (its Output): its
// cancellation gives back exactly this.
type Booking struct {
	City  string `json:"city"`
	Count int    `json:"count"`
}

// Redis keys of each function's stock, per city. Each function writes only
// under its own prefix; saga records are the saga store's.
func SeatsKey(city string) string { return "flight:seats:" + city }
func RoomsKey(city string) string { return "hotel:rooms:" + city }
func CarsKey(city string) string  { return "car:cars:" + city }

func cityName(s string) bool {
	if len(s) == 0 || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == ' ' || c == '-') {
			return false
		}
	}
	return true
}
