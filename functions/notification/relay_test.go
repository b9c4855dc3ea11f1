package main

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/sagatest"
)

type recordingSender struct {
	mu   sync.Mutex
	sent map[string]int
}

func (s *recordingSender) Send(_ context.Context, n Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent[n.OrderID]++
	return nil
}

func (s *recordingSender) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent[id]
}

// TestRelayTakesOverACrashedConsumer: entries another relay read but never
// acknowledged are sent once they have been idle long enough, and
// acknowledged in batches.
func TestRelayTakesOverACrashedConsumer(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	for _, id := range []string{"o1", "o2"} {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: ordersaga.OutboxKey, Values: []any{"order_id", id, "saga_id", "s-" + id, "user_id", "1", "kind", "order_confirmed"}})
	}
	// a relay read both, then crashed before sending
	rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: "crashed", Streams: []string{ordersaga.OutboxKey, ">"}, Count: 10})
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: ordersaga.OutboxKey, Values: []any{"order_id", "o3", "saga_id", "s-o3", "user_id", "1", "kind", "order_cancelled"}})

	s := &recordingSender{sent: map[string]int{}}
	r := &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me",
		claimEvery: 10 * time.Millisecond, claimAfter: 50 * time.Millisecond}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.run(rctx) }()
	defer func() { cancel(); <-done }()

	sagatest.Eventually(t, 5*time.Second, func() error {
		for _, id := range []string{"o1", "o2", "o3"} {
			if s.count(id) == 0 {
				return errString("not all sent yet")
			}
		}
		pending, err := rdb.XPending(ctx, ordersaga.OutboxKey, relayGroup).Result()
		if err != nil || pending.Count != 0 {
			return errString("entries still pending")
		}
		return nil
	})
	for _, id := range []string{"o1", "o2", "o3"} {
		if n := s.count(id); n != 1 {
			t.Errorf("%s sent %d times, want 1", id, n)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestRelayDrainsABacklogInBatches: a backlog is sent once per entry, read
// in batches of 100, and each batch's XACK travels in one round trip with
// the next read.
func TestRelayDrainsABacklogInBatches(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	const n = 250
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "o" + strconv.Itoa(i)
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: ordersaga.OutboxKey, Values: []any{"order_id", ids[i], "saga_id", "s-" + ids[i], "user_id", "1", "kind", "order_confirmed"}})
	}

	relayRDB := srv.Client(t)
	acks := &ackTrips{}
	relayRDB.AddHook(acks)
	s := &recordingSender{sent: map[string]int{}}
	r := &relay{rdb: relayRDB, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me"}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.run(rctx) }()
	defer func() { cancel(); <-done }()

	sagatest.Eventually(t, 5*time.Second, func() error {
		pending, err := rdb.XPending(ctx, ordersaga.OutboxKey, relayGroup).Result()
		if err != nil || pending.Count != 0 || s.count(ids[n-1]) == 0 {
			return errString("backlog not drained yet")
		}
		return nil
	})
	for _, id := range ids {
		if c := s.count(id); c != 1 {
			t.Fatalf("%s sent %d times, want 1", id, c)
		}
	}
	if got := acks.get(); !slices.Equal(got, []string{"xack+xreadgroup", "xack+xreadgroup", "xack+xreadgroup"}) {
		t.Errorf("round trips carrying an XACK: %v, want three, each with the next read", got)
	}
}

// ackTrips is a go-redis hook that records the round trips carrying an
// XACK.
type ackTrips struct {
	mu    sync.Mutex
	trips []string
}

func (a *ackTrips) get() []string { a.mu.Lock(); defer a.mu.Unlock(); return slices.Clone(a.trips) }

func (a *ackTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (a *ackTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xack" {
			a.mu.Lock()
			a.trips = append(a.trips, "xack")
			a.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (a *ackTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var names []string
		for _, c := range cmds {
			names = append(names, c.Name())
		}
		if slices.Contains(names, "xack") {
			a.mu.Lock()
			a.trips = append(a.trips, strings.Join(names, "+"))
			a.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// addOutbox appends one notification for order id to the outbox.
func addOutbox(t *testing.T, rdb *redis.Client, id string) {
	t.Helper()
	if err := xaddOutbox(rdb, id); err != nil {
		t.Fatal(err)
	}
}

func xaddOutbox(rdb *redis.Client, id string) error {
	return rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: ordersaga.OutboxKey,
		Values: []any{"order_id", id, "saga_id", "s-" + id, "user_id", "1", "kind", "order_confirmed"}}).Err()
}

// waitIdle waits until n entries have been pending for at least idle, so a
// claim with that minimum idle time takes them.
func waitIdle(t *testing.T, rdb *redis.Client, n int64, idle time.Duration) {
	t.Helper()
	sagatest.Eventually(t, 5*time.Second, func() error {
		p, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: ordersaga.OutboxKey, Group: relayGroup,
			Idle: idle, Start: "-", End: "+", Count: n}).Result()
		if err != nil || int64(len(p)) < n {
			return errString("entries not idle yet")
		}
		return nil
	})
}

// startRelay runs r until the test ends and returns a stop function that
// waits for it.
func startRelay(t *testing.T, ctx context.Context, r *relay) (stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.run(rctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// TestRelayClaimsEveryAbandonedEntry: one claim takes over all the entries
// a crashed relay left, not just the first page of them.
func TestRelayClaimsEveryAbandonedEntry(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	const n = 2*relayBatch + 50
	for i := range n {
		addOutbox(t, rdb, "o"+strconv.Itoa(i))
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: "crashed", Streams: []string{ordersaga.OutboxKey, ">"}, Count: n}).Err(); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, rdb, n, time.Millisecond)
	s := &recordingSender{sent: map[string]int{}}
	// One claim, at start: the next is an hour away.
	startRelay(t, ctx, &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me",
		claimEvery: time.Hour, claimAfter: time.Millisecond})
	sagatest.Eventually(t, 5*time.Second, func() error {
		pending, err := rdb.XPending(ctx, ordersaga.OutboxKey, relayGroup).Result()
		if err != nil || pending.Count != 0 {
			return errString("entries still pending")
		}
		return nil
	})
	for i := range n {
		if c := s.count("o" + strconv.Itoa(i)); c != 1 {
			t.Fatalf("o%d sent %d times, want 1", i, c)
		}
	}
}

// feedingSender records what it sends and, until lost is sent, adds a new
// outbox entry on every Send, so the relay's reads never come back empty;
// on its first Send it also makes lost an entry another relay read and
// abandoned.
type feedingSender struct {
	recordingSender
	t    *testing.T
	rdb  *redis.Client
	lost string
	n    int
}

func (s *feedingSender) Send(ctx context.Context, n Notification) error {
	if err := s.recordingSender.Send(ctx, n); err != nil {
		return err
	}
	if s.count(s.lost) > 0 {
		return nil
	}
	if s.n == 0 {
		if err := xaddOutbox(s.rdb, s.lost); err != nil {
			s.t.Error(err)
		}
		if err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: "crashed", Streams: []string{ordersaga.OutboxKey, ">"}, Count: 1}).Err(); err != nil {
			s.t.Error(err)
		}
	}
	s.n++
	if err := xaddOutbox(s.rdb, "feed"+strconv.Itoa(s.n)); err != nil {
		s.t.Error(err)
	}
	return nil
}

// TestRelayClaimsUnderSteadyLoad: while new entries keep coming, abandoned
// ones are still claimed and sent when a claim is due.
func TestRelayClaimsUnderSteadyLoad(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	addOutbox(t, rdb, "feed0")
	s := &feedingSender{recordingSender: recordingSender{sent: map[string]int{}}, t: t, rdb: rdb, lost: "lost"}
	startRelay(t, ctx, &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me",
		claimEvery: 20 * time.Millisecond, claimAfter: time.Millisecond})
	sagatest.Eventually(t, 5*time.Second, func() error {
		if s.count("lost") != 1 {
			return errString("the abandoned entry is not sent yet")
		}
		// A slow first batch may let the claim run before feed1 is read.
		if s.count("feed1") != 1 {
			return errString("the steady load is not sent yet")
		}
		return nil
	})
}

// cancellingSender cancels the relay's context while it sends.
type cancellingSender struct {
	recordingSender
	cancel func()
}

func (s *cancellingSender) Send(ctx context.Context, n Notification) error {
	s.cancel()
	return s.recordingSender.Send(ctx, n)
}

// TestRelayAcksClaimedEntriesOnShutdown: an abandoned entry sent as the
// relay stops is acknowledged, not sent again by the next relay.
func TestRelayAcksClaimedEntriesOnShutdown(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	addOutbox(t, rdb, "o1")
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: "crashed", Streams: []string{ordersaga.OutboxKey, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, rdb, 1, time.Millisecond)
	// The sender cancels; the timeout only bounds a failing run.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := &cancellingSender{recordingSender: recordingSender{sent: map[string]int{}}, cancel: cancel}
	r := &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me", claimEvery: time.Hour, claimAfter: time.Millisecond}
	r.run(rctx) // returns once the context is cancelled
	if s.count("o1") != 1 {
		t.Fatalf("o1 sent %d times, want 1", s.count("o1"))
	}
	pending, err := rdb.XPending(ctx, ordersaga.OutboxKey, relayGroup).Result()
	if err != nil || pending.Count != 0 {
		t.Fatalf("pending after shutdown: %+v %v", pending, err)
	}
}

// TestRelayTrimsOnlySentEntries: past its size limit the outbox loses the
// entries that were sent, never one that was not (here: ten another relay
// read and abandoned, not yet idle long enough to be claimed).
func TestRelayTrimsOnlySentEntries(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0")
	for i := range 10 {
		addOutbox(t, rdb, "stuck"+strconv.Itoa(i))
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: "crashed", Streams: []string{ordersaga.OutboxKey, ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		addOutbox(t, rdb, "o"+strconv.Itoa(i))
	}
	s := &recordingSender{sent: map[string]int{}}
	stop := startRelay(t, ctx, &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me",
		claimEvery: 10 * time.Millisecond, claimAfter: time.Hour, keep: 50})
	sagatest.Eventually(t, 5*time.Second, func() error {
		if s.count("o"+strconv.Itoa(n-1)) == 0 {
			return errString("not all sent yet")
		}
		return nil
	})
	// Trims run with every claim; with the abandoned entries first in the
	// stream, none of the sent ones behind them may go either.
	stop()
	if l := rdb.XLen(ctx, ordersaga.OutboxKey).Val(); l != n+10 {
		t.Fatalf("outbox holds %d entries, want all %d: the oldest is not sent", l, n+10)
	}

	// Once the abandoned ones are claimed and sent too, the sent entries
	// are trimmed.
	addOutbox(t, rdb, "last")
	waitIdle(t, rdb, 10, time.Millisecond)
	startRelay(t, ctx, &relay{rdb: rdb, sender: s, logger: slog.New(slog.DiscardHandler), consumer: "me",
		claimEvery: 10 * time.Millisecond, claimAfter: time.Millisecond, keep: 50})
	sagatest.Eventually(t, 5*time.Second, func() error {
		if s.count("stuck0") == 0 || s.count("last") == 0 || rdb.XLen(ctx, ordersaga.OutboxKey).Val() > 100 {
			return errString("sent entries not trimmed yet")
		}
		return nil
	})
	if last := rdb.XRevRangeN(ctx, ordersaga.OutboxKey, "+", "-", 1).Val(); len(last) != 1 || last[0].Values["order_id"] != "last" {
		t.Fatalf("newest entry %v", last)
	}
}

func TestStreamIDLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"1-0", "2-0", true}, {"2-0", "1-5", false}, {"9-1", "10-0", true}, {"5-2", "5-10", true}, {"5-3", "5-3", false}} {
		if got := streamIDLess(c.a, c.b); got != c.want {
			t.Errorf("streamIDLess(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
