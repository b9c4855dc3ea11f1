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

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
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

	fntest.Eventually(t, 5*time.Second, func() error {
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

	fntest.Eventually(t, 5*time.Second, func() error {
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
