// Command inventory is the inventory step of the order saga: it reserves every item
// of an order atomically (or fails the saga with no partial reservation), and
// releases the reservation when the saga compensates.
package main

import (
	"context"
	"io"

	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		store, err := env.NewStore(ctx, reserve, release)
		if err != nil {
			return nil, err
		}
		return &knfunc.Function{Step: newStep(store, env.Logger, env.Config.SagaTimeout+env.Config.Retention)}, nil
	})
}
