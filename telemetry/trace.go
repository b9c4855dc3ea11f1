package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
)

// traceID returns the hex trace id of the context's span, or "".
func traceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
