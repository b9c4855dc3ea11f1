// Package telemetry is ksaga's observability: JSON logs that carry the saga's
// correlation attributes on every line, Prometheus metrics and OpenTelemetry
// traces. Functions get it through knfunc; nothing here is global.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Log attribute keys of the saga protocol.
const (
	AttrCorrelationID = "correlationid"
	AttrCausationID   = "causationid"
	AttrEventID       = "ce_id"
	AttrEventType     = "ce_type"
	AttrEventSource   = "ce_source"
)

type attrsKey struct{}

// WithAttrs returns a context whose log lines (through a logger from
// NewLogger) carry attrs.
func WithAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(attrsKey{}).([]slog.Attr)
	all := make([]slog.Attr, 0, len(prev)+len(attrs))
	all = append(append(all, prev...), attrs...)
	return context.WithValue(ctx, attrsKey{}, all)
}

// WithEvent returns a context whose log lines carry the event's saga id
// (correlationid), causationid, id, type and source.
func WithEvent(ctx context.Context, e *event.Event) context.Context {
	ext := e.Extensions()
	corr, _ := ext["correlationid"].(string)
	cause, _ := ext["causationid"].(string)
	return WithAttrs(ctx,
		slog.String(AttrCorrelationID, corr), slog.String(AttrCausationID, cause),
		slog.String(AttrEventID, e.ID()), slog.String(AttrEventType, e.Type()), slog.String(AttrEventSource, e.Source()))
}

// ParseLevel reads debug|info|warn|error (default info).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if strings.TrimSpace(s) == "" {
		return slog.LevelInfo, nil
	}
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// NewLogger returns a JSON logger writing to w whose lines include the
// attributes of the context they are logged with (see WithEvent), and the
// trace id of the context's span when tracing is on.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(contextHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})})
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if attrs, ok := ctx.Value(attrsKey{}).([]slog.Attr); ok {
		r.AddAttrs(attrs...)
	}
	if id := traceID(ctx); id != "" {
		r.AddAttrs(slog.String("trace_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}
