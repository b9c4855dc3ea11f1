package devscale

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
)

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPoolContainerConcurrency: no replica ever gets more requests in
// flight than containerConcurrency; a request beyond every replica's limit
// is held and gets the first slot given back; the least loaded replica is
// chosen.
func TestPoolContainerConcurrency(t *testing.T) {
	p := NewPool(PoolConfig{ContainerConcurrency: 2, HoldTimeout: 10 * time.Second})
	p.Add("a:1")
	p.Add("b:1")
	var leases []*Lease
	for range 4 {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if st := p.Status(); st.InFlight["a:1"] != 2 || st.InFlight["b:1"] != 2 {
		t.Fatalf("in flight %v, want 2 and 2 (least loaded first)", st.InFlight)
	}
	got := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	eventually(t, "a held request", func() bool { return p.Status().Held == 1 })
	leases[2].Release() // the first on b, say
	l := <-got
	if l.Addr() != leases[2].Addr() {
		t.Errorf("held request went to %s, want the replica that freed a slot (%s)", l.Addr(), leases[2].Addr())
	}
	leases[2].Release() // a second Release is a no-op
	if st := p.Status(); st.InFlight["a:1"] > 2 || st.InFlight["b:1"] > 2 || st.Held != 0 || st.HeldEver != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestPoolConcurrentLimit: many goroutines acquiring and releasing never
// exceed the limit on any replica (checked by the replicas' own counts).
func TestPoolConcurrentLimit(t *testing.T) {
	const cc = 3
	p := NewPool(PoolConfig{ContainerConcurrency: cc, HoldTimeout: 10 * time.Second})
	counts := map[string]*atomic.Int32{}
	for _, addr := range []string{"a:1", "b:1", "c:1"} {
		p.Add(addr)
		counts[addr] = &atomic.Int32{}
	}
	var peak atomic.Int32
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			for range 50 {
				l, err := p.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := counts[l.Addr()].Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(50 * time.Microsecond)
				counts[l.Addr()].Add(-1)
				l.Release()
			}
		})
	}
	wg.Wait()
	if got := peak.Load(); got > cc || got < 2 {
		t.Errorf("peak in flight on one replica %d, want 2..%d", got, cc)
	}
	if st := p.Status(); st.Active != 0 || st.Served != 2000 {
		t.Errorf("after the run: %+v", st)
	}
}

// TestPoolHoldsUntilReady: with no replica, a request waits until one is
// added (the activator's role); the stat of the first request is reported
// at once; a hold ends with ErrHoldTimeout, the caller's context or
// ErrQueueFull.
func TestPoolHoldsUntilReady(t *testing.T) {
	var firsts atomic.Int32
	var held []time.Duration
	var mu sync.Mutex
	p := NewPool(PoolConfig{HoldTimeout: 10 * time.Second, QueueDepth: 2,
		OnFirst: func(st asmetrics.Stat) {
			if st.AverageConcurrentRequests != 1 || st.RequestCount != 1 {
				t.Errorf("first stat %+v", st)
			}
			firsts.Add(1)
		},
		Held: func(d time.Duration) { mu.Lock(); held = append(held, d); mu.Unlock() }})
	got := make(chan error, 2)
	for range 2 {
		go func() {
			l, err := p.Acquire(context.Background())
			if err == nil && l.Addr() != "r:1" {
				err = fmt.Errorf("addr %s", l.Addr())
			}
			got <- err
		}()
	}
	eventually(t, "two held requests", func() bool { return p.Status().Held == 2 })
	if _, err := p.Acquire(context.Background()); !errors.Is(err, ErrQueueFull) {
		t.Errorf("third request: %v, want ErrQueueFull", err)
	}
	time.Sleep(20 * time.Millisecond) // so that the holds last measurably
	p.Add("r:1")
	for range 2 {
		if err := <-got; err != nil {
			t.Error(err)
		}
	}
	if n := firsts.Load(); n != 1 {
		t.Errorf("first stats: %d, want 1", n)
	}
	mu.Lock()
	if len(held) != 2 || held[0] < 20*time.Millisecond {
		t.Errorf("holds observed: %v", held)
	}
	mu.Unlock()

	q := NewPool(PoolConfig{HoldTimeout: 30 * time.Millisecond})
	if _, err := q.Acquire(context.Background()); !errors.Is(err, ErrHoldTimeout) {
		t.Errorf("no replica: %v, want ErrHoldTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if st := q.Status(); st.Active != 0 || st.Held != 0 {
		t.Errorf("given-up requests still counted: %+v", st)
	}
}

// TestPoolRemoveDrains: a removed replica gets no new request, and its
// drained channel closes when its last request is released.
func TestPoolRemoveDrains(t *testing.T) {
	p := NewPool(PoolConfig{HoldTimeout: 10 * time.Second})
	a := p.Add("a:1")
	l, _ := p.Acquire(context.Background())
	drained := p.Remove(a)
	select {
	case <-drained:
		t.Fatal("drained with a request in flight")
	default:
	}
	p.Add("b:1")
	l2, _ := p.Acquire(context.Background())
	if l2.Addr() != "b:1" {
		t.Errorf("a removed replica got a request")
	}
	l.Release()
	<-drained
	if p.Ready() != 1 {
		t.Errorf("ready %d", p.Ready())
	}
	e := p.Add("c:1")
	if d := p.Remove(e); d == nil {
		t.Fatal("nil channel")
	} else {
		<-d // idle: drained at once
	}
	l2.Release()
}

// TestPoolReport: the stats follow the activator's ConcurrencyReporter:
// average concurrency over the period (held requests included), the
// request count, minus the first request already reported; an idle period
// ends the stats, and the next request is a first request again.
func TestPoolReport(t *testing.T) {
	var firsts atomic.Int32
	p := NewPool(PoolConfig{HoldTimeout: 10 * time.Second, OnFirst: func(asmetrics.Stat) { firsts.Add(1) }})
	if _, ok := p.report(time.Now()); ok {
		t.Fatal("a report before any request")
	}
	p.Add("a:1")
	var ls []*Lease
	for range 3 {
		l, _ := p.Acquire(context.Background())
		ls = append(ls, l)
	}
	st, ok := p.report(time.Now().Add(time.Second))
	if !ok || st.RequestCount != 2 || st.AverageConcurrentRequests < 1.9 || st.AverageConcurrentRequests > 2.01 {
		t.Errorf("first period: %+v (3 requests for the whole period, minus the first)", st)
	}
	for _, l := range ls {
		l.Release()
	}
	// The releases happened before the second period began: it is idle,
	// reported as zero once (as Knative does), and then nothing.
	now := time.Now().Add(2 * time.Second)
	if st, ok := p.report(now); !ok || st.RequestCount != 0 || st.AverageConcurrentRequests != 0 {
		t.Errorf("idle period: %+v, %v", st, ok)
	}
	if _, ok := p.report(now.Add(time.Second)); ok {
		t.Error("stats still reported after an idle period")
	}
	l, _ := p.Acquire(context.Background())
	l.Release()
	if n := firsts.Load(); n != 2 {
		t.Errorf("first stats: %d, want 2 (one per active period)", n)
	}
}
