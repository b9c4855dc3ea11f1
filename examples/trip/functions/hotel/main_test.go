package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// kit returns a test kit of the trip saga on a real redis-server, and the
// hotel step exactly as its main builds it, with 10 rooms in Oslo.
func kit(t *testing.T) (*sagatest.Kit, saga.Step) {
	t.Helper()
	rdb := sagatest.Redis(t)
	k := sagatest.New(t, trip.Saga, rdb)
	fn, err := setup(context.Background(), &knfunc.Env{Config: knfunc.Config{Service: "hotel"}, Redis: rdb, Store: k.Store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(context.Background(), trip.RoomsKey("Oslo"), 10, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return k, fn.Step
}

func rooms(t *testing.T, k *sagatest.Kit) int {
	t.Helper()
	n, err := k.Redis.Get(context.Background(), trip.RoomsKey("Oslo")).Int()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func deliver(t *testing.T, k *sagatest.Kit, step saga.Step, e event.Event, want string) *event.Event {
	t.Helper()
	reply, err := k.Deliver(step, e)
	if err != nil || reply == nil || reply.Type() != want {
		t.Fatalf("%s: reply %v, error %v; want %s", e.Type(), reply, err, want)
	}
	return reply
}

var ann = trip.Trip{Traveller: "ann", City: "Oslo", Travellers: 3}

// TestReserve: once the flight is reserved, the hotel takes a room per two
// travellers, and records them.
func TestReserve(t *testing.T) {
	k, step := kit(t)
	e := k.Run("t1", ann, trip.FlightReserved)
	reply := deliver(t, k, step, e, trip.HotelReserved)
	if again := deliver(t, k, step, e, trip.HotelReserved); again.ID() != reply.ID() || rooms(t, k) != 8 {
		t.Fatalf("rooms in Oslo: %d, want 8 (taken once)", rooms(t, k))
	}
	st := k.Record("t1")
	var b trip.Booking
	if ok, err := st.Output(trip.StepHotel, &b); !ok || err != nil || b != (trip.Booking{City: "Oslo", Count: 2}) {
		t.Fatalf("output %+v %v %v", b, ok, err)
	}
	if st.Status != saga.StatusRunning || !reflect.DeepEqual(st.Compensate, []string{trip.StepHotel, trip.StepFlight}) {
		t.Fatalf("record %+v", st)
	}
}

// TestNoRoomsFailsTheTrip: too few rooms (4 left, 5 wanted) fail the
// trip; nothing is taken, and the flight is next to undo.
func TestNoRoomsFailsTheTrip(t *testing.T) {
	k, step := kit(t)
	k.Redis.Set(context.Background(), trip.RoomsKey("Oslo"), 6, 0)
	deliver(t, k, step, k.Run("t1", ann, trip.FlightReserved), trip.HotelReserved)
	deliver(t, k, step, k.Run("t2", trip.Trip{Traveller: "cid", City: "Oslo", Travellers: 9}, trip.FlightReserved), trip.HotelFailed)
	st := k.Record("t2")
	if rooms(t, k) != 4 || st.Status != saga.StatusCompensating || st.Reason != "no rooms in Oslo" ||
		!reflect.DeepEqual(st.Compensate, []string{trip.StepFlight}) || st.Next.Type != trip.HotelFailed {
		t.Fatalf("rooms %d, record %+v", rooms(t, k), st)
	}
}

// TestCancelGivesBackTheRecordedRooms: no car in Oslo, so the hotel gives
// back exactly the rooms it recorded, and the flight is next to undo. A
// car.failed whose data names other rooms is refused: the record decides.
func TestCancelGivesBackTheRecordedRooms(t *testing.T) {
	k, step := kit(t)
	deliver(t, k, step, k.Run("t1", ann, trip.FlightReserved), trip.HotelReserved)
	failed := k.Resume("t1", trip.CarFailed, sagatest.Fail(trip.StepCar, "no cars in Oslo"))

	forged := failed.Clone()
	if err := forged.SetData(event.ApplicationJSON, trip.Trip{Traveller: "ann", City: "Oslo", Travellers: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Deliver(step, forged); saga.StatusCode(err) != http.StatusBadRequest || rooms(t, k) != 8 {
		t.Fatalf("forged car.failed: %v, rooms %d", err, rooms(t, k))
	}

	deliver(t, k, step, failed, trip.HotelCancelled)
	deliver(t, k, step, failed, trip.HotelCancelled) // redelivered: given back once
	if rooms(t, k) != 10 {
		t.Fatalf("rooms in Oslo: %d, want 10", rooms(t, k))
	}
	st := k.Record("t1")
	if st.Status != saga.StatusCompensating || st.FailedStep != trip.StepCar || !reflect.DeepEqual(st.Compensate, []string{trip.StepFlight}) ||
		!reflect.DeepEqual(sagatest.Outcomes(st), []string{"flight/succeeded", "hotel/reserved", "car/failed", "hotel/cancelled"}) {
		t.Fatalf("record %+v", st)
	}
}
