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
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	cetypes "github.com/cloudevents/sdk-go/v2/types"
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
//   - not a CloudEvent, batch mode, invalid event → 400, and so is a
//     string attribute or extension that is not valid UTF-8 (Knative
//     stores it as it is);
//   - unknown broker → 404;
//   - knativearrivaltime stamped, knativebrokerttl defaulted to 255 or
//     decremented, TTL ≤ 0 → 400;
//   - 202 once the event is stored in the broker's Redis stream (XADDs of
//     concurrent requests share one pipelined round trip); a Redis
//     failure → 503, which senders retry.
//
// The 202 is asynchronous like the Kafka broker's (stored, not yet
// delivered), not synchronous like InMemoryChannel's.
//
// Every refusal has a text/plain body saying why, the reason the log line
// gives (Knative's ingress answers with an empty body); the status codes
// are Knative's.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "POST, OPTIONS")
	if r.Method == http.MethodOptions {
		w.Header().Set("WebHook-Allowed-Origin", "*")
		w.Header().Set("WebHook-Allowed-Rate", "*")
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method != http.MethodPost {
		refuse(w, http.StatusMethodNotAllowed, "method %s not allowed: POST a CloudEvent to /<namespace>/<broker>", r.Method)
		return
	}
	uri := r.RequestURI
	if uri == "" { // a request built in-process rather than read from the wire
		uri = r.URL.RequestURI()
	}
	if uri == "/" {
		refuse(w, http.StatusNotFound, "no broker at /: POST CloudEvents to /<namespace>/<broker>")
		return
	}
	parts := strings.Split(strings.TrimSuffix(uri, "/"), "/")
	if len(parts) != 3 || parts[0] != "" {
		b.log.Info("ingress: malformed path", slog.String("uri", uri))
		refuse(w, http.StatusBadRequest, "malformed path %q: want /<namespace>/<broker>", uri)
		return
	}
	nn := types.NamespacedName{Namespace: parts[1], Name: parts[2]}

	ev, code, err := b.readEvent(w, r)
	if err != nil {
		b.log.Info("ingress: rejected request", slog.String("broker", nn.String()), slog.Int("code", code), slog.Any("error", err))
		b.obs.Rejected(Labels{Namespace: nn.Namespace, Broker: nn.Name}, code)
		refuse(w, code, "%v", err)
		return
	}
	bs, ok := b.brokers[nn]
	if !ok {
		b.obs.Rejected(Labels{Namespace: nn.Namespace, Broker: nn.Name, EventType: ev.Type()}, http.StatusNotFound)
		refuse(w, http.StatusNotFound, "no broker %s", nn)
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
		refuse(w, code, "%v", err)
		return
	}
	vals, err := encodeEntry(ev, storedHeaders(r.Header))
	if err != nil {
		b.log.Error("ingress: encode event", slog.String("broker", nn.String()), slog.Any("error", err))
		refuse(w, http.StatusInternalServerError, "%v", err)
		return
	}
	// The store must not be cut short by the producer going away: once
	// XADD is sent, the event may be stored whatever the producer sees.
	ctx := context.WithoutCancel(r.Context())
	if err := bs.appender.add(ctx, vals); err != nil {
		b.log.Error("ingress: store event", slog.String("broker", nn.String()), slog.String("id", ev.ID()), slog.Any("error", err))
		b.obs.Rejected(labelsFor(bs, nil, ev.Type()), http.StatusServiceUnavailable)
		refuse(w, http.StatusServiceUnavailable, "event not stored (Redis: %v); send it again", err)
		return
	}
	b.obs.Received(labelsFor(bs, nil, ev.Type()))
	w.WriteHeader(http.StatusAccepted)
}

// refuse answers code with a one-line text/plain body saying why.
func refuse(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, strings.TrimSpace(fmt.Sprintf(format, args...)), code)
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
	switch msg.ReadEncoding() {
	case binding.EncodingUnknown:
		return nil, http.StatusBadRequest, errors.New("not a CloudEvent: want binary mode (ce-specversion, ce-id, ce-source, ce-type headers) " +
			"or structured mode (content-type application/cloudevents+json)")
	case binding.EncodingBatch:
		return nil, http.StatusBadRequest, errors.New("batched CloudEvents are not supported: send one event per request")
	}
	ev, err = binding.ToEvent(r.Context(), msg)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("malformed CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid event: %w", err)
	}
	if err := checkUTF8(ev); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid event: %w", err)
	}
	return ev, 0, nil
}

// checkUTF8 refuses an event whose attributes or extensions, in their
// string form, are not valid UTF-8: a CloudEvents String is a sequence of
// Unicode characters. sdk-go (v2.16.2) takes binary-mode header values
// byte for byte (it does not percent-decode them, so "%C0%A0" is six
// characters of text and passes) and keeps invalid bytes of a structured
// event's JSON strings; stored raw, they would reach every subscriber and
// the saga's state.
func checkUTF8(ev *event.Event) error {
	if sv := spec.VS.Version(ev.SpecVersion()); sv != nil {
		for _, a := range sv.Attributes() {
			if v := a.Get(ev.Context); v != nil {
				if s, err := cetypes.Format(v); err == nil && !utf8.ValidString(s) {
					return fmt.Errorf("attribute %s is not valid UTF-8", a.Name())
				}
			}
		}
	}
	for k, v := range ev.Extensions() {
		if !utf8.ValidString(k) {
			return errors.New("an extension name is not valid UTF-8")
		}
		if s, err := cetypes.Format(v); err == nil && !utf8.ValidString(s) {
			return fmt.Errorf("extension %s is not valid UTF-8", k)
		}
	}
	return nil
}
