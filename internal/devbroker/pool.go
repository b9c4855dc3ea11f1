package devbroker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long an idle delivery worker waits before exiting.
const workerIdle = 10 * time.Second

// task is one delivery.
type task struct {
	e *entry
	t *triggerState
}

// workerPool runs deliveries on reused goroutines, at most max at a time.
// A delivery goes deep into net/http, otelhttp and kncloudevents; a fresh
// goroutine per delivery regrows its stack every time (about 5% of the
// broker's CPU in profiles), a reused one keeps it.
type workerPool struct {
	run     func(task)
	work    chan task
	max     int32
	n       atomic.Int32
	workers sync.WaitGroup
}

func newWorkerPool(limit int, run func(task)) *workerPool {
	return &workerPool{run: run, work: make(chan task), max: int32(limit)}
}

// submit hands t to an idle worker, starts a new one if fewer than max
// exist, or waits for one to become free. It reports false if ctx ended
// first.
func (p *workerPool) submit(ctx context.Context, t task) bool {
	select {
	case p.work <- t:
		return true
	default:
	}
	for {
		n := p.n.Load()
		if n >= p.max {
			break
		}
		if p.n.CompareAndSwap(n, n+1) {
			p.workers.Add(1)
			go p.worker(t)
			return true
		}
	}
	select {
	case p.work <- t:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *workerPool) worker(t task) {
	defer p.workers.Done()
	defer p.n.Add(-1)
	p.run(t)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case t, ok := <-p.work:
			if !ok {
				return
			}
			p.run(t)
			idle.Reset(workerIdle)
		case <-idle.C:
			return
		}
	}
}

// close stops the workers once no more tasks will be submitted, and waits
// for them.
func (p *workerPool) close() {
	close(p.work)
	p.workers.Wait()
}
