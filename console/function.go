package console

import (
	"context"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/telemetry"
)

// Setup builds the console function (functions/console) from its
// environment: the definitions of KSAGA_SAGAS, the action token
// KSAGA_CONSOLE_TOKEN and operators' OIDC (KSAGA_CONSOLE_OIDC_*; actions
// are off without either), the views of
// KSAGA_CONSOLE_VIEWS, the trace link KSAGA_TRACE_URL, and the fleet's saga
// gauges on /metrics.
func Setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	sagas, err := ops.RegistryFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	api := &ops.API{Op: env.Operator(sagas), TraceURL: env.Getenv("KSAGA_TRACE_URL")}
	// Operators act with the token, or with an ID token of their own
	// (OIDC: the token's subject is the actor): the token is compared
	// first, so an unreachable issuer never locks it out.
	oidc, err := knfunc.VerifierFromEnv(env.Getenv, EnvOIDCPrefix, "console operators", env.Logger)
	if err != nil {
		return nil, err
	}
	var token Authorize
	if t := env.Getenv("KSAGA_CONSOLE_TOKEN"); t != "" {
		token = TokenAuth(t)
	}
	if api.Authorize = AnyOf(token, OIDCAuth(oidc)); api.Authorize == nil {
		env.Logger.Warn("console actions are off: KSAGA_CONSOLE_TOKEN is not set, nor " + EnvOIDCPrefix + "ISSUER (reads work without them)")
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
