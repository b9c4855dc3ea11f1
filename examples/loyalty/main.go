// Command loyalty awards points when an order saga completes.
package main

import (
	"context"
	"io"
	"strconv"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// award is the step's domain write, atomic with the saga transition.
var award = saga.EffectScript{Name: "loyalty.award", Lua: `redis.call('INCRBY', keys[1], args[1])`}

func earn(_ context.Context, in saga.Input) (saga.Transition, error) {
	var o ordersaga.Order
	if err := in.Decode(&o); err != nil {
		return saga.Transition{}, err // 400: never retried
	}
	return saga.Transition{Step: "loyalty", Allow: []saga.Status{saga.StatusCompleted},
		Effect:    award.Call([]string{"loyalty:points:" + strconv.Itoa(int(o.UserID))}, o.TotalCents/100),
		OnSuccess: saga.Outcome{Outcome: "awarded", Reply: &saga.Reply{Type: "io.ksaga.loyalty.awarded"}}}, nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		store, err := env.NewStore(ctx, award)
		return &knfunc.Function{Step: &saga.Participant{Source: "/ksaga/loyalty", Store: store, Logger: env.Logger,
			Actions: map[string]saga.Action{ordersaga.Confirmed: earn}}}, err
	})
}

func main() { knfunc.Main(run) }
