package console

import (
	"context"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/telemetry"
)

// Setup builds the console function (functions/console) from its
// environment: the definitions of KSAGA_SAGAS, the action token
// KSAGA_CONSOLE_TOKEN (actions are off without it), the views of
// KSAGA_CONSOLE_VIEWS, the trace link KSAGA_TRACE_URL, and the fleet's saga
// gauges on /metrics.
func Setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	sagas, err := ops.RegistryFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	api := &ops.API{Op: env.Operator(sagas), TraceURL: env.Getenv("KSAGA_TRACE_URL")}
	// OIDC joins the token here, its subject as the actor:
	// AnyOf(oidcAuthorize, TokenAuth(token)).
	if token := env.Getenv("KSAGA_CONSOLE_TOKEN"); token != "" {
		api.Authorize = TokenAuth(token)
	} else {
		env.Logger.Warn("console actions are off: KSAGA_CONSOLE_TOKEN is not set (reads work without it)")
	}
	views, err := ParseViews(env.Getenv(EnvViews), env.Getenv)
	if err != nil {
		return nil, err
	}
	c, err := New(Options{API: api, Views: views, Logger: env.Logger, Transport: knfunc.NewHTTPClient(viewTimeout).Transport})
	if err != nil {
		return nil, err
	}
	env.Metrics.Registry.MustRegister(telemetry.NewSagaCollector(env.Store, func(context.Context) ([]string, error) {
		return sagas.Names(), nil
	}, env.Logger))
	return &knfunc.Function{Routes: c.Routes()}, nil
}

var _ knfunc.Setup = Setup
