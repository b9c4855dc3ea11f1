// Command deadletter is the saga's dead-letter sink: the Broker sends it
// every event whose delivery ran out of retries, with Knative's
// knativeerrordest/code/data extensions. It records each one in
// "ksaga:deadletters" and makes the saga face it: a compensation that could
// not be delivered marks the saga compensation_failed (step and reason in
// its status); a forward step that could not be delivered fails the saga
// through that step's failure event, sent to the Broker (K_SINK), so the
// saga compensates instead of hanging (the order's confirm fails with
// io.ksaga.order.confirmfailed, which only this sink sends: inventory
// releases, payment refunds, the order is cancelled). Any other dead letter
// (its step ran, or the saga moved on) is only kept in the stream and
// leaves the saga untouched, version included; if its step applied the
// event, the step's stored reply is published again. Nothing is dropped
// silently.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		if env.Sink == nil {
			return nil, fmt.Errorf("K_SINK is not set: bind the dead-letter sink to the Broker with a SinkBinding")
		}
		store, err := env.NewStore(ctx, record)
		if err != nil {
			return nil, err
		}
		return &knfunc.Function{Step: newStep(store, env.Redis, env.Sink, ordersaga.OrderSaga, env.Logger)}, nil
	})
}
