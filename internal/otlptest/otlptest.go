// Package otlptest is an in-memory OTLP/HTTP trace receiver for tests: it
// keeps every span it is sent, so a test can assert on whole traces. It
// speaks what a collector does: protobuf bodies, gzip if the exporter
// compresses, and on request it refuses exports with a retryable status.
package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is a received span, flattened.
type Span struct {
	Service, Name           string
	TraceID, SpanID, Parent string
	Attributes              map[string]string
	StartNano               uint64
	Error                   bool
	Flags                   uint32 // OTLP span flags: W3C trace flags, 0x100 parent remoteness known, 0x200 parent remote
}

// Request is one export request the receiver answered.
type Request struct {
	Header http.Header
	Status int // what the receiver answered
}

// Receiver collects spans POSTed to /v1/traces.
type Receiver struct {
	URL string // the endpoint base: set OTEL_EXPORTER_OTLP_ENDPOINT to it

	mu       sync.Mutex
	got      []Span
	requests []Request
	refuse   int // exports still to refuse
	status   int // with this status
	after    string
}

// Start runs a receiver until the test ends.
func Start(t testing.TB) *Receiver {
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Refuse makes the receiver answer the next n exports with status (e.g.
// 503) and, if retryAfter is not empty, a Retry-After header, as a
// collector under pressure does.
func (r *Receiver) Refuse(n, status int, retryAfter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse, r.status, r.after = n, status, retryAfter
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	status := http.StatusOK
	defer func() {
		r.mu.Lock()
		r.requests = append(r.requests, Request{Header: req.Header.Clone(), Status: status})
		r.mu.Unlock()
	}()
	fail := func(code int, format string, args ...any) {
		status = code
		http.Error(w, fmt.Sprintf(format, args...), code)
	}
	if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		fail(http.StatusUnsupportedMediaType, "want POST /v1/traces application/x-protobuf")
		return
	}
	r.mu.Lock()
	if r.refuse > 0 {
		r.refuse--
		code, after := r.status, r.after
		r.mu.Unlock()
		if after != "" {
			w.Header().Set("Retry-After", after)
		}
		fail(code, "refused on purpose")
		return
	}
	r.mu.Unlock()
	var body io.Reader = req.Body
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "":
	case "gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			fail(http.StatusBadRequest, "gzip: %v", err)
			return
		}
		body = zr
	default:
		fail(http.StatusUnsupportedMediaType, "content-encoding %q", enc)
		return
	}
	b, err := io.ReadAll(body)
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	var td tracepb.TracesData // wire-compatible with ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &td); err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range td.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{Service: service, Name: s.Name, TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					Parent: hex.EncodeToString(s.ParentSpanId), Attributes: map[string]string{}, StartNano: s.StartTimeUnixNano,
					Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR, Flags: s.Flags}
				for _, kv := range s.Attributes {
					v := kv.GetValue()
					switch {
					case v.GetStringValue() != "":
						sp.Attributes[kv.Key] = v.GetStringValue()
					default:
						sp.Attributes[kv.Key] = v.String()
					}
				}
				r.got = append(r.got, sp)
			}
		}
	}
	w.WriteHeader(http.StatusOK)
}

// Spans returns what has been received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.got...)
}

// Requests returns the export requests answered so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}
