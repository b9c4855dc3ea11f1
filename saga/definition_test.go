package saga_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// trip is a three-step definition of the tests' own.
func trip() *saga.Definition {
	return &saga.Definition{
		Name: "trip", Timeout: saga.Duration(time.Minute),
		Steps: []saga.StepDef{
			{Name: "flight", Command: "t.flight.book", Succeeded: "t.flight.booked", Failed: "t.flight.failed", Compensation: "t.flight.cancel", Compensated: "t.flight.cancelled"},
			{Name: "hotel", Command: "t.hotel.book", Succeeded: "t.hotel.booked", Failed: "t.hotel.failed", Compensation: "t.hotel.cancel", Compensated: "t.hotel.cancelled", Timeout: saga.Duration(10 * time.Second)},
			{Name: "car", Command: "t.car.book", Succeeded: "t.car.booked", Failed: "t.car.failed"},
		},
		Finally:   &saga.StepDef{Name: "mail", Command: "t.mail.send", Succeeded: "t.mail.sent"},
		Completed: "t.completed", Compensated: "t.compensated",
	}
}

func TestValidate(t *testing.T) {
	if err := ordersaga.Saga.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := trip().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		change func(d *saga.Definition)
		want   string
	}{
		"no name":               {func(d *saga.Definition) { d.Name = "" }, "name"},
		"bad name":              {func(d *saga.Definition) { d.Name = "Trip:1" }, "name"},
		"no timeout":            {func(d *saga.Definition) { d.Timeout = 0 }, "timeout"},
		"no steps":              {func(d *saga.Definition) { d.Steps = nil }, "no steps"},
		"middle not undone":     {func(d *saga.Definition) { d.Steps[1].Compensation, d.Steps[1].Compensated = "", "" }, "must be compensable"},
		"pivot undone":          {func(d *saga.Definition) { d.Steps[2].Compensation, d.Steps[2].Compensated = "t.x", "t.y" }, "pivot"},
		"half a compensation":   {func(d *saga.Definition) { d.Steps[0].Compensated = "" }, "go together"},
		"type used twice":       {func(d *saga.Definition) { d.Steps[2].Succeeded = "t.flight.booked" }, "both"},
		"same compensable name": {func(d *saga.Definition) { d.Steps[1].Name = "flight" }, "used twice"},
		"final that fails":      {func(d *saga.Definition) { d.Finally.Failed = "t.mail.failed" }, "never fails"},
		"no failure event":      {func(d *saga.Definition) { d.Steps[1].Failed = "" }, "failure event"},
	} {
		d := trip()
		tc.change(d)
		err := d.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, tc.want)
		}
	}
}

// TestRoute: every choreography event and orchestration command runs the
// step the definition derives.
func TestRoute(t *testing.T) {
	d := ordersaga.Saga
	for _, tt := range []struct {
		typ  string
		step int
		kind saga.Kind
	}{
		{ordersaga.Create, 0, saga.Forward},
		{ordersaga.Created, 1, saga.Forward},
		{ordersaga.AuthorizePay, 1, saga.Forward},
		{ordersaga.PayAuthorized, 2, saga.Forward},
		{ordersaga.ReserveStock, 2, saga.Forward},
		{ordersaga.StockReserved, 3, saga.Forward},
		{ordersaga.Confirm, 3, saga.Forward},
		{ordersaga.PayFailed, 0, saga.Compensate},
		{ordersaga.PayRefunded, 0, saga.Compensate},
		{ordersaga.Cancel, 0, saga.Compensate},
		{ordersaga.StockFailed, 1, saga.Compensate},
		{ordersaga.StockReleased, 1, saga.Compensate},
		{ordersaga.RefundPay, 1, saga.Compensate},
		{ordersaga.ConfirmFailed, 2, saga.Compensate},
		{ordersaga.ReleaseStock, 2, saga.Compensate},
		{ordersaga.Confirmed, -1, saga.Final},
		{ordersaga.Cancelled, -1, saga.Final},
		{ordersaga.SendNotification, -1, saga.Final},
	} {
		r, ok := d.Route(tt.typ)
		if !ok || r.Step != tt.step || r.Kind != tt.kind {
			t.Errorf("Route(%s) = %+v, %v; want step %d %v", tt.typ, r, ok, tt.step, tt.kind)
		}
	}
	for _, typ := range []string{ordersaga.Rejected, ordersaga.NotificationSent, ordersaga.SagaCompleted, "io.other"} {
		if r, ok := d.Route(typ); ok {
			t.Errorf("Route(%s) = %+v: nothing runs on it", typ, r)
		}
	}
}

func TestAwaited(t *testing.T) {
	d := ordersaga.Saga
	for _, tt := range []struct {
		stack []string
		want  int
		ok    bool
	}{
		{nil, 0, true},
		{[]string{ordersaga.StepOrder}, 1, true},
		{[]string{ordersaga.StepPayment, ordersaga.StepOrder}, 2, true},
		{[]string{ordersaga.StepInventory, ordersaga.StepPayment, ordersaga.StepOrder}, 3, true},
		{[]string{"unknown"}, 0, false},
	} {
		got, ok := d.Awaited(tt.stack)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Awaited(%v) = %d, %v; want %d, %v", tt.stack, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseDefinitions(t *testing.T) {
	b, err := json.Marshal([]*saga.Definition{ordersaga.Saga, trip()})
	if err != nil {
		t.Fatal(err)
	}
	defs, err := saga.ParseDefinitions(b)
	if err != nil || len(defs) != 2 || defs[1].Steps[1].Timeout != saga.Duration(10*time.Second) || defs[0].Finally.Name != "notification" {
		t.Fatalf("round trip: %v %v", defs, err)
	}
	one, err := json.Marshal(trip())
	if err != nil {
		t.Fatal(err)
	}
	if defs, err := saga.ParseDefinitions(one); err != nil || len(defs) != 1 {
		t.Fatalf("one definition: %v %v", defs, err)
	}
	for name, raw := range map[string]string{
		"unknown field": `{"name":"x","timeout":"1m","steps":[{"name":"a","command":"c","succeeded":"s"}],"retries":3}`,
		"invalid":       `{"name":"x","timeout":"1m","steps":[]}`,
		"twice":         `[` + string(one) + `,` + string(one) + `]`,
		"bad duration":  `{"name":"x","timeout":"soon","steps":[{"name":"a","command":"c","succeeded":"s"}]}`,
		"not json":      `name: x`,
	} {
		if _, err := saga.ParseDefinitions([]byte(raw)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestSameJSON(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{`{"a":1,"b":[1,2]}`, `{ "b": [1, 2], "a": 1.0 }`, true},
		{`{"a":1}`, `{"a":2}`, false},
		{`{"a":9007199254740993}`, `{"a":9007199254740992}`, false},
		{`{"a":1}`, `{"a":1,"b":null}`, false},
		{`{"a":1}`, `{"a":1} {}`, false},
		{`"x"`, `"x"`, true},
		{`{"a":1}`, `not json`, false},
	} {
		if got := saga.SameJSON([]byte(tt.a), []byte(tt.b)); got != tt.same {
			t.Errorf("SameJSON(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}
