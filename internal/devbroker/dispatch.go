package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"
	"knative.dev/pkg/logging"

	eventingapis "knative.dev/eventing/pkg/apis"
	knbroker "knative.dev/eventing/pkg/broker"
	"knative.dev/eventing/pkg/eventfilter"
)

// Channel capacities of a broker's Run state.
const (
	commitQueue    = 4096 // operations waiting for the committer
	committedQueue = 8    // batches of entries the committer read
)

// runState is what one Run shares with its goroutines.
type runState struct {
	filters  []eventfilter.Filter // indexed by triggerState.index
	fctx     context.Context      // for Filter calls: carries a no-op zap logger
	dctx     context.Context      // deliveries; cancelled when the drain timeout passes
	inflight sync.WaitGroup       // deliveries handed to the pool and not finished
	pool     *workerPool
}

// brokerRun is one broker stream while Run is active:
//
//	fetcher    ─ XREADGROUP BLOCK ─────────────┐
//	committer  ─ MULTI … XREADGROUP > … EXEC ──┤
//	reclaimer  ─ XPENDING IDLE, XCLAIM ────────┼─► dispatcher ─► worker pool ─► deliver ─► committer
//
// The committer reads new entries inside the transaction that stores a
// reply, so a reply is stored, acknowledged and claimed for delivery in
// one round trip; the blocking fetcher mostly sees what the ingress adds;
// the reclaimer finds entries that were read for this consumer but never
// reached it (reclaim.go).
type brokerRun struct {
	*brokerState
	rs           *runState
	commits      chan *commitOp
	fetched      chan []redis.XMessage // from the fetcher; closed when it stops
	recovered    chan []redis.XMessage // pending entries of this consumer, at start
	recoveryDone chan struct{}         // closed when the fetcher has read the pending list
	reclaimed    chan []redis.XMessage // from the reclaimer
	committed    chan []redis.XMessage // from the committer; it is the only sender
	reading      atomic.Bool           // the committer may read new entries
	// held holds every entry read by this Run from its read until its
	// acknowledgement was attempted; the reclaimer leaves them alone.
	held heldSet
}

// entry is one stream entry being delivered.
type entry struct {
	id        string
	br        *brokerRun
	event     *event.Event // knativebrokerttl removed; shared read-only by deliveries
	ttl       int32        // the removed TTL, or noTTL
	headers   http.Header  // stored headers (pass-through + trace)
	multi     bool         // has more than one delivery (triggers, duplicates)
	remaining atomic.Int32 // deliveries of a multi entry not yet recorded done

	mu      sync.Mutex
	replies map[string]bool // source + id of the replies stored for a multi entry
}

// firstReply reports whether reply is the first reply with its source and
// id among the deliveries of the entry; a later one is a duplicate
// delivery's copy of a reply that is already stored (or being stored), and
// publishing it again would double every event downstream.
func (e *entry) firstReply(reply *event.Event) bool {
	if !e.multi {
		return true
	}
	k := reply.Source() + "\x00" + reply.ID()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.replies[k] {
		return false
	}
	if e.replies == nil {
		e.replies = make(map[string]bool, 2)
	}
	e.replies[k] = true
	return true
}

// addHeaders sets what every request for the entry carries: the stored
// headers and Kn-Namespace (the broker's namespace, as broker-filter sends).
func (e *entry) addHeaders(h http.Header) {
	for k, v := range e.headers {
		h[k] = v
	}
	h.Set(eventingapis.KnNamespaceHeader, e.br.name.Namespace)
}

// Run consumes the broker streams and delivers events until ctx is done.
// Each broker stream has one consumer group; Run first redelivers the
// pending entries of Config.Consumer (accepted earlier but never finished,
// e.g. because the previous process stopped), then reads new entries in
// batches. On shutdown it stops reading, waits up to DrainTimeout for
// in-flight deliveries, and then abandons the rest: their entries stay
// pending in Redis for the next Run with the same consumer name.
//
// Run returns nil after a shutdown, or an error if the Trigger filters
// cannot be built or Run is already active.
func (b *Broker) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("devbroker: Run is already active")
	}
	defer b.running.Store(false)

	rs := &runState{
		filters: make([]eventfilter.Filter, len(b.triggers)),
		fctx:    logging.WithLogger(context.Background(), b.zlog.Sugar()),
	}
	// Filters live exactly as long as Run.
	defer func() {
		for _, f := range rs.filters {
			if f != nil {
				f.Cleanup()
			}
		}
	}()
	for i, t := range b.triggers {
		f, err := buildFilter(b.zlog, b.log, t.spec)
		if err != nil {
			return fmt.Errorf("devbroker: trigger %s: %w", t.name, err)
		}
		rs.filters[i] = f
	}

	dctx, cancelDeliveries := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDeliveries()
	rs.dctx = dctx
	rs.pool = newWorkerPool(b.maxInFlight, func(t task) {
		defer rs.inflight.Done()
		b.deliver(rs, t.e, t.t)
	})

	var committers, readers sync.WaitGroup
	runs := make([]*brokerRun, 0, len(b.order))
	for _, bs := range b.order {
		br := &brokerRun{
			brokerState:  bs,
			rs:           rs,
			commits:      make(chan *commitOp, commitQueue),
			fetched:      make(chan []redis.XMessage, 1),
			recovered:    make(chan []redis.XMessage, 1),
			recoveryDone: make(chan struct{}),
			reclaimed:    make(chan []redis.XMessage, 1),
			committed:    make(chan []redis.XMessage, committedQueue),
		}
		runs = append(runs, br)
		c := &committer{rdb: b.rdb, log: b.log, br: br, consumer: b.consumer}
		committers.Go(func() { c.run(context.WithoutCancel(ctx)) })
		readers.Go(func() { b.fetch(ctx, br) })
		readers.Go(func() { b.dispatchLoop(ctx, br) })
		readers.Go(func() { b.reclaimLoop(ctx, br) })
	}
	b.log.Info("devbroker: dispatching", slog.Int("brokers", len(b.order)), slog.Int("triggers", len(b.triggers)), slog.String("consumer", b.consumer))

	<-ctx.Done()
	for _, br := range runs {
		br.reading.Store(false)
	}
	readers.Wait()
	drained := make(chan struct{})
	go func() { rs.inflight.Wait(); close(drained) }()
	timer := time.NewTimer(b.drain)
	select {
	case <-drained:
		timer.Stop()
	case <-timer.C:
		b.log.Warn("devbroker: drain timeout; unfinished deliveries stay pending for the next Run", slog.Duration("timeout", b.drain))
		cancelDeliveries()
		<-drained
	}
	rs.pool.close()
	b.conns.closeIdle()
	for _, br := range runs {
		close(br.commits)
	}
	committers.Wait()
	b.log.Info("devbroker: stopped")
	return nil
}

// dispatchLoop feeds the entries read by the fetcher and the committer to
// the worker pool. Pending entries of this consumer (recovery) come
// first.
func (b *Broker) dispatchLoop(ctx context.Context, br *brokerRun) {
	for msgs := range br.recovered {
		b.dispatch(ctx, br, msgs, true)
	}
	for {
		select {
		case msgs, ok := <-br.fetched:
			if !ok {
				return
			}
			b.dispatch(ctx, br, msgs, false)
		case msgs := <-br.committed:
			b.dispatch(ctx, br, msgs, false)
		case msgs := <-br.reclaimed:
			b.dispatch(ctx, br, msgs, true)
		case <-ctx.Done():
			return // entries not dispatched stay pending
		}
	}
}

// fetch reads one broker stream: first this consumer's pending entries
// (into br.recovered), then new entries with a blocking XREADGROUP (into
// br.fetched). Sending blocks while the dispatcher is busy, which is the
// back pressure towards Redis.
func (b *Broker) fetch(ctx context.Context, br *brokerRun) {
	defer close(br.fetched)
	log := b.log.With(slog.String("broker", br.name.String()))
	var bo backoff
	for ctx.Err() == nil {
		err := b.ensureGroup(ctx, br.brokerState)
		if err == nil {
			break
		}
		log.Error("devbroker: create consumer group", slog.Any("error", err))
		bo.wait(ctx)
	}
	bo.reset()

	// Entries this consumer read before but never acknowledged.
	last := "0"
	for ctx.Err() == nil {
		msgs, err := b.read(ctx, br.brokerState, last, -1)
		if err != nil {
			b.readFailed(ctx, log, br.brokerState, err, &bo)
			continue
		}
		bo.reset()
		if len(msgs) == 0 {
			break
		}
		log.Info("devbroker: redelivering pending entries", slog.Int("count", len(msgs)))
		last = msgs[len(msgs)-1].ID
		br.held.add(msgs)
		select {
		case br.recovered <- msgs:
		case <-ctx.Done():
		}
	}
	close(br.recovered)
	close(br.recoveryDone)
	br.reading.Store(ctx.Err() == nil)
	// New entries.
	for ctx.Err() == nil {
		msgs, err := b.read(ctx, br.brokerState, ">", readBlock)
		if err != nil {
			b.readFailed(ctx, log, br.brokerState, err, &bo)
			continue
		}
		bo.reset()
		if len(msgs) == 0 {
			continue
		}
		br.held.add(msgs)
		select {
		case br.fetched <- msgs:
		case <-ctx.Done():
			return // read but not dispatched: pending for the next Run
		}
	}
}

func (b *Broker) readFailed(ctx context.Context, log *slog.Logger, bs *brokerState, err error, bo *backoff) {
	if ctx.Err() != nil {
		return
	}
	if redis.HasErrorPrefix(err, "NOGROUP") {
		// The stream or group vanished (Redis restarted without
		// persistence, or someone deleted the key): recreate it.
		log.Warn("devbroker: consumer group missing, recreating", slog.Any("error", err))
		if gerr := b.ensureGroup(ctx, bs); gerr == nil {
			return
		}
	} else {
		log.Error("devbroker: read stream", slog.Any("error", err))
	}
	bo.wait(ctx)
}

func (b *Broker) ensureGroup(ctx context.Context, bs *brokerState) error {
	err := b.rdb.XGroupCreateMkStream(ctx, bs.key, groupName, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("XGROUP CREATE %s: %w", bs.key, err)
	}
	return nil
}

// read is one XREADGROUP; block < 0 means no BLOCK argument.
func (b *Broker) read(ctx context.Context, bs *brokerState, id string, block time.Duration) ([]redis.XMessage, error) {
	res, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    groupName,
		Consumer: b.consumer,
		Streams:  []string{bs.key, id},
		Count:    readCount,
		Block:    block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("XREADGROUP %s %s: %w", bs.key, id, err)
	}
	if len(res) == 0 {
		return nil, nil
	}
	return res[0].Messages, nil
}

// dispatch evaluates every trigger of the broker against each entry (in
// process, no HTTP hop) and hands each matching delivery to the worker
// pool. Entries nothing matches are acknowledged in one batch. recovered marks
// entries read from the pending list: for those, triggers already recorded
// as finished are skipped.
func (b *Broker) dispatch(ctx context.Context, br *brokerRun, msgs []redis.XMessage, recovered bool) {
	rs, bs := br.rs, br.brokerState
	var acks []string
	defer func() { b.ackAsync(rs.dctx, br, acks) }()
	var done map[string]map[string]bool
	if recovered {
		done = b.loadDone(ctx, bs, msgs)
	}
	matched := make([]*triggerState, 0, len(bs.triggers))
	copiesBuf := make([]int, 0, len(bs.triggers))
	for i := range msgs {
		m := &msgs[i]
		if len(m.Values) == 0 { // deleted but still pending: nothing left to deliver
			acks = append(acks, m.ID)
			continue
		}
		ev, hdr, err := decodeEntry(m.Values)
		if err != nil {
			b.log.Error("devbroker: dropping undecodable entry", slog.String("broker", bs.name.String()), slog.String("entry", m.ID), slog.Any("error", err))
			acks = append(acks, m.ID)
			continue
		}
		ttl := noTTL
		if v, err := knbroker.GetTTL(ev.Context); err == nil {
			ttl = v
		}
		// Like broker-filter: the TTL is removed before filtering and
		// delivery, and put back on replies.
		_ = knbroker.DeleteTTL(ev.Context)

		matched = matched[:0]
		for _, t := range bs.triggers {
			if rs.filters[t.index].Filter(rs.fctx, *ev) != eventfilter.FailFilter {
				matched = append(matched, t)
			}
		}
		if len(matched) == 0 {
			acks = append(acks, m.ID)
			continue
		}
		todo := matched
		progress := recovered && len(done[m.ID]) > 0 // some deliveries finished before
		if progress {
			todo = make([]*triggerState, 0, len(matched))
			for _, t := range matched {
				if !done[m.ID][t.name.Name] {
					todo = append(todo, t)
				}
			}
			if len(todo) == 0 {
				b.ackDoneAsync(rs.dctx, br, m.ID)
				continue
			}
		}
		// copies[i] is the number of deliveries to todo[i]: 2 for a
		// duplicate delivery.
		copies, total := copiesBuf[:0], 0
		for range todo {
			n := 1
			if b.duplicates > 0 && (b.duplicates >= 1 || rand.Float64() < b.duplicates) {
				n = 2
			}
			copies = append(copies, n)
			total += n
		}
		copiesBuf = copies
		e := &entry{id: m.ID, br: br, event: ev, ttl: ttl, headers: hdr, multi: len(matched) > 1 || total > 1 || progress}
		e.remaining.Store(int32(total))
		for i, t := range todo {
			for range copies[i] {
				rs.inflight.Add(1)
				if !rs.pool.submit(ctx, task{e: e, t: t}) {
					rs.inflight.Done()
					return // the rest of the batch stays pending
				}
			}
		}
	}
}

// loadDone reads the done sets of recovered entries in one round trip. On
// error it returns what it has; the cost is a duplicate delivery.
func (b *Broker) loadDone(ctx context.Context, bs *brokerState, msgs []redis.XMessage) map[string]map[string]bool {
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(msgs))
	for i := range msgs {
		cmds[i] = pipe.SMembers(ctx, doneKey(bs.key, msgs[i].ID))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		b.log.Warn("devbroker: read delivery progress of pending entries", slog.String("broker", bs.name.String()), slog.Any("error", err))
	}
	done := make(map[string]map[string]bool)
	for i, c := range cmds {
		names, err := c.Result()
		if err != nil || len(names) == 0 {
			continue
		}
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		done[msgs[i].ID] = set
	}
	return done
}

// ackDoneAsync acknowledges a recovered multi-trigger entry whose
// deliveries had all finished before the restart.
func (b *Broker) ackDoneAsync(ctx context.Context, br *brokerRun, id string) {
	select {
	case br.commits <- &commitOp{ack: []string{id}, delKey: doneKey(br.key, id)}:
	case <-ctx.Done():
	}
}

// backoff is a small capped exponential backoff for the read loop.
type backoff struct{ d time.Duration }

func (bo *backoff) reset() { bo.d = 0 }

func (bo *backoff) wait(ctx context.Context) {
	bo.d = min(max(2*bo.d, 50*time.Millisecond), 2*time.Second)
	t := time.NewTimer(bo.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
