package telemetry

import (
	"context"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ksaga/ksaga/saga"
)

// StepObserver records every event a step serves: one span (a child of the
// trace the request carried, so one saga is one trace), the step metrics,
// and the span's trace context in the response headers so the Broker hands
// it on with the reply.
type StepObserver struct {
	Service string
	Metrics *Metrics
	Tracer  trace.Tracer
	// Known reports the event types the step handles; others are labelled
	// "other" so a sender cannot blow up the metrics' cardinality. Nil
	// labels every type "other".
	Known func(eventType string) bool
}

func (o *StepObserver) typeLabel(t string) string {
	if o.Known != nil && o.Known(t) {
		return t
	}
	return "other"
}

// Start implements knfunc.Observer.
func (o *StepObserver) Start(ctx context.Context, w http.ResponseWriter, r *http.Request, e *event.Event) (context.Context, func(*event.Event, int, error)) {
	begin := time.Now()
	typ := o.typeLabel(e.Type())
	ctx = Extract(ctx, r.Header, e)
	ctx, span := o.Tracer.Start(ctx, "ksaga.step "+typ, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() { // attributes only for a span that is kept
		span.SetAttributes(
			attribute.String("cloudevents.event_id", e.ID()),
			attribute.String("cloudevents.event_type", e.Type()),
			attribute.String("cloudevents.event_source", e.Source()),
			attribute.String("ksaga.saga_id", saga.SagaIDOf(*e)),
			attribute.String("ksaga.service", o.Service),
		)
	}
	ctx, rep := saga.WithReport(ctx)
	return ctx, func(reply *event.Event, status int, err error) {
		outcome := rep.Outcome()
		switch {
		case outcome == "refused": // a 400 too, but a security event: counted apart
		case err != nil && status < 500:
			outcome = "invalid"
		case err != nil && status == http.StatusServiceUnavailable:
			outcome = "transient"
		case err != nil:
			outcome = "internal"
		case outcome == "" && reply != nil:
			outcome = "replied"
		case outcome == "":
			outcome = "acked"
		}
		m := o.Metrics
		m.stepEvents.Get([3]string{o.Service, typ, outcome}).Inc()
		m.stepDuration.Get([2]string{o.Service, typ}).Observe(time.Since(begin).Seconds())
		switch outcome {
		case "invalid", "refused":
			m.errors.WithLabelValues(o.Service, "bad_input").Inc()
		case "transient", "internal":
			m.errors.WithLabelValues(o.Service, outcome).Inc()
		case "business_failure":
			m.errors.WithLabelValues(o.Service, "business").Inc()
		}
		if st := rep.Finished(); st != "" {
			m.sagas.WithLabelValues(o.Service, string(st)).Inc()
		}
		if reply != nil {
			m.stepReplies.Get([2]string{o.Service, reply.Type()}).Inc()
		}
		if span.IsRecording() {
			span.SetAttributes(attribute.String("ksaga.outcome", outcome), attribute.Int("http.response.status_code", status))
			if rep.Handled {
				span.SetAttributes(attribute.String("ksaga.step", rep.Step), attribute.String("ksaga.saga_status", string(rep.Result.Status)),
					attribute.Int64("ksaga.saga_version", rep.Result.Version))
			}
			if reply != nil {
				span.SetAttributes(attribute.String("ksaga.reply_type", reply.Type()), attribute.String("ksaga.reply_id", reply.ID()))
			}
		}
		if status >= 500 {
			span.SetStatus(codes.Error, errText(err))
		}
		Inject(ctx, w.Header())
		span.End()
	}
}

// Rejected implements knfunc.Observer.
func (o *StepObserver) Rejected(*http.Request, int, error) {
	o.Metrics.events.WithLabelValues(o.Service, "none", "invalid").Inc()
	o.Metrics.errors.WithLabelValues(o.Service, "bad_input").Inc()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
