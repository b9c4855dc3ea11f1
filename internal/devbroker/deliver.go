package devbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/transformer"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"knative.dev/pkg/apis"

	knbroker "knative.dev/eventing/pkg/broker"
	"knative.dev/eventing/pkg/kncloudevents"
	"knative.dev/eventing/pkg/kncloudevents/attributes"
)

// attempt is the per-delivery state that the wrapped CheckRetry sees
// through the request context (kncloudevents passes our context down to
// every HTTP attempt).
type attempt struct {
	b         *Broker
	t         *triggerState
	eventType string
	attempts  int
	reply     *event.Event // parsed reply of the last 2xx response, if any
	tooLarge  bool         // the last 2xx response's body exceeded the size limit
}

type attemptKey struct{}

// errNotAnEvent is the reason a 2xx response is turned into a 502, as
// Knative's broker-filter does (filter_handler.go writeResponse).
var errNotAnEvent = errors.New("received a non-empty response not recognized as CloudEvent. The response MUST be either empty or a valid CloudEvent")

// checkRetry wraps the delivery policy's CheckRetry (kncloudevents'
// SelectiveRetry) so that a 2xx response whose non-empty body is not a
// CloudEvent, or is a CloudEvent that cannot be parsed, becomes a 502
// before the retry decision. Retries, backoff and the final failure code
// then all come from kncloudevents, as they would for a 502 from
// broker-filter in a cluster. A parsable reply is kept in the attempt so it
// is not parsed twice.
func (b *Broker) checkRetry(rc kncloudevents.RetryConfig) kncloudevents.CheckRetry {
	inner := rc.CheckRetry
	retryMax := rc.RetryMax
	return func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		a, _ := ctx.Value(attemptKey{}).(*attempt)
		if a != nil {
			a.attempts++
			a.reply, a.tooLarge = nil, false
		}
		if err == nil && resp != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
			reply, bad := inspectResponse(ctx, resp, b.maxBody)
			switch {
			case errors.Is(bad, errTooLarge):
				// Not parsed (a cut structured event would look malformed):
				// the 2xx stands, and deliver rejects the reply with 413.
				if a != nil {
					a.tooLarge = true
				}
			case bad != nil:
				resp.StatusCode = http.StatusBadGateway
				resp.Status = "502 Bad Gateway"
				if a != nil {
					b.log.Info("devbroker: subscriber answered 2xx with a body that is not a CloudEvent; treating it as 502",
						slog.String("trigger", a.t.name.String()), slog.Any("error", bad))
				}
			case a != nil:
				a.reply = reply
			}
		}
		retry, cerr := inner(ctx, resp, err)
		if retry && a != nil && a.attempts <= retryMax {
			code := http.StatusInternalServerError
			if resp != nil && err == nil {
				code = resp.StatusCode
			}
			b.obs.Retried(labelsFor(a.t.broker, a.t, a.eventType), code)
		}
		return retry, cerr
	}
}

// errTooLarge reports a response body over the broker's size limit.
var errTooLarge = errors.New("response body exceeds the size limit")

// inspectResponse reads a 2xx response body, at most maxBody+1 bytes
// (putting it back for kncloudevents), and reports whether it is empty, not
// a CloudEvent (errNotAnEvent), a CloudEvent over maxBody (errTooLarge), a
// CloudEvent (returned) or a malformed one (bad).
func inspectResponse(ctx context.Context, resp *http.Response, maxBody int64) (reply *event.Event, bad error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	msg := cehttp.NewMessage(resp.Header, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown { // whatever its size, as broker-filter
		if len(body) > 0 {
			return nil, errNotAnEvent
		}
		return nil, nil
	}
	if int64(len(body)) > maxBody {
		return nil, errTooLarge
	}
	defer func() {
		if p := recover(); p != nil {
			reply, bad = nil, fmt.Errorf("malformed CloudEvent in response (parser panicked: %v)", p)
		}
	}()
	ev, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("malformed CloudEvent in response: %w", err)
	}
	return ev, nil
}

// deliver sends one entry to one trigger's subscriber with the trigger's
// delivery policy, then dead-letters, or publishes the reply, and records
// the outcome in Redis.
func (b *Broker) deliver(rs *runState, e *entry, t *triggerState) {
	ctx := rs.dctx
	a := &attempt{b: b, t: t, eventType: e.event.Type()}
	info, err := b.send(context.WithValue(ctx, attemptKey{}, a), e, t)
	if ctx.Err() != nil {
		return // drain timeout: the entry stays pending for the next Run
	}
	l := labelsFor(e.br.brokerState, t, a.eventType)
	var reply []any
	var replyType string
	switch {
	case err != nil:
		code := http.StatusInternalServerError
		var body []byte
		if info != nil {
			if info.code > 0 {
				code = info.code
			}
			body = info.body
		}
		if !b.deadLetter(ctx, e, t, l, t.subscriber.URL, code, body, err) {
			return
		}
	case a.reply != nil || a.tooLarge:
		b.obs.Delivered(l, info.code)
		var vals []any
		var code int
		var rerr error
		if a.tooLarge {
			code, rerr = http.StatusRequestEntityTooLarge, fmt.Errorf("reply exceeds the %d byte limit", b.maxBody)
		} else if code, rerr = b.authorizeReply(t, a.reply); rerr == nil {
			vals, code, rerr = b.admitReply(e, a.reply, info)
		}
		if rerr != nil {
			b.obs.Rejected(l, code)
			if !b.deadLetter(ctx, e, t, l, e.br.ingressURL, code, []byte(rerr.Error()), rerr) {
				return
			}
			break
		}
		if !e.firstReply(a.reply) {
			b.log.Debug("devbroker: dropping a duplicate delivery's reply: the same reply of this entry is already stored",
				slog.String("trigger", t.name.String()), slog.String("entry", e.id),
				slog.String("source", a.reply.Source()), slog.String("id", a.reply.ID()))
			break
		}
		reply, replyType = vals, a.reply.Type()
	default:
		b.obs.Delivered(l, info.code)
	}
	if err := b.finish(ctx, e, t, reply); err != nil {
		b.log.Warn("devbroker: delivery finished but not recorded; it will be redelivered by the next Run",
			slog.String("trigger", t.name.String()), slog.String("entry", e.id), slog.Any("error", err))
		return
	}
	if reply != nil {
		b.obs.Received(labelsFor(e.br.brokerState, nil, replyType))
	}
}

// admitReply puts the original TTL back on a reply and applies the ingress
// rules to it. It returns the stream fields, or the code the ingress would
// have answered (400; an oversized reply, 413, is refused before parsing)
// and why.
func (b *Broker) admitReply(e *entry, reply *event.Event, info *sendResult) ([]any, int, error) {
	if e.ttl != noTTL {
		if err := knbroker.SetTTL(reply.Context, e.ttl); err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("reply: set %s: %w", knbroker.TTLAttribute, err)
		}
	}
	if err := reply.Validate(); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid reply event: %w", err)
	}
	if err := checkUTF8(reply); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid reply event: %w", err)
	}
	if code, err := b.admit(reply); err != nil {
		return nil, code, fmt.Errorf("reply: %w", err)
	}
	h := storedHeaders(info.header)
	if !hasTraceHeaders(h) {
		// The reply continues the trace of the event it answers, as the
		// HTTP hop to the ingress would under otelhttp in a cluster.
		for _, k := range traceHeaders {
			if v, ok := e.headers[k]; ok {
				h[k] = v
			}
		}
	}
	vals, err := encodeEntry(reply, h)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("reply: %w", err)
	}
	return vals, 0, nil
}

// deadLetter sends the original event (with its TTL, as broker-filter's
// DLS path does) to the trigger's dead letter sink with knativeerrordest,
// knativeerrorcode and knativeerrordata, or drops it when there is none.
// It reports false when shutdown interrupted it (the entry must then stay
// pending).
func (b *Broker) deadLetter(ctx context.Context, e *entry, t *triggerState, l Labels, dest *apis.URL, code int, body []byte, cause error) bool {
	log := b.log.With(slog.String("trigger", t.name.String()), slog.String("entry", e.id),
		slog.String("id", e.event.ID()), slog.String("type", l.EventType), slog.String("code", statusText(code)), slog.Any("error", cause))
	if t.dls == nil {
		log.Error("devbroker: event dropped: delivery failed and there is no dead letter sink")
		b.obs.Dropped(l, code)
		return true
	}
	trs := attributes.KnativeErrorTransformers(*dest.URL(), code, errorData(body))
	if e.ttl != noTTL {
		trs = append(trs, transformer.AddExtension(knbroker.TTLAttribute, e.ttl))
	}
	hdr := make(http.Header, len(e.headers)+2)
	e.addHeaders(hdr)
	if err := b.setToken(ctx, hdr, t, t.dls.Audience); err != nil {
		log.Error("devbroker: event dropped: no token for the dead letter sink", slog.Any("dlsError", err))
		b.obs.Dropped(l, code)
		return true
	}
	_, err := b.dispatcher.SendEvent(ctx, *e.event, *t.dls,
		kncloudevents.WithRetryConfig(&t.dlsRetry),
		kncloudevents.WithHeader(hdr),
		kncloudevents.WithTransformers(trs...),
	)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		log.Error("devbroker: event dropped: dead letter sink failed too", slog.Any("dlsError", err))
		b.obs.Dropped(l, code)
		return true
	}
	log.Warn("devbroker: event sent to the dead letter sink")
	b.obs.DeadLettered(l, code)
	return true
}

// finish records a finished delivery. A single-trigger entry is
// acknowledged and deleted in the same MULTI/EXEC that stores its reply. A
// multi-trigger entry first records this trigger in its done set (with the
// reply, atomically); the last delivery then acknowledges the entry and
// deletes the set.
func (b *Broker) finish(ctx context.Context, e *entry, t *triggerState, reply []any) error {
	if !e.multi {
		return b.commit(ctx, e.br, &commitOp{reply: reply, ack: []string{e.id}})
	}
	dk := doneKey(e.br.key, e.id)
	if err := b.commit(ctx, e.br, &commitOp{reply: reply, doneKey: dk, doneMember: t.name.Name}); err != nil {
		return err
	}
	if e.remaining.Add(-1) > 0 {
		return nil
	}
	return b.commit(ctx, e.br, &commitOp{ack: []string{e.id}, delKey: dk})
}
