package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// The deadline sweeper. A saga still running past its deadline
// (KSAGA_SAGA_TIMEOUT after it started) waits on a step that is not going to
// answer in time: an event lost, or a function that took it and never
// replied. Every KSAGA_SWEEP_INTERVAL the order function (always on, for
// POST /orders) reads the index of unfinished sagas and aborts each such
// saga (abort.go). Replicas sweeping at once abort a saga once.

// sweepPage is how many overdue sagas one index read returns.
const sweepPage = 100

type sweeper struct {
	*aborter
	rdb    redis.UniversalClient
	sink   eventSender
	logger *slog.Logger
	now    func() time.Time
}

// run sweeps every interval until ctx is done.
func (s *sweeper) run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := s.sweep(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "deadline sweep", "error", err.Error())
		}
	}
}

// sweep aborts every running saga past its deadline and returns how many
// failure events it sent. An overdue saga aborted earlier (by the sweeper
// or a cancel) whose compensation has not started (the send failed, or the
// event was lost) gets the same event again.
func (s *sweeper) sweep(ctx context.Context) (int, error) {
	now := s.now()
	upTo := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	sent := 0
	var errs []error
	for offset := int64(0); ; offset += sweepPage {
		ids, err := s.rdb.ZRangeByScore(ctx, redisstore.ActiveKey, &redis.ZRangeBy{Min: "-inf", Max: upTo, Offset: offset, Count: sweepPage}).Result()
		if err != nil {
			return sent, fmt.Errorf("read overdue sagas: %w", err)
		}
		for _, id := range ids {
			ok, err := s.expire(ctx, id, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("saga %s: %w", id, err))
			}
			if ok {
				sent++
			}
		}
		if len(ids) < sweepPage {
			return sent, errors.Join(errs...)
		}
	}
}

// expire aborts one overdue saga, or sends its failure event again; it
// reports whether it sent one.
func (s *sweeper) expire(ctx context.Context, id string, now time.Time) (bool, error) {
	ctx = telemetry.WithAttrs(ctx, slog.String(telemetry.AttrCorrelationID, id))
	st, err := s.store.Get(ctx, id)
	if errors.Is(err, saga.ErrNotFound) {
		return false, nil // expired since it was indexed
	}
	if err != nil {
		return false, err
	}
	if last := len(st.Steps) - 1; st.Status == saga.StatusCompensating && st.Overdue(now) && last >= 0 &&
		st.Steps[last].Outcome == outcomeFailed && st.Steps[last].Version == st.Version {
		return s.nudge(ctx, st, now) // nothing has happened since the failure, not even an orchestrator's decision
	}
	// a saga aborted earlier, by this sweeper or by a cancel whose failure
	// event was lost, gets that event again while nothing has moved
	c := deadlineCause
	if abortedBy(st, cancelCause) {
		c = cancelCause
	}
	again := abortedBy(st, c)
	if !again && (st.Status != saga.StatusRunning || !st.Overdue(now)) {
		return false, nil
	}
	failure, applied, err := s.abort(ctx, st, c, func(waiting string) string {
		return fmt.Sprintf("deadline %s passed waiting on the %s step", st.Deadline.UTC().Format(time.RFC3339), waiting)
	}, now)
	if err != nil || failure == nil {
		return false, err // nil: the saga moved on since it was read
	}
	if !applied && !waitsOn(st, failure) {
		return false, nil // its compensation is under way
	}
	if err := s.sink.Send(ctx, *failure); err != nil {
		return false, fmt.Errorf("publish %s: %w", failure.Type(), err)
	}
	return true, nil
}

// outcomeFailed is the history outcome of a forward step that failed (the
// step's own business failure, or the dead-letter sink's).
const outcomeFailed = "failed"

// nudge publishes again the failure event of a saga whose compensation
// never started: a forward step failed, the failure event was published
// (by the step's reply or the dead-letter sink), and nothing has moved
// since (the saga is still at the failure's version: not even an
// orchestrator has decided on it), past the saga's deadline; e.g. the sink
// applied the failure but could not reach the broker through all of its
// retries. The event is the
// awaited step's failure at the saga's current version, so whichever copy
// arrives first is the only one applied; its id is fixed for that version,
// so a nudge repeated by the next sweep is a duplicate.
func (s *sweeper) nudge(ctx context.Context, st saga.State, now time.Time) (bool, error) {
	next, ok := s.def.Next(st.Compensate)
	if !ok || next.Failed == "" {
		return false, nil
	}
	ctx, e := ownEvent(ctx, st, "nudge-"+st.ID+"-"+strconv.FormatInt(st.Version, 10), ordersaga.SourceSweeper, next.Failed, now)
	if err := e.SetData(event.ApplicationJSON, json.RawMessage(st.Data)); err != nil {
		return false, err
	}
	if err := s.sink.Send(ctx, e); err != nil {
		return false, fmt.Errorf("publish %s: %w", e.Type(), err)
	}
	s.logger.WarnContext(ctx, "compensation never started: failure event sent again", "failure", e.Type(), "saga_version", st.Version)
	return true, nil
}
