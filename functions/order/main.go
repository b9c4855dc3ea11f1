// Command order is the order step of the order saga and its REST API.
//
// REST (api.go): POST /orders validates a request (the user with a gRPC call
// to the users function, the items against the catalogue) and sends an
// io.ksaga.order.create command to the broker (K_SINK); GET /orders/{id}
// answers an order and its saga; POST /orders/{id}/cancel aborts its running
// saga (abort.go); GET /sagas/{id} answers any saga's state, GET /sagas
// lists the unfinished ones; POST /sagas/{id}/redrive resumes a failed
// compensation (redrive.go).
//
// CloudEvents (step.go): the saga's first step (create the order, or reject
// it) and its last (confirm it), and the compensation that cancels it, each
// reachable by the choreography event and by the orchestration command.
//
// Deadlines (sweeper.go): order is always on (min-scale 1), so it also
// aborts the sagas still running past their deadline, every
// KSAGA_SWEEP_INTERVAL.
package main

import (
	"context"
	"io"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/telemetry"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, func(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
		cfg, err := configFromEnv(env.Getenv)
		if err != nil {
			return nil, err
		}
		store, err := env.NewStore(ctx, writeOrder, confirmOrder, cancelOrder)
		if err != nil {
			return nil, err
		}
		users, err := dialUsers(cfg.Users, cfg.UsersTimeout)
		if err != nil {
			return nil, err
		}
		// order is every saga's entry point: it exports the fleet's
		// in-flight and overdue saga gauges (once, not in every function).
		env.Metrics.Registry.MustRegister(telemetry.NewSagaCollector(env.Redis, redisstore.ActiveKey, env.Config.Retention, env.Logger))
		var checker userChecker = users
		if cfg.UsersCacheTTL > 0 {
			checker = newUserCache(users, cfg.UsersCacheTTL)
		}
		o := &orders{users: checker, catalogue: newCatalogue(env.Redis, cfg.CatalogueCacheTTL), rdb: env.Redis, sagaTimeout: env.Config.SagaTimeout, now: time.Now}
		ab := &aborter{store: store, def: ordersaga.OrderSaga, logger: env.Logger, aborted: newAbortedCounter()}
		env.Metrics.Registry.MustRegister(ab.aborted)
		a := &api{orders: o, store: store, sink: env.Sink, aborter: ab, logger: env.Logger, maxBody: env.Config.MaxBodyBytes}
		stopSweeper := func() {}
		switch {
		case cfg.SweepInterval == 0:
		case env.Sink == nil:
			env.Logger.Warn("no deadline sweeper: K_SINK is not set, so it could not publish failure events")
		default:
			sw := &sweeper{aborter: ab, rdb: env.Redis, sink: env.Sink, logger: env.Logger, now: time.Now}
			sweepCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			done := make(chan struct{})
			go func() { defer close(done); sw.run(sweepCtx, cfg.SweepInterval) }()
			stopSweeper = func() { cancel(); <-done }
		}
		return &knfunc.Function{Step: newStep(o, store, env.Logger), Routes: a.routes(), Close: func() error {
			stopSweeper()
			return users.Close()
		}}, nil
	})
}
