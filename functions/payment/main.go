// Command payment is the payment step of the order saga: it authorises an
// order's total against the user's balance (or fails the saga), and refunds
// it, exactly once, when the saga compensates.
package main

import (
	"context"
	"io"

	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		store, err := env.NewStore(ctx, authorize, refund)
		if err != nil {
			return nil, err
		}
		return &knfunc.Function{Step: newStep(store, env.Logger, env.Config.SagaTimeout+env.Config.Retention)}, nil
	})
}
