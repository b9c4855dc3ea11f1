package knfunc

import (
	"context"
	"errors"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// FaultKey is the Redis key that makes a function fail events when fault
// injection is on (KSAGA_FAULT_INJECTION=true): eventType is an event type,
// or the command a saga step runs (its key matches that step's action in
// both modes, whichever event carries the command). An integer N fails the
// next N deliveries with 503, "-1" fails every one. A step fails only
// events it admitted: forged ones are still refused. Tests use it to drive
// compensations through retries and dead letters.
func FaultKey(service, eventType string) string {
	return "ksaga:fault:" + service + ":" + eventType
}

var faultLua = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == '-1' then return 1 end
if tonumber(v) > 0 then redis.call('DECR', KEYS[1]) return 1 end
return 0`)

// ErrInjected is the error of an injected fault.
var ErrInjected = errors.New("injected fault")

// WithFaults wraps step so that it fails as FaultKey says. A step built
// with Env.Participant checks faults itself, once it has admitted an event
// (so forged events are still refused, not failed).
func WithFaults(step saga.Step, rdb redis.UniversalClient, service string) saga.Step {
	return saga.StepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
		if err := fault(ctx, rdb, service, e.Type()); err != nil {
			return nil, err
		}
		return step.Handle(ctx, e)
	})
}

// fault returns the injected fault for an event of type typ, if any.
func fault(ctx context.Context, rdb redis.UniversalClient, service, typ string) error {
	hit, err := faultLua.Run(ctx, rdb, []string{FaultKey(service, typ)}).Int()
	if err != nil {
		return saga.Transient(err, "redis")
	}
	if hit == 1 {
		return saga.Transient(ErrInjected, "%s for %s", service, typ)
	}
	return nil
}
