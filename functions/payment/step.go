package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// authorize takes the total from the balance. keys: balance, charge;
// args: amount, user id, ttl (s): the charge record lives as long as the saga.
// A saga is charged at most once whatever the event.
var authorize = saga.EffectScript{Name: "payment.authorize", Lua: `
if redis.call('EXISTS', keys[2]) == 1 then return end
local balance = tonumber(redis.call('GET', keys[1]) or '')
if balance == nil then return 'unknown account' end
if balance < tonumber(args[1]) then return 'insufficient funds' end
redis.call('DECRBY', keys[1], args[1])
redis.call('HSET', keys[2], 'amount_cents', args[1], 'user_id', args[2], 'status', 'authorized')
redis.call('EXPIRE', keys[2], args[3])
`}

// refund gives an authorised charge back, once. keys: balance, charge;
// args: the order's total. The Store runs it only while payment is on the
// saga's compensation stack, that is, charged and not yet refunded; so when
// the charge record has expired (a late redrive), the order's own total is
// what was charged, and is given back.
var refund = saga.EffectScript{Name: "payment.refund", Lua: `
local status = redis.call('HGET', keys[2], 'status')
if status == 'refunded' then return end
if status ~= 'authorized' then
  redis.call('INCRBY', keys[1], args[1])
  return
end
redis.call('INCRBY', keys[1], redis.call('HGET', keys[2], 'amount_cents'))
redis.call('HSET', keys[2], 'status', 'refunded')
`}

// newStep serves both modes with one implementation: the choreography event
// and the orchestration command of each action share it.
// newStep builds the step; keep is how long a charge record outlives its
// creation (the saga's timeout plus its retention).
func newStep(store saga.Store, logger *slog.Logger, keep time.Duration) *saga.Participant {
	authorizeAction := func(_ context.Context, in saga.Input) (saga.Transition, error) {
		return authorizeTransition(in, keep)
	}
	return &saga.Participant{
		Source: ordersaga.SourcePayment, Store: store, Logger: logger,
		Actions: map[string]saga.Action{
			ordersaga.Created:       authorizeAction,
			ordersaga.AuthorizePay:  authorizeAction,
			ordersaga.StockFailed:   refundAction,
			ordersaga.StockReleased: refundAction,
			ordersaga.RefundPay:     refundAction,
		},
	}
}

func authorizeTransition(in saga.Input, keep time.Duration) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	if o.TotalCents <= 0 || o.UserID <= 0 {
		return saga.Transition{}, saga.Invalid("order %q: total_cents and user_id must be positive", o.OrderID)
	}
	return saga.Transition{
		Step:   ordersaga.StepPayment,
		Allow:  []saga.Status{saga.StatusRunning},
		Effect: authorize.Call([]string{ordersaga.BalanceKey(o.UserID), ordersaga.ChargeKey(in.SagaID)}, o.TotalCents, o.UserID, int64(keep/time.Second)),
		OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true,
			Reply: &saga.Reply{Type: ordersaga.PayAuthorized}},
		OnFailure: &saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating,
			Reply: &saga.Reply{Type: ordersaga.PayFailed}},
	}, nil
}

func refundAction(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	return saga.Transition{
		Step:   ordersaga.StepPayment,
		Allow:  []saga.Status{saga.StatusCompensating},
		Effect: refund.Call([]string{ordersaga.BalanceKey(o.UserID), ordersaga.ChargeKey(in.SagaID)}, o.TotalCents),
		OnSuccess: saga.Outcome{Outcome: "refunded", Compensates: ordersaga.StepPayment,
			Reply: &saga.Reply{Type: ordersaga.PayRefunded}},
	}, nil
}
