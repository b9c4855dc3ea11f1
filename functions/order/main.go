// Command order is the order saga's order step, on CloudEvents only
// (cluster-local): it starts the saga (creates the order, or rejects it),
// confirms the order at the end, and cancels it when the saga compensates,
// each reachable by the choreography event and the orchestration command.
// The REST API that places orders is functions/order-api.
package main

import (
	"context"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	cfg, err := orders.ConfigFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	o, err := orders.New(cfg, env.Redis)
	if err != nil {
		return nil, err
	}
	s := &step{orders: o, now: time.Now}
	fn, err := env.Step(ordersaga.Saga, saga.Actions{
		ordersaga.Create:  s.create,
		ordersaga.Confirm: s.confirm,
		ordersaga.Cancel:  s.cancel,
	})
	if err != nil {
		return nil, err
	}
	fn.Close = o.Close
	return fn, nil
}
