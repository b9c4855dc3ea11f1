// Command notification is the last step of the order saga: it records a
// customer notification for every confirmed and every cancelled order in an
// outbox (a Redis stream, written atomically with the saga transition), and
// a relay hands each one to a Sender, at least once, and trims the sent
// entries once the outbox is large (an unsent one is never dropped). It
// never fails the saga.
package main

import (
	"context"
	"io"

	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		store, err := env.NewStore(ctx, record)
		if err != nil {
			return nil, err
		}
		consumer := env.Config.Revision
		if consumer == "" {
			consumer = "notification"
		}
		relay := &relay{rdb: env.Redis, sender: logSender{env.Logger}, logger: env.Logger, consumer: consumer}
		relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); relay.run(relayCtx) }()
		return &knfunc.Function{
			Step: newStep(store, env.Logger, env.Config.Retention),
			Close: func() error { // after the server drained: finish the relay's current batch
				stopRelay()
				<-done
				return nil
			},
		}, nil
	})
}
