package devscale

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	netstats "knative.dev/networking/pkg/http/stats"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
)

// Errors of Acquire. Callers answer 503, as the activator does.
var (
	// ErrHoldTimeout: no replica could take the request within the hold
	// timeout (the revision's timeoutSeconds).
	ErrHoldTimeout = errors.New("no replica became available in time")
	// ErrQueueFull: the queue of held requests is full.
	ErrQueueFull = errors.New("too many requests held")
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// ContainerConcurrency is the hard limit of requests in flight per
	// replica; 0 is no limit.
	ContainerConcurrency int
	// HoldTimeout bounds how long Acquire waits for a replica (default
	// DefaultHoldTimeout).
	HoldTimeout time.Duration
	// QueueDepth bounds the held requests (default DefaultQueueDepth).
	QueueDepth int
	// OnFirst receives the stat the activator sends at once when the first
	// request after an idle reporting period arrives (concurrency 1, one
	// request), so that a service at zero is scaled without waiting for
	// the next report. It is called without a lock held and must not block.
	OnFirst func(asmetrics.Stat)
	// OnChange is called when the set of ready replicas changes. It must
	// not block.
	OnChange func()
	// Held observes how long each held request waited (activation or
	// capacity), including requests that gave up.
	Held func(time.Duration)
}

// Pool is the request path of one Knative Service in ksaga dev: the
// activator and each replica's queue-proxy in one. Every request to the
// service, from the ingress or the broker, takes a slot on a ready replica
// with Acquire and gives it back with Lease.Release:
//
//   - it picks the ready replica with the fewest requests in flight (ties
//     in turn), never one at its containerConcurrency (queue-proxy's
//     breaker);
//   - with no replica able to take it, the request is held in a FIFO queue
//     until one can (the activator's buffer), for at most HoldTimeout;
//   - it counts concurrency (held requests included) and requests as the
//     activator's ConcurrencyReporter does, with knative.dev/networking's
//     RequestStats: a stat at once for the first request after an idle
//     period (OnFirst), then one per reporting period (report), which the
//     Autoscaler feeds to Knative's metric collector.
type Pool struct {
	cfg PoolConfig

	mu      sync.Mutex
	eps     []*Endpoint
	next    int // round-robin start among equally loaded replicas
	waiters []*waiter
	active  int       // requests acquired or held, not released
	idle    time.Time // when active last dropped to 0
	served  int64     // requests that got a replica
	held    int64     // requests that were held
	// The ConcurrencyReporter's state (see report).
	stats *netstats.RequestStats
	first float64
}

// Endpoint is one ready replica in a Pool.
type Endpoint struct {
	Addr     string
	inflight int
	removed  bool
	drained  chan struct{} // closed once removed and in flight is 0
}

// Lease is one request's slot on a replica.
type Lease struct {
	p    *Pool
	ep   *Endpoint
	once sync.Once
}

// Addr is the replica's host:port.
func (l *Lease) Addr() string { return l.ep.Addr }

// Release gives the slot back; it may be called more than once.
func (l *Lease) Release() { l.once.Do(func() { l.p.release(l.ep) }) }

type waiter struct {
	ch chan *Endpoint // buffered: the slot is reserved when sent
}

// NewPool returns an empty Pool (no ready replica).
func NewPool(cfg PoolConfig) *Pool {
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	if cfg.OnFirst == nil {
		cfg.OnFirst = func(asmetrics.Stat) {}
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	if cfg.Held == nil {
		cfg.Held = func(time.Duration) {}
	}
	return &Pool{cfg: cfg, idle: time.Now()}
}

// Acquire takes a slot on a ready replica, holding the request until one
// can take it. It fails when ctx ends, after HoldTimeout (ErrHoldTimeout)
// or when the hold queue is full (ErrQueueFull).
func (p *Pool) Acquire(ctx context.Context) (*Lease, error) {
	start := time.Now()
	p.mu.Lock()
	first := p.requestIn(start)
	if ep := p.pick(); ep != nil {
		ep.inflight++
		p.served++
		p.mu.Unlock()
		if first {
			p.cfg.OnFirst(firstStat)
		}
		return &Lease{p: p, ep: ep}, nil
	}
	if len(p.waiters) >= p.cfg.QueueDepth {
		p.requestOut(time.Now())
		p.mu.Unlock()
		return nil, fmt.Errorf("%w (%d)", ErrQueueFull, p.cfg.QueueDepth)
	}
	w := &waiter{ch: make(chan *Endpoint, 1)}
	p.waiters = append(p.waiters, w)
	p.held++
	p.mu.Unlock()
	if first {
		p.cfg.OnFirst(firstStat)
	}

	timer := time.NewTimer(p.cfg.HoldTimeout)
	defer timer.Stop()
	var err error
	select {
	case ep := <-w.ch:
		p.cfg.Held(time.Since(start))
		return &Lease{p: p, ep: ep}, nil
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-timer.C:
		err = fmt.Errorf("%w (held %s)", ErrHoldTimeout, p.cfg.HoldTimeout)
	}
	p.cfg.Held(time.Since(start))
	p.mu.Lock()
	for i, o := range p.waiters {
		if o == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	select {
	case ep := <-w.ch: // handed a slot while giving up: pass it on
		p.release(ep)
	default:
		p.mu.Lock()
		p.requestOut(time.Now())
		p.mu.Unlock()
	}
	return nil, err
}

// pick returns the ready replica with capacity and the fewest requests in
// flight, or nil. p.mu is held.
func (p *Pool) pick() *Endpoint {
	var best *Endpoint
	n := len(p.eps)
	for i := range n {
		ep := p.eps[(p.next+i)%n]
		if cc := p.cfg.ContainerConcurrency; cc > 0 && ep.inflight >= cc {
			continue
		}
		if best == nil || ep.inflight < best.inflight {
			best = ep
		}
	}
	if n > 0 {
		p.next = (p.next + 1) % n
	}
	return best
}

// release ends a request on ep and hands free slots to held requests.
func (p *Pool) release(ep *Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep.inflight--
	if ep.removed && ep.inflight == 0 {
		close(ep.drained)
	}
	p.requestOut(time.Now())
	p.handoff()
}

// handoff gives slots of ready replicas to held requests, oldest first.
// p.mu is held.
func (p *Pool) handoff() {
	for len(p.waiters) > 0 {
		ep := p.pick()
		if ep == nil {
			return
		}
		ep.inflight++
		p.served++
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.ch <- ep
	}
}

// Add makes a ready replica at addr (host:port) take requests.
func (p *Pool) Add(addr string) *Endpoint {
	ep := &Endpoint{Addr: addr, drained: make(chan struct{})}
	p.mu.Lock()
	p.eps = append(p.eps, ep)
	p.handoff()
	p.mu.Unlock()
	p.cfg.OnChange()
	return ep
}

// Remove stops routing requests to ep. The returned channel is closed once
// its requests in flight have all been released.
func (p *Pool) Remove(ep *Endpoint) <-chan struct{} {
	p.mu.Lock()
	if !ep.removed {
		ep.removed = true
		for i, o := range p.eps {
			if o == ep {
				p.eps = append(p.eps[:i], p.eps[i+1:]...)
				break
			}
		}
		if ep.inflight == 0 {
			close(ep.drained)
		}
	}
	p.mu.Unlock()
	p.cfg.OnChange()
	return ep.drained
}

// Ready is the number of ready replicas.
func (p *Pool) Ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.eps)
}

// PoolStatus is a snapshot of a Pool.
type PoolStatus struct {
	Ready    int            // ready replicas
	Active   int            // requests in flight or held
	Held     int            // requests held now
	InFlight map[string]int // by replica address
	Served   int64          // requests that got a replica, since start
	HeldEver int64          // requests that were held, since start
	IdleFor  time.Duration  // since the last request ended (0 while active)
}

// Status returns a snapshot.
func (p *Pool) Status() PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PoolStatus{Ready: len(p.eps), Active: p.active, Held: len(p.waiters), InFlight: make(map[string]int, len(p.eps)),
		Served: p.served, HeldEver: p.held}
	for _, ep := range p.eps {
		st.InFlight[ep.Addr] = ep.inflight
	}
	if p.active == 0 {
		st.IdleFor = time.Since(p.idle)
	}
	return st
}

// requestIn counts a request in (p.mu held) and reports whether it is the
// first since an idle reporting period ended the previous stats (the
// activator then sends firstStat at once).
func (p *Pool) requestIn(now time.Time) bool {
	p.active++
	first := p.stats == nil
	if first {
		p.stats = netstats.NewRequestStats(now)
		p.first = 1
	}
	p.stats.HandleEvent(netstats.ReqEvent{Time: now, Type: netstats.ReqIn})
	return first
}

func (p *Pool) requestOut(now time.Time) {
	p.active--
	if p.active == 0 {
		p.idle = now
	}
	p.stats.HandleEvent(netstats.ReqEvent{Time: now, Type: netstats.ReqOut})
}

// reporterPod names the stats' source (one per ksaga dev).
const reporterPod = "ksaga-dev-activator"

// firstStat is what the activator sends for a first request: it "cannot ever
// be anything else but 1" (pkg/activator/handler concurrency_reporter.go).
var firstStat = asmetrics.Stat{PodName: reporterPod, AverageConcurrentRequests: 1, RequestCount: 1}

// report cuts the stat of the reporting period that ends now, as the
// activator's ConcurrencyReporter does: the average concurrency (held and
// in flight) and the request count, minus the first request already
// reported by firstStat. It reports false when no request was seen since
// the last idle period; after a period without activity the next request
// is a first request again.
func (p *Pool) report(now time.Time) (asmetrics.Stat, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stats == nil {
		return asmetrics.Stat{}, false
	}
	r := p.stats.Report(now)
	adj := p.first
	p.first = 0
	if r.AverageConcurrency == 0 && p.active == 0 {
		p.stats = nil
	}
	return asmetrics.Stat{
		PodName:                   reporterPod,
		AverageConcurrentRequests: math.Max(r.AverageConcurrency-adj, 0),
		RequestCount:              r.RequestCount - adj,
	}, true
}
