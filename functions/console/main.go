// Command console is the operators' view of the sagas it is configured
// with (KSAGA_SAGAS): the web console at / (package console: overview,
// sagas, one saga's live timeline, dead letters, domain views from
// KSAGA_CONSOLE_VIEWS), the admin API under /api/v1 (ops.API) and the
// fleet's saga gauges on /metrics. Reads need no credentials; actions need
// Authorization: Bearer $KSAGA_CONSOLE_TOKEN (and are turned off without
// it). KSAGA_TRACE_URL (e.g. http://jaeger:16686/trace/{trace_id}) links
// each traced saga to its trace. Cluster-local by default.
package main

import (
	"context"
	"time"

	"github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/telemetry"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	sagas, err := ops.RegistryFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	op := env.Operator(sagas)
	api := &ops.API{Op: op, TraceURL: env.Getenv("KSAGA_TRACE_URL")}
	// OIDC (a verifier's subject as the actor) joins the token here:
	// console.AnyOf(oidc, console.TokenAuth(token)).
	if token := env.Getenv("KSAGA_CONSOLE_TOKEN"); token != "" {
		api.Authorize = console.TokenAuth(token)
	} else {
		env.Logger.Warn("console actions are off: KSAGA_CONSOLE_TOKEN is not set (reads work without it)")
	}
	views, err := console.ParseViews(env.Getenv(console.EnvViews), env.Getenv)
	if err != nil {
		return nil, err
	}
	c, err := console.New(console.Options{API: api, Views: views, Logger: env.Logger,
		Transport: knfunc.NewHTTPClient(5 * time.Second).Transport})
	if err != nil {
		return nil, err
	}
	env.Metrics.Registry.MustRegister(telemetry.NewSagaCollector(env.Store, func(context.Context) ([]string, error) {
		return sagas.Names(), nil
	}, env.Logger))
	return &knfunc.Function{Routes: c.Routes()}, nil
}
