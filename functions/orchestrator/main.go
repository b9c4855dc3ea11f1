// Command orchestrator runs sagas in orchestration mode, for every saga
// definition it is configured with (KSAGA_SAGAS): it hears every step's
// result and replies with the next command — the next step, or the
// compensation of the newest completed step — until it ends the saga with
// its completed or compensated event (ops.Orchestrator). It keeps nothing
// in memory between events, so it scales to zero too.
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
	return &knfunc.Function{Step: ops.NewOrchestrator(sagas, env.Store, env.Source(), env.Logger)}, nil
}
