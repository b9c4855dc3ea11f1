package knfunc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	cetypes "github.com/cloudevents/sdk-go/v2/types"

	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// HandlerOptions configure NewHandler.
type HandlerOptions struct {
	Logger       *slog.Logger
	Overrides    map[string]string // extensions set on every reply (K_CE_OVERRIDES)
	MaxBodyBytes int64             // default 4 MiB
	Observer     Observer          // nil: none
}

// Observer hears about every event a handler serves (metrics, traces).
// telemetry.StepObserver is the one knfunc.Run installs.
type Observer interface {
	// Start is called when an event is decoded; the returned context is
	// passed to the step, and the returned func is called with the outcome
	// before anything is written to w (so it may set response headers).
	Start(ctx context.Context, w http.ResponseWriter, r *http.Request, e *event.Event) (context.Context, func(reply *event.Event, status int, err error))
	// Rejected is called for a request that is not a valid CloudEvent.
	Rejected(r *http.Request, status int, err error)
}

// NewHandler returns the http.Handler serving step: it decodes a CloudEvent
// (binary or structured mode) from a POST, calls the step and writes its
// reply in binary mode. Status codes follow Knative's delivery semantics:
// 200 with the reply event, 200 with no body when there is nothing to reply,
// 400 for anything that is not a valid CloudEvent (including batch mode) or
// that the step rejects as Invalid, 413 for an oversized body, 503 for
// transient faults and 500 for bugs (both retried by Knative).
func NewHandler(step saga.Step, o HandlerOptions) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	return &handler{step: step, o: o}
}

type handler struct {
	step saga.Step
	o    HandlerOptions
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		w.Header().Set("Allow", "POST, OPTIONS")
		w.Header().Set("WebHook-Allowed-Origin", "*")
		w.WriteHeader(http.StatusOK)
		return
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "method not allowed: send CloudEvents with POST", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes)
	e, status, err := Decode(r)
	if err != nil {
		h.o.Logger.WarnContext(r.Context(), "rejected request", "status", status, "error", err.Error())
		if h.o.Observer != nil {
			h.o.Observer.Rejected(r, status, err)
		}
		http.Error(w, err.Error(), status)
		return
	}
	ctx := telemetry.WithEvent(r.Context(), e)
	done := func(*event.Event, int, error) {}
	if h.o.Observer != nil {
		ctx, done = h.o.Observer.Start(ctx, w, r, e)
	}
	reply, err := h.handle(ctx, e)
	if err != nil {
		status := saga.StatusCode(err)
		level := slog.LevelError
		if status < 500 {
			level = slog.LevelWarn
		}
		h.o.Logger.Log(ctx, level, "step failed", "status", status, "error", err.Error())
		done(nil, status, err)
		http.Error(w, err.Error(), status)
		return
	}
	if reply == nil {
		h.o.Logger.DebugContext(ctx, "handled, no reply")
		done(nil, http.StatusOK, nil)
		w.WriteHeader(http.StatusOK)
		return
	}
	for k, v := range h.o.Overrides {
		reply.SetExtension(k, v)
	}
	if err := reply.Validate(); err != nil {
		err = fmt.Errorf("step replied with an invalid event: %w", err)
		h.o.Logger.ErrorContext(ctx, "invalid reply", "error", err.Error())
		done(nil, http.StatusInternalServerError, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.o.Logger.DebugContext(ctx, "handled", "reply_type", reply.Type(), "reply_id", reply.ID())
	done(reply, http.StatusOK, nil)
	if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(reply), http.StatusOK, w); err != nil {
		h.o.Logger.ErrorContext(ctx, "write reply", "error", err.Error())
	}
}

// handle calls the step, turning a panic into an internal error.
func (h *handler) handle(ctx context.Context, e *event.Event) (reply *event.Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, fmt.Errorf("step panicked: %v", p)
		}
	}()
	return h.step.Handle(ctx, *e)
}

// Decode reads one CloudEvent from an HTTP request in binary or structured
// mode and validates it. It never panics: hostile input (a header named
// "CE-", bad data_base64, ...) is a 400, and so is an attribute or
// extension that is not valid UTF-8 (sdk-go passes such bytes through; it
// does not percent-decode header values, so "%C0%A0" is plain text). It
// returns the HTTP status to answer with on error: 400, 413 when the body
// exceeded a MaxBytesReader, or 408 when the body did not arrive before the
// read deadline (Serve's BodyReadTimeout; retried by Knative).
func Decode(r *http.Request) (e *event.Event, status int, err error) {
	defer func() {
		if p := recover(); p != nil {
			e, status, err = nil, http.StatusBadRequest, fmt.Errorf("malformed CloudEvent: %v", p)
		}
	}()
	for k := range r.Header {
		if len(k) == 3 && strings.EqualFold(k, "ce-") {
			return nil, http.StatusBadRequest, errors.New("malformed CloudEvent: header CE- names no attribute")
		}
	}
	msg := cehttp.NewMessageFromHttpRequest(r)
	defer func() { _ = msg.Finish(nil) }()
	switch msg.ReadEncoding() {
	case binding.EncodingUnknown:
		return nil, http.StatusBadRequest, errors.New("not a CloudEvent: want binary mode (ce-* headers) or structured mode (application/cloudevents+json)")
	case binding.EncodingBatch:
		return nil, http.StatusBadRequest, errors.New("batched CloudEvents are not supported: send one event per request")
	case binding.EncodingStructured:
		body, err := io.ReadAll(r.Body)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, http.StatusRequestTimeout, fmt.Errorf("read event: the body did not arrive in time: %w", err)
		}
		if err != nil {
			return nil, bodyErrorStatus(err), fmt.Errorf("read event: %w", err)
		}
		if err := checkStructured(body); err != nil {
			return nil, http.StatusBadRequest, err
		}
		msg = cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	}
	ev, err := binding.ToEvent(r.Context(), msg)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, http.StatusRequestTimeout, fmt.Errorf("read event: the body did not arrive in time: %w", err)
	}
	if err != nil {
		if status := bodyErrorStatus(err); status != http.StatusBadRequest {
			return nil, status, fmt.Errorf("event too large: %w", err)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("malformed CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid CloudEvent: %w", err)
	}
	if sv := spec.VS.Version(ev.SpecVersion()); sv != nil {
		for _, a := range sv.Attributes() {
			if v := a.Get(ev.Context); v != nil {
				if s, err := cetypes.Format(v); err == nil && !utf8.ValidString(s) {
					return nil, http.StatusBadRequest, fmt.Errorf("invalid CloudEvent: attribute %s is not valid UTF-8", a.Name())
				}
			}
		}
	}
	for k, v := range ev.Extensions() {
		if s, err := cetypes.Format(v); err == nil && (!utf8.ValidString(s) || !utf8.ValidString(k)) {
			return nil, http.StatusBadRequest, fmt.Errorf("invalid CloudEvent: extension %s is not valid UTF-8", strings.ToValidUTF8(k, "\uFFFD"))
		}
	}
	return ev, 0, nil
}

// bodyErrorStatus is 413 for a body over the MaxBytesReader limit, else 400.
func bodyErrorStatus(err error) int {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// checkStructured enforces what sdk-go lets through in the JSON format:
// data and data_base64 are mutually exclusive.
func checkStructured(body []byte) error {
	if !bytes.Contains(body, []byte(`"data_base64"`)) {
		return nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return fmt.Errorf("malformed CloudEvent: %w", err)
	}
	if _, ok := top["data"]; ok {
		return errors.New("malformed CloudEvent: data and data_base64 are mutually exclusive")
	}
	return nil
}
