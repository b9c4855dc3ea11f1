// Command order-api is the order saga's public REST API (the only function
// outside clients call): POST /orders checks a request (the user with a
// gRPC call to the users function, the items against the catalogue),
// records the order's saga as accepted and sends its
// io.ksaga.order.create command to the broker (K_SINK); GET /orders/{id}
// answers an order and its saga; POST /orders/{id}/cancel aborts its saga,
// which compensates (api.go). Sagas themselves are read and operated
// through the console's admin API.
package main

import (
	"context"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
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
	sagas, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		return nil, err
	}
	op := env.Operator(sagas)
	a := &api{orders: o, op: op, rdb: env.Redis, sink: env.Sink, logger: env.Logger, maxBody: env.Config.MaxBodyBytes, now: time.Now}
	env.Logger.Info("REST API authentication is off: any caller may place and cancel orders for any user")
	return &knfunc.Function{Routes: a.routes(), Close: o.Close}, nil
}
