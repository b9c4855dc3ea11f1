// Command orchestrator runs the order saga in orchestration mode: it hears
// every step's result, and replies with the next command — the next step,
// or the compensation of the last completed step in reverse order — until
// it ends the saga with a completed or compensated event. What to send is
// decided from the saga Definition (data) and the saga's state in Redis;
// nothing is kept in memory between events, so it scales to zero too.
package main

import (
	"context"
	"io"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		if err := ordersaga.OrderSaga.Validate(); err != nil {
			return nil, err
		}
		store, err := env.NewStore(ctx)
		if err != nil {
			return nil, err
		}
		return &knfunc.Function{Step: newStep(store, ordersaga.OrderSaga, env.Logger)}, nil
	})
}
