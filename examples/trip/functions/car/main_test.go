package main

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestReserve: the car is the pivot. With a car in the city the trip is
// booked, with nothing left to undo; with none (Oslo) it fails, no car
// moves, and the hotel is next to undo.
func TestReserve(t *testing.T) {
	rdb := sagatest.Redis(t)
	k := sagatest.New(t, trip.Saga, rdb)
	fn, err := setup(context.Background(), &knfunc.Env{Config: knfunc.Config{Service: "car"}, Redis: rdb, Store: k.Store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rdb.Set(ctx, trip.CarsKey("Paris"), 2, 0)
	rdb.Set(ctx, trip.CarsKey("Oslo"), 0, 0)
	for _, tc := range []struct {
		id, city, reply string
		status          saga.Status
		reason          string
		compensate      []string
		cars            int
	}{
		{"t-paris", "Paris", trip.CarReserved, saga.StatusCompleted, "", []string{}, 1},
		{"t-oslo", "Oslo", trip.CarFailed, saga.StatusCompensating, "no cars in Oslo", []string{trip.StepHotel, trip.StepFlight}, 0},
	} {
		e := k.Run(tc.id, trip.Trip{Traveller: "ann", City: tc.city, Travellers: 2}, trip.HotelReserved)
		for range 2 { // redelivered: one car at most
			reply, err := k.Deliver(fn.Step, e)
			if err != nil || reply == nil || reply.Type() != tc.reply {
				t.Fatalf("%s: reply %v, %v; want %s", tc.id, reply, err, tc.reply)
			}
		}
		st := k.Record(tc.id)
		if n, _ := rdb.Get(ctx, trip.CarsKey(tc.city)).Int(); n != tc.cars {
			t.Errorf("%s: %d cars left, want %d", tc.id, n, tc.cars)
		}
		if st.Status != tc.status || st.Reason != tc.reason || !reflect.DeepEqual(st.Compensate, tc.compensate) {
			t.Errorf("%s: record %+v", tc.id, st)
		}
	}
}
