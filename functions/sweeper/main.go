// Command sweeper is the deadline sweeper of the sagas it is configured
// with (KSAGA_SAGAS), woken by a Knative PingSource: every event it
// receives runs one pass (ops.Sweeper), which aborts the sagas past their
// deadline or a step's timeout (they compensate), sends again the events of
// sagas that waited past their due time, and rejects accepted sagas whose
// start never ran. Between pings it can scale to zero: no timer service, no
// always-on function.
package main

import (
	"context"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
)

func main() { knfunc.Main(setup) }

func setup(_ context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	sagas, err := ops.RegistryFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	op := env.Operator(sagas)
	sw, err := ops.NewSweeper(op)
	if err != nil {
		return nil, err
	}
	for _, c := range sw.Collectors() {
		env.Metrics.Registry.MustRegister(c)
	}
	return &knfunc.Function{Step: sw}, nil
}
