package main

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// books is alice buying qty books (1250 each).
func books(qty int) ordersaga.OrderRequest {
	return ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: qty}}}
}

// TestCreate: a Create command starts the saga with the priced order as its
// data and the order id as its key, writes the pending order, and answers
// io.ksaga.order.created with the order; a redelivery gets the same reply
// and writes nothing. In both HTTP modes.
func TestCreate(t *testing.T) {
	w := newWorld(t, nil)
	for _, structured := range []bool{false, true} {
		sagaID := "s-" + map[bool]string{false: "binary", true: "structured"}[structured]
		t.Run(sagaID, func(t *testing.T) {
			req := ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 2}, {SKU: "lamp", Qty: 1}}}
			cmd := createCommand(sagaID, req)
			r := w.post(t, cmd, structured)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Created {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			orderID := orders.OrderIDFor(sagaID)
			want := ordersaga.Order{OrderID: orderID, UserID: 1, TotalCents: 2*1250 + 4999,
				Items: []ordersaga.Item{{SKU: "book", Qty: 2, PriceCents: 1250}, {SKU: "lamp", Qty: 1, PriceCents: 4999}}}
			if got := decodeOrder(t, r.Reply); !equalOrders(got, want) {
				t.Fatalf("reply data %+v, want %+v", got, want)
			}
			if saga.SagaIDOf(*r.Reply) != sagaID || r.Reply.Source() != "/ksaga/order" || r.Reply.Extensions()[saga.ExtCausationID] != cmd.ID() ||
				versionOf(t, *r.Reply) != 1 {
				t.Fatalf("reply %s", r.Reply)
			}

			st := w.kit.Record(sagaID)
			var data ordersaga.Order
			if err := st.Decode(&data); err != nil || !equalOrders(data, want) {
				t.Fatalf("the saga's data %s (%v), want the priced order", st.Data, err)
			}
			if st.Saga != ordersaga.Saga.Name || st.Key != orderID || st.Status != saga.StatusRunning || st.Version != 1 ||
				!slices.Equal(st.Compensate, []string{ordersaga.StepOrder}) || !slices.Equal(sagatest.Outcomes(st), []string{"order/created"}) {
				t.Fatalf("saga %+v", st)
			}
			if st.Next == nil || st.Next.Type != ordersaga.Created || st.Next.ID != r.Reply.ID() {
				t.Fatalf("the saga waits on %+v, want the reply", st.Next)
			}
			if id, err := w.kit.Store.ByKey(t.Context(), ordersaga.Saga.Name, orderID); err != nil || id != sagaID {
				t.Fatalf("ByKey(order id) = %q, %v", id, err)
			}

			// The order record, as order-api's GET /orders/{id} reads it.
			o := w.order(t, orderID)
			if fields := slices.Sorted(maps.Keys(o)); !slices.Equal(fields, []string{"created_at", "items", "saga_id", "status", "total_cents", "user_id"}) {
				t.Fatalf("order fields %v", fields)
			}
			var items []ordersaga.Item
			if err := json.Unmarshal([]byte(o["items"]), &items); err != nil || !slices.Equal(items, want.Items) {
				t.Fatalf("order items %s: %v", o["items"], err)
			}
			if o["status"] != "pending" || o["saga_id"] != sagaID || o["user_id"] != "1" || o["total_cents"] != "7499" {
				t.Fatalf("order %v", o)
			}

			again := w.post(t, cmd, !structured) // a redelivery, in the other mode
			if again.Status != 200 || again.Reply == nil || again.Reply.ID() != r.Reply.ID() || string(again.Reply.Data()) != string(r.Reply.Data()) {
				t.Fatalf("redelivery: %d %s", again.Status, again.Body)
			}
			if after := w.kit.Record(sagaID); after.Version != 1 || after.Steps[0].Redelivered != 1 {
				t.Fatalf("redelivery moved the saga: v%d, redelivered %d", after.Version, after.Steps[0].Redelivered)
			}
			if after := w.order(t, orderID); !maps.Equal(after, o) {
				t.Fatalf("redelivery rewrote the order: %v", after)
			}
		})
	}
	if n := w.orderCount(t); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
}

func equalOrders(a, b ordersaga.Order) bool {
	return a.OrderID == b.OrderID && a.UserID == b.UserID && a.TotalCents == b.TotalCents && a.Reason == b.Reason && slices.Equal(a.Items, b.Items)
}

// TestCreateWithoutCorrelationID: a Create POSTed to the broker by a client
// that names no saga starts one whose id derives from the command, so its
// redelivery reaches the same saga.
func TestCreateWithoutCorrelationID(t *testing.T) {
	w := newWorld(t, nil)
	cmd := sagatest.Event("client-1", ordersaga.Create, books(1))
	r1, r2 := w.post(t, cmd, false), w.post(t, cmd, false)
	sagaID := saga.IDFromEvent(cmd.Source(), cmd.ID())
	if r1.Reply == nil || r1.Reply.Type() != ordersaga.Created || saga.SagaIDOf(*r1.Reply) != sagaID {
		t.Fatalf("%d %s", r1.Status, r1.Body)
	}
	if r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() {
		t.Fatalf("redelivery %d %s", r2.Status, r2.Body)
	}
	if st := w.kit.Record(sagaID); st.Version != 1 || st.Key != orders.OrderIDFor(sagaID) || w.orderCount(t) != 1 {
		t.Fatalf("saga %+v, %d orders", st, w.orderCount(t))
	}
}

// TestCreateRejected: an unknown user or SKU rejects the order: the saga
// ends compensated at once (nothing to undo) with the reason, the order is
// recorded cancelled, and the reply is io.ksaga.order.rejected.
func TestCreateRejected(t *testing.T) {
	tests := map[string]struct {
		req    ordersaga.OrderRequest
		reason string
	}{
		"unknown user": {ordersaga.OrderRequest{UserID: 999, Items: books(1).Items}, "unknown user 999"},
		"unknown SKU":  {ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}, {SKU: "nope", Qty: 1}}}, `unknown SKU "nope"`},
		"both":         {ordersaga.OrderRequest{UserID: 999, Items: []ordersaga.LineItem{{SKU: "nope", Qty: 1}}}, `unknown user 999; unknown SKU "nope"`},
	}
	w := newWorld(t, nil)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sagaID := "rejected-" + strings.ReplaceAll(name, " ", "-")
			cmd := createCommand(sagaID, tt.req)
			r := w.post(t, cmd, false)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Rejected {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			orderID := orders.OrderIDFor(sagaID)
			if data := decodeOrder(t, r.Reply); data.Reason != tt.reason || data.OrderID != orderID {
				t.Fatalf("reply data %s", r.Reply.Data())
			}
			st := w.kit.Record(sagaID)
			if st.Status != saga.StatusCompensated || st.Reason != tt.reason || st.FailedStep != ordersaga.StepOrder ||
				len(st.Compensate) != 0 || st.Key != orderID || !slices.Equal(sagatest.Outcomes(st), []string{"order/rejected"}) || st.Next.Type != ordersaga.Rejected {
				t.Fatalf("saga %+v", st)
			}
			if o := w.order(t, orderID); o["status"] != "cancelled" || o["reason"] != tt.reason || o["saga_id"] != sagaID {
				t.Fatalf("order %v", o)
			}
			again := w.post(t, cmd, true)
			if again.Reply == nil || again.Reply.ID() != r.Reply.ID() || string(again.Reply.Data()) != string(r.Reply.Data()) {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
		})
	}
	if n := w.orderCount(t); n != len(tests) {
		t.Fatalf("%d orders, want %d", n, len(tests))
	}
}

// TestCreateInvalid: a Create whose data is not a valid order request can
// never start a saga: 400, and nothing is written.
func TestCreateInvalid(t *testing.T) {
	w := newWorld(t, nil)
	tests := map[string][]byte{
		"not JSON":      []byte(`{"user_id":`),
		"unknown field": []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 1}], "x": 1}`),
		"client prices": []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 1, "price_cents": 1}]}`),
		"qty 0":         []byte(`{"user_id": 1, "items": [{"sku": "book", "qty": 0}]}`),
		"no items":      []byte(`{"user_id": 1}`),
		"no data":       nil,
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			sagaID := "bad-" + strings.ReplaceAll(name, " ", "-")
			r := w.post(t, sagatest.Event("c-"+sagaID, ordersaga.Create, data, saga.ExtCorrelationID, sagaID), false)
			if r.Status != http.StatusBadRequest {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if _, err := w.kit.Store.Get(t.Context(), sagaID); !errors.Is(err, saga.ErrNotFound) {
				t.Fatalf("a saga was recorded: %v", err)
			}
		})
	}
	if n := w.orderCount(t); n != 0 {
		t.Fatalf("%d orders", n)
	}
}

// TestCreateOfAnOrderThatExists: a Create redelivered after its saga ended
// and expired (its record, and so its dedupe, gone; the order is kept)
// must not run the order's saga again — a second charge: it is recorded
// rejected and the order is left as it was.
func TestCreateOfAnOrderThatExists(t *testing.T) {
	w := newWorld(t, map[string]string{"KSAGA_RETENTION": "1s"})
	cmd := createCommand("s1", books(1))
	r := w.post(t, cmd, false)
	confirmed := w.post(t, w.kit.Continue(*r.Reply, ordersaga.StockReserved), false)
	if confirmed.Reply == nil || confirmed.Reply.Type() != ordersaga.Confirmed {
		t.Fatalf("confirm: %d %s", confirmed.Status, confirmed.Body)
	}
	orderID := orders.OrderIDFor("s1")
	before := w.order(t, orderID)
	sagatest.Eventually(t, 5*time.Second, func() error { // the saga's retention ends
		if _, err := w.kit.Store.Get(t.Context(), "s1"); !errors.Is(err, saga.ErrNotFound) {
			return errors.New("the completed saga has not expired yet")
		}
		return nil
	})

	again := w.post(t, cmd, false)
	if again.Status != 200 || again.Reply == nil || again.Reply.Type() != ordersaga.Rejected {
		t.Fatalf("the Create again: %d %s", again.Status, again.Body)
	}
	st := w.kit.Record("s1")
	if st.Status != saga.StatusCompensated || !strings.Contains(st.Reason, "the order exists already") || len(st.Compensate) != 0 {
		t.Fatalf("saga %+v", st)
	}
	if after := w.order(t, orderID); !maps.Equal(after, before) || after["status"] != "confirmed" {
		t.Fatalf("order changed: %v → %v", before, after)
	}
}

// TestStartOfAnAcceptedSaga: order-api records a saga accepted before it
// sends the Create; the order step runs exactly that command (not one with
// other data), once, and keeps the saga's trace.
func TestStartOfAnAcceptedSaga(t *testing.T) {
	w := newWorld(t, nil)
	reg, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	op := &ops.Operator{Sagas: reg, Store: w.kit.Store, Source: ordersaga.SourceOrderAPI}
	sagaID := "accepted"
	orderID := orders.OrderIDFor(sagaID)
	cmd := sagatest.Event(orders.CreateEventID(sagaID), ordersaga.Create, books(3), saga.ExtCorrelationID, sagaID)
	cmd.SetSource(ordersaga.SourceOrderAPI)
	if _, err := op.Accept(t.Context(), ordersaga.Saga, sagaID, orderID, &cmd); err != nil {
		t.Fatal(err)
	}
	accepted := w.kit.Record(sagaID)

	// the same command with other data (another user): refused
	forged := withData(t, cmd, ordersaga.OrderRequest{UserID: 2, Items: books(3).Items})
	if r := w.post(t, forged, false); r.Status != http.StatusBadRequest {
		t.Fatalf("forged Create: %d %s", r.Status, r.Body)
	}
	w.kit.Unchanged(accepted)
	if !w.fn.Refused(t, "data differs") || w.orderCount(t) != 0 {
		t.Fatal("the forged Create was not refused as a security event, or wrote an order")
	}

	// the accepted command, with the trace it was sent in
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, w.fn.URL, nil)
	r := sagatest.PostRequest(t, req, cmd, http.Header{"Traceparent": {"00-" + trace + "-00f067aa0ba902b7-01"}})
	if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Created {
		t.Fatalf("Create: %d %s", r.Status, r.Body)
	}
	st := w.kit.Record(sagaID)
	var data ordersaga.Order
	if err := st.Decode(&data); err != nil || data.TotalCents != 3750 || data.OrderID != orderID {
		t.Fatalf("the saga's data %s: want the priced order", st.Data)
	}
	if st.Status != saga.StatusRunning || st.Key != orderID || !slices.Equal(sagatest.Outcomes(st), []string{"order/accepted", "order/created"}) {
		t.Fatalf("saga %+v", st)
	}
	if st.TraceID != trace {
		t.Fatalf("trace id %q, want %s: the start of an accepted saga keeps its trace", st.TraceID, trace)
	}

	// a client's second Create for the saga (another id): the saga has
	// started, nothing happens
	if r := w.post(t, createCommand(sagaID, books(1)), false); r.Status != 200 || r.Reply != nil {
		t.Fatalf("second Create: %d %s", r.Status, r.Body)
	}
	w.kit.Unchanged(st)
	if o := w.order(t, orderID); o["total_cents"] != "3750" || w.orderCount(t) != 1 {
		t.Fatalf("order %v", o)
	}
}

// TestConfirm: the saga's last step confirms the pending order and the saga
// completes with nothing left to undo; on the choreography event and on the
// orchestrator's command.
func TestConfirm(t *testing.T) {
	w := newWorld(t, nil)
	for name, opts := range map[string][]sagatest.Option{
		ordersaga.StockReserved: nil,
		ordersaga.Confirm:       {sagatest.Orchestrated(w.orch)},
	} {
		t.Run(name, func(t *testing.T) {
			sagaID := "confirm-" + name
			e := w.kit.Continue(w.create(t, sagaID, books(2)), name, opts...)
			r := w.post(t, e, true)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Confirmed {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			orderID := orders.OrderIDFor(sagaID)
			if data := decodeOrder(t, r.Reply); data.OrderID != orderID || data.TotalCents != 2500 {
				t.Fatalf("reply data %s", r.Reply.Data())
			}
			if again := w.post(t, e, false); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			st := w.kit.Record(sagaID)
			want := []string{"order/created", "payment/succeeded", "inventory/succeeded", "order/confirmed"}
			if st.Status != saga.StatusCompleted || len(st.Compensate) != 0 || !slices.Equal(sagatest.Outcomes(st), want) {
				t.Fatalf("saga %s %v, left to undo %v", st.Status, sagatest.Outcomes(st), st.Compensate)
			}
			if o := w.order(t, orderID); o["status"] != "confirmed" || o["updated_at"] == "" {
				t.Fatalf("order %v", o)
			}
		})
	}
}

// TestCancel: when a later step fails, the order is cancelled with the
// saga's reason and the saga has compensated: after payment failed, after
// payment was refunded, and on the orchestrator's command.
func TestCancel(t *testing.T) {
	w := newWorld(t, nil)
	tests := map[string]struct {
		until  string
		failed string
		reason string
		orch   bool
		want   []string
	}{
		"payment failed": {ordersaga.PayFailed, ordersaga.StepPayment, "insufficient funds", false,
			[]string{"order/created", "payment/failed", "order/cancelled"}},
		"payment refunded": {ordersaga.PayRefunded, ordersaga.StepInventory, "insufficient stock for lamp", false,
			[]string{"order/created", "payment/succeeded", "inventory/failed", "payment/compensated", "order/cancelled"}},
		"orchestrated": {ordersaga.Cancel, ordersaga.StepInventory, "insufficient stock for lamp", true,
			[]string{"order/created", "payment/succeeded", "inventory/failed", "payment/compensated", "order/cancelled"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sagaID := "cancel-" + strings.ReplaceAll(name, " ", "-")
			opts := []sagatest.Option{sagatest.Fail(tt.failed, tt.reason)}
			if tt.orch {
				opts = append(opts, sagatest.Orchestrated(w.orch))
			}
			e := w.kit.Continue(w.create(t, sagaID, books(1)), tt.until, opts...)
			r := w.post(t, e, false)
			if r.Status != 200 || r.Reply == nil || r.Reply.Type() != ordersaga.Cancelled {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if again := w.post(t, e, true); again.Reply == nil || again.Reply.ID() != r.Reply.ID() {
				t.Fatalf("redelivery %d %s", again.Status, again.Body)
			}
			st := w.kit.Record(sagaID)
			if st.Status != saga.StatusCompensated || len(st.Compensate) != 0 || st.Reason != tt.reason || st.FailedStep != tt.failed ||
				!slices.Equal(sagatest.Outcomes(st), tt.want) {
				t.Fatalf("saga %s %v (%s at %s), left to undo %v", st.Status, sagatest.Outcomes(st), st.Reason, st.FailedStep, st.Compensate)
			}
			if o := w.order(t, orders.OrderIDFor(sagaID)); o["status"] != "cancelled" || o["reason"] != tt.reason {
				t.Fatalf("order %v", o)
			}
		})
	}
}

// TestUsersDown: with the users function unreachable, a Create answers 503
// (the broker retries it) and starts nothing.
func TestUsersDown(t *testing.T) {
	w := newWorld(t, map[string]string{"USERS_URL": downURL(t), "USERS_TIMEOUT": "1s"})
	r := w.post(t, createCommand("s1", books(1)), false)
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("Create with users down: %d %s", r.Status, r.Body)
	}
	if _, err := w.kit.Store.Get(t.Context(), "s1"); !errors.Is(err, saga.ErrNotFound) || w.orderCount(t) != 0 {
		t.Fatalf("a saga or an order was written with users down: %v", err)
	}
}
