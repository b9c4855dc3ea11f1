package devbroker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/testredis"
)

const (
	ns         = "saga"
	brokerName = "default"
	waitFor    = 15 * time.Second
)

// ---------------------------------------------------------------- sink

// rec is one request a sink received.
type rec struct {
	At     time.Time
	Path   string
	Header http.Header
	Body   []byte
	Event  *event.Event // nil when the request was not a CloudEvent
	Mode   binding.Encoding
}

// sink is an asserting subscriber: it records every request by path and
// answers with the responder registered for that path (default 200, empty).
type sink struct {
	srv     *httptest.Server
	mu      sync.Mutex
	recs    []rec
	respond map[string]func(w http.ResponseWriter, r rec, n int)
}

func newSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{respond: map[string]func(http.ResponseWriter, rec, int){}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	rc := rec{At: at, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Mode: msg.ReadEncoding()}
	if rc.Mode != binding.EncodingUnknown {
		if ev, err := binding.ToEvent(r.Context(), msg); err == nil {
			rc.Event = ev
		}
	}
	s.mu.Lock()
	s.recs = append(s.recs, rc)
	n := 0
	for _, x := range s.recs {
		if x.Path == rc.Path {
			n++
		}
	}
	fn := s.respond[rc.Path]
	s.mu.Unlock()
	if fn == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	fn(w, rc, n)
}

// on registers the responder for path.
func (s *sink) on(path string, fn func(w http.ResponseWriter, r rec, n int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.respond[path] = fn
}

// url of a path on the sink.
func (s *sink) url(path string) *apis.URL {
	u, err := apis.ParseURL(s.srv.URL + path)
	if err != nil {
		panic(err)
	}
	return u
}

// got returns the records of path so far.
func (s *sink) got(path string) []rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []rec
	for _, r := range s.recs {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// wait polls until path has at least n records and returns them.
func (s *sink) wait(t *testing.T, path string, n int) []rec {
	t.Helper()
	var got []rec
	eventually(t, fmt.Sprintf("%d requests on %s", n, path), func() bool {
		got = s.got(path)
		return len(got) >= n
	})
	return got
}

// replyWith writes ev as a binary-mode response with code.
func replyWith(w http.ResponseWriter, ev event.Event, code int) {
	if err := cehttp.WriteResponseWriter(context.Background(), binding.ToMessage(&ev), code, w); err != nil {
		panic(err)
	}
}

// status answers with a fixed code and body.
func status(code int, body string) func(http.ResponseWriter, rec, int) {
	return func(w http.ResponseWriter, _ rec, _ int) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// ---------------------------------------------------------------- observer

type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) add(kind string, l devbroker.Labels, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[kind]++
	c.m[fmt.Sprintf("%s/%s/%d", kind, l.Trigger, code)]++
}

func (c *counts) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// settled polls until key counts want, and returns its count then (or at
// the deadline). The broker counts a reply as received once it has stored
// it, which can be after the reply has been delivered and the stream has
// drained.
func (c *counts) settled(key string, want int) int {
	deadline := time.Now().Add(waitFor)
	for c.get(key) != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return c.get(key)
}

func (c *counts) Received(l devbroker.Labels)               { c.add("received", l, 0) }
func (c *counts) Rejected(l devbroker.Labels, code int)     { c.add("rejected", l, code) }
func (c *counts) Delivered(l devbroker.Labels, code int)    { c.add("delivered", l, code) }
func (c *counts) Retried(l devbroker.Labels, code int)      { c.add("retried", l, code) }
func (c *counts) DeadLettered(l devbroker.Labels, code int) { c.add("deadlettered", l, code) }
func (c *counts) Dropped(l devbroker.Labels, code int)      { c.add("dropped", l, code) }

// ---------------------------------------------------------------- env

// env is one Redis, one sink, an ingress HTTP server and a running Broker.
type env struct {
	t       *testing.T
	redis   *testredis.Server
	rdb     *redis.Client
	sink    *sink
	ingress *httptest.Server
	obs     *counts

	current atomic.Pointer[devbroker.Broker]
	stop    func() // stops the running Broker's Run and waits for it
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, redis: testredis.Start(t), sink: newSink(t), obs: &counts{}}
	e.rdb = e.redis.Client(t)
	e.ingress = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := e.current.Load()
		if b == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(e.ingress.Close)
	return e
}

func (e *env) ingressURL(namespace, name string) *apis.URL {
	u, _ := apis.ParseURL(e.ingress.URL + "/" + namespace + "/" + name)
	return u
}

// config returns a Config for brokers/triggers; subscribers and DLS refs
// to Services resolve to sink paths "/<service name>".
func (e *env) config(brokers []*eventingv1.Broker, triggers []*eventingv1.Trigger) devbroker.Config {
	services := map[types.NamespacedName]*apis.URL{}
	add := func(d *duckv1.Destination, namespace string) {
		if d != nil && d.Ref != nil && d.Ref.Kind == "Service" {
			services[types.NamespacedName{Namespace: namespace, Name: d.Ref.Name}] = e.sink.url("/" + d.Ref.Name)
		}
	}
	for _, b := range brokers {
		if b.Spec.Delivery != nil {
			add(b.Spec.Delivery.DeadLetterSink, b.Namespace)
		}
	}
	for _, t := range triggers {
		add(&t.Spec.Subscriber, t.Namespace)
		if t.Spec.Delivery != nil {
			add(t.Spec.Delivery.DeadLetterSink, t.Namespace)
		}
	}
	return devbroker.Config{
		Redis:        e.rdb,
		Brokers:      brokers,
		Triggers:     triggers,
		Resolve:      devbroker.DefaultResolver(services, e.ingressURL),
		IngressURL:   e.ingressURL,
		Logger:       testLogger(e.t),
		Consumer:     "test",
		DrainTimeout: 2 * time.Second,
		Observer:     e.obs,
	}
}

// start builds a Broker from cfg, serves it on the ingress and runs it.
func (e *env) start(cfg devbroker.Config) *devbroker.Broker {
	e.t.Helper()
	b, err := devbroker.New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.current.Store(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(waitFor):
				e.t.Errorf("Run did not return after cancel")
			}
		})
	}
	e.t.Cleanup(e.stop)
	return b
}

// run is config + start for the common case.
func (e *env) run(brokers []*eventingv1.Broker, triggers ...*eventingv1.Trigger) *devbroker.Broker {
	e.t.Helper()
	return e.start(e.config(brokers, triggers))
}

// post sends ev to /ns/name in binary mode (or structured) with extra
// headers and returns the status code.
func (e *env) post(path string, ev event.Event, structured bool, hdr http.Header) int {
	e.t.Helper()
	ctx := context.Background()
	if structured {
		ctx = binding.WithForceStructured(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ingress.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req); err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return e.do(req)
}

func (e *env) send(ev event.Event) {
	e.t.Helper()
	if code := e.post("/"+ns+"/"+brokerName, ev, false, nil); code != http.StatusAccepted {
		e.t.Fatalf("ingress answered %d for %s, want 202", code, ev.ID())
	}
}

func (e *env) do(req *http.Request) int {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// waitIdle polls until the broker stream has no entries left (every
// delivery finished and was acknowledged) and nothing is pending.
func (e *env) waitIdle(brokers ...string) {
	e.t.Helper()
	if len(brokers) == 0 {
		brokers = []string{brokerName}
	}
	ctx := context.Background()
	for _, b := range brokers {
		key := "ksaga:broker:{" + ns + "/" + b + "}"
		eventually(e.t, "stream "+key+" drained", func() bool {
			n, err := e.rdb.XLen(ctx, key).Result()
			return err == nil && n == 0
		})
	}
}

// ---------------------------------------------------------------- objects

func newBroker(name string, delivery *eventingduckv1.DeliverySpec) *eventingv1.Broker {
	return &eventingv1.Broker{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{eventingv1.BrokerClassAnnotationKey: "MTChannelBasedBroker"}},
		Spec: eventingv1.BrokerSpec{Delivery: delivery},
	}
}

func brokers(delivery *eventingduckv1.DeliverySpec) []*eventingv1.Broker {
	return []*eventingv1.Broker{newBroker(brokerName, delivery)}
}

// trigger on the default broker to Service "<name>" (sink path "/<name>").
func trigger(name string, mods ...func(*eventingv1.Trigger)) *eventingv1.Trigger {
	t := &eventingv1.Trigger{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: eventingv1.TriggerSpec{
			Broker:     brokerName,
			Filter:     &eventingv1.TriggerFilter{},
			Subscriber: ksvc(name),
		},
	}
	for _, m := range mods {
		m(t)
	}
	return t
}

func ksvc(name string) duckv1.Destination {
	return duckv1.Destination{Ref: &duckv1.KReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: name, Namespace: ns}}
}

func onType(typ string) func(*eventingv1.Trigger) {
	return func(t *eventingv1.Trigger) {
		t.Spec.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"type": typ}}
	}
}

func withDelivery(d *eventingduckv1.DeliverySpec) func(*eventingv1.Trigger) {
	return func(t *eventingv1.Trigger) { t.Spec.Delivery = d }
}

// delivery builds a DeliverySpec; dls "" means none.
func delivery(retry int32, policy eventingduckv1.BackoffPolicyType, delay, dls string) *eventingduckv1.DeliverySpec {
	d := &eventingduckv1.DeliverySpec{Retry: ptr.To(retry)}
	if policy != "" {
		d.BackoffPolicy = ptr.To(policy)
	}
	if delay != "" {
		d.BackoffDelay = ptr.To(delay)
	}
	if dls != "" {
		dest := ksvc(dls)
		d.DeadLetterSink = &dest
	}
	return d
}

var idSeq atomic.Int64

func newEvent(typ string, exts ...string) event.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(fmt.Sprintf("ev-%d", idSeq.Add(1)))
	ev.SetSource("/test")
	ev.SetType(typ)
	_ = ev.SetData(cloudevents.ApplicationJSON, map[string]string{"hello": "world"})
	for i := 0; i+1 < len(exts); i += 2 {
		ev.SetExtension(exts[i], exts[i+1])
	}
	return ev
}

// ---------------------------------------------------------------- misc

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ext returns an extension of a recorded event as a string ("" if absent).
func ext(t *testing.T, r rec, name string) string {
	t.Helper()
	if r.Event == nil {
		t.Fatalf("request on %s is not a CloudEvent: %s", r.Path, r.Body)
	}
	v, ok := r.Event.Extensions()[name]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("DEVBROKER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
