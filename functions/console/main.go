// Command console is the operators' view of the sagas it is configured
// with (KSAGA_SAGAS): the admin API (ops.API: sagas by definition, status,
// due time and creation time, one saga's record and history, dead letters,
// abort, redrive, replay) and the fleet's saga gauges on /metrics. Reads
// need no credentials; actions need Authorization: Bearer
// $KSAGA_CONSOLE_TOKEN (and are turned off without it). Cluster-local by
// default.
package main

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

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
	if token := env.Getenv("KSAGA_CONSOLE_TOKEN"); token != "" {
		api.Authorize = tokenAuth(token)
	} else {
		env.Logger.Warn("console actions are off: KSAGA_CONSOLE_TOKEN is not set (reads work without it)")
	}
	env.Metrics.Registry.MustRegister(telemetry.NewSagaCollector(env.Store, func(context.Context) ([]string, error) {
		return sagas.Names(), nil
	}, env.Logger))
	return &knfunc.Function{Routes: api.Routes()}, nil
}

// tokenAuth authorizes requests bearing token; the actor is the
// Ksaga-Actor header's name (who is acting), or "token".
func tokenAuth(token string) func(r *http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return "", ops.ErrUnauthenticated
		}
		return actorName(r.Header.Get("Ksaga-Actor")), nil
	}
}

// actorName keeps a printable, short actor name ("token" if none).
func actorName(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 64 {
			break
		}
		if c > ' ' && c < 0x7f || c == ' ' {
			b.WriteRune(c)
		}
	}
	if n := strings.TrimSpace(b.String()); n != "" {
		return n + " (token)"
	}
	return "token"
}
