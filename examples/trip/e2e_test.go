package trip_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// The end-to-end tests run `ksaga dev` on the trip's own manifests, as
// the README does, with a real redis-server, the seed file and the trip's
// EventPolicies (sender identity on, ksaga dev's default: every delivery
// carries a token, each function runs as its own Redis user), and look at
// trips only as an operator would: through the console's admin API.
// internal/devtest and internal/testredis are the repository's own test
// harness (building and running ksaga dev, starting redis-server); the
// trip's code uses only public packages.

func TestMain(m *testing.M) { os.Exit(devtest.Main(m)) }

var modes = []string{"choreography", "orchestration"}

// token is the console's action token in manifests/10-config.yaml.
const token = "change-me"

// system is ksaga dev running the trip saga in one mode.
type system struct {
	dev  *devtest.Dev
	rdb  *redis.Client
	http *http.Client
}

func start(t *testing.T, mode string, args ...string) *system {
	t.Helper()
	srv := testredis.Start(t)
	dev := devtest.Start(t, nil, append([]string{"--redis-url", srv.URL(), "--seed", "examples/trip/seed.redis",
		"-f", "examples/trip/broker", "-f", "examples/trip/triggers/" + mode, "-f", "examples/trip/manifests", "-f", "examples/trip/policies"}, args...)...)
	dev.Namespace = "trip"
	return &system{dev: dev, rdb: srv.Client(t), http: &http.Client{Timeout: 10 * time.Second}}
}

// do sends a request to a service of the trip namespace through the dev
// ingress (or to the broker, for service ""), and returns the status and body.
func (s *system) do(t *testing.T, service, method, path string, body io.Reader, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.dev.URL(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if service != "" {
		req.Host = service + ".trip.localhost"
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, service, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// send POSTs a CloudEvent (binary mode) to a service, or to the trip
// broker for service "".
func (s *system) send(t *testing.T, service string, e event.Event) int {
	t.Helper()
	path := "/"
	if service == "" {
		path = "/trip/default"
	}
	req, _ := http.NewRequest(http.MethodPost, "http://x", nil)
	if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	code, _ := s.do(t, service, http.MethodPost, path, req.Body, req.Header)
	return code
}

// book starts trip id as a client would: a Book command to the broker.
func (s *system) book(t *testing.T, id, traveller, city string, travellers int) {
	t.Helper()
	e := sagatest.Event(id, trip.Book, trip.Trip{Traveller: traveller, City: city, Travellers: travellers}, saga.ExtCorrelationID, id)
	e.SetSource("/e2e/client")
	if code := s.send(t, "", e); code != http.StatusAccepted {
		t.Fatalf("book %s: the broker answered %d", id, code)
	}
}

// console calls the admin API, with the action token if act.
func (s *system) console(t *testing.T, method, path string, act bool, v any) int {
	t.Helper()
	h := http.Header{}
	if act {
		h.Set("Authorization", "Bearer "+token)
		h.Set("Ksaga-Actor", "e2e")
	}
	code, body := s.do(t, "console", method, path, nil, h)
	if v != nil && code < 300 {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return code
}

// trip reads one trip from the console.
func (s *system) trip(t *testing.T, id string) (ops.SagaView, int) {
	t.Helper()
	var v ops.SagaView
	code := s.console(t, http.MethodGet, "/api/v1/sagas/"+id, false, &v)
	return v, code
}

// settled waits until trip id has status.
func (s *system) settled(t *testing.T, id string, status saga.Status, timeout time.Duration) ops.SagaView {
	t.Helper()
	var v ops.SagaView
	sagatest.Eventually(t, timeout, func() error {
		var code int
		if v, code = s.trip(t, id); code != http.StatusOK || v.Status != status {
			return fmt.Errorf("trip %s: %d %s %s, want %s", id, code, v.Status, history(v.State), status)
		}
		return nil
	})
	return v
}

// history is a trip's history as "step/outcome ..." (operator notes left out).
func history(st saga.State) string {
	var out []string
	for _, r := range st.Steps {
		if !r.Note {
			out = append(out, r.Step+"/"+r.Outcome)
		}
	}
	return strings.Join(out, " ")
}

// stock is every city's seats, rooms and cars, as "Paris 100/50/20 ...".
func (s *system) stock(t *testing.T) string {
	t.Helper()
	var out []string
	for _, city := range []string{"Paris", "Oslo", "Tromso"} {
		n, err := s.rdb.MGet(context.Background(), trip.SeatsKey(city), trip.RoomsKey(city), trip.CarsKey(city)).Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %v/%v/%v", city, n[0], n[1], n[2]))
	}
	return strings.Join(out, " ")
}

// fault makes service fail every delivery of eventType (-1), or none (0).
func (s *system) fault(t *testing.T, service, eventType string, n int) {
	t.Helper()
	if err := s.rdb.Set(context.Background(), knfunc.FaultKey(service, eventType), n, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// deadLetter waits for trip id's dead letter with handling, and returns it.
func (s *system) deadLetter(t *testing.T, id, handling string) saga.DeadLetter {
	t.Helper()
	var dl saga.DeadLetter
	sagatest.Eventually(t, 20*time.Second, func() error {
		var page saga.DeadLetterPage
		if code := s.console(t, http.MethodGet, "/api/v1/deadletters?saga="+id, false, &page); code != http.StatusOK {
			return fmt.Errorf("dead letters: %d", code)
		}
		for _, d := range page.DeadLetters {
			if d.Handling == handling {
				dl = d
				return nil
			}
		}
		return fmt.Errorf("trip %s: dead letters %+v, none %s", id, page.DeadLetters, handling)
	})
	return dl
}

const seeded = "Paris 100/50/20 Oslo 100/50/0 Tromso 0/10/5"

// outcomes is the trip saga's outcome table, run in order on one system
// in each mode: every trip's end, history and the stock it leaves.
var outcomes = []struct {
	name, id, traveller, city string
	travellers                int
	status                    saga.Status
	history, reason           string
	stock                     string
}{
	{"ann books Paris", "t-paris", "ann", "Paris", 3, saga.StatusCompleted,
		"flight/reserved hotel/reserved car/reserved", "", "Paris 97/48/19 Oslo 100/50/0 Tromso 0/10/5"},
	{"no car in Oslo: the hotel, then the flight cancelled", "t-oslo", "bob", "Oslo", 2, saga.StatusCompensated,
		"flight/reserved hotel/reserved car/failed hotel/cancelled flight/cancelled", "no cars in Oslo", "Paris 97/48/19 Oslo 100/50/0 Tromso 0/10/5"},
	{"no seats to Tromso", "t-tromso", "cid", "Tromso", 1, saga.StatusCompensated,
		"flight/failed", "no seats to Tromso", "Paris 97/48/19 Oslo 100/50/0 Tromso 0/10/5"},
}

// TestTrips runs the outcome table in both modes, which must end alike,
// then, on the same system: a step that cannot be reached, a cancellation
// that keeps failing (compensation_failed, then redriven from the
// console), a trip whose start was dead-lettered and is replayed from the
// console, and the console's list.
func TestTrips(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ends := map[string][]string{}
	t.Run("modes", func(t *testing.T) {
		for _, mode := range modes {
			t.Run(mode, func(t *testing.T) {
				t.Parallel()
				s := start(t, mode, "--fault-injection")
				if got := s.stock(t); got != seeded {
					t.Fatalf("seeded stock %s, want %s", got, seeded)
				}
				var end []string
				for _, o := range outcomes {
					s.book(t, o.id, o.traveller, o.city, o.travellers)
					v := s.settled(t, o.id, o.status, 20*time.Second)
					if h := history(v.State); h != o.history || v.Reason != o.reason {
						t.Errorf("%s: %q (%q), want %q (%q)", o.name, h, v.Reason, o.history, o.reason)
					}
					if got := s.stock(t); got != o.stock {
						t.Errorf("%s: stock %s, want %s", o.name, got, o.stock)
					}
					end = append(end, fmt.Sprintf("%s %s %s (%s)", o.id, v.Status, history(v.State), v.Reason))
				}
				mu.Lock()
				ends[mode] = end
				mu.Unlock()
				forged(t, s)
				unreachable(t, s, mode)
				stuckCancellation(t, s, mode)
				replayedStart(t, s)
				list(t, s)
			})
		}
	})
	if a, b := ends[modes[0]], ends[modes[1]]; len(a) != len(outcomes) || !reflect.DeepEqual(a, b) {
		t.Errorf("the modes end differently:\n%s: %q\n%s: %q", modes[0], a, modes[1], b)
	}
}

// forged: a client (no token) may book trips, nothing else: a step result
// it posts to the Broker is refused (403), one it posts straight to a
// function too (401), and nothing moves.
func forged(t *testing.T, s *system) {
	before, paris := s.stock(t), "t-paris"
	v, _ := s.trip(t, paris)
	for _, typ := range []string{trip.CarFailed, trip.CancelFlight, trip.FlightCancelled} {
		e := sagatest.Event("forged-"+typ, typ, nil, saga.ExtCorrelationID, paris, saga.ExtSagaVersion, "1")
		if code := s.send(t, "", e); code != http.StatusForbidden {
			t.Errorf("%s posted to the Broker by a client: %d, want 403", typ, code)
		}
		if code := s.send(t, "flight", e); code != http.StatusUnauthorized {
			t.Errorf("%s posted to flight directly: %d, want 401", typ, code)
		}
	}
	if after, _ := s.trip(t, paris); after.Version != v.Version || s.stock(t) != before {
		t.Errorf("forged events moved trip %s (v%d → v%d) or the stock", paris, v.Version, after.Version)
	}
}

// carOn and hotelCancelOn are the events that make the car reserve and the
// hotel cancel, per mode.
var (
	carOn         = map[string]string{"choreography": trip.HotelReserved, "orchestration": trip.ReserveCar}
	hotelCancelOn = map[string]string{"choreography": trip.CarFailed, "orchestration": trip.CancelHotel}
)

// unreachable: the car function fails every delivery. Once the broker's
// retries run out, the dead-letter sink fails the trip at the car, and
// the hotel and the flight are cancelled.
func unreachable(t *testing.T, s *system, mode string) {
	s.fault(t, "car", carOn[mode], -1)
	before := s.stock(t)
	s.book(t, "t-unreachable", "dan", "Paris", 1)
	v := s.settled(t, "t-unreachable", saga.StatusCompensated, 30*time.Second)
	s.fault(t, "car", carOn[mode], 0)
	if h := history(v.State); h != "flight/reserved hotel/reserved car/failed hotel/cancelled flight/cancelled" ||
		v.Reason != "the car step could not be reached" || v.FailedStep != trip.StepCar {
		t.Errorf("unreachable car: %q, %q at %q", h, v.Reason, v.FailedStep)
	}
	if got := s.stock(t); got != before {
		t.Errorf("unreachable car: stock %s, want %s as before", got, before)
	}
	if dl := s.deadLetter(t, "t-unreachable", ops.HandlingFailed); dl.EventType != carOn[mode] || !strings.Contains(dl.Reason, "503") {
		t.Errorf("unreachable car: dead letter %+v", dl)
	}
}

// stuckCancellation: no car in Oslo, and the hotel's cancellation keeps
// failing. The trip ends compensation_failed with the hotel and the
// flight still held; an action without the token is refused; once the
// hotel is fixed, the operator redrives it from the console and it
// compensates as if nothing had failed.
func stuckCancellation(t *testing.T, s *system, mode string) {
	s.fault(t, "hotel", hotelCancelOn[mode], -1)
	before := s.stock(t)
	s.book(t, "t-stuck", "eve", "Oslo", 4)
	v := s.settled(t, "t-stuck", saga.StatusCompensationFailed, 30*time.Second)
	if h := history(v.State); h != "flight/reserved hotel/reserved car/failed hotel/compensation_failed" ||
		v.FailedStep != trip.StepHotel || !strings.Contains(v.Reason, "503") || !reflect.DeepEqual(v.Compensate, []string{trip.StepHotel, trip.StepFlight}) {
		t.Fatalf("stuck cancellation: %q, %q at %q, left %v", h, v.Reason, v.FailedStep, v.Compensate)
	}
	if len(v.DeadLetters) != 1 || v.DeadLetters[0].Handling != ops.HandlingCompensationFailed {
		t.Errorf("stuck cancellation: dead letters %+v", v.DeadLetters)
	}
	held := strings.Replace(before, "Oslo 100/50/0", "Oslo 96/48/0", 1)
	if got := s.stock(t); got != held {
		t.Errorf("stuck cancellation: stock %s, want %s (seats and rooms held)", got, held)
	}
	if code := s.console(t, http.MethodPost, "/api/v1/sagas/t-stuck/redrive", false, nil); code != http.StatusUnauthorized {
		t.Errorf("redrive without the token: %d, want 401", code)
	}
	s.fault(t, "hotel", hotelCancelOn[mode], 0)
	if code := s.console(t, http.MethodPost, "/api/v1/sagas/t-stuck/redrive", true, nil); code != http.StatusAccepted {
		t.Fatalf("redrive: %d", code)
	}
	v = s.settled(t, "t-stuck", saga.StatusCompensated, 20*time.Second)
	if h := history(v.State); h != "flight/reserved hotel/reserved car/failed hotel/compensation_failed hotel/redriven hotel/cancelled flight/cancelled" {
		t.Errorf("redriven: %q", h)
	}
	for _, r := range v.Steps {
		if r.Outcome == ops.OutcomeRedriven && r.Actor != "e2e (token)" {
			t.Errorf("the redrive is recorded as %+v, without its actor", r)
		}
	}
	if got := s.stock(t); got != before {
		t.Errorf("redriven: stock %s, want %s as before", got, before)
	}
}

// replayedStart: the flight function is down when a trip is booked, so the
// Book command is dead-lettered and no trip exists; once flight is back,
// the operator replays the dead letter from the console and the trip is
// booked.
func replayedStart(t *testing.T, s *system) {
	s.fault(t, "flight", trip.Book, -1)
	before := s.stock(t)
	s.book(t, "t-replay", "fay", "Paris", 2)
	dl := s.deadLetter(t, "t-replay", ops.HandlingKept)
	if _, code := s.trip(t, "t-replay"); code != http.StatusNotFound || dl.EventType != trip.Book {
		t.Fatalf("a dead-lettered start: trip %d, dead letter %+v", code, dl)
	}
	if got := s.stock(t); got != before {
		t.Fatalf("stock %s before the replay, want %s", got, before)
	}
	s.fault(t, "flight", trip.Book, 0)
	var replayed saga.DeadLetter
	if code := s.console(t, http.MethodPost, "/api/v1/deadletters/"+dl.ID+"/replay", true, &replayed); code != http.StatusAccepted || replayed.ReplayedBy != "e2e (token)" {
		t.Fatalf("replay: %d %+v", code, replayed)
	}
	// The console notes the replay in the trip's history only if the trip
	// exists when it writes the note, after it has sent the command: here,
	// a race with the flight step. history() leaves notes out.
	v := s.settled(t, "t-replay", saga.StatusCompleted, 20*time.Second)
	if h := history(v.State); h != "flight/reserved hotel/reserved car/reserved" {
		t.Errorf("replayed: %q", h)
	}
	if got, want := s.stock(t), strings.Replace(before, "Paris 97/48/19", "Paris 95/47/18", 1); got != want {
		t.Errorf("replayed: stock %s, want %s", got, want)
	}
}

// list: the console lists every trip, and filters them by status.
func list(t *testing.T, s *system) {
	got := map[saga.Status][]string{}
	for _, st := range []saga.Status{saga.StatusCompleted, saga.StatusCompensated, saga.StatusCompensationFailed} {
		var page ops.SagaPage
		if code := s.console(t, http.MethodGet, "/api/v1/sagas?saga=trip&status="+string(st), false, &page); code != http.StatusOK {
			t.Fatalf("list %s: %d", st, code)
		}
		for _, v := range page.Sagas {
			got[st] = append(got[st], v.ID)
		}
	}
	want := map[saga.Status][]string{
		saga.StatusCompleted:   {"t-paris", "t-replay"},
		saga.StatusCompensated: {"t-oslo", "t-stuck", "t-tromso", "t-unreachable"},
	}
	for st := range got {
		slices.Sort(got[st])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trips by status %v, want %v", got, want)
	}
	var all ops.SagaPage
	if code := s.console(t, http.MethodGet, "/api/v1/sagas?saga=trip", false, &all); code != http.StatusOK || len(all.Sagas) != 6 {
		t.Errorf("list: %d, %d trips, want 6", code, len(all.Sagas))
	}
}

// TestDeadline: the car never answers and the trip's deadline (1 s here)
// passes; the sweeper, woken by its PingSource (fired now, with its token,
// through ksaga dev), fails the trip at the car, and the hotel and the
// flight are cancelled.
func TestDeadline(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := start(t, mode, "--fault-injection", "--env", "KSAGA_SAGA_TIMEOUT=1s")
			s.fault(t, "car", carOn[mode], -1)
			s.book(t, "t-late", "gus", "Paris", 2)
			sagatest.Eventually(t, 10*time.Second, func() error {
				v, _ := s.trip(t, "t-late")
				if !v.Overdue || v.Next == nil || v.Next.Type != carOn[mode] {
					return fmt.Errorf("trip %s: %s, overdue %v, waiting on %+v", v.ID, history(v.State), v.Overdue, v.Next)
				}
				return nil
			})
			if code := s.dev.FirePingSource(t, "sweeper-ping"); code != http.StatusAccepted {
				t.Fatalf("fire the sweeper's PingSource: %d", code)
			}
			v := s.settled(t, "t-late", saga.StatusCompensated, 20*time.Second)
			if h := history(v.State); h != "flight/reserved hotel/reserved car/timed_out hotel/cancelled flight/cancelled" ||
				v.FailedStep != trip.StepCar || !strings.Contains(v.Reason, "deadline") {
				t.Errorf("past its deadline: %q, %q at %q", h, v.Reason, v.FailedStep)
			}
			if got := s.stock(t); got != seeded {
				t.Errorf("stock %s, want %s as seeded", got, seeded)
			}
		})
	}
}
