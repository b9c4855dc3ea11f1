package saga_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// booking is the trip saga's data.
type booking struct {
	Traveller string `json:"traveller"`
	Seats     int    `json:"seats"`
}

// book takes seats from a hotel's rooms; the test reads the key.
var book = saga.Effect{Name: "test.book", Lua: `
local left = tonumber(redis.call('GET', keys.rooms) or '0')
if left < tonumber(args.n) then return 'no rooms' end
redis.call('DECRBY', keys.rooms, args.n)
`}

var unbook = saga.Effect{Name: "test.unbook", Lua: `redis.call('INCRBY', keys.rooms, args.n)`}

// hotel is a participant running the hotel step with real effects: it
// books what the saga's record says, and records the room count.
func hotel(t *testing.T, k *sagatest.Kit) *saga.Participant {
	t.Helper()
	p, err := saga.NewParticipant(k.Def, saga.Actions{
		"t.hotel.book": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var b booking
			if err := in.Saga.Decode(&b); err != nil {
				return saga.Transition{}, err
			}
			return saga.Transition{Outcome: "booked", Output: map[string]int{"rooms": b.Seats},
				Effect: book.Call().Key("rooms", "hotel:rooms").Arg("n", b.Seats)}, nil
		},
		"t.hotel.cancel": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var out struct{ Rooms int }
			if _, err := in.Saga.Output("hotel", &out); err != nil {
				return saga.Transition{}, err
			}
			return saga.Transition{Outcome: "cancelled", Effect: unbook.Call().Key("rooms", "hotel:rooms").Arg("n", out.Rooms)}, nil
		},
	}, saga.ParticipantOptions{Source: "/hotel", Store: k.Store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func setup(t *testing.T) (*sagatest.Kit, *saga.Participant, redis.UniversalClient) {
	t.Helper()
	rdb := sagatest.Redis(t)
	k := sagatest.New(t, trip(), rdb)
	if err := rdb.Set(context.Background(), "hotel:rooms", 10, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return k, hotel(t, k), rdb
}

func rooms(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	n, err := rdb.Get(context.Background(), "hotel:rooms").Int()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAwaitedEventRuns: the event the saga waits on runs the step, which
// acts on the record; a redelivery gets the very same reply and changes
// nothing.
func TestAwaitedEventRuns(t *testing.T) {
	k, p, rdb := setup(t)
	e := k.Run("s1", booking{"ann", 2}, "t.flight.booked")
	reply, err := k.Deliver(p, e)
	if err != nil || reply == nil || reply.Type() != "t.hotel.booked" {
		t.Fatalf("reply %v, %v", reply, err)
	}
	if got := rooms(t, rdb); got != 8 {
		t.Fatalf("rooms: %d", got)
	}
	st := k.Record("s1")
	if st.Version != 2 || st.Next.ID != reply.ID() || reply.Extensions()[saga.ExtSagaVersion] != "2" || reply.Extensions()[saga.ExtCausationID] != e.ID() {
		t.Fatalf("record %+v reply %v", st, reply)
	}
	again, err := k.Deliver(p, e)
	if err != nil || again == nil || again.ID() != reply.ID() || again.Extensions()[saga.ExtSagaVersion] != "2" || string(again.Data()) != string(reply.Data()) {
		t.Fatalf("redelivery: %v %v", again, err)
	}
	if got := rooms(t, rdb); got != 8 || k.Record("s1").Version != 2 {
		t.Fatalf("a redelivery changed something: rooms %d", got)
	}
}

// TestRefusals: an event that is not the one the saga waits on is refused
// as a security event (400), whatever it claims, and changes nothing.
func TestRefusals(t *testing.T) {
	k, p, rdb := setup(t)
	genuine := k.Run("s1", booking{"ann", 2}, "t.flight.booked")
	k.Run("s2", booking{"bob", 1}, "t.flight.booked")
	before := k.Record("s1")

	tamper := func(change func(e *event.Event)) event.Event {
		e := genuine.Clone()
		change(&e)
		return e
	}
	for name, tc := range map[string]struct {
		e        event.Event
		security bool
	}{
		"no sagaversion":   {tamper(func(e *event.Event) { e.SetExtension(saga.ExtSagaVersion, nil) }), false},
		"bad sagaversion":  {tamper(func(e *event.Event) { e.SetExtension(saga.ExtSagaVersion, "two") }), false},
		"no correlationid": {tamper(func(e *event.Event) { e.SetExtension(saga.ExtCorrelationID, nil) }), false},
		"version ahead":    {tamper(func(e *event.Event) { e.SetExtension(saga.ExtSagaVersion, "9") }), true},
		"another id":       {tamper(func(e *event.Event) { e.SetID("forged") }), true},
		"another source":   {tamper(func(e *event.Event) { e.SetSource("/attacker") }), true},
		"another type": {tamper(func(e *event.Event) {
			e.SetType("t.hotel.book") // the orchestration command: not what the saga emitted
		}), true},
		"other data": {tamper(func(e *event.Event) {
			_ = e.SetData(event.ApplicationJSON, booking{"ann", 9})
		}), true},
		"replayed into another saga":               {tamper(func(e *event.Event) { e.SetExtension(saga.ExtCorrelationID, "s2") }), true},
		"a compensation the saga does not wait on": {tamper(func(e *event.Event) { e.SetType("t.hotel.cancel") }), true},
	} {
		reply, err := k.Deliver(p, tc.e)
		if reply != nil || saga.Code(err) != saga.EInvalid || saga.IsSecurity(err) != tc.security {
			t.Errorf("%s: reply %v, err %v (security %v)", name, reply, err, saga.IsSecurity(err))
		}
	}
	if got := rooms(t, rdb); got != 10 {
		t.Fatalf("a refused event booked rooms: %d left", got)
	}
	after := k.Record("s1")
	if after.Version != before.Version || len(after.Steps) != len(before.Steps) {
		t.Fatalf("a refused event moved the saga: %+v", after)
	}
	// the genuine event still runs after all that
	if reply, err := k.Deliver(p, genuine); err != nil || reply == nil {
		t.Fatalf("genuine: %v %v", reply, err)
	}
}

// TestStale: an event of a version the saga has moved past changes
// nothing and gets no reply (not an error: a late redelivery).
func TestStale(t *testing.T) {
	k, p, rdb := setup(t)
	e := k.Run("s1", booking{"ann", 1}, "t.flight.booked")
	if _, err := k.Deliver(p, e); err != nil {
		t.Fatal(err)
	}
	old := e.Clone()
	old.SetID("another-delivery-of-an-old-version")
	old.SetExtension(saga.ExtSagaVersion, "1")
	reply, err := k.Deliver(p, old)
	if reply != nil || err != nil {
		t.Fatalf("stale: %v %v", reply, err)
	}
	if rooms(t, rdb) != 9 {
		t.Fatal("a stale event booked")
	}
	unknown := e.Clone()
	unknown.SetExtension(saga.ExtCorrelationID, "nobody")
	if reply, err := k.Deliver(p, unknown); reply != nil || err != nil {
		t.Fatalf("unknown saga: %v %v", reply, err)
	}
}

// TestCompensationUndoesTheRecord: the compensation undoes what the step
// recorded, once, and only while the step is next to undo.
func TestCompensationUndoesTheRecord(t *testing.T) {
	k, p, rdb := setup(t)
	e := k.Run("s1", booking{"ann", 3}, "t.flight.booked")
	booked, err := k.Deliver(p, e)
	if err != nil {
		t.Fatal(err)
	}
	// the car fails: the saga waits on the hotel's cancellation
	carFailed := k.Continue(*booked, "t.car.failed", sagatest.Fail("car", "no cars in Oslo"))
	reply, err := k.Deliver(p, carFailed)
	if err != nil || reply == nil || reply.Type() != "t.hotel.cancelled" {
		t.Fatalf("cancel: %v %v", reply, err)
	}
	if got := rooms(t, rdb); got != 10 {
		t.Fatalf("rooms after the cancellation: %d", got)
	}
	st := k.Record("s1")
	if st.Status != saga.StatusCompensating || len(st.Compensate) != 1 || st.Compensate[0] != "flight" || st.Reason != "no cars in Oslo" {
		t.Fatalf("record: %+v", st)
	}
	// a second cancellation, even a well-formed one at the new version, is refused
	forged := carFailed.Clone()
	forged.SetID("again")
	forged.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(st.Version, 10))
	if _, err := k.Deliver(p, forged); !saga.IsSecurity(err) {
		t.Fatalf("a second cancellation: %v", err)
	}
	if got := rooms(t, rdb); got != 10 {
		t.Fatalf("cancelled twice: %d", got)
	}
}

// TestStart: the start command is the one event whose data a step acts
// on; a saga starts once; without a correlationid its id derives from the
// command.
func TestStart(t *testing.T) {
	rdb := sagatest.Redis(t)
	k := sagatest.New(t, trip(), rdb)
	var got []booking
	var mu sync.Mutex
	p, err := saga.NewParticipant(k.Def, saga.Actions{
		"t.flight.book": func(_ context.Context, in saga.Input) (saga.Transition, error) {
			var b booking
			if err := in.Decode(&b); err != nil {
				return saga.Transition{}, err
			}
			mu.Lock()
			got = append(got, b)
			mu.Unlock()
			return saga.Transition{Outcome: "booked", Data: b, Key: "ref-" + b.Traveller}, nil
		},
	}, saga.ParticipantOptions{Source: "/flight", Store: k.Store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	start := sagatest.Event("c1", "t.flight.book", booking{"cy", 1})
	reply, err := k.Deliver(p, start)
	if err != nil || reply == nil || reply.Type() != "t.flight.booked" {
		t.Fatalf("start: %v %v", reply, err)
	}
	id := saga.SagaIDOf(*reply)
	if id != saga.IDFromEvent(start.Source(), start.ID()) {
		t.Fatalf("saga id %q", id)
	}
	st := k.Record(id)
	var data booking
	if err := json.Unmarshal(st.Data, &data); err != nil || data.Traveller != "cy" || st.Key != "ref-cy" || st.Status != saga.StatusRunning {
		t.Fatalf("record %+v", st)
	}
	if again, err := k.Deliver(p, start); err != nil || again.ID() != reply.ID() {
		t.Fatalf("a redelivered start: %v %v", again, err)
	}
	other := sagatest.Event("c2", "t.flight.book", booking{"eve", 9}, saga.ExtCorrelationID, id)
	if r, err := k.Deliver(p, other); r != nil || err != nil {
		t.Fatalf("another start of the same saga: %v %v", r, err)
	}
	if len(got) != 1 {
		t.Fatalf("the start action ran %d times", len(got))
	}
	if _, err := k.Deliver(p, sagatest.Event("c3", "t.flight.book", []byte(`{"traveller":`))); saga.Code(err) != saga.EInvalid {
		t.Fatalf("bad start data: %v", err)
	}
}

// TestConcurrentDeliveries: two deliveries of the same event at once run
// the step once; both get the same reply.
func TestConcurrentDeliveries(t *testing.T) {
	k, p, rdb := setup(t)
	e := k.Run("s1", booking{"ann", 1}, "t.flight.booked")
	var wg sync.WaitGroup
	replies := make([]*event.Event, 8)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := k.Deliver(p, e)
			if err != nil {
				t.Error(err)
			}
			replies[i] = r
		}()
	}
	wg.Wait()
	for _, r := range replies {
		if r == nil || r.ID() != replies[0].ID() {
			t.Fatalf("replies differ: %v", replies)
		}
	}
	if got := rooms(t, rdb); got != 9 {
		t.Fatalf("booked %d times", 10-got)
	}
}
