package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Sweeper is the deadline sweeper of every saga it serves. No timer
// service runs beside the cluster: each saga's record holds when it is due
// (its deadline, its awaited step's timeout, or a nudge), the Store indexes
// it, and a Knative PingSource wakes the sweeper every so often (any event
// POSTed to it runs one pass), so no function stays up for it. Each pass
// acts on every saga past its due time:
//
//   - accepted, its start command never run: the command is sent again; at
//     the saga's deadline, the saga is rejected;
//   - running past its deadline or its awaited step's timeout: aborted at
//     the step it waits on (recorded timed_out; that step's failure event
//     is published, so the saga compensates);
//   - running or compensating, nothing moved since its last event: that
//     event is sent again, with its own id (a lost event or reply is
//     redelivered; a step that handled it answers with its stored reply).
//
// Several sweepers (or passes) at once act once: every action is a
// compare-and-set on the saga's version, or a duplicate event.
type Sweeper struct {
	op      *Operator
	aborted *prometheus.CounterVec
	// Page is how many due sagas one pass reads at a time (default 100);
	// Budget bounds index entries compacted per index per pass (default
	// 10,000).
	Page, Budget int
}

// NewSweeper returns the sweeper; op.Sink is required. Register its
// Collectors with the function's metrics.
func NewSweeper(op *Operator) (*Sweeper, error) {
	if op.Sink == nil {
		return nil, fmt.Errorf("the deadline sweeper publishes events: %w", ErrNoSink)
	}
	s := &Sweeper{op: op, Page: 100, Budget: 10000,
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ksaga_sagas_aborted_total",
			Help: "Sagas the deadline sweeper failed into compensation, by saga and cause."}, []string{"saga", "cause"})}
	for _, n := range op.Sagas.Names() {
		s.aborted.WithLabelValues(n, CauseDeadline.Name) // exported at 0 from the start, so rate() sees the first one
	}
	return s, nil
}

// Collectors are the sweeper's metrics.
func (s *Sweeper) Collectors() []prometheus.Collector { return []prometheus.Collector{s.aborted} }

// Handles reports whether the sweeper serves eventType: it runs a pass on
// any event (a PingSource's dev.knative.sources.ping).
func (s *Sweeper) Handles(string) bool { return true }

// Handle implements saga.Step: any event runs one pass.
func (s *Sweeper) Handle(ctx context.Context, _ event.Event) (*event.Event, error) {
	n, err := s.Sweep(ctx)
	if err != nil {
		return nil, saga.Transient(err, "sweep")
	}
	s.op.logger().InfoContext(ctx, "swept", "acted_on", n)
	return nil, nil
}

// Sweep runs one pass and returns on how many sagas it acted. Errors on
// one saga do not stop the pass; they are joined.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	now := s.op.now()
	acted := 0
	var errs []error
	seen := map[string]bool{}
	compacted := false
	for {
		// Only the definitions it serves: due sagas of others (another
		// deployment's, a removed definition's) must not fill its pages.
		ids, err := s.op.Store.Due(ctx, now, s.Page, s.op.Sagas.Names()...)
		if err != nil {
			return acted, fmt.Errorf("read due sagas: %w", err)
		}
		fresh := 0
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id], fresh = true, fresh+1
			ok, err := s.sweepOne(ctx, id, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("saga %s: %w", id, err))
			}
			if ok {
				acted++
			}
		}
		if len(ids) < s.Page {
			break
		}
		if fresh == 0 {
			// A full page this pass has seen and left: index entries
			// whose records expired hold the head of the due index.
			// Compact them away once, then read on past them.
			if compacted {
				break
			}
			compacted = true
			n, err := s.op.Store.Compact(ctx, now, s.Budget)
			if err != nil {
				errs = append(errs, fmt.Errorf("compact indexes: %w", err))
				break
			}
			if n == 0 {
				break
			}
		}
	}
	if !compacted {
		if _, err := s.op.Store.Compact(ctx, now, s.Budget); err != nil {
			errs = append(errs, fmt.Errorf("compact indexes: %w", err))
		}
	}
	return acted, errors.Join(errs...)
}

// sweepOne acts on one due saga; it reports whether it did.
func (s *Sweeper) sweepOne(ctx context.Context, id string, now time.Time) (bool, error) {
	ctx = telemetry.WithAttrs(ctx, slog.String(telemetry.AttrCorrelationID, id))
	rec, err := s.op.Store.Get(ctx, id)
	if errors.Is(err, saga.ErrNotFound) {
		return false, nil // expired since it was indexed
	}
	if err != nil {
		return false, err
	}
	if !rec.Overdue(now) {
		return false, nil // moved since it was indexed
	}
	d, err := s.op.def(rec)
	if err != nil {
		s.op.logger().WarnContext(ctx, "due saga of another definition: left alone", "saga", rec.Saga)
		return false, nil
	}
	late := now.After(rec.Deadline)
	why := fmt.Sprintf("deadline %s passed", rec.Deadline.UTC().Format(time.RFC3339))
	if rec.Status == saga.StatusRunning && !late {
		if i, ok := d.Awaited(rec.Compensate); ok {
			if sd := saga.StepDeadline(d, i, rec.UpdatedAt); !sd.IsZero() && now.After(sd) {
				late, why = true, fmt.Sprintf("the %s step did not answer within %s", d.Steps[i].Name, time.Duration(d.Steps[i].Timeout))
			}
		}
	}
	switch {
	case late && (rec.Status == saga.StatusRunning || rec.Status == saga.StatusAccepted):
		ab, err := s.op.Abort(ctx, id, CauseDeadline, "", func(step string) string {
			return why + " waiting on the " + step + " step"
		})
		if errors.Is(err, ErrConflict) {
			return false, nil
		}
		// Counted when this pass aborted it, even if its failure event
		// could not be published (a later pass sends it again); not when
		// another sweeper had (this one only sent its event again).
		if ab.Applied {
			s.aborted.WithLabelValues(rec.Saga, CauseDeadline.Name).Inc()
		}
		return ab.Applied, err
	default:
		// nothing moved since the saga's last event: send it again, and
		// look again later
		if err := s.op.Resend(ctx, rec); err != nil {
			return false, err
		}
		due := now.Add(s.op.nudge())
		switch rec.Status {
		case saga.StatusRunning:
			i, _ := d.Awaited(rec.Compensate)
			due = saga.DueAwaiting(d, i, rec.Deadline, now, s.op.Nudge)
			if sd := saga.StepDeadline(d, i, rec.UpdatedAt); !sd.IsZero() && sd.Before(due) {
				due = sd // not past: a running saga past it was aborted above
			}
		case saga.StatusAccepted:
			// its first step has not run: its timeout runs from the
			// command sent now, not from the acceptance (long past, maybe:
			// due then would be in the past, and the saga due at every pass)
			due = saga.DueAwaiting(d, 0, rec.Deadline, now, s.op.Nudge)
		}
		if _, err := s.op.Store.Reschedule(ctx, rec.Saga, id, rec.Version, due); err != nil {
			return false, err
		}
		if rec.Next != nil {
			s.op.logger().WarnContext(ctx, "saga waited past its due time: its last event sent again", "type", rec.Next.Type, "saga_version", rec.Version)
		}
		return true, nil
	}
}
