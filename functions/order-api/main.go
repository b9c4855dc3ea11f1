// Command order-api is the order saga's public REST API (the only function
// outside clients call): POST /orders checks a request (the user with a
// gRPC call to the users function, the items against the catalogue),
// records the order's saga as accepted and sends its
// io.ksaga.order.create command to the broker (K_SINK); GET /orders/{id}
// answers an order and its saga; POST /orders/{id}/cancel aborts its saga,
// which compensates (api.go). With KSAGA_API_OIDC_ISSUER set, every route
// needs a bearer token of the user the order is for (auth.go). Sagas
// themselves are read and operated through the console's admin API.
package main

import (
	"context"
	"fmt"
	"strings"
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
	// The callers: off without KSAGA_API_OIDC_ISSUER (the demo; one start-up
	// line says so either way), on in a cluster's production settings.
	v, err := knfunc.VerifierFromEnv(env.Getenv, apiOIDCPrefix, "order API callers", env.Logger)
	if err != nil {
		return nil, err
	}
	claim := strings.TrimSpace(env.Getenv(envUserClaim))
	switch {
	case v != nil:
		a.authorize = userAuthorizer(claim)
	case claim != "":
		return nil, fmt.Errorf("%s is set but %sISSUER is not: set the issuer too, or nothing", envUserClaim, apiOIDCPrefix)
	}
	routes := a.routes()
	for pattern, h := range routes {
		routes[pattern] = v.Authenticate(h, env.Logger) // nil v: h as it is
	}
	return &knfunc.Function{Routes: routes, Close: o.Close}, nil
}
