package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestPostOrder: POST /orders records the saga accepted (its key the
// order id, its data the request) and then sends the Create command to
// the broker; GET /orders/{id} answers the order as accepted until its
// start has run, then as the order step wrote it.
func TestPostOrder(t *testing.T) {
	w := newWorld(t, nil)
	r := w.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 2}]}`, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %s", r.Status, r.Body)
	}
	var a accepted
	r.decode(t, &a)
	if a.SagaID == "" || a.OrderID != orders.OrderIDFor(a.SagaID) || r.Header.Get("Location") != "/orders/"+a.OrderID {
		t.Fatalf("ids %+v, Location %q", a, r.Header.Get("Location"))
	}

	got := w.broker.Received()
	if len(got) != 1 {
		t.Fatalf("the broker got %d events, want 1", len(got))
	}
	cmd := got[0].Event
	if got[0].Encoding != binding.EncodingBinary || cmd.Type() != ordersaga.Create || cmd.Source() != ordersaga.SourceOrderAPI ||
		cmd.ID() != orders.CreateEventID(a.SagaID) || saga.SagaIDOf(cmd) != a.SagaID || cmd.Extensions()[saga.ExtSagaVersion] != "1" {
		t.Fatalf("command %s (encoding %v)", cmd, got[0].Encoding)
	}
	if req, err := ordersaga.DecodeOrderRequest(cmd.Data()); err != nil || req.UserID != 1 || len(req.Items) != 1 || req.Items[0] != (ordersaga.LineItem{SKU: "book", Qty: 2}) {
		t.Fatalf("command data %s: %v", cmd.Data(), err)
	}
	st := w.kit.Record(a.SagaID)
	if st.Status != saga.StatusAccepted || st.Key != a.OrderID || st.Version != 1 || !saga.SameJSON(st.Data, cmd.Data()) ||
		st.Next == nil || st.Next.ID != cmd.ID() || st.Next.Source != cmd.Source() || time.Until(st.Deadline) < 4*time.Minute {
		t.Fatalf("saga %+v", st)
	}

	// accepted: the order from the request, its saga accepted
	var v orderView
	g := w.request(t, http.MethodGet, "/orders/"+a.OrderID, "", nil)
	g.decode(t, &v)
	if g.Status != http.StatusOK || v.ID != a.OrderID || v.Status != "accepted" || v.UserID != 1 || v.TotalCents != 0 ||
		!slices.Equal(v.Items, []ordersaga.Item{{SKU: "book", Qty: 2}}) || v.Saga == nil || v.Saga.Status != saga.StatusAccepted || v.Reason != "" {
		t.Fatalf("GET accepted: %d %s", g.Status, g.Body)
	}

	// started: the order as the order step wrote it, with its saga
	w.start(t, a, cmd, books(2))
	g = w.request(t, http.MethodGet, "/orders/"+a.OrderID, "", nil)
	var view map[string]any
	g.decode(t, &view)
	for _, k := range []string{"id", "user_id", "items", "total_cents", "status", "saga"} {
		if _, ok := view[k]; !ok {
			t.Fatalf("GET /orders/{id} has no %q: %s", k, g.Body)
		}
	}
	if _, ok := view["reason"]; ok {
		t.Fatalf("a pending order has no reason: %s", g.Body)
	}
	g.decode(t, &v)
	if v.Status != "pending" || v.TotalCents != 2500 || !slices.Equal(v.Items, []ordersaga.Item{{SKU: "book", Qty: 2, PriceCents: 1250}}) {
		t.Fatalf("GET started: %s", g.Body)
	}
	sg := view["saga"].(map[string]any)
	for _, k := range []string{"id", "status", "version", "step", "reason", "failed_step", "deadline", "compensate", "steps"} {
		if _, ok := sg[k]; !ok {
			t.Fatalf("saga has no %q: %s", k, g.Body)
		}
	}
	if v.Saga.ID != a.SagaID || v.Saga.Status != saga.StatusRunning || v.Saga.Version != 2 || !slices.Equal(v.Saga.Compensate, []string{"order"}) ||
		len(v.Saga.Steps) != 2 || v.Saga.Steps[0].Outcome != "accepted" {
		t.Fatalf("saga view %+v", v.Saga)
	}
}

// TestGetEndedOrders: a confirmed order with its completed saga, an order
// cancelled after a failure with the saga's reason, and an order whose
// saga ended before it started (cancelled) with the reason.
func TestGetEndedOrders(t *testing.T) {
	w := newWorld(t, nil)
	get := func(orderID string) orderView {
		t.Helper()
		var v orderView
		r := w.request(t, http.MethodGet, "/orders/"+orderID, "", nil)
		r.decode(t, &v)
		if r.Status != http.StatusOK || v.Saga == nil {
			t.Fatalf("GET: %d %s", r.Status, r.Body)
		}
		return v
	}

	a, cmd := w.place(t, booksBody(1), "")
	w.kit.Continue(w.start(t, a, cmd, books(1)), ordersaga.NotificationSent)
	w.writeOrder(t, a, books(1), "confirmed", "")
	if v := get(a.OrderID); v.Status != "confirmed" || v.Reason != "" || v.Saga.Status != saga.StatusCompleted || len(v.Saga.Compensate) != 0 {
		t.Fatalf("confirmed order %+v, saga %+v", v, v.Saga)
	}

	b, cmd := w.place(t, booksBody(1), "")
	w.kit.Continue(w.start(t, b, cmd, books(1)), ordersaga.NotificationSent, sagatest.Fail(ordersaga.StepPayment, "insufficient funds"))
	w.writeOrder(t, b, books(1), "cancelled", "insufficient funds")
	if v := get(b.OrderID); v.Status != "cancelled" || v.Reason != "insufficient funds" || v.Saga.Status != saga.StatusCompensated ||
		v.Saga.FailedStep != ordersaga.StepPayment || v.Saga.Reason != "insufficient funds" {
		t.Fatalf("cancelled order %+v, saga %+v", v, v.Saga)
	}

	c, _ := w.place(t, booksBody(3), "")
	if r := w.request(t, http.MethodPost, "/orders/"+c.OrderID+"/cancel", "", nil); r.Status != http.StatusAccepted {
		t.Fatalf("cancel before the start: %d %s", r.Status, r.Body)
	}
	if v := get(c.OrderID); v.Status != "cancelled" || !strings.Contains(v.Reason, "cancelled by request") ||
		v.Saga.Status != saga.StatusCompensated || v.UserID != 1 || v.Items[0].Qty != 3 {
		t.Fatalf("order cancelled before its start %+v, saga %+v", v, v.Saga)
	}
}

// TestGetUnknown: an unknown order is a JSON 404.
func TestGetUnknown(t *testing.T) {
	w := newWorld(t, nil)
	r := w.request(t, http.MethodGet, "/orders/nope", "", nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusNotFound || !strings.Contains(body.Error, `"nope"`) {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}

// TestRoutesAnswerJSON: what the API does not serve is a JSON 404, and a
// method it does not allow a JSON 405 with Allow.
func TestRoutesAnswerJSON(t *testing.T) {
	w := newWorld(t, nil)
	for _, tt := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/orders", http.StatusMethodNotAllowed, "POST"},
		{http.MethodDelete, "/orders/x", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/orders/x/cancel", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/", http.StatusNotFound, ""},
		{http.MethodGet, "/sagas/x", http.StatusNotFound, ""},
	} {
		r := w.request(t, tt.method, tt.path, "", nil)
		var body apiError
		r.decode(t, &body)
		if r.Status != tt.status || body.Error == "" || r.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d %s (Allow %q), want %d (Allow %q)", tt.method, tt.path, r.Status, r.Body, r.Header.Get("Allow"), tt.status, tt.allow)
		}
	}
}

func TestPostOrderRefused(t *testing.T) {
	w := newWorld(t, nil)
	tests := map[string]struct {
		body   string
		key    string
		status int
		fields []string // wanted in "fields"
		error  string   // wanted in "error"
	}{
		"bad JSON":       {body: `{"user_id": 1, "items": [`, status: http.StatusBadRequest},
		"not an object":  {body: `[1, 2]`, status: http.StatusBadRequest},
		"trailing data":  {body: `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]} {}`, status: http.StatusBadRequest},
		"unknown field":  {body: `{"user_id": 1, "items": [{"sku": "book", "qty": 1}], "coupon": "x"}`, status: http.StatusBadRequest},
		"client prices":  {body: `{"user_id": 1, "items": [{"sku": "book", "qty": 1, "price_cents": 1}]}`, status: http.StatusBadRequest},
		"missing items":  {body: `{"user_id": 1}`, status: http.StatusBadRequest, fields: []string{"items"}},
		"qty 0":          {body: `{"user_id": 1, "items": [{"sku": "book", "qty": 0}]}`, status: http.StatusBadRequest, fields: []string{"items[0].qty"}},
		"no user":        {body: `{"items": [{"sku": "book", "qty": 1}]}`, status: http.StatusBadRequest, fields: []string{"user_id"}},
		"too long a key": {body: booksBody(1), key: strings.Repeat("k", maxIdempotencyKey+1), status: http.StatusBadRequest, error: "Idempotency-Key"},
		"unknown user": {body: `{"user_id": 999, "items": [{"sku": "book", "qty": 1}]}`, status: http.StatusUnprocessableEntity,
			fields: []string{"user_id"}, error: "unknown user 999"},
		"unknown SKU": {body: `{"user_id": 1, "items": [{"sku": "book", "qty": 1}, {"sku": "nope", "qty": 1}]}`, status: http.StatusUnprocessableEntity,
			fields: []string{"items[1].sku"}, error: `unknown SKU "nope"`},
		"unknown both": {body: `{"user_id": 999, "items": [{"sku": "nope", "qty": 1}]}`, status: http.StatusUnprocessableEntity,
			fields: []string{"user_id", "items[0].sku"}, error: `order rejected: unknown user 999; unknown SKU "nope"`},
		"nothing to pay": {body: `{"user_id": 1, "items": [{"sku": "sample", "qty": 2}]}`, status: http.StatusUnprocessableEntity,
			fields: []string{"items"}, error: "the order total is 0"},
	}
	if err := w.rdb.Set(t.Context(), ordersaga.CatalogKey("sample"), 0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var h map[string]string
			if tt.key != "" {
				h = map[string]string{"Idempotency-Key": tt.key}
			}
			r := w.request(t, http.MethodPost, "/orders", tt.body, h)
			var body apiError
			r.decode(t, &body)
			if r.Status != tt.status || body.Error == "" || !strings.Contains(body.Error, tt.error) {
				t.Fatalf("%d %s, want %d with an error about %q", r.Status, r.Body, tt.status, tt.error)
			}
			for _, f := range tt.fields {
				if body.Fields[f] == "" {
					t.Fatalf("no fields[%q] in %s", f, r.Body)
				}
			}
			if len(body.Fields) != len(tt.fields) {
				t.Fatalf("fields %v, want %v", body.Fields, tt.fields)
			}
		})
	}
	if got := w.broker.Received(); len(got) != 0 {
		t.Fatalf("refused orders sent %d events", len(got))
	}
	if s := w.sagas(t); len(s) != 0 {
		t.Fatalf("refused orders recorded %d sagas", len(s))
	}
}

// TestPostOrderTooLarge: a body over KSAGA_MAX_BODY_BYTES is a JSON 413.
func TestPostOrderTooLarge(t *testing.T) {
	w := newWorld(t, map[string]string{"KSAGA_MAX_BODY_BYTES": "128"})
	items := strings.Repeat(`{"sku": "book", "qty": 1},`, 10)
	r := w.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [`+items+`{"sku": "book", "qty": 1}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusRequestEntityTooLarge || !strings.Contains(body.Error, "128 bytes") || len(w.broker.Received()) != 0 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r := w.request(t, http.MethodPost, "/orders", booksBody(1), nil); r.Status != http.StatusAccepted {
		t.Fatalf("a small order after a large one: %d %s", r.Status, r.Body)
	}
}

// TestIdempotencyKey: a retried POST with the same Idempotency-Key names
// the same saga and order; while the saga is accepted the very command it
// was accepted with is sent again (never a second saga, never other
// data: the first request's items win), and once it has started nothing
// is sent. Another key, or another user's same key, is another order.
func TestIdempotencyKey(t *testing.T) {
	w := newWorld(t, nil)
	a1, cmd1 := w.place(t, booksBody(1), "key-1")
	a2, cmd2 := w.place(t, `{"user_id": 1, "items": [{"sku": "lamp", "qty": 1}]}`, "key-1") // a retry, with other items
	if a1 != a2 || a1.SagaID != orders.SagaIDForIdempotencyKey(1, "key-1") {
		t.Fatalf("same key, different ids: %+v %+v", a1, a2)
	}
	if cmd2.ID() != cmd1.ID() || !saga.SameJSON(cmd2.Data(), cmd1.Data()) || cmd2.Extensions()[saga.ExtSagaVersion] != "1" {
		t.Fatalf("the retry sent %s, want the accepted command %s", cmd2, cmd1)
	}
	// the order step runs the resent command (it is the accepted one)
	w.start(t, a1, cmd2, books(1))
	started := w.kit.Record(a1.SagaID)
	r := w.request(t, http.MethodPost, "/orders", booksBody(1), map[string]string{"Idempotency-Key": "key-1"})
	var a accepted
	r.decode(t, &a)
	if r.Status != http.StatusAccepted || a != a1 || r.Header.Get("Location") != "/orders/"+a1.OrderID {
		t.Fatalf("retry after the start: %d %s", r.Status, r.Body)
	}
	if n := len(w.broker.Received()); n != 2 {
		t.Fatalf("a retry after the start sent a command: %d events", n)
	}
	if st := w.kit.Record(a1.SagaID); st.Version != started.Version {
		t.Fatalf("a retry moved the saga")
	}

	a3, _ := w.place(t, booksBody(1), "key-2")
	a4, _ := w.place(t, `{"user_id": 2, "items": [{"sku": "book", "qty": 1}]}`, "key-1")
	if a3 == a1 || a4 == a1 || a3 == a4 {
		t.Fatalf("different keys or users, same ids: %+v %+v %+v", a1, a3, a4)
	}
	if n := len(w.sagas(t)); n != 3 {
		t.Fatalf("%d sagas, want 3", n)
	}
}

// TestPostOrderWithoutSink: without K_SINK nothing can be started: 503.
func TestPostOrderWithoutSink(t *testing.T) {
	w := newWorld(t, map[string]string{"K_SINK": ""})
	r := w.request(t, http.MethodPost, "/orders", booksBody(1), nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(body.Error, "SinkBinding") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if s := w.sagas(t); len(s) != 0 {
		t.Fatalf("%d sagas recorded", len(s))
	}
}

// TestBrokerDownWithdraws: when the broker does not take the Create, the
// order is withdrawn — its saga ends, rejected with the reason, and GET
// tells so — and the answer is 503 without the broker's address. A retry
// with the same Idempotency-Key cannot revive the withdrawn saga and says
// so (409); a new key places the order.
func TestBrokerDownWithdraws(t *testing.T) {
	w := newWorld(t, nil)
	w.broker.Down.Store(true)
	r := w.request(t, http.MethodPost, "/orders", booksBody(1), map[string]string{"Idempotency-Key": "k"})
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || body.Error != "the broker unavailable, retry later" ||
		strings.Contains(string(r.Body), "127.0.0.1") {
		t.Fatalf("broker down: %d %s", r.Status, r.Body)
	}
	sagaID := orders.SagaIDForIdempotencyKey(1, "k")
	st := w.kit.Record(sagaID)
	if st.Status != saga.StatusCompensated || st.Reason != "the broker did not accept the order" ||
		!slices.Equal(sagatest.Outcomes(st), []string{"order/accepted", "order/rejected"}) || st.Next != nil {
		t.Fatalf("withdrawn saga %s %v %q, waits on %+v", st.Status, sagatest.Outcomes(st), st.Reason, st.Next)
	}
	var v orderView
	g := w.request(t, http.MethodGet, "/orders/"+orders.OrderIDFor(sagaID), "", nil)
	g.decode(t, &v)
	if g.Status != http.StatusOK || v.Status != "cancelled" || v.Reason != "the broker did not accept the order" {
		t.Fatalf("GET withdrawn: %d %s", g.Status, g.Body)
	}

	w.broker.Down.Store(false)
	retry := w.request(t, http.MethodPost, "/orders", booksBody(1), map[string]string{"Idempotency-Key": "k"})
	retry.decode(t, &body)
	if retry.Status != http.StatusConflict || !strings.Contains(body.Error, "withdrawn") || !strings.Contains(body.Error, "Idempotency-Key") {
		t.Fatalf("retry of a withdrawn order: %d %s", retry.Status, retry.Body)
	}
	if len(w.broker.Received()) != 0 {
		t.Fatal("the retry of a withdrawn order sent its command")
	}
	if a, _ := w.place(t, booksBody(1), "k2"); a.SagaID == sagaID {
		t.Fatal("a new key named the withdrawn saga")
	}
}

// TestUsersDown: with the users function unreachable, POST /orders
// answers 503 with Retry-After within USERS_TIMEOUT and starts nothing.
func TestUsersDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	_ = ln.Close()
	w := newWorld(t, map[string]string{"USERS_URL": down, "USERS_TIMEOUT": "1s"})
	start := time.Now()
	r := w.request(t, http.MethodPost, "/orders", booksBody(1), nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || body.Error == "" {
		t.Fatalf("POST with users down: %d %s", r.Status, r.Body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v: the deadline is USERS_TIMEOUT", d)
	}
	if len(w.broker.Received()) != 0 || len(w.sagas(t)) != 0 {
		t.Fatal("an order was started with users down")
	}
}

// racingStore runs race the first time the API reads a saga: a step that
// lands between GET /orders/{id}'s read of the order and of its saga.
type racingStore struct {
	saga.Store
	once sync.Once
	race func()
}

func (s *racingStore) Get(ctx context.Context, id string) (saga.State, error) {
	s.once.Do(s.race)
	return s.Store.Get(ctx, id)
}

// TestGetOrderIsOneMoment: GET /orders/{id} never pairs an order with a
// saga from a different moment. Here the compensation that cancels the
// order lands after the API has read the pending order and before it
// reads the saga: the answer must be the cancelled order with its
// compensated saga, not the pending order with it.
func TestGetOrderIsOneMoment(t *testing.T) {
	w := newWorld(t, nil)
	a, cmd := w.place(t, booksBody(1), "")
	cancel := w.kit.Continue(w.start(t, a, cmd, books(1)), ordersaga.PayFailed, sagatest.Fail(ordersaga.StepPayment, "insufficient funds"))
	raced := false
	race := func() { // the order step cancels: the saga and the order move together
		w.kit.Continue(cancel, ordersaga.Cancelled)
		w.writeOrder(t, a, books(1), "cancelled", "insufficient funds")
		raced = true
	}
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	api := &api{rdb: w.rdb, logger: slog.New(slog.DiscardHandler),
		op: &ops.Operator{Sagas: reg, Store: &racingStore{Store: w.kit.Store, race: race}}}
	mux := http.NewServeMux()
	for pattern, h := range api.routes() {
		mux.Handle(pattern, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/orders/" + a.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var view orderView
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %v", resp.StatusCode, err)
	}
	if !raced {
		t.Fatal("the cancel did not land between the reads")
	}
	if view.Saga == nil || view.Saga.Status != saga.StatusCompensated || view.Status != "cancelled" || view.Reason != "insufficient funds" {
		t.Fatalf("order %s (%q) with saga %+v", view.Status, view.Reason, view.Saga)
	}
}
