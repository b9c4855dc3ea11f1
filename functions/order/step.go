package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// Order statuses, as stored in the order hash and answered by GET /orders/{id}.
const (
	statusPending   = "pending"
	statusConfirmed = "confirmed"
	statusCancelled = "cancelled"
)

// writeOrder writes a new order hash, once. A redelivered Create is
// deduplicated with its saga and never gets here; one that does while the
// order exists arrived after its saga expired (retention), and fails: the
// order's saga must not run twice. keys: order; args: user id, items JSON,
// total cents, status, saga id, created at (RFC 3339), reason ("" for none).
var writeOrder = saga.EffectScript{Name: "order.write", Lua: `
if redis.call('EXISTS', keys[1]) == 1 then return 'the order exists already: this Create came after its saga expired' end
redis.call('HSET', keys[1], 'user_id', args[1], 'items', args[2], 'total_cents', args[3],
  'status', args[4], 'saga_id', args[5], 'created_at', args[6])
if args[7] ~= '' then redis.call('HSET', keys[1], 'reason', args[7]) end
`}

// confirmOrder marks a pending order confirmed; any other order is left as
// it is. keys: order; args: updated at.
var confirmOrder = saga.EffectScript{Name: "order.confirm", Lua: `
if redis.call('HGET', keys[1], 'status') ~= 'pending' then return end
redis.call('HSET', keys[1], 'status', 'confirmed', 'updated_at', args[1])
`}

// cancelOrder marks a pending order cancelled; any other order is left as it
// is. keys: order; args: updated at, reason ("" for none).
var cancelOrder = saga.EffectScript{Name: "order.cancel", Lua: `
if redis.call('HGET', keys[1], 'status') ~= 'pending' then return end
redis.call('HSET', keys[1], 'status', 'cancelled', 'updated_at', args[1])
if args[2] ~= '' then redis.call('HSET', keys[1], 'reason', args[2]) end
`}

// step holds the order step's actions.
type step struct {
	orders *orders
	store  saga.Store
	logger *slog.Logger
}

// newStep serves both modes with one implementation: the choreography event
// and the orchestration command of each action share it. Every reply
// carries the saga's data (an ordersaga.Order).
func newStep(o *orders, store saga.Store, logger *slog.Logger) *saga.Participant {
	s := &step{orders: o, store: store, logger: logger}
	return &saga.Participant{
		Source: ordersaga.SourceOrder, Store: store, Logger: logger,
		Actions: map[string]saga.Action{
			ordersaga.Create:        s.create,
			ordersaga.StockReserved: s.confirm,
			ordersaga.Confirm:       s.confirm,
			ordersaga.PayFailed:     s.cancel,
			ordersaga.PayRefunded:   s.cancel,
			ordersaga.Cancel:        s.cancel,
		},
	}
}

// create starts a saga from a Create command whose data is an OrderRequest.
// The saga id is the command's correlationid, or else derived from its
// source and id (sagaIDForEvent); the order id is derived from the saga id
// (orderIDFor). A valid order starts the saga running with a pending order;
// an unknown user or SKU records the saga as compensated at once with a
// cancelled order, and replies Rejected with the reason.
func (s *step) create(ctx context.Context, in saga.Input) (saga.Transition, error) {
	req, err := ordersaga.DecodeOrderRequest(in.Event.Data())
	if err != nil {
		return saga.Transition{}, saga.Invalid("%s data: %v", in.Event.Type(), err)
	}
	if p := req.Validate(); len(p) > 0 {
		return saga.Transition{}, saga.Invalid("%s data: invalid order: %s", in.Event.Type(), formatProblems(p))
	}
	sagaID := in.SagaID
	if sagaID == "" {
		sagaID = sagaIDForEvent(in.Event.Source(), in.Event.ID())
	}
	orderID := orderIDFor(sagaID)
	q, err := s.orders.quote(ctx, orderID, req)
	if err != nil {
		return saga.Transition{}, err
	}
	now := s.orders.now()
	items, err := json.Marshal(q.Order.Items)
	if err != nil {
		return saga.Transition{}, fmt.Errorf("encode items: %w", err)
	}
	t := saga.Transition{
		SagaID: sagaID, Create: true, Data: q.Order.Marshal(), Deadline: now.Add(s.orders.sagaTimeout),
		Step: ordersaga.StepOrder,
	}
	write := func(status, reason string) *saga.Effect {
		return writeOrder.Call([]string{ordersaga.OrderKey(orderID)},
			q.Order.UserID, string(items), q.Order.TotalCents, status, sagaID, now.UTC().Format(time.RFC3339Nano), reason)
	}
	// The order exists already (the Create came after its saga expired):
	// the saga is recorded rejected with the effect's reason, and nothing
	// else happens.
	t.OnFailure = &saga.Outcome{Outcome: "rejected", Status: saga.StatusCompensated, Reply: &saga.Reply{Type: ordersaga.Rejected}}
	if q.Rejected() {
		s.logger.InfoContext(ctx, "order rejected", "order_id", orderID, "saga_id", sagaID, "reason", q.Reason())
		t.Effect = write(statusCancelled, q.Reason())
		t.OnSuccess = saga.Outcome{Outcome: "rejected", Status: saga.StatusCompensated, Reason: q.Reason(),
			Reply: &saga.Reply{Type: ordersaga.Rejected}}
		return t, nil
	}
	t.Effect = write(statusPending, "")
	t.OnSuccess = saga.Outcome{Outcome: "created", Compensable: true, Reply: &saga.Reply{Type: ordersaga.Created}}
	return t, nil
}

// confirm ends a running saga: the order is confirmed (if still pending)
// and the saga completed.
func (s *step) confirm(_ context.Context, in saga.Input) (saga.Transition, error) {
	if in.SagaID == "" {
		return saga.Transition{}, saga.Invalid("event has no %s extension (the saga id)", saga.ExtCorrelationID)
	}
	now := s.orders.now().UTC().Format(time.RFC3339Nano)
	return saga.Transition{
		Step:   ordersaga.StepOrder,
		Allow:  []saga.Status{saga.StatusRunning},
		Effect: confirmOrder.Call([]string{ordersaga.OrderKey(orderIDFor(in.SagaID))}, now),
		OnSuccess: saga.Outcome{Outcome: "confirmed", Status: saga.StatusCompleted,
			Reply: &saga.Reply{Type: ordersaga.Confirmed}},
	}, nil
}

// cancel compensates the order step of a compensating saga: the order is
// cancelled (if still pending) with the failure's reason, taken from the
// event's data or else from the saga, and the saga is compensated.
func (s *step) cancel(ctx context.Context, in saga.Input) (saga.Transition, error) {
	if in.SagaID == "" {
		return saga.Transition{}, saga.Invalid("event has no %s extension (the saga id)", saga.ExtCorrelationID)
	}
	var data struct {
		Reason string `json:"reason"`
	}
	if len(in.Event.Data()) > 0 {
		if err := in.Decode(&data); err != nil {
			return saga.Transition{}, err
		}
	}
	reason := data.Reason
	if reason == "" {
		st, err := s.store.Get(ctx, in.SagaID)
		switch {
		case err == nil:
			reason = st.Reason
		case !errors.Is(err, saga.ErrNotFound): // unknown: Apply skips the event
			return saga.Transition{}, err
		}
	}
	now := s.orders.now().UTC().Format(time.RFC3339Nano)
	return saga.Transition{
		Step:   ordersaga.StepOrder,
		Allow:  []saga.Status{saga.StatusCompensating},
		Effect: cancelOrder.Call([]string{ordersaga.OrderKey(orderIDFor(in.SagaID))}, now, reason),
		OnSuccess: saga.Outcome{Outcome: "cancelled", Status: saga.StatusCompensated, Compensates: ordersaga.StepOrder,
			Reply: &saga.Reply{Type: ordersaga.Cancelled}},
	}, nil
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
