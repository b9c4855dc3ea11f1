package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

func TestPostOrder(t *testing.T) {
	e := setup(t, nil)
	resp := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 2}]}`, nil)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %s", resp.Status, resp.Body)
	}
	var ids accepted
	resp.decode(t, &ids)
	if ids.OrderID == "" || ids.SagaID == "" || ids.OrderID != orderIDFor(ids.SagaID) {
		t.Fatalf("ids %+v", ids)
	}
	if loc := resp.Header.Get("Location"); loc != "/orders/"+ids.OrderID {
		t.Fatalf("Location %q", loc)
	}

	// The command is in the broker; the order is not written yet.
	got := e.sink.Received()
	if len(got) != 1 {
		t.Fatalf("broker got %d events, want 1", len(got))
	}
	cmd := got[0]
	if cmd.Encoding != binding.EncodingBinary || cmd.Event.Type() != ordersaga.Create ||
		cmd.Event.Source() != ordersaga.SourceOrderAPI || saga.SagaIDOf(cmd.Event) != ids.SagaID {
		t.Fatalf("command %v (encoding %v)", cmd.Event, cmd.Encoding)
	}
	if req, err := ordersaga.DecodeOrderRequest(cmd.Event.Data()); err != nil || req.UserID != 1 || len(req.Items) != 1 || req.Items[0].Qty != 2 {
		t.Fatalf("command data %s: %v", cmd.Event.Data(), err)
	}
	if r := e.request(t, http.MethodGet, "/orders/"+ids.OrderID, "", nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET before delivery: %d %s", r.Status, r.Body)
	}

	// The broker delivers it to the order step.
	r := e.post(t, cmd.Event)
	if r.Status != http.StatusOK || r.Reply == nil || r.Reply.Type() != ordersaga.Created {
		t.Fatalf("deliver Create: %d %s", r.Status, r.Body)
	}
	if saga.SagaIDOf(*r.Reply) != ids.SagaID || r.Reply.Source() != ordersaga.SourceOrder {
		t.Fatalf("reply %v", r.Reply)
	}
	var o ordersaga.Order
	if err := json.Unmarshal(r.Reply.Data(), &o); err != nil {
		t.Fatal(err)
	}
	if o.OrderID != ids.OrderID || o.UserID != 1 || o.TotalCents != 2500 || len(o.Items) != 1 || o.Items[0].PriceCents != 1250 {
		t.Fatalf("reply data %s", r.Reply.Data())
	}
	if rec := e.order(t, ids.OrderID); rec["status"] != "pending" || rec["saga_id"] != ids.SagaID || rec["total_cents"] != "2500" {
		t.Fatalf("order record %v", rec)
	}
	if st := e.saga(t, ids.SagaID); st.Status != saga.StatusRunning || st.Version != 1 || len(st.Compensate) != 1 {
		t.Fatalf("saga %+v", st)
	}

	// GET /orders/{id}: the order and its saga.
	g := e.request(t, http.MethodGet, "/orders/"+ids.OrderID, "", nil)
	if g.Status != http.StatusOK {
		t.Fatalf("GET: %d %s", g.Status, g.Body)
	}
	var view map[string]any
	g.decode(t, &view)
	for _, k := range []string{"id", "user_id", "items", "total_cents", "status", "saga"} {
		if _, ok := view[k]; !ok {
			t.Fatalf("GET /orders/{id} has no %q: %s", k, g.Body)
		}
	}
	if view["id"] != ids.OrderID || view["status"] != "pending" || view["total_cents"] != 2500.0 || view["user_id"] != 1.0 {
		t.Fatalf("GET /orders/{id}: %s", g.Body)
	}
	if _, ok := view["reason"]; ok {
		t.Fatalf("a pending order has no reason: %s", g.Body)
	}
	items := view["items"].([]any)
	if item := items[0].(map[string]any); item["sku"] != "book" || item["qty"] != 2.0 || item["price_cents"] != 1250.0 {
		t.Fatalf("items %v", items)
	}
	sg := view["saga"].(map[string]any)
	for _, k := range []string{"id", "status", "version", "step", "reason", "failed_step", "deadline", "compensate", "steps"} {
		if _, ok := sg[k]; !ok {
			t.Fatalf("saga has no %q: %s", k, g.Body)
		}
	}
	steps := sg["steps"].([]any)
	if sg["id"] != ids.SagaID || sg["status"] != "running" || sg["version"] != 1.0 || len(steps) != 1 ||
		steps[0].(map[string]any)["outcome"] != "created" {
		t.Fatalf("saga %v", sg)
	}

	// GET /sagas/{id}: the saga's state.
	s := e.request(t, http.MethodGet, "/sagas/"+ids.SagaID, "", nil)
	var st saga.State
	s.decode(t, &st)
	if s.Status != http.StatusOK || st.ID != ids.SagaID || st.Status != saga.StatusRunning || len(st.Data) == 0 {
		t.Fatalf("GET /sagas/{id}: %d %s", s.Status, s.Body)
	}
}

func TestPostOrderRefused(t *testing.T) {
	e := setup(t, nil)
	tests := map[string]struct {
		body   string
		status int
		fields []string // wanted in "fields"
	}{
		"bad JSON":        {`{"user_id": 1, "items": [`, http.StatusBadRequest, nil},
		"not an object":   {`[1, 2]`, http.StatusBadRequest, nil},
		"trailing data":   {`{"user_id": 1, "items": [{"sku": "book", "qty": 1}]} {}`, http.StatusBadRequest, nil},
		"unknown field":   {`{"user_id": 1, "items": [{"sku": "book", "qty": 1}], "coupon": "x"}`, http.StatusBadRequest, nil},
		"missing items":   {`{"user_id": 1}`, http.StatusBadRequest, []string{"items"}},
		"qty 0":           {`{"user_id": 1, "items": [{"sku": "book", "qty": 0}]}`, http.StatusBadRequest, []string{"items[0].qty"}},
		"no user":         {`{"items": [{"sku": "book", "qty": 1}]}`, http.StatusBadRequest, []string{"user_id"}},
		"unknown user":    {`{"user_id": 999, "items": [{"sku": "book", "qty": 1}]}`, http.StatusUnprocessableEntity, []string{"user_id"}},
		"unknown SKU":     {`{"user_id": 1, "items": [{"sku": "book", "qty": 1}, {"sku": "nope", "qty": 1}]}`, http.StatusUnprocessableEntity, []string{"items[1].sku"}},
		"unknown both":    {`{"user_id": 999, "items": [{"sku": "nope", "qty": 1}]}`, http.StatusUnprocessableEntity, []string{"user_id", "items[0].sku"}},
		"too long a key?": {`{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`, http.StatusBadRequest, nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var h map[string]string
			if strings.HasPrefix(name, "too long") {
				h = map[string]string{"Idempotency-Key": strings.Repeat("k", maxIdempotencyKey+1)}
			}
			r := e.request(t, http.MethodPost, "/orders", tt.body, h)
			var body apiError
			r.decode(t, &body)
			if r.Status != tt.status || body.Error == "" {
				t.Fatalf("%d %s, want %d with an error", r.Status, r.Body, tt.status)
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
	if got := e.sink.Received(); len(got) != 0 {
		t.Fatalf("refused orders sent %d events: %v", len(got), got)
	}
	if n := e.orderKeys(t); n != 0 {
		t.Fatalf("%d orders written", n)
	}
}

func TestPostOrderUnknownUserMessage(t *testing.T) {
	e := setup(t, nil)
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 999, "items": [{"sku": "nope", "qty": 1}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if want := `order rejected: unknown user 999; unknown SKU "nope"`; body.Error != want {
		t.Fatalf("error %q, want %q", body.Error, want)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := setup(t, nil)
	body := `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`
	post := func(key string) accepted {
		t.Helper()
		r := e.request(t, http.MethodPost, "/orders", body, map[string]string{"Idempotency-Key": key})
		if r.Status != http.StatusAccepted {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		var a accepted
		r.decode(t, &a)
		return a
	}
	a1, a2 := post("key-1"), post("key-1")
	if a1 != a2 {
		t.Fatalf("same key, different ids: %+v %+v", a1, a2)
	}
	if a3 := post("key-2"); a3 == a1 {
		t.Fatalf("different keys, same ids: %+v", a3)
	}
	got := e.sink.Received()
	if len(got) != 3 || got[0].Event.ID() != got[1].Event.ID() || got[0].Event.ID() == got[2].Event.ID() {
		t.Fatalf("event ids: %v", got)
	}
	// Both commands reach the step: one saga, one order, the same reply.
	r1, r2 := e.post(t, got[0].Event), e.post(t, got[1].Event)
	if r1.Reply == nil || r2.Reply == nil || r1.Reply.ID() != r2.Reply.ID() || string(r1.Reply.Data()) != string(r2.Reply.Data()) {
		t.Fatalf("replies %+v / %+v", r1, r2)
	}
	if st := e.saga(t, a1.SagaID); st.Version != 1 || len(st.Steps) != 1 {
		t.Fatalf("saga %+v", st)
	}
	if n := e.orderKeys(t); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	// After the saga's retention its dedupe record is gone; a retry must
	// still not run the order's saga again (a second charge): it answers
	// the same ids and sends nothing.
	if err := e.rdb.Del(t.Context(), redisstore.Key(a1.SagaID)).Err(); err != nil {
		t.Fatal(err)
	}
	if a4 := post("key-1"); a4 != a1 {
		t.Fatalf("retry after expiry: %+v, want %+v", a4, a1)
	}
	if n := len(e.sink.Received()); n != 3 {
		t.Fatalf("retry after expiry sent a command: %d events, want 3", n)
	}
}

// An order of free items only is refused at once: payment would refuse to
// charge nothing, and the saga's first step would be dead-lettered.
func TestPostOrderOfNothingToPay(t *testing.T) {
	e := setup(t, nil)
	if err := e.rdb.Set(t.Context(), ordersaga.CatalogKey("sample"), 0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "sample", "qty": 2}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(body.Error, "the order total is 0") || len(e.sink.Received()) != 0 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}

func TestPostOrderWithoutSink(t *testing.T) {
	e := setup(t, map[string]string{"K_SINK": ""})
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(body.Error, "SinkBinding") {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}

func TestBrokerDown(t *testing.T) {
	e := setup(t, map[string]string{"K_SINK": "http://127.0.0.1:1"}) // nothing listens on port 1
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || body.Error != "the broker unavailable, retry later" {
		t.Fatalf("broker down: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "127.0.0.1") { // the broker's address is only logged
		t.Fatalf("the answer names the broker's address: %s", r.Body)
	}
}

func TestGetUnknown(t *testing.T) {
	e := setup(t, nil)
	for _, path := range []string{"/orders/nope", "/sagas/nope"} {
		r := e.request(t, http.MethodGet, path, "", nil)
		var body apiError
		r.decode(t, &body)
		if r.Status != http.StatusNotFound || body.Error == "" {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
	}
}

func TestGetOrderAfterSagaExpired(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "expired", ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}})
	if err := e.rdb.Del(t.Context(), redisstore.Key(sagaID)).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.request(t, http.MethodGet, "/orders/"+o.OrderID, "", nil)
	var view map[string]any
	r.decode(t, &view)
	if r.Status != http.StatusOK || view["saga"] != nil || view["status"] != "pending" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}

func TestClientPricesAreRejected(t *testing.T) {
	e := setup(t, nil)
	r := e.request(t, http.MethodPost, "/orders", `{"user_id":1,"items":[{"sku":"book","qty":1,"price_cents":1}]}`, nil)
	if r.Status != http.StatusBadRequest || len(e.sink.Received()) != 0 {
		t.Fatalf("status %d %s: a client must not set prices", r.Status, r.Body)
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
// order runs after the API has read the pending order and before it reads
// the saga: the answer must be the cancelled order with its compensated
// saga, not the pending order with it.
func TestGetOrderIsOneMoment(t *testing.T) {
	e := setup(t, nil)
	sagaID, o := e.create(t, "torn", bookOrder())
	v := e.apply(t, saga.Transition{SagaID: sagaID, Step: ordersaga.StepPayment,
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "insufficient funds"}}).Version
	cancel := sagaEvent("cancel-torn", ordersaga.PayFailed, sagaID, v, o)
	raced := false
	a := &api{orders: &orders{rdb: e.rdb}, logger: slog.New(slog.DiscardHandler), store: &racingStore{Store: e.store, race: func() {
		r := e.post(t, cancel)
		raced = r.Reply != nil && r.Reply.Type() == ordersaga.Cancelled
	}}}
	mux := http.NewServeMux()
	for pattern, h := range a.routes() {
		mux.Handle(pattern, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/orders/" + o.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view orderView
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %v", resp.StatusCode, err)
	}
	if !raced {
		t.Fatal("the cancel did not run between the reads")
	}
	if view.Saga == nil || view.Saga.Status != saga.StatusCompensated || view.Status != "cancelled" || view.Reason != "insufficient funds" {
		t.Fatalf("order %s (%q) with saga %+v", view.Status, view.Reason, view.Saga)
	}
}
