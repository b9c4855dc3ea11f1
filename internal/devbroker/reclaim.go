package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"knative.dev/eventing/pkg/kncloudevents"
)

// Reclaiming pending entries while Run is active.
//
// An entry read with XREADGROUP is pending for this consumer until it is
// acknowledged. Run holds every entry it read in memory (held) from the
// read until its acknowledgement was attempted. An entry that is pending
// for this consumer but not held was read by Redis for this consumer and
// never reached Run: the reply to an XREADGROUP was lost when redis-server
// died after executing it (with appendfsync always the read is in the AOF
// before the reply is sent), or go-redis retried a read whose first reply
// was lost. Nothing would deliver such an entry until the next Run, so the
// reclaimer claims it back (XCLAIM to this consumer, which counts a new
// delivery) and dispatches it like a pending entry found at start-up.
//
// The rule for "idle long enough": an entry is claimed only when Redis
// says it has been idle (since it was last read or claimed) for longer
// than the longest delivery any Trigger of its Broker can make, plus
// reclaimMargin:
//
//	budget(policy)  = (retry+1) × timeout + Σ_{i<retry} max(backoff(i), retryAfterMax)
//	reclaim idle    = max over the Broker's Triggers of
//	                  budget(delivery) + budget(dead letter sink, same policy) + reclaimMargin
//
// where timeout is delivery.timeout (unboundedAttempt when unset: Knative
// sets no limit) and retryAfterMax counts only when delivery.retryAfterMax
// is set. So even a second broker process sharing the consumer name by
// mistake does not take an entry whose delivery is merely slow. Within one
// process held is what prevents a double delivery: an entry that waits for
// a free worker (MaxInFlight) or whose subscriber never answers stays
// held and is never reclaimed, whatever its idle time. The result is
// capped at maxReclaimIdle.
const (
	// reclaimMargin covers the round trips around a delivery (the read's
	// reply, the acknowledgement's transaction).
	reclaimMargin = time.Second
	// unboundedAttempt is what one attempt counts for in the budget of a
	// policy without delivery.timeout.
	unboundedAttempt = 30 * time.Second
	// maxReclaimIdle caps the idle threshold (a policy with many
	// exponential retries has an astronomical budget).
	maxReclaimIdle = time.Hour
	// reclaimEveryMin and reclaimEveryMax bound how often the pending list
	// is scanned: a quarter of the idle threshold, within these bounds.
	reclaimEveryMin = 100 * time.Millisecond
	reclaimEveryMax = 10 * time.Second
)

// policyBudget is the longest time a delivery under rc can take: every
// attempt runs into its timeout and every retry waits its longest backoff.
func policyBudget(rc kncloudevents.RetryConfig) time.Duration {
	attempt := rc.RequestTimeout
	if attempt <= 0 {
		attempt = unboundedAttempt
	}
	if rc.RetryMax >= 10000 {
		return maxReclaimIdle
	}
	total := time.Duration(0)
	add := func(d time.Duration) { total = min(total+min(max(d, 0), maxReclaimIdle), maxReclaimIdle) }
	for i := 0; i <= rc.RetryMax && total < maxReclaimIdle; i++ {
		add(attempt)
		if i == rc.RetryMax {
			break
		}
		var wait time.Duration
		if rc.Backoff != nil {
			if wait = rc.Backoff(i, nil); wait < 0 { // an overflowing exponential
				wait = maxReclaimIdle
			}
		}
		if rc.RetryAfterMaxDuration != nil {
			wait = max(wait, *rc.RetryAfterMaxDuration)
		}
		add(wait)
	}
	return total
}

// idleThreshold is the reclaim threshold of a broker's pending entries
// (see the rule above).
func idleThreshold(triggers []*triggerState) time.Duration {
	longest := time.Duration(0)
	for _, t := range triggers {
		d := policyBudget(t.retry)
		if t.dls != nil {
			d += policyBudget(t.dlsRetry)
		}
		longest = max(longest, d)
	}
	return min(longest+reclaimMargin, maxReclaimIdle)
}

// heldSet is the set of entries a Run read and has not finished.
type heldSet struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (h *heldSet) add(msgs []redis.XMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids == nil {
		h.ids = make(map[string]struct{}, len(msgs))
	}
	for i := range msgs {
		h.ids[msgs[i].ID] = struct{}{}
	}
}

func (h *heldSet) remove(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.ids, id)
	}
}

// missing returns the ids that are not held.
func (h *heldSet) missing(ids []string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, id := range ids {
		if _, ok := h.ids[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// reclaimLoop scans the broker's pending entries every quarter of the idle
// threshold, once the start-up recovery has read the pending list.
func (b *Broker) reclaimLoop(ctx context.Context, br *brokerRun) {
	select {
	case <-br.recoveryDone:
	case <-ctx.Done():
		return
	}
	log := b.log.With(slog.String("broker", br.name.String()))
	every := min(max(br.reclaimIdle/4, reclaimEveryMin), reclaimEveryMax)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		if err := b.reclaim(ctx, br, log); err != nil && ctx.Err() == nil {
			log.Warn("devbroker: scan pending entries (retried)", slog.Any("error", err))
		}
	}
}

// reclaim claims the entries of this consumer that have been idle longer
// than the threshold and that this Run does not hold, and hands them to
// the dispatcher.
func (b *Broker) reclaim(ctx context.Context, br *brokerRun, log *slog.Logger) error {
	start := "-"
	for ctx.Err() == nil {
		pending, err := b.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: br.key, Group: groupName, Idle: br.reclaimIdle,
			Start: start, End: "+", Count: readCount, Consumer: b.consumer,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("XPENDING %s: %w", br.key, err)
		}
		ids := make([]string, len(pending))
		for i, p := range pending {
			ids[i] = p.ID
		}
		if lost := br.held.missing(ids); len(lost) > 0 {
			msgs, err := b.rdb.XClaim(ctx, &redis.XClaimArgs{
				Stream: br.key, Group: groupName, Consumer: b.consumer, MinIdle: br.reclaimIdle, Messages: lost,
			}).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("XCLAIM %s: %w", br.key, err)
			}
			if len(msgs) > 0 {
				br.held.add(msgs)
				log.Warn("devbroker: redelivering pending entries that no delivery held (a read whose reply was lost)",
					slog.Int("count", len(msgs)), slog.Duration("idle_over", br.reclaimIdle))
				select {
				case br.reclaimed <- msgs:
				case <-ctx.Done():
					return nil // claimed, not dispatched: pending for the next scan or Run
				}
			}
		}
		if len(pending) < readCount {
			return nil
		}
		start = "(" + pending[len(pending)-1].ID
	}
	return nil
}
