package main

import (
	"context"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// charge takes an amount from a balance, or fails with the reason.
var charge = saga.Effect{Name: "payment.charge", Lua: `
local balance = tonumber(redis.call('GET', keys.balance) or '')
if balance == nil then return 'unknown account' end
if balance < tonumber(args.amount) then return 'insufficient funds' end
redis.call('DECRBY', keys.balance, args.amount)
`}

// credit gives an amount back to a balance.
var credit = saga.Effect{Name: "payment.credit", Lua: `redis.call('INCRBY', keys.balance, args.amount)`}

// authorize charges the order's total, as the saga recorded it, to the
// order's user, and records the charge.
func authorize(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Saga.Decode(&o); err != nil {
		return saga.Transition{}, err
	}
	c := ordersaga.Charge{UserID: o.UserID, AmountCents: o.TotalCents}
	return saga.Transition{Outcome: "authorized", Output: c,
		Effect: charge.Call().Key("balance", ordersaga.BalanceKey(c.UserID)).Arg("amount", c.AmountCents)}, nil
}

// refund gives back exactly the charge the saga recorded, to whom it was
// charged. The runtime runs it once, and only while payment is the next
// step to undo.
func refund(_ context.Context, in saga.Input) (saga.Transition, error) {
	var c ordersaga.Charge
	ok, err := in.Saga.Output(ordersaga.StepPayment, &c)
	if err != nil {
		return saga.Transition{}, err
	}
	if !ok {
		return saga.Transition{}, saga.Invalid("saga %s: no charge recorded to refund", in.SagaID)
	}
	return saga.Transition{Outcome: "refunded",
		Effect: credit.Call().Key("balance", ordersaga.BalanceKey(c.UserID)).Arg("amount", c.AmountCents)}, nil
}
