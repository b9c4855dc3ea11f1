package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// driver starts sagas at the broker ingress and receives their terminal
// events on its own HTTP receiver (the subscriber of the bench Triggers).
//
// A saga's latency is the time from just before its start command is
// POSTed (the POST that the ingress answers 202) to the arrival of its
// terminal event at the receiver.
type driver struct {
	brokerURL string
	client    *http.Client
	runID     string
	seq       atomic.Int64
	pending   sync.Map // saga id → *sagaRec
	late      atomic.Int64
	received  atomic.Int64

	ln  net.Listener
	srv *http.Server
}

// sagaRec is one saga the driver started and has not seen end.
type sagaRec struct {
	id    string
	kind  *Kind
	ph    *phase
	start time.Time
	done  chan struct{} // closed on completion (closed loop); nil in open loop
}

func newDriver() (*driver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench receiver: %w", err)
	}
	d := &driver{
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 90 * time.Second, DisableCompression: true,
		}},
		runID: strconv.FormatInt(time.Now().UnixMilli(), 36),
		ln:    ln,
	}
	d.srv = &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// receiverURL is the subscriber uri of the bench Triggers.
func (d *driver) receiverURL() string { return "http://" + d.ln.Addr().String() + "/" }

func (d *driver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.srv.Shutdown(ctx)
	d.client.CloseIdleConnections()
}

// ServeHTTP receives a terminal event (binary mode, as the broker delivers
// by default; structured mode is understood too) and acknowledges it with
// 200 and no reply.
func (d *driver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	typ, id := r.Header.Get("Ce-Type"), r.Header.Get("Ce-Correlationid")
	if typ == "" {
		var s struct {
			Type          string `json:"type"`
			CorrelationID string `json:"correlationid"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&s)
		typ, id = s.Type, s.CorrelationID
	}
	_, _ = io.Copy(io.Discard, r.Body)
	now := time.Now()
	w.WriteHeader(http.StatusOK)
	d.received.Add(1)
	v, ok := d.pending.LoadAndDelete(id)
	if !ok {
		d.late.Add(1) // a redelivery, or a saga already counted as timed out
		return
	}
	rec := v.(*sagaRec)
	rec.ph.complete(rec, typ, now)
	if rec.done != nil {
		close(rec.done)
	}
}

// newSaga registers a saga of kind in phase p, started now.
func (d *driver) newSaga(p *phase, kind *Kind, closed bool) *sagaRec {
	rec := &sagaRec{id: "bench-" + d.runID + "-" + strconv.FormatInt(d.seq.Add(1), 10), kind: kind, ph: p}
	if closed {
		rec.done = make(chan struct{})
	}
	p.outstanding.Add(1)
	rec.start = time.Now()
	d.pending.Store(rec.id, rec)
	return rec
}

// post sends the saga's start command to the broker ingress (binary mode,
// correlationid = the saga id chosen by the bench). A failure unregisters
// the saga and is counted in its phase.
func (d *driver) post(ctx context.Context, rec *sagaRec) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.brokerURL, bytes.NewReader(rec.kind.Data))
	if err != nil {
		d.fail(rec, &rec.ph.postErrors, err.Error())
		return false
	}
	h := req.Header
	h["Ce-Specversion"] = []string{"1.0"}
	h["Ce-Id"] = []string{rec.id}
	h["Ce-Source"] = []string{"/ksaga/bench"}
	h["Ce-Type"] = []string{rec.kind.Start}
	h["Ce-Correlationid"] = []string{rec.id}
	h["Content-Type"] = []string{"application/json"}
	resp, err := d.client.Do(req)
	if err != nil {
		d.fail(rec, &rec.ph.postErrors, err.Error())
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		d.fail(rec, &rec.ph.badStatus, "ingress answered "+resp.Status)
		return false
	}
	rec.ph.accepted.Add(1)
	return true
}

func (d *driver) fail(rec *sagaRec, counter *atomic.Int64, why string) {
	if _, ok := d.pending.LoadAndDelete(rec.id); ok {
		rec.ph.outstanding.Add(-1)
	}
	counter.Add(1)
	rec.ph.noteError(why)
}

// timeout gives up on a saga; it reports false if the saga ended meanwhile.
func (d *driver) timeout(rec *sagaRec) bool {
	if _, ok := d.pending.LoadAndDelete(rec.id); !ok {
		return false
	}
	rec.ph.outstanding.Add(-1)
	rec.ph.timeouts.Add(1)
	rec.ph.noteError("saga " + rec.id + " (" + rec.kind.Name + ") did not end in time")
	return true
}

// expire gives up on every saga of p still pending.
func (d *driver) expire(p *phase) {
	d.pending.Range(func(k, v any) bool {
		if rec := v.(*sagaRec); rec.ph == p {
			d.timeout(rec)
		}
		return true
	})
}

// phase collects the sagas of one measured run.
type phase struct {
	name string
	// The measured window, unix ns (0 = not yet). Latency samples are the
	// sagas started in the window (they may end after it); throughput is
	// the sagas that ended in it.
	wStart, wEnd atomic.Int64
	stopped      atomic.Bool

	mu      sync.Mutex
	samples []time.Duration
	byKind  map[string][]time.Duration
	lags    []time.Duration // open loop: actual − scheduled send time
	firstEr string

	endedInWindow atomic.Int64
	accepted      atomic.Int64
	outstanding   atomic.Int64
	postErrors    atomic.Int64
	badStatus     atomic.Int64
	timeouts      atomic.Int64
	unexpected    atomic.Int64
	dropped       atomic.Int64 // open loop: not sent, too many outstanding
}

func newPhase(name string) *phase {
	return &phase{name: name, byKind: map[string][]time.Duration{}}
}

func (p *phase) complete(rec *sagaRec, typ string, now time.Time) {
	p.outstanding.Add(-1)
	n := now.UnixNano()
	ws, we := p.wStart.Load(), p.wEnd.Load()
	if ws != 0 && n >= ws && (we == 0 || n < we) {
		p.endedInWindow.Add(1)
	}
	if typ != rec.kind.End {
		p.unexpected.Add(1)
		p.noteError(fmt.Sprintf("saga %s (%s) ended with %s, want %s", rec.id, rec.kind.Name, typ, rec.kind.End))
	}
	s := rec.start.UnixNano()
	if ws == 0 || s < ws || (we != 0 && s >= we) {
		return
	}
	lat := now.Sub(rec.start)
	p.mu.Lock()
	p.samples = append(p.samples, lat)
	p.byKind[rec.kind.Name] = append(p.byKind[rec.kind.Name], lat)
	p.mu.Unlock()
}

func (p *phase) noteError(s string) {
	p.mu.Lock()
	if p.firstEr == "" {
		p.firstEr = s
	}
	p.mu.Unlock()
}

func (p *phase) errors() int64 {
	return p.postErrors.Load() + p.badStatus.Load() + p.timeouts.Load() + p.unexpected.Load() + p.dropped.Load()
}

// mixer picks saga kinds with the mix's weights (one per kind).
type mixer struct {
	kinds []Kind
	cum   []float64
	rng   *rand.Rand
}

func newMixer(kinds []Kind, mix []float64, seed, stream uint64) *mixer {
	m := &mixer{kinds: kinds, rng: rand.New(rand.NewPCG(seed, stream))}
	total := 0.0
	for _, w := range mix {
		total += w
	}
	acc := 0.0
	for _, w := range mix {
		acc += w / total
		m.cum = append(m.cum, acc)
	}
	return m
}

func (m *mixer) next() *Kind {
	x := m.rng.Float64()
	for i, c := range m.cum {
		if x < c {
			return &m.kinds[i]
		}
	}
	return &m.kinds[len(m.kinds)-1]
}

// window is called at the start and at the end of a phase's measured
// window (to snapshot CPU, Redis and step counters).
type window func(start bool)

// closedLoop keeps inflight sagas in flight: each worker starts a saga,
// waits for its end, and starts the next; warmup, then the measured window
// of dur. It returns once every worker's last saga has ended or timed out.
func (d *driver) closedLoop(ctx context.Context, p *phase, inflight int, warmup, dur, sagaTimeout time.Duration,
	kinds []Kind, mix []float64, seed uint64, mark window) {
	var wg sync.WaitGroup
	for i := range inflight {
		m := newMixer(kinds, mix, seed, uint64(i)+1)
		wg.Go(func() {
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for !p.stopped.Load() && ctx.Err() == nil {
				rec := d.newSaga(p, m.next(), true)
				if !d.post(ctx, rec) {
					sleepCtx(ctx, 20*time.Millisecond) // do not spin on a failing ingress
					continue
				}
				t.Reset(sagaTimeout)
				select {
				case <-rec.done:
				case <-t.C:
					d.timeout(rec)
				case <-ctx.Done():
					d.timeout(rec)
				}
				if !t.Stop() {
					select {
					case <-t.C:
					default:
					}
				}
			}
		})
	}
	d.runWindow(ctx, p, warmup, dur, mark)
	p.stopped.Store(true)
	wg.Wait()
}

// openLoop starts sagas at a fixed rate (per second) whatever their
// latency, for warmup + dur, then waits (at most sagaTimeout) for the
// last ones to end. Each saga is sent on its own goroutine at its
// scheduled time; the lag of actual behind scheduled send times is
// recorded.
func (d *driver) openLoop(ctx context.Context, p *phase, rate float64, warmup, dur, sagaTimeout time.Duration,
	kinds []Kind, mix []float64, seed uint64, maxOutstanding int64, mark window) {
	interval := time.Duration(float64(time.Second) / rate)
	m := newMixer(kinds, mix, seed, 1000)
	begin := time.Now()
	end := begin.Add(warmup + dur)
	windowDone := make(chan struct{})
	go func() { d.runWindow(ctx, p, warmup, dur, mark); close(windowDone) }()
	var sends sync.WaitGroup
	for n := int64(0); ctx.Err() == nil; {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		due := int64(now.Sub(begin)/interval) + 1
		for ; n < due; n++ {
			sched := begin.Add(time.Duration(n) * interval)
			kind := m.next()
			if p.outstanding.Load() >= maxOutstanding {
				p.dropped.Add(1)
				continue
			}
			sends.Go(func() {
				rec := d.newSaga(p, kind, false)
				lag := rec.start.Sub(sched)
				p.mu.Lock()
				p.lags = append(p.lags, lag)
				p.mu.Unlock()
				d.post(ctx, rec)
			})
		}
		sleepCtx(ctx, time.Until(begin.Add(time.Duration(n)*interval)))
	}
	<-windowDone
	sends.Wait()
	deadline := time.Now().Add(sagaTimeout)
	for p.outstanding.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	d.expire(p)
}

// runWindow waits warmup, marks the window start, waits dur and marks its
// end.
func (d *driver) runWindow(ctx context.Context, p *phase, warmup, dur time.Duration, mark window) {
	sleepCtx(ctx, warmup)
	if mark != nil {
		mark(true)
	}
	p.wStart.Store(time.Now().UnixNano())
	sleepCtx(ctx, dur)
	p.wEnd.Store(time.Now().UnixNano())
	if mark != nil {
		mark(false)
	}
}

// windowSeconds is the measured window's length.
func (p *phase) windowSeconds() float64 {
	ws, we := p.wStart.Load(), p.wEnd.Load()
	if ws == 0 || we <= ws {
		return 0
	}
	return float64(we-ws) / 1e9
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
