package devbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"k8s.io/apimachinery/pkg/types"
)

// maxPooledBuffer: larger ingress buffers are not returned to the pool.
const maxPooledBuffer = 256 << 10

// ServeHTTP is the broker ingress: POST /<namespace>/<broker> with a
// CloudEvent in binary or structured mode. It follows Knative's MT broker
// ingress (pkg/broker/ingress ingress_handler.go):
//
//   - every response carries "Allow: POST, OPTIONS"; OPTIONS → 200 with
//     WebHook-Allowed-Origin/-Rate "*"; other non-POST methods → 405;
//   - the raw request URI is split: "/" → 404, not exactly /<ns>/<name> → 400
//     (one trailing slash is trimmed; a query string stays in the name);
//   - body larger than MaxBodyBytes → 413 (Knative has no limit);
//   - not a CloudEvent, batch mode, invalid event → 400;
//   - unknown broker → 404;
//   - knativearrivaltime stamped, knativebrokerttl defaulted to 255 or
//     decremented, TTL ≤ 0 → 400;
//   - 202 once the event is stored in the broker's Redis stream (XADDs of
//     concurrent requests share one pipelined round trip); a Redis
//     failure → 503, which senders retry.
//
// The 202 is asynchronous like the Kafka broker's (stored, not yet
// delivered), not synchronous like InMemoryChannel's.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "POST, OPTIONS")
	if r.Method == http.MethodOptions {
		w.Header().Set("WebHook-Allowed-Origin", "*")
		w.Header().Set("WebHook-Allowed-Rate", "*")
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	uri := r.RequestURI
	if uri == "" { // a request built in-process rather than read from the wire
		uri = r.URL.RequestURI()
	}
	if uri == "/" {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	parts := strings.Split(strings.TrimSuffix(uri, "/"), "/")
	if len(parts) != 3 || parts[0] != "" {
		b.log.Info("ingress: malformed path", slog.String("uri", uri))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	nn := types.NamespacedName{Namespace: parts[1], Name: parts[2]}

	ev, code, err := b.readEvent(w, r)
	if err != nil {
		b.log.Info("ingress: rejected request", slog.String("broker", nn.String()), slog.Int("code", code), slog.Any("error", err))
		b.obs.Rejected(Labels{Namespace: nn.Namespace, Broker: nn.Name}, code)
		w.WriteHeader(code)
		return
	}
	bs, ok := b.brokers[nn]
	if !ok {
		b.obs.Rejected(Labels{Namespace: nn.Namespace, Broker: nn.Name, EventType: ev.Type()}, http.StatusNotFound)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if code, err := b.authorizeRequest(r, bs, ev); err != nil {
		b.log.Warn("ingress: sender refused", slog.String("broker", nn.String()), slog.String("id", ev.ID()), slog.String("type", ev.Type()), slog.Int("code", code), slog.Any("error", err))
		b.obs.Rejected(labelsFor(bs, nil, ev.Type()), code)
		w.WriteHeader(code)
		return
	}
	if code, err := b.admit(ev); err != nil {
		b.log.Info("ingress: rejected event", slog.String("broker", nn.String()), slog.String("id", ev.ID()), slog.Int("code", code), slog.Any("error", err))
		b.obs.Rejected(labelsFor(bs, nil, ev.Type()), code)
		w.WriteHeader(code)
		return
	}
	vals, err := encodeEntry(ev, storedHeaders(r.Header))
	if err != nil {
		b.log.Error("ingress: encode event", slog.String("broker", nn.String()), slog.Any("error", err))
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	// The store must not be cut short by the producer going away: once
	// XADD is sent, the event may be stored whatever the producer sees.
	ctx := context.WithoutCancel(r.Context())
	if err := bs.appender.add(ctx, vals); err != nil {
		b.log.Error("ingress: store event", slog.String("broker", nn.String()), slog.String("id", ev.ID()), slog.Any("error", err))
		b.obs.Rejected(labelsFor(bs, nil, ev.Type()), http.StatusServiceUnavailable)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	b.obs.Received(labelsFor(bs, nil, ev.Type()))
	w.WriteHeader(http.StatusAccepted)
}

// readEvent reads the body (bounded) and parses the CloudEvent with sdk-go.
// sdk-go has panicked on hostile input (a header named "CE-", an invalid
// data_base64), so a panic is a 400 here.
func (b *Broker) readEvent(w http.ResponseWriter, r *http.Request) (ev *event.Event, code int, err error) {
	if r.ContentLength > b.maxBody {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes exceeds the %d byte limit", r.ContentLength, b.maxBody)
	}
	buf := b.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			b.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, b.maxBody)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body exceeds the %d byte limit", b.maxBody)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			ev, code, err = nil, http.StatusBadRequest, fmt.Errorf("malformed CloudEvent (parser panicked: %v)", p)
		}
	}()
	// The buffer is reused, so the message reads a copy-on-read view of it;
	// sdk-go copies the data into the event.
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(buf.Bytes())))
	ev, err = binding.ToEvent(r.Context(), msg)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("not a CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid event: %w", err)
	}
	return ev, 0, nil
}
