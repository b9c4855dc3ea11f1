package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
)

// Order statuses, as stored in the order hash and answered by GET /orders/{id}.
const (
	statusPending   = "pending"
	statusConfirmed = "confirmed"
	statusCancelled = "cancelled"
)

// writeOrder writes a new order, once. A redelivered Create is
// deduplicated with its saga and never gets here; one that does while the
// order exists arrived after its saga expired (retention), and fails: the
// order's saga must not run twice.
var writeOrder = saga.Effect{Name: "order.write", Lua: `
if redis.call('EXISTS', keys.order) == 1 then return 'the order exists already: this Create came after its saga expired' end
redis.call('HSET', keys.order, 'user_id', args.user, 'items', args.items, 'total_cents', args.total,
  'status', args.status, 'saga_id', args.saga, 'created_at', args.at)
if args.reason ~= '' then redis.call('HSET', keys.order, 'reason', args.reason) end
`}

// confirmOrder marks a pending order confirmed; any other order is left as
// it is.
var confirmOrder = saga.Effect{Name: "order.confirm", Lua: `
if redis.call('HGET', keys.order, 'status') ~= 'pending' then return end
redis.call('HSET', keys.order, 'status', 'confirmed', 'updated_at', args.at)
`}

// cancelOrder marks a pending order cancelled with the saga's reason; any
// other order is left as it is.
var cancelOrder = saga.Effect{Name: "order.cancel", Lua: `
if redis.call('HGET', keys.order, 'status') ~= 'pending' then return end
redis.call('HSET', keys.order, 'status', 'cancelled', 'updated_at', args.at)
if args.reason ~= '' then redis.call('HSET', keys.order, 'reason', args.reason) end
`}

// step holds the order step's actions.
type step struct {
	orders *orders.Orders
	now    func() time.Time
}

// create starts a saga from a Create command whose data is an
// OrderRequest: the one event whose data a step acts on. The order id is
// derived from the saga id. A valid order starts the saga with a pending
// order and the priced order as the saga's data; an unknown user or SKU
// rejects it (the saga ends compensated at once) with a cancelled order.
func (s *step) create(ctx context.Context, in saga.Input) (saga.Transition, error) {
	req, err := ordersaga.DecodeOrderRequest(in.Event.Data())
	if err != nil {
		return saga.Transition{}, saga.Invalid("%s data: %v", in.Event.Type(), err)
	}
	if p := req.Validate(); len(p) > 0 {
		return saga.Transition{}, saga.Invalid("%s data: invalid order: %s", in.Event.Type(), formatProblems(p))
	}
	orderID := orders.OrderIDFor(in.SagaID)
	q, err := s.orders.Quote(ctx, orderID, req)
	if err != nil {
		return saga.Transition{}, err
	}
	items, err := json.Marshal(q.Order.Items)
	if err != nil {
		return saga.Transition{}, fmt.Errorf("encode items: %w", err)
	}
	write := func(status, reason string) *saga.Call {
		return writeOrder.Call().Key("order", ordersaga.OrderKey(orderID)).
			Arg("user", q.Order.UserID).Arg("items", string(items)).Arg("total", q.Order.TotalCents).
			Arg("status", status).Arg("saga", in.SagaID).Arg("at", s.now().UTC().Format(time.RFC3339Nano)).Arg("reason", reason)
	}
	t := saga.Transition{Outcome: "created", FailOutcome: "rejected", Data: q.Order, Key: orderID, Effect: write(statusPending, "")}
	if q.Rejected() {
		t.Fail, t.Effect = q.Reason(), write(statusCancelled, q.Reason())
	}
	return t, nil
}

// confirm confirms the order (if still pending): the saga completes.
func (s *step) confirm(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Saga.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	return saga.Transition{Outcome: "confirmed",
		Effect: confirmOrder.Call().Key("order", ordersaga.OrderKey(o.OrderID)).Arg("at", s.now().UTC().Format(time.RFC3339Nano))}, nil
}

// cancel cancels the order (if still pending) with the reason the saga
// failed for: the saga has compensated.
func (s *step) cancel(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Saga.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	return saga.Transition{Outcome: "cancelled",
		Effect: cancelOrder.Call().Key("order", ordersaga.OrderKey(o.OrderID)).
			Arg("at", s.now().UTC().Format(time.RFC3339Nano)).Arg("reason", in.Saga.Reason)}, nil
}

// formatProblems renders Validate's problems as one line, sorted by field.
func formatProblems(p map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(p)) {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(k + ": " + p[k])
	}
	return b.String()
}
