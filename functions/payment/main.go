// Command payment is the payment step of the order saga: it charges an
// order's total to its user's balance (or fails the saga), recording the
// charge in the saga, and refunds exactly that charge when the saga
// compensates.
package main

import (
	"context"
	"net/http"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	fn, err := env.Step(ordersaga.Saga, saga.Actions{ordersaga.AuthorizePay: authorize, ordersaga.RefundPay: refund})
	if err != nil {
		return nil, err
	}
	fn.Routes = map[string]http.Handler{"GET /balances/{user}": balances(env.Redis)} // read by the console's views
	return fn, nil
}
