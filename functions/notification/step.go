package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// record appends the saga's notification to the outbox, once per saga; the
// kind follows the saga's status. The outbox is not capped here: the relay
// trims entries once they are sent (never one that is not). keys: outbox, sent marker, the saga's
// hash; args: saga id, order id, user id, retention (s).
var record = saga.EffectScript{Name: "notification.record", Lua: `
if redis.call('SET', keys[2], '1', 'NX', 'EX', args[4]) == false then return end
local st = redis.call('HGET', keys[3], 'st')
local kind = 'order_' .. (st == 'completed' and 'confirmed' or (st == 'compensated' and 'cancelled' or st))
redis.call('XADD', keys[1], '*',
  'saga_id', args[1], 'order_id', args[2], 'user_id', args[3], 'kind', kind,
  'reason', redis.call('HGET', keys[3], 'rs') or '')
`}

// sentKey marks a saga as notified (kept as long as the saga).
func sentKey(sagaID string) string { return "notification:sent:" + sagaID }

func newStep(store saga.Store, logger *slog.Logger, retention time.Duration) *saga.Participant {
	notify := func(_ context.Context, in saga.Input) (saga.Transition, error) {
		var o ordersaga.Order
		if err := in.Decode(&o); err != nil {
			return saga.Transition{}, err
		}
		return saga.Transition{
			Step:  ordersaga.StepNotification,
			Allow: []saga.Status{saga.StatusCompleted, saga.StatusCompensated},
			Effect: record.Call([]string{ordersaga.OutboxKey, sentKey(in.SagaID), redisstore.Key(in.SagaID)},
				in.SagaID, o.OrderID, o.UserID, int64(retention/time.Second)),
			OnSuccess: saga.Outcome{Outcome: "sent", Reply: &saga.Reply{Type: ordersaga.NotificationSent}},
		}, nil
	}
	return &saga.Participant{
		Source: ordersaga.SourceNotification, Store: store, Logger: logger,
		Actions: map[string]saga.Action{
			ordersaga.Confirmed:        notify,
			ordersaga.Cancelled:        notify,
			ordersaga.SendNotification: notify,
		},
	}
}
