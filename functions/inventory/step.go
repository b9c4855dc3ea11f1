package main

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// reserve takes every item from stock, or nothing. keys: the reservation,
// then one stock key per SKU; args: the quantities, then the SKU names, in
// the same order, then the reservation's ttl (s). A saga reserves at most
// once.
var reserve = saga.EffectScript{Name: "inventory.reserve", Lua: `
if redis.call('EXISTS', keys[1]) == 1 then return end
local n = #keys - 1
for i = 1, n do
  local stock = tonumber(redis.call('GET', keys[i + 1]) or '')
  if stock == nil then return 'unknown sku ' .. args[n + i] end
  if stock < tonumber(args[i]) then return 'insufficient stock for ' .. args[n + i] end
end
for i = 1, n do
  redis.call('DECRBY', keys[i + 1], args[i])
  redis.call('HSET', keys[1], args[n + i], args[i])
end
redis.call('HSET', keys[1], '_status', 'reserved')
redis.call('EXPIRE', keys[1], args[2 * n + 1])
`}

// release puts a reservation back, once. keys: the reservation, then the
// stock keys of args' SKUs; args: the SKUs, then the order's quantities in
// the same order. The Store runs it only while inventory is on the saga's
// compensation stack, that is, reserved and not yet released; so when the
// reservation record has expired (a late redrive), the order's own
// quantities are what was taken, and are put back.
var release = saga.EffectScript{Name: "inventory.release", Lua: `
local status = redis.call('HGET', keys[1], '_status')
if status == 'released' then return end
local n = #keys - 1
for i = 1, n do
  local qty = args[n + i]
  if status == 'reserved' then qty = redis.call('HGET', keys[1], args[i]) end
  if qty then redis.call('INCRBY', keys[i + 1], qty) end
end
if status == 'reserved' then redis.call('HSET', keys[1], '_status', 'released') end
`}

// newStep builds the step; keep is how long a reservation record outlives
// its creation (the saga's timeout plus its retention).
func newStep(store saga.Store, logger *slog.Logger, keep time.Duration) *saga.Participant {
	reserveAction := func(_ context.Context, in saga.Input) (saga.Transition, error) {
		return reserveTransition(in, keep)
	}
	return &saga.Participant{
		Source: ordersaga.SourceInventory, Store: store, Logger: logger,
		Actions: map[string]saga.Action{
			ordersaga.PayAuthorized: reserveAction,
			ordersaga.ReserveStock:  reserveAction,
			ordersaga.ReleaseStock:  releaseAction,
			ordersaga.ConfirmFailed: releaseAction,
		},
	}
}

// lines merges an order's items by SKU, in a stable order.
func lines(items []ordersaga.Item) (skus []string, qty map[string]int) {
	qty = map[string]int{}
	for _, it := range items {
		if _, ok := qty[it.SKU]; !ok {
			skus = append(skus, it.SKU)
		}
		qty[it.SKU] += it.Qty
	}
	sort.Strings(skus)
	return skus, qty
}

func decodeOrder(in saga.Input) (ordersaga.Order, []string, map[string]int, error) {
	var o ordersaga.Order
	if err := in.Decode(&o); err != nil {
		return o, nil, nil, err
	}
	if len(o.Items) == 0 {
		return o, nil, nil, saga.Invalid("order %q has no items", o.OrderID)
	}
	for _, it := range o.Items {
		if it.SKU == "" || it.Qty <= 0 {
			return o, nil, nil, saga.Invalid("order %q: item %+v", o.OrderID, it)
		}
	}
	skus, qty := lines(o.Items)
	return o, skus, qty, nil
}

func reserveTransition(in saga.Input, keep time.Duration) (saga.Transition, error) {
	_, skus, qty, err := decodeOrder(in)
	if err != nil {
		return saga.Transition{}, err
	}
	keys := []string{ordersaga.ReservationKey(in.SagaID)}
	args := make([]any, 0, 2*len(skus))
	for _, s := range skus {
		keys = append(keys, ordersaga.StockKey(s))
		args = append(args, qty[s])
	}
	for _, s := range skus {
		args = append(args, s)
	}
	args = append(args, int64(keep/time.Second))
	return saga.Transition{
		Step:   ordersaga.StepInventory,
		Allow:  []saga.Status{saga.StatusRunning},
		Effect: reserve.Call(keys, args...),
		OnSuccess: saga.Outcome{Outcome: "reserved", Compensable: true,
			Reply: &saga.Reply{Type: ordersaga.StockReserved}},
		OnFailure: &saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating,
			Reply: &saga.Reply{Type: ordersaga.StockFailed}},
	}, nil
}

func releaseAction(_ context.Context, in saga.Input) (saga.Transition, error) {
	_, skus, qty, err := decodeOrder(in)
	if err != nil {
		return saga.Transition{}, err
	}
	keys := []string{ordersaga.ReservationKey(in.SagaID)}
	args := make([]any, 0, 2*len(skus))
	for _, s := range skus {
		keys = append(keys, ordersaga.StockKey(s))
		args = append(args, s)
	}
	for _, s := range skus {
		args = append(args, qty[s])
	}
	return saga.Transition{
		Step:   ordersaga.StepInventory,
		Allow:  []saga.Status{saga.StatusCompensating},
		Effect: release.Call(keys, args...),
		OnSuccess: saga.Outcome{Outcome: "released", Compensates: ordersaga.StepInventory,
			Reply: &saga.Reply{Type: ordersaga.StockReleased}},
	}, nil
}
