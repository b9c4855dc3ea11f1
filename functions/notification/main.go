// Command notification is the last step of the order saga: it records a
// customer notification for every confirmed and every cancelled order in an
// outbox (a Redis stream, written atomically with the saga transition), and
// a relay hands each one to a Sender, at least once, and trims the sent
// entries once the outbox is large (an unsent one is never dropped). It
// never fails the saga.
package main

import (
	"context"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

func main() { knfunc.Main(setup) }

func setup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	fn, err := env.Step(ordersaga.Saga, saga.Actions{ordersaga.SendNotification: notify})
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
	fn.Close = func() error { // after the server drained: finish the relay's current batch
		stopRelay()
		<-done
		return nil
	}
	return fn, nil
}
