// Command console is the operators' view of the sagas it is configured
// with (KSAGA_SAGAS): the web console at / (overview, sagas, one saga's
// live timeline, dead letters, domain views from KSAGA_CONSOLE_VIEWS), the
// admin API under /api/v1 and the fleet's saga gauges on /metrics (package
// console). Reads need no credentials; actions need Authorization: Bearer
// $KSAGA_CONSOLE_TOKEN (and are turned off without it). KSAGA_TRACE_URL
// (e.g. http://jaeger:16686/trace/{trace_id}) links each traced saga to
// its trace. Cluster-local by default.
package main

import (
	"context"

	webconsole "github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(setup) }

func setup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return webconsole.Setup(ctx, env)
}
