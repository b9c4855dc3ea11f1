package main

import (
	"context"
	"sort"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// take takes every quantity from its stock, or nothing. keys.stock and
// args.qty, args.sku are lists in the same order.
var take = saga.Effect{Name: "inventory.take", Lua: `
for i, key in ipairs(keys.stock) do
  local stock = tonumber(redis.call('GET', key) or '')
  if stock == nil then return 'unknown sku ' .. args.sku[i] end
  if stock < tonumber(args.qty[i]) then return 'insufficient stock for ' .. args.sku[i] end
end
for i, key in ipairs(keys.stock) do redis.call('DECRBY', key, args.qty[i]) end
`}

// put puts every quantity back.
var put = saga.Effect{Name: "inventory.put", Lua: `
for i, key in ipairs(keys.stock) do redis.call('INCRBY', key, args.qty[i]) end
`}

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

// stockCall is effect e over the order's items, as the saga recorded them.
func stockCall(e *saga.Effect, in saga.Input) (*saga.Call, error) {
	var o ordersaga.Order
	if err := in.Saga.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Items) == 0 {
		return nil, saga.Invalid("saga %s: the order has no items", in.SagaID)
	}
	skus, qty := lines(o.Items)
	keys, qs, names := make([]string, len(skus)), make([]any, len(skus)), make([]any, len(skus))
	for i, s := range skus {
		keys[i], qs[i], names[i] = ordersaga.StockKey(s), qty[s], s
	}
	return e.Call().KeyList("stock", keys...).ArgList("qty", qs...).ArgList("sku", names...), nil
}

// reserve takes the order's items from stock.
func reserve(_ context.Context, in saga.Input) (saga.Transition, error) {
	c, err := stockCall(&take, in)
	return saga.Transition{Outcome: "reserved", Effect: c}, err
}

// release puts the order's items back. The runtime runs it once, and only
// while inventory is the next step to undo, so exactly what reserve took
// goes back.
func release(_ context.Context, in saga.Input) (saga.Transition, error) {
	c, err := stockCall(&put, in)
	return saga.Transition{Outcome: "released", Effect: c}, err
}
