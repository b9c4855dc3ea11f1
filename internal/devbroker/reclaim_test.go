package devbroker_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/utils/ptr"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/testredis"
)

// lostReads sits between the broker's Redis client and redis-server.
// While armed, the reply to every XREADGROUP the broker sends is read
// from the socket and thrown away, and the connection is closed: what a
// broker sees when redis-server dies after executing the read (and, with
// appendfsync always, after writing it to the AOF) but before its reply
// left the machine.
type lostReads struct {
	mu      sync.Mutex
	armed   bool
	victims int // reads sent while armed
}

func (l *lostReads) arm(on bool) { l.mu.Lock(); l.armed = on; l.mu.Unlock() }

func (l *lostReads) sent() int { l.mu.Lock(); defer l.mu.Unlock(); return l.victims }

func (l *lostReads) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &lossyConn{Conn: c, l: l}, nil
}

type lossyConn struct {
	net.Conn
	l      *lostReads
	victim bool // the command written last is a read whose reply is lost
}

func (c *lossyConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	if c.l.armed && bytes.Contains(bytes.ToLower(p), []byte("xreadgroup")) {
		c.victim = true
		c.l.victims++
	}
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *lossyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.victim && n > 0 {
		_ = c.Conn.Close()
		return 0, errors.New("lossyConn: reply lost")
	}
	return n, err
}

// TestReclaimAfterRedisCrash (issue 19 A1): events accepted while
// redis-server executes XREADGROUPs whose replies never reach the broker
// (redis-server is then killed -9 mid-delivery and restarted on its AOF)
// are pending for the broker's consumer but held by no delivery. The
// running broker claims them back once they are idle past its threshold
// and delivers every accepted event exactly once, without a restart of the
// broker.
func TestReclaimAfterRedisCrash(t *testing.T) {
	e := newEnv(t)
	// Replace the env's Redis with a durable one reached through lostReads.
	e.redis = testredis.Start(t, testredis.Option{"--appendonly", "yes", "--appendfsync", "always"})
	e.rdb = e.redis.Client(t)
	lossy := &lostReads{}
	brokerRedis := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), Dialer: lossy.dial})
	t.Cleanup(func() { _ = brokerRedis.Close() })

	stuck := newGate()
	defer stuck.open()
	e.sink.on("/sub", func(w http.ResponseWriter, r rec, _ int) {
		if ext(t, r, "batch") == "a" {
			<-stuck.ch
		}
		w.WriteHeader(http.StatusOK)
	})
	// One attempt of at most 2 s: the reclaim threshold is 3 s.
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("sub",
		withDelivery(&eventingduckv1.DeliverySpec{Retry: ptr.To[int32](0), Timeout: ptr.To("PT2S")}))})
	cfg.Redis = brokerRedis
	e.start(cfg)

	want := map[string]bool{}
	send := func(batch string) {
		for range 5 {
			ev := newEvent("t", "batch", batch)
			want[ev.ID()] = true
			e.send(ev)
		}
	}
	send("a")
	e.sink.wait(t, "/sub", 5) // batch a is being delivered, its subscriber blocked

	lossy.arm(true)
	// The read blocked before arming may still deliver normally: wait for
	// one sent after it.
	eventually(t, "a read sent while armed", func() bool { return lossy.sent() > 0 })
	send("b") // 202s: stored; every read of them loses its reply
	ctx := context.Background()
	key := "ksaga:broker:{saga/default}"
	eventually(t, "batch b read for the broker's consumer", func() bool {
		entries, err := e.rdb.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			return false
		}
		pending, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: key, Group: "ksaga-devbroker", Start: "-", End: "+", Count: 100}).Result()
		if err != nil {
			return false
		}
		isPending := map[string]bool{}
		for _, p := range pending {
			isPending[p.ID] = p.Consumer == "test"
		}
		n := 0
		for _, m := range entries {
			if m.Values["x:batch"] == "b" && isPending[m.ID] {
				n++
			}
		}
		return n == 5
	})
	e.redis.Stop() // kill -9, deliveries of batch a in flight
	lossy.arm(false)
	e.redis.Restart() // on its AOF
	stuck.open()

	delivered := map[string]int{}
	eventually(t, "every accepted event delivered without restarting the broker", func() bool {
		clear(delivered)
		for _, r := range e.sink.got("/sub") {
			delivered[r.Event.ID()]++
		}
		return len(delivered) == len(want)
	})
	e.waitIdle()
	for id, n := range delivered {
		if !want[id] || n != 1 {
			t.Errorf("event %s delivered %d times (accepted: %v), want once", id, n, want[id])
		}
	}
	if p, err := e.rdb.XPending(ctx, key, "ksaga-devbroker").Result(); err != nil || p.Count != 0 {
		t.Errorf("pending after the redeliveries: %+v, %v", p, err)
	}
}

// TestSlowEntriesAreNotReclaimed: entries that wait for a free worker
// longer than the reclaim threshold are held by the running broker and
// delivered once, not claimed back and delivered again.
func TestSlowEntriesAreNotReclaimed(t *testing.T) {
	e := newEnv(t)
	e.sink.on("/sub", func(w http.ResponseWriter, _ rec, _ int) {
		time.Sleep(250 * time.Millisecond) // a slow subscriber, well within its timeout
		w.WriteHeader(http.StatusOK)
	})
	// Threshold 1.5 s; one worker: the tenth event waits about 2.25 s.
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("sub",
		withDelivery(&eventingduckv1.DeliverySpec{Retry: ptr.To[int32](0), Timeout: ptr.To("PT0.5S")}))})
	cfg.MaxInFlight = 1
	e.start(cfg)
	for range 10 {
		e.send(newEvent("t"))
	}
	e.sink.wait(t, "/sub", 10)
	e.waitIdle()
	seen := map[string]int{}
	for _, r := range e.sink.got("/sub") {
		if seen[r.Event.ID()]++; seen[r.Event.ID()] > 1 {
			t.Errorf("event %s delivered twice", r.Event.ID())
		}
	}
}
