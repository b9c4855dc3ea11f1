package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
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
// POST /orders) reads the index of unfinished sagas and fails each such saga
// with the failure event of the step it waits on, sent to the Broker: the
// saga then compensates as after any other failure, in either mode. The
// transition is a compare-and-set on the saga's version, so a step that
// answers late finds the saga moved on and changes nothing, and replicas
// sweeping at once fail a saga once.

// outcomeTimedOut is the history outcome of a saga failed by the sweeper.
const outcomeTimedOut = "timed_out"

// sweepPage is how many overdue sagas one index read returns.
const sweepPage = 100

// eventSender publishes events to the Broker (knfunc.Sink).
type eventSender interface {
	Send(ctx context.Context, e event.Event) error
}

type sweeper struct {
	rdb    redis.UniversalClient
	store  saga.Store
	def    ordersaga.Definition
	sink   eventSender
	logger *slog.Logger
	now    func() time.Time
	// timedOut counts the sagas failed (ksaga_sagas_timed_out_total).
	timedOut prometheus.Counter
}

// newTimedOutCounter is the sweeper's counter, for the function's registry.
func newTimedOutCounter() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "ksaga_sagas_timed_out_total",
		Help: "Running sagas the deadline sweeper failed into compensation."})
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

// sweep fails every running saga past its deadline and returns how many
// failure events it sent. A saga it failed earlier whose compensation has
// not moved since (the send failed, or the event was lost) gets the same
// event again.
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

// expire fails one overdue saga, or sends its failure event again; it
// reports whether it sent one.
func (s *sweeper) expire(ctx context.Context, id string, now time.Time) (bool, error) {
	st, err := s.store.Get(ctx, id)
	if errors.Is(err, saga.ErrNotFound) {
		return false, nil // expired since it was indexed
	}
	if err != nil {
		return false, err
	}
	resend := st.Status == saga.StatusCompensating && len(st.Steps) > 0 && st.Steps[len(st.Steps)-1].Outcome == outcomeTimedOut
	if !resend && (st.Status != saga.StatusRunning || !st.Overdue(now)) {
		return false, nil
	}
	// The sweeper's input, as an event: one per saga, so that failing it
	// again is a duplicate the Store answers with the stored reply.
	in := event.New()
	in.SetID("deadline-" + id)
	in.SetSource(ordersaga.SourceSweeper)
	in.SetType(ordersaga.DeadlinePassed)
	in.SetTime(now)
	in.SetExtension(saga.ExtCorrelationID, id)
	in.SetExtension(saga.ExtSagaVersion, strconv.FormatInt(st.Version, 10))
	ctx = telemetry.WithEvent(ctx, &in)
	p := &saga.Participant{Source: ordersaga.SourceSweeper, Store: s.store, Logger: s.logger,
		Actions: map[string]saga.Action{ordersaga.DeadlinePassed: func(context.Context, saga.Input) (saga.Transition, error) {
			return s.timeout(st)
		}}}
	reply, err := p.Handle(ctx, in)
	if err != nil || reply == nil {
		return false, err // nil reply: the saga moved on since it was read
	}
	if resend && reply.Extensions()[saga.ExtSagaVersion] != strconv.FormatInt(st.Version, 10) {
		return false, nil // its compensation is under way
	}
	if !resend {
		s.timedOut.Inc()
		s.logger.WarnContext(ctx, "saga past its deadline: failing it", "deadline", st.Deadline, "failure", reply.Type())
	}
	if err := s.sink.Send(ctx, *reply); err != nil {
		return false, fmt.Errorf("publish %s: %w", reply.Type(), err)
	}
	return true, nil
}

// timeout is the transition that fails a running saga: the step it waits
// on fails, with that step's failure event.
func (s *sweeper) timeout(st saga.State) (saga.Transition, error) {
	next, ok := s.def.Next(st.Compensate)
	if !ok || next.Failed == "" {
		return saga.Transition{}, fmt.Errorf("saga %s: no failure event for the step after %v", st.ID, st.Compensate)
	}
	return saga.Transition{
		Step:  next.Name,
		Allow: []saga.Status{saga.StatusRunning},
		OnSuccess: saga.Outcome{Outcome: outcomeTimedOut, Status: saga.StatusCompensating,
			Reason: fmt.Sprintf("deadline %s passed waiting on the %s step", st.Deadline.UTC().Format(time.RFC3339), next.Name),
			Reply:  &saga.Reply{Type: next.Failed}},
	}, nil
}
