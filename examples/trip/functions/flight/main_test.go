package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// kit returns a test kit of the trip saga on a real redis-server, and the
// flight step exactly as its main builds it, with 10 seats to Paris.
func kit(t *testing.T) (*sagatest.Kit, saga.Step) {
	t.Helper()
	rdb := sagatest.Redis(t)
	k := sagatest.New(t, trip.Saga, rdb)
	fn, err := setup(context.Background(), &knfunc.Env{Config: knfunc.Config{Service: "flight"}, Redis: rdb, Store: k.Store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(context.Background(), trip.SeatsKey("Paris"), 10, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return k, fn.Step
}

func seats(t *testing.T, rdb redis.UniversalClient, city string) int {
	t.Helper()
	n, err := rdb.Get(context.Background(), trip.SeatsKey(city)).Int()
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

// TestBookStartsTheTrip: a Book command starts the trip and takes a seat
// per traveller; the flight's booking is recorded for its cancellation; a
// redelivered command gets the same reply and takes nothing more.
func TestBookStartsTheTrip(t *testing.T) {
	k, step := kit(t)
	ann := trip.Trip{Traveller: "ann", City: "Paris", Travellers: 3}
	book := k.Run("t1", ann, trip.Book) // the start command itself
	reply := deliver(t, k, step, book, trip.FlightReserved)
	if again := deliver(t, k, step, book, trip.FlightReserved); again.ID() != reply.ID() {
		t.Fatalf("redelivery answered %s, want %s", again.ID(), reply.ID())
	}
	if n := seats(t, k.Redis, "Paris"); n != 7 {
		t.Fatalf("seats to Paris: %d, want 7", n)
	}
	st := k.Record("t1")
	var data trip.Trip
	var b trip.Booking
	if err := st.Decode(&data); err != nil || data != ann {
		t.Fatalf("saga data %+v, %v", data, err)
	}
	if ok, err := st.Output(trip.StepFlight, &b); !ok || err != nil || b != (trip.Booking{City: "Paris", Count: 3}) {
		t.Fatalf("output %+v %v %v", b, ok, err)
	}
	if st.Status != saga.StatusRunning || !reflect.DeepEqual(st.Compensate, []string{trip.StepFlight}) ||
		!reflect.DeepEqual(sagatest.Outcomes(st), []string{"flight/reserved"}) || st.Next.ID != reply.ID() {
		t.Fatalf("record %+v", st)
	}
}

// TestNoSeatsFailsTheTrip: too few seats (or no flight at all) fails the
// trip at its start: nothing to undo, so it is compensated at once, and
// no seat moved.
func TestNoSeatsFailsTheTrip(t *testing.T) {
	k, step := kit(t)
	for id, tc := range map[string]struct {
		trip   trip.Trip
		reason string
	}{
		"t-full": {trip.Trip{Traveller: "bob", City: "Paris", Travellers: 9}, "no seats to Paris"}, // 10 seats: 9 fit once
		"t-none": {trip.Trip{Traveller: "bob", City: "Atlantis", Travellers: 1}, "no flights to Atlantis"},
	} {
		if id == "t-full" {
			deliver(t, k, step, k.Run("t-first", tc.trip, trip.Book), trip.FlightReserved)
		}
		deliver(t, k, step, k.Run(id, tc.trip, trip.Book), trip.FlightFailed)
		st := k.Record(id)
		if st.Status != saga.StatusCompensated || st.Reason != tc.reason || st.FailedStep != trip.StepFlight ||
			len(st.Compensate) != 0 || !reflect.DeepEqual(sagatest.Outcomes(st), []string{"flight/failed"}) {
			t.Fatalf("%s: record %+v", id, st)
		}
	}
	if n := seats(t, k.Redis, "Paris"); n != 1 {
		t.Fatalf("seats to Paris: %d, want 1 (the first trip's 9 taken, nothing else)", n)
	}
}

// TestBadTripIsRefused: a Book command with data no trip can have is
// answered 400 (never retried) and starts nothing.
func TestBadTripIsRefused(t *testing.T) {
	k, step := kit(t)
	for id, data := range map[string]any{
		"t-zero":  trip.Trip{Traveller: "cid", City: "Paris"},
		"t-city":  trip.Trip{Traveller: "cid", City: "Paris:x", Travellers: 1},
		"t-json":  []byte(`{"traveller":`),
		"t-empty": trip.Trip{City: "Paris", Travellers: 1},
	} {
		_, err := k.Deliver(step, k.Run(id, data, trip.Book))
		if saga.StatusCode(err) != http.StatusBadRequest {
			t.Errorf("%s: error %v, want a 400", id, err)
		}
		if _, err := k.Store.Get(context.Background(), id); err == nil {
			t.Errorf("%s: a saga was started", id)
		}
	}
	if n := seats(t, k.Redis, "Paris"); n != 10 {
		t.Fatalf("seats to Paris: %d", n)
	}
}

// TestCancelGivesBackTheRecordedSeats: when the hotel fails, the flight
// gives back exactly the seats it recorded, and the trip is compensated.
func TestCancelGivesBackTheRecordedSeats(t *testing.T) {
	k, step := kit(t)
	deliver(t, k, step, k.Run("t1", trip.Trip{Traveller: "ann", City: "Paris", Travellers: 4}, trip.Book), trip.FlightReserved)
	if n := seats(t, k.Redis, "Paris"); n != 6 {
		t.Fatalf("seats to Paris: %d, want 6", n)
	}
	failed := k.Resume("t1", trip.HotelFailed, sagatest.Fail(trip.StepHotel, "no rooms in Paris"))
	deliver(t, k, step, failed, trip.FlightCancelled)
	deliver(t, k, step, failed, trip.FlightCancelled) // redelivered: given back once
	if n := seats(t, k.Redis, "Paris"); n != 10 {
		t.Fatalf("seats to Paris: %d, want 10", n)
	}
	st := k.Record("t1")
	if st.Status != saga.StatusCompensated || st.Reason != "no rooms in Paris" || st.FailedStep != trip.StepHotel ||
		!reflect.DeepEqual(sagatest.Outcomes(st), []string{"flight/reserved", "hotel/failed", "flight/cancelled"}) {
		t.Fatalf("record %+v", st)
	}
}
