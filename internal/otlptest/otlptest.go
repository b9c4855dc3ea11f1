// Package otlptest is an in-memory OTLP/HTTP trace receiver for tests: it
// keeps every span it is sent, so a test can assert on whole traces.
package otlptest

import (
	"encoding/hex"
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
}

// Receiver collects spans POSTed to /v1/traces.
type Receiver struct {
	URL string // the endpoint base: set OTEL_EXPORTER_OTLP_ENDPOINT to it
	mu  sync.Mutex
	got []Span
}

// Start runs a receiver until the test ends.
func Start(t testing.TB) *Receiver {
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	var td tracepb.TracesData
	if err := proto.Unmarshal(body, &td); err != nil {
		http.Error(w, err.Error(), 400)
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
					Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR}
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
