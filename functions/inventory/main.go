// Command inventory is the inventory step of the order saga: it takes an
// order's items from stock, all or none (or fails the saga), and puts them
// back when the saga compensates.
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
	fn, err := env.Step(ordersaga.Saga, saga.Actions{ordersaga.ReserveStock: reserve, ordersaga.ReleaseStock: release})
	if err != nil {
		return nil, err
	}
	fn.Routes = map[string]http.Handler{"GET /stock/{sku}": stock(env.Redis)} // read by the console's views
	return fn, nil
}
