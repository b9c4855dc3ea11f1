// Command deadletter is the dead-letter sink of the sagas it is configured
// with (KSAGA_SAGAS): every Trigger's deliverySpec.deadLetterSink. It
// records each event the Broker could not deliver and makes its saga face
// it (ops.DeadLetters): a compensation that could not be delivered marks
// the saga compensation_failed, to be redriven; a forward step that could
// not be delivered fails the saga through that step's failure event,
// published to the Broker (K_SINK), so it compensates instead of hanging;
// anything else is kept for operators to inspect and replay.
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
	dl, err := ops.NewDeadLetters(env.Operator(sagas))
	if err != nil {
		return nil, err
	}
	return &knfunc.Function{Step: dl}, nil
}
