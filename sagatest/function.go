package sagatest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

// Buffer collects a function's stdout safely across goroutines.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

// String returns everything written so far.
func (s *Buffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Lines returns the JSON log lines written so far; a line that is not JSON
// fails the test.
func (s *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// Func is a running function.
type Func struct {
	URL    string // http://127.0.0.1:port
	Out    *Buffer
	Cancel context.CancelFunc // SIGTERM
	Done   chan error         // Run's result, once
}

// Start runs the function setup builds, as knfunc.Main would (knfunc.Run),
// with env (plus LISTEN_ADDRESS=127.0.0.1:0) until the test ends, and waits
// until it listens. The test fails if the function returns an error.
func Start(t testing.TB, setup knfunc.Setup, env map[string]string) *Func {
	t.Helper()
	e := map[string]string{"LISTEN_ADDRESS": "127.0.0.1:0"}
	for k, v := range env {
		e[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Func{Out: &Buffer{}, Cancel: cancel, Done: make(chan error, 1)}
	go func() { f.Done <- knfunc.Run(ctx, func(k string) string { return e[k] }, f.Out, setup) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.Done:
			if err != nil {
				t.Errorf("function returned %v", err)
			}
			f.Done <- err
		case <-time.After(15 * time.Second):
			t.Error("function did not stop")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(f.Out.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				f.URL = "http://" + line.Addr
				return f
			}
		}
		select {
		case err := <-f.Done:
			f.Done <- err
			t.Fatalf("function exited: %v\n%s", err, f.Out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("function not listening:\n%s", f.Out.String())
	return nil
}

// Event builds a CloudEvent from source "/sagatest"; data is JSON-encoded
// unless it is []byte or json.RawMessage. Extensions are given as key,
// value pairs.
func Event(id, typ string, data any, ext ...string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/sagatest")
	e.SetType(typ)
	for i := 0; i+1 < len(ext); i += 2 {
		e.SetExtension(ext[i], ext[i+1])
	}
	switch d := data.(type) {
	case nil:
	case []byte:
		_ = e.SetData(event.ApplicationJSON, json.RawMessage(d))
	default:
		_ = e.SetData(event.ApplicationJSON, d)
	}
	return e
}

// Response is a function's answer.
type Response struct {
	Status int
	Header http.Header
	Body   string
	Reply  *event.Event
}

// PostRequest sends e in binary mode with req (method and URL set) and extra
// headers, and decodes the reply.
func PostRequest(t testing.TB, req *http.Request, e event.Event, header http.Header) Response {
	t.Helper()
	if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return Do(t, req)
}

// Post sends e in binary mode (structured if asked) and decodes the reply.
func Post(t testing.TB, url string, e event.Event, structured bool) Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if structured {
		ctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	return Do(t, req)
}

// Do sends a request and decodes a CloudEvent reply if there is one.
func Do(t testing.TB, req *http.Request) Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	msg := cehttp.NewMessage(resp.Header, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() != binding.EncodingUnknown {
		ev, err := binding.ToEvent(context.Background(), msg)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		r.Reply = ev
	}
	return r
}

// PostSaga posts data as event typ of saga sagaID at version (its
// correlationid and sagaversion extensions) to url.
func PostSaga(t testing.TB, url, id, typ, sagaID string, version int64, data any, structured bool) Response {
	t.Helper()
	return Post(t, url, Event(id, typ, data, saga.ExtCorrelationID, sagaID, saga.ExtSagaVersion, strconv.FormatInt(version, 10)), structured)
}

// Broker stands in for a Broker's ingress, as a function's K_SINK: it
// records every CloudEvent POSTed to it, with its HTTP encoding, and
// answers 202; while Down is set it answers 503 (the Broker unavailable).
type Broker struct {
	URL  string
	Down atomic.Bool
	mu   sync.Mutex
	got  []Received
}

// Received is an event as the Broker stand-in received it.
type Received struct {
	Encoding binding.Encoding
	Event    event.Event
}

// NewBroker starts a Broker stand-in on a loopback port, closed when the
// test ends.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	b := &Broker{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.Down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		msg := cehttp.NewMessageFromHttpRequest(r)
		enc := msg.ReadEncoding()
		ev, err := binding.ToEvent(r.Context(), msg)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.got = append(b.got, Received{enc, *ev})
		b.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// Received returns what the stand-in has received so far.
func (b *Broker) Received() []Received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Received(nil), b.got...)
}

// Events returns the events received so far.
func (b *Broker) Events() []event.Event {
	var out []event.Event
	for _, r := range b.Received() {
		out = append(out, r.Event)
	}
	return out
}

// Refused reports whether the function logged a refused event (a security
// event, see saga.Participant) whose reason contains why.
func (f *Func) Refused(t testing.TB, why string) bool {
	t.Helper()
	for _, l := range f.Out.Lines(t) {
		if r, _ := l["why"].(string); l["security_event"] == "refused" && strings.Contains(r, why) {
			return true
		}
	}
	return false
}
