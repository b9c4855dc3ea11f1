package devbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/client"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	knbroker "knative.dev/eventing/pkg/broker"
	"knative.dev/eventing/pkg/eventingtls"
	"knative.dev/eventing/pkg/kncloudevents"
)

// Defaults for the optional Config fields.
const (
	// DefaultMaxInFlight bounds concurrent deliveries (subscriber calls,
	// including their retries and dead-lettering) across all brokers.
	DefaultMaxInFlight = 1024
	// DefaultMaxBodyBytes is the ingress body limit (413 above it). The
	// CloudEvents spec asks intermediaries to forward at least 64 KiB; the
	// Kafka broker's producer limit is 1 MiB; Knative's MT ingress has none.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultDrainTimeout is how long Run waits for in-flight deliveries
	// after its context is cancelled.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultConsumer is the consumer name used when Config.Consumer is empty.
	DefaultConsumer = "ksaga-dev"
	// DefaultTTL is the knativebrokerttl given to events that arrive without
	// one (MAX_TTL of Knative's broker ingress).
	DefaultTTL = 255
)

const (
	// groupName is the consumer group created on every broker stream.
	groupName = "ksaga-devbroker"
	// readCount is the XREADGROUP batch size.
	readCount = 256
	// readBlock is the XREADGROUP BLOCK time. go-redis does not abort a
	// blocked read when its context is cancelled, so this bounds how long
	// Run takes to notice shutdown.
	readBlock = 250 * time.Millisecond
	// maxIdleConns and maxIdleConnsPerHost are handed to
	// kncloudevents.ConfigureConnectionArgs. They are constants so that every
	// Broker in a process passes identical values (the call is then a no-op).
	maxIdleConns        = 4096
	maxIdleConnsPerHost = 1024
)

// Resolver resolves a Destination (subscriber or dead letter sink) of an
// object in namespace to a URL.
type Resolver func(ctx context.Context, d duckv1.Destination, namespace string) (*apis.URL, error)

// Config configures a Broker. Brokers and Triggers must already be defaulted
// and validated the way Knative's admission webhook would (SetDefaults +
// Validate); the Broker trusts them except for the CESQL parser, which it
// guards.
type Config struct {
	// Redis stores the broker streams. Required.
	Redis redis.UniversalClient
	// Brokers served by this data plane. Required (at least one).
	Brokers []*eventingv1.Broker
	// Triggers; each must name one of Brokers in its own namespace.
	Triggers []*eventingv1.Trigger
	// Resolve resolves subscribers and dead letter sinks. Required; see
	// DefaultResolver.
	Resolve Resolver
	// IngressURL returns a broker's public URL. It is used as
	// knativeerrordest when a reply is rejected. Defaults to Knative's
	// cluster address http://broker-ingress.knative-eventing.svc.cluster.local/<ns>/<name>.
	IngressURL func(namespace, name string) *apis.URL
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
	// Consumer is the Redis consumer name. Keep it stable across restarts:
	// Run redelivers the pending entries of this consumer name only.
	// Defaults to DefaultConsumer.
	Consumer string
	// MaxInFlight bounds concurrent deliveries. Defaults to DefaultMaxInFlight.
	MaxInFlight int
	// MaxBodyBytes is the ingress body limit. Defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// DrainTimeout bounds how long Run waits for in-flight deliveries on
	// shutdown. Defaults to DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Observer receives counters. Defaults to NopObserver.
	Observer Observer
	// DuplicateDeliveries is the probability, in [0, 1], that a matching
	// delivery is made twice, concurrently: at-least-once delivery made
	// visible, to test that subscribers are idempotent. 0 (off) in normal
	// use. Of the replies to the deliveries of one entry, only the first
	// with a given source and id is stored (see entry.firstReply), so a
	// chain of replies grows linearly, not exponentially.
	DuplicateDeliveries float64
	// TracerProvider traces each delivery (a client span, whose context is
	// sent to the subscriber); it and MeterProvider are also handed to
	// kncloudevents for dead letters. They default to no-op providers, not
	// to the otel globals: the globals' delegating tracer costs about a
	// tenth of the broker's CPU per delivery even when nothing is installed.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Auth, if set, authenticates and authorizes senders and gives
	// deliveries their tokens (see Auth). Nil: no sender identity.
	Auth Auth
	// Endpoint, if set, is asked before every delivery attempt to an http
	// subscriber where to connect; it may hold the attempt (ksaga dev
	// starts a process for a service at zero, or waits for a replica
	// below its containerConcurrency, as Knative's activator does). The
	// attempt's timeout starts once it answers; its error fails the
	// attempt like a 503. Dead letters and other schemes are not asked.
	Endpoint func(ctx context.Context, subscriber *url.URL) (Endpoint, error)
}

// Endpoint is where one delivery attempt goes: Addr (host:port) instead of
// the subscriber URL's host, or the URL's host when Addr is empty. Release,
// if set, is called once the attempt's response has been read.
type Endpoint struct {
	Addr    string
	Release func()
}

// Broker is the local data plane for a set of Knative Brokers and Triggers:
// an HTTP ingress (ServeHTTP) that stores events in Redis streams, and
// dispatch loops (Run) that filter and deliver them. It is safe for
// concurrent use.
type Broker struct {
	rdb         redis.UniversalClient
	log         *slog.Logger
	obs         Observer
	consumer    string
	duplicates  float64 // Config.DuplicateDeliveries
	maxBody     int64
	drain       time.Duration
	zlog        *zap.Logger
	dispatcher  *kncloudevents.Dispatcher // dead letters
	conns       *connPool                 // deliveries to http subscribers (send.go)
	client      *http.Client              // deliveries to other subscribers
	tracer      trace.Tracer
	tracing     bool // a TracerProvider was given: one span per delivery
	endpoint    func(ctx context.Context, subscriber *url.URL) (Endpoint, error)
	ttl         client.EventDefaulter
	maxInFlight int
	auth        Auth // nil: no sender identity

	brokers  map[types.NamespacedName]*brokerState
	order    []*brokerState
	triggers []*triggerState

	bufs    sync.Pool // *bytes.Buffer for ingress bodies
	running atomic.Bool
}

// brokerState is one Broker's static configuration.
type brokerState struct {
	name       types.NamespacedName
	key        string // the stream
	ingressURL *apis.URL
	triggers   []*triggerState
	appender   *appender // ingress writes
	// reclaimIdle: a pending entry idle longer than this that no delivery
	// holds is claimed back (reclaim.go).
	reclaimIdle time.Duration
}

// triggerState is one Trigger, resolved and with its retry policies built.
type triggerState struct {
	index      int
	spec       *eventingv1.Trigger
	name       types.NamespacedName
	broker     *brokerState
	subscriber duckv1.Addressable
	dls        *duckv1.Addressable
	// retry is the delivery policy with CheckRetry wrapped to inspect 2xx
	// bodies (non-event → 502); dlsRetry is the unwrapped policy used
	// towards the dead letter sink, whose response body is ignored.
	retry    kncloudevents.RetryConfig
	dlsRetry kncloudevents.RetryConfig
	format   *eventingduckv1.FormatType
}

// New checks cfg, resolves every destination once and prepares the
// delivery policies. It does not touch Redis.
//
// It also performs the two process-wide settings kncloudevents needs (the
// documented exception to "no globals"): ConfigureConnectionArgs with large
// idle-connection limits, and SYSTEM_NAMESPACE=knative-eventing if unset.
// Both are idempotent.
func New(cfg Config) (*Broker, error) {
	if cfg.Redis == nil {
		return nil, errors.New("devbroker: Config.Redis is required")
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("devbroker: at least one Broker is required")
	}
	if cfg.Resolve == nil {
		return nil, errors.New("devbroker: Config.Resolve is required")
	}
	b := &Broker{
		rdb:      cfg.Redis,
		log:      cfg.Logger,
		obs:      cfg.Observer,
		consumer: cfg.Consumer,
		maxBody:  cfg.MaxBodyBytes,
		drain:    cfg.DrainTimeout,
		zlog:     zap.NewNop(),
		brokers:  make(map[types.NamespacedName]*brokerState, len(cfg.Brokers)),
		auth:     cfg.Auth,
		endpoint: cfg.Endpoint,
	}
	if r := cfg.DuplicateDeliveries; !(r >= 0 && r <= 1) {
		return nil, fmt.Errorf("devbroker: DuplicateDeliveries %v: want a probability in [0, 1]", r)
	}
	b.duplicates = cfg.DuplicateDeliveries
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.obs == nil {
		b.obs = NopObserver{}
	}
	if b.consumer == "" {
		b.consumer = DefaultConsumer
	}
	if b.maxBody <= 0 {
		b.maxBody = DefaultMaxBodyBytes
	}
	if b.drain <= 0 {
		b.drain = DefaultDrainTimeout
	}
	inflight := cfg.MaxInFlight
	if inflight <= 0 {
		inflight = DefaultMaxInFlight
	}
	b.maxInFlight = inflight
	b.bufs.New = func() any { return new(bytes.Buffer) }
	b.ttl = knbroker.TTLDefaulter(b.zlog, DefaultTTL)

	ingressURL := cfg.IngressURL
	if ingressURL == nil {
		ingressURL = clusterIngressURL
	}

	// Process-wide kncloudevents settings (see the doc comment).
	if os.Getenv("SYSTEM_NAMESPACE") == "" {
		if err := os.Setenv("SYSTEM_NAMESPACE", "knative-eventing"); err != nil {
			return nil, fmt.Errorf("devbroker: set SYSTEM_NAMESPACE: %w", err)
		}
	}
	kncloudevents.ConfigureConnectionArgs(&kncloudevents.ConnectionArgs{
		MaxIdleConns:        maxIdleConns,
		MaxIdleConnsPerHost: maxIdleConnsPerHost,
	})
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	b.dispatcher = kncloudevents.NewDispatcher(eventingtls.ClientConfig{}, nil,
		kncloudevents.WithTraceProvider(tp), kncloudevents.WithMeterProvider(mp))
	b.tracer, b.tracing = tp.Tracer("github.com/ksaga/ksaga/internal/devbroker"), cfg.TracerProvider != nil
	transport := http.DefaultTransport.(*http.Transport).Clone() // after ksaga dev installed its dialer
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = maxIdleConns, maxIdleConnsPerHost
	b.client = &http.Client{Transport: transport}
	b.conns = newConnPool(transport.DialContext, maxIdleConnsPerHost, b.maxBody)

	ctx := context.Background()
	for _, br := range cfg.Brokers {
		if br == nil {
			return nil, errors.New("devbroker: nil Broker")
		}
		nn := types.NamespacedName{Namespace: br.Namespace, Name: br.Name}
		if _, dup := b.brokers[nn]; dup {
			return nil, fmt.Errorf("devbroker: duplicate Broker %s", nn)
		}
		u := ingressURL(nn.Namespace, nn.Name)
		if u == nil {
			return nil, fmt.Errorf("devbroker: no ingress URL for Broker %s", nn)
		}
		bs := &brokerState{name: nn, key: streamKey(nn), ingressURL: u}
		bs.appender = &appender{rdb: b.rdb, key: bs.key}
		b.brokers[nn] = bs
		b.order = append(b.order, bs)
	}

	for i, t := range cfg.Triggers {
		if t == nil {
			return nil, errors.New("devbroker: nil Trigger")
		}
		ts, err := b.newTrigger(ctx, cfg, len(b.triggers), t)
		if err != nil {
			return nil, fmt.Errorf("devbroker: trigger %d (%s/%s): %w", i, t.Namespace, t.Name, err)
		}
		b.triggers = append(b.triggers, ts)
		ts.broker.triggers = append(ts.broker.triggers, ts)
	}
	for _, bs := range b.order {
		bs.reclaimIdle = idleThreshold(bs.triggers)
	}
	return b, nil
}

func (b *Broker) newTrigger(ctx context.Context, cfg Config, index int, t *eventingv1.Trigger) (*triggerState, error) {
	bn := types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.Broker}
	bs, ok := b.brokers[bn]
	if !ok {
		return nil, fmt.Errorf("broker %s is not configured", bn)
	}
	for _, other := range bs.triggers {
		if other.name.Name == t.Name {
			return nil, fmt.Errorf("duplicate trigger name")
		}
	}
	// Build the filters once to reject what Knative's webhook would
	// (CESQL that panics the parser); Run builds the instances it uses.
	f, err := buildFilter(b.zlog, b.log, t)
	if err != nil {
		return nil, err
	}
	f.Cleanup()

	sub, err := cfg.Resolve(ctx, t.Spec.Subscriber, t.Namespace)
	if err != nil {
		return nil, fmt.Errorf("resolve subscriber: %w", err)
	}
	if sub == nil {
		return nil, errors.New("resolve subscriber: no URL")
	}

	// A Trigger's delivery replaces the Broker's retry/backoff/timeout as a
	// whole; the dead letter sink falls back to the Broker's separately
	// (Knative reconciler/subscription deliverySpec + resolveDeadLetterSink).
	var spec eventingduckv1.DeliverySpec
	var format *eventingduckv1.FormatType
	brokerObj := findBroker(cfg.Brokers, bn)
	switch {
	case t.Spec.Delivery != nil:
		spec = *t.Spec.Delivery
		format = t.Spec.Delivery.Format
	case brokerObj.Spec.Delivery != nil:
		spec = *brokerObj.Spec.Delivery
	}
	var dlsDest *duckv1.Destination
	switch {
	case t.Spec.Delivery != nil && t.Spec.Delivery.DeadLetterSink != nil:
		dlsDest = t.Spec.Delivery.DeadLetterSink
	case brokerObj.Spec.Delivery != nil && brokerObj.Spec.Delivery.DeadLetterSink != nil:
		dlsDest = brokerObj.Spec.Delivery.DeadLetterSink
	}
	ts := &triggerState{
		index:      index,
		spec:       t,
		name:       types.NamespacedName{Namespace: t.Namespace, Name: t.Name},
		broker:     bs,
		subscriber: duckv1.Addressable{URL: sub, CACerts: t.Spec.Subscriber.CACerts, Audience: t.Spec.Subscriber.Audience},
		format:     format,
	}
	if dlsDest != nil {
		// The DLS of a Broker is resolved in the Broker's namespace, which
		// is the Trigger's namespace too.
		u, err := cfg.Resolve(ctx, *dlsDest, t.Namespace)
		if err != nil {
			return nil, fmt.Errorf("resolve dead letter sink: %w", err)
		}
		if u == nil {
			return nil, errors.New("resolve dead letter sink: no URL")
		}
		ts.dls = &duckv1.Addressable{URL: u, CACerts: dlsDest.CACerts, Audience: dlsDest.Audience}
	}
	rc, err := kncloudevents.RetryConfigFromDeliverySpec(spec)
	if err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	ts.dlsRetry = rc
	ts.retry = rc
	ts.retry.CheckRetry = b.checkRetry(rc)
	return ts, nil
}

func findBroker(brokers []*eventingv1.Broker, nn types.NamespacedName) *eventingv1.Broker {
	for _, br := range brokers {
		if br.Namespace == nn.Namespace && br.Name == nn.Name {
			return br
		}
	}
	return nil
}

// clusterIngressURL is the address Knative's MT broker publishes.
func clusterIngressURL(namespace, name string) *apis.URL {
	return &apis.URL{Scheme: "http", Host: "broker-ingress.knative-eventing.svc.cluster.local", Path: "/" + namespace + "/" + name}
}

// labels returns the observer labels of a trigger (or of a broker if t is nil).
func labelsFor(bs *brokerState, t *triggerState, eventType string) Labels {
	l := Labels{Namespace: bs.name.Namespace, Broker: bs.name.Name, EventType: eventType}
	if t != nil {
		l.Trigger = t.name.Name
	}
	return l
}

// statusText is used in log lines.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
}
