package main

import (
	"context"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// record appends a customer notification to the outbox; the relay sends
// it. The runtime runs the final step once per saga.
var record = saga.Effect{Name: "notification.record", Lua: `
redis.call('XADD', keys.outbox, '*', 'saga_id', args.saga, 'order_id', args.order, 'user_id', args.user,
  'kind', args.kind, 'reason', args.reason)
`}

// notify records the notification the saga's end calls for: the order
// confirmed, or cancelled with the saga's reason.
func notify(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Saga.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	kind := "order_cancelled"
	if in.Saga.Status == saga.StatusCompleted {
		kind = "order_confirmed"
	}
	return saga.Transition{Outcome: "sent",
		Effect: record.Call().Key("outbox", ordersaga.OutboxKey).
			Arg("saga", in.SagaID).Arg("order", o.OrderID).Arg("user", o.UserID).Arg("kind", kind).Arg("reason", in.Saga.Reason)}, nil
}
