package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// debit is a domain write: take amount from a balance, or fail with a reason.
var debit = saga.EffectScript{Name: "test.debit", Lua: `
local bal = tonumber(redis.call('GET', keys[1]) or '-1')
local amount = tonumber(args[1])
if bal < 0 then return 'unknown account' end
if bal < amount then return 'insufficient funds' end
redis.call('DECRBY', keys[1], amount)
`}

// count increments a counter: a commutative write for the concurrency test.
var count = saga.EffectScript{Name: "test.count", Lua: `redis.call('INCR', keys[1])`}

type backend struct {
	name string
	new  func(t *testing.T) redis.UniversalClient
}

func backends() []backend {
	return []backend{
		{"redis-server", func(t *testing.T) redis.UniversalClient { return testredis.Start(t).Client(t) }},
		{"miniredis", func(t *testing.T) redis.UniversalClient {
			m := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			return c
		}},
	}
}

func newStore(t *testing.T, rdb redis.UniversalClient, now func() time.Time) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Effects: []saga.EffectScript{debit, count}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func start(id string) saga.Transition {
	return saga.Transition{
		SagaID: id, EventSource: "/test", EventID: "create-" + id, EventType: "io.ksaga.test.create",
		Create: true, Data: []byte(`{"n":1}`), Deadline: time.Now().Add(time.Minute),
		Step: "order", OnSuccess: saga.Outcome{Outcome: "created", Compensable: true, Reply: &saga.Reply{Type: "io.ksaga.test.created"}},
	}
}

func pay(id, eventID string, amount int, balanceKey string) saga.Transition {
	return saga.Transition{
		SagaID: id, EventSource: "/test", EventID: eventID, EventType: "io.ksaga.test.created",
		Step: "payment", Effect: debit.Call([]string{balanceKey}, amount),
		OnSuccess: saga.Outcome{Outcome: "authorized", Compensable: true, Reply: &saga.Reply{Type: "io.ksaga.test.paid"}},
		OnFailure: &saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reply: &saga.Reply{Type: "io.ksaga.test.payfailed"}},
	}
}

func mustApply(t *testing.T, s saga.Store, tr saga.Transition) saga.Result {
	t.Helper()
	r, err := s.Apply(context.Background(), tr)
	if err != nil {
		t.Fatalf("apply %s: %v", tr.EventID, err)
	}
	return r
}

func mustGet(t *testing.T, s saga.Store, id string) saga.State {
	t.Helper()
	st, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return st
}

func TestStore(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("redelivery returns the stored reply and changes nothing", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				ctx := context.Background()
				rdb.Set(ctx, "bal:1", 100, 0)
				first := mustApply(t, s, start("s1"))
				if !first.Applied || first.Version != 1 || first.Status != saga.StatusRunning || string(first.Reply.Data) != `{"n":1}` {
					t.Fatalf("create: %+v", first)
				}
				p1 := mustApply(t, s, pay("s1", "e2", 30, "bal:1"))
				p2 := mustApply(t, s, pay("s1", "e2", 30, "bal:1"))
				if !p1.Applied || !p2.Duplicate || p2.Applied {
					t.Fatalf("want applied then duplicate, got %+v / %+v", p1, p2)
				}
				if p1.Version != p2.Version || p1.Reply.Type != p2.Reply.Type || !p1.Reply.Time.Equal(p2.Reply.Time) || string(p1.Reply.Data) != string(p2.Reply.Data) {
					t.Fatalf("replies differ: %+v vs %+v", p1.Reply, p2.Reply)
				}
				if bal, _ := rdb.Get(ctx, "bal:1").Int(); bal != 70 {
					t.Fatalf("balance %d, want 70 (debited once)", bal)
				}
				st := mustGet(t, s, "s1")
				if st.Version != 2 || len(st.Steps) != 2 || st.Steps[1].Outcome != "authorized" {
					t.Fatalf("state after duplicate: %+v", st)
				}
				if fmt.Sprint(st.Compensate) != "[payment order]" {
					t.Fatalf("compensation stack %v, want [payment order]", st.Compensate)
				}
			})

			t.Run("a compensation runs its effect only while its step is on the stack", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				ctx := context.Background()
				mustApply(t, s, start("u1")) // stack [order]
				undo := func(eventID, step string) saga.Result {
					return mustApply(t, s, saga.Transition{SagaID: "u1", EventSource: "/test", EventID: eventID, Step: step,
						Effect: count.Call([]string{"undone:" + step}), OnSuccess: saga.Outcome{Outcome: "undone", Compensates: step}})
				}
				if r := undo("u-payment", "payment"); !r.Applied { // never applied: nothing to undo
					t.Fatalf("undo payment: %+v", r)
				}
				undo("u-order", "order")
				undo("u-order-again", "order") // another delivery of the compensation
				for step, want := range map[string]int{"payment": 0, "order": 1} {
					if n, _ := rdb.Get(ctx, "undone:"+step).Int(); n != want {
						t.Errorf("%s: effect ran %d times, want %d", step, n, want)
					}
				}
				if st := mustGet(t, s, "u1"); len(st.Compensate) != 0 || st.Version != 4 {
					t.Fatalf("state %+v", st)
				}
			})

			t.Run("a step is on the compensation stack once", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				rdb.Set(context.Background(), "bal:t", 100, 0)
				mustApply(t, s, start("c1"))
				mustApply(t, s, pay("c1", "p1", 10, "bal:t"))
				again := pay("c1", "p2", 10, "bal:t") // another event for the same step, at any version
				again.ExpectVersion = saga.AnyVersion
				mustApply(t, s, again)
				if st := mustGet(t, s, "c1"); fmt.Sprint(st.Compensate) != "[payment order]" {
					t.Fatalf("compensation stack %v, want [payment order]: one undo per step", st.Compensate)
				}
			})

			t.Run("large data applies once and reads back whole", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				ctx := context.Background()
				// 3,840 bytes is the most kept in 60-byte chunks; 300 KB would be
				// thousands of chunks, past what Lua's unpack takes in one HSET.
				for _, size := range []int{3832, 3833, 300_000} { // 3,840 and 3,841 bytes of data, and 300 KB
					id := fmt.Sprintf("big%d", size)
					tr := start(id)
					tr.Data = []byte(`{"x":"` + strings.Repeat("a", size) + `"}`)
					tr.Effect = count.Call([]string{"creates:" + id})
					first, err := s.Apply(ctx, tr)
					if err != nil || !first.Applied || string(first.Reply.Data) != string(tr.Data) {
						t.Fatalf("%d bytes: %v, applied %v, reply %d bytes", len(tr.Data), err, first.Applied, len(first.Reply.Data))
					}
					again := mustApply(t, s, tr)
					if !again.Duplicate || string(again.Reply.Data) != string(tr.Data) {
						t.Fatalf("%d bytes, redelivered: duplicate %v, reply %d bytes", len(tr.Data), again.Duplicate, len(again.Reply.Data))
					}
					if n, _ := rdb.Get(ctx, "creates:"+id).Int(); n != 1 {
						t.Fatalf("%d bytes: effect ran %d times", len(tr.Data), n)
					}
					if st := mustGet(t, s, id); string(st.Data) != string(tr.Data) {
						t.Fatalf("%d bytes: read back %d bytes", len(tr.Data), len(st.Data))
					}
					// up to 64 chunks the hash stays compact
					if enc := rdb.ObjectEncoding(ctx, redisstore.Key(id)).Val(); b.name == "redis-server" && len(tr.Data) <= 3840 && enc != "listpack" {
						t.Fatalf("%d bytes: encoding %q, want listpack", len(tr.Data), enc)
					}
				}
			})

			t.Run("business failure takes the failure outcome with the effect's reason", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				rdb.Set(context.Background(), "bal:2", 10, 0)
				mustApply(t, s, start("s2"))
				r := mustApply(t, s, pay("s2", "e2", 30, "bal:2"))
				if !r.Failed || r.Reason != "insufficient funds" || r.Status != saga.StatusCompensating || r.Reply.Type != "io.ksaga.test.payfailed" {
					t.Fatalf("failure: %+v", r)
				}
				st := mustGet(t, s, "s2")
				if st.FailedStep != "payment" || st.Reason != "insufficient funds" || fmt.Sprint(st.Compensate) != "[order]" ||
					st.Steps[1].Reason != "insufficient funds" || st.Steps[0].Reason != "" {
					t.Fatalf("state: %+v", st)
				}
				if again := mustApply(t, s, pay("s2", "e2", 30, "bal:2")); !again.Duplicate || again.Reason != "insufficient funds" {
					t.Fatalf("duplicate of the failure: %+v", again)
				}
				if bal, _ := rdb.Get(context.Background(), "bal:2").Int(); bal != 10 {
					t.Fatalf("balance %d, want 10 untouched", bal)
				}
			})

			t.Run("version and status guards refuse without changing anything", func(t *testing.T) {
				s := newStore(t, b.new(t), nil)
				mustApply(t, s, start("s3"))
				stale := pay("s3", "e-stale", 1, "nobal")
				stale.ExpectVersion = 7
				if r := mustApply(t, s, stale); r.Skipped != "version" || r.Version != 1 {
					t.Fatalf("stale: %+v", r)
				}
				guarded := saga.Transition{SagaID: "s3", EventSource: "/t", EventID: "g", Step: "x", Allow: []saga.Status{saga.StatusCompensating}}
				if r := mustApply(t, s, guarded); r.Skipped != "status" {
					t.Fatalf("status guard: %+v", r)
				}
				if r := mustApply(t, s, start("s3")); r.Skipped != "" && !r.Duplicate {
					t.Fatalf("create again with the same event must be a duplicate: %+v", r)
				}
				again := start("s3")
				again.EventID = "another-create"
				if r := mustApply(t, s, again); r.Skipped != "exists" {
					t.Fatalf("second create: %+v", r)
				}
				unknown := pay("nope", "e", 1, "nobal")
				if r := mustApply(t, s, unknown); r.Skipped != "unknown saga" {
					t.Fatalf("unknown saga: %+v", r)
				}
				if st := mustGet(t, s, "s3"); st.Version != 1 || len(st.Steps) != 1 {
					t.Fatalf("guards changed the saga: %+v", st)
				}
			})

			t.Run("compensation leaves the stack; terminal sagas get the retention", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				mustApply(t, s, start("s4"))
				r := mustApply(t, s, saga.Transition{SagaID: "s4", EventSource: "/t", EventID: "c1", Step: "order",
					OnSuccess: saga.Outcome{Outcome: "cancelled", Status: saga.StatusCompensated, Compensates: "order"}})
				if r.Status != saga.StatusCompensated || r.Reply != nil {
					t.Fatalf("cancel: %+v", r)
				}
				st := mustGet(t, s, "s4")
				if len(st.Compensate) != 0 || !st.Status.Terminal() {
					t.Fatalf("state: %+v", st)
				}
				ttl := rdb.TTL(context.Background(), redisstore.Key("s4")).Val()
				if ttl <= 59*time.Minute || ttl > time.Hour {
					t.Fatalf("ttl %v, want the 1h retention", ttl)
				}
				// a duplicate of the no-reply transition is still recognised
				if r := mustApply(t, s, saga.Transition{SagaID: "s4", EventSource: "/t", EventID: "c1", Step: "order"}); !r.Duplicate || r.Reply != nil {
					t.Fatalf("duplicate without reply: %+v", r)
				}
			})

			t.Run("the active index holds unfinished sagas by deadline; From is the status before", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				ctx := context.Background()
				created := mustApply(t, s, start("s7"))
				if created.From != "" || created.Status != saga.StatusRunning {
					t.Fatalf("create: from %q to %q", created.From, created.Status)
				}
				score, err := rdb.ZScore(ctx, redisstore.ActiveKey, "s7").Result()
				if err != nil || score < float64(time.Now().UnixMilli()) {
					t.Fatalf("index score %v, %v: want the deadline", score, err)
				}
				done := mustApply(t, s, saga.Transition{SagaID: "s7", EventSource: "/t", EventID: "done", Step: "x",
					OnSuccess: saga.Outcome{Outcome: "done", Status: saga.StatusCompleted}})
				if done.From != saga.StatusRunning || done.Status != saga.StatusCompleted {
					t.Fatalf("complete: from %q to %q", done.From, done.Status)
				}
				if n := rdb.ZCard(ctx, redisstore.ActiveKey).Val(); n != 0 {
					t.Fatalf("%d sagas still indexed after completion", n)
				}
				// a terminal saga made unfinished again (a redrive) is indexed again, by its deadline
				rdb.Expire(ctx, redisstore.Key("s7"), time.Second)
				again := mustApply(t, s, saga.Transition{SagaID: "s7", EventSource: "/t", EventID: "redrive", Step: "x",
					ExpectVersion: saga.AnyVersion, Allow: []saga.Status{saga.StatusCompleted},
					OnSuccess: saga.Outcome{Outcome: "redriven", Status: saga.StatusCompensating}})
				if again.From != saga.StatusCompleted || again.Status != saga.StatusCompensating {
					t.Fatalf("redrive: from %q to %q", again.From, again.Status)
				}
				if s2, err := rdb.ZScore(ctx, redisstore.ActiveKey, "s7").Result(); err != nil || s2 != score {
					t.Fatalf("index score after the redrive %v, %v; want the deadline %v", s2, err, score)
				}
				if ttl := rdb.TTL(ctx, redisstore.Key("s7")).Val(); ttl <= time.Hour {
					t.Fatalf("ttl %v after the redrive, want the deadline (1m) plus the retention (1h)", ttl)
				}
				// long past its deadline: indexed at now, or the gauges would prune it as expired
				old := start("s10")
				old.Deadline = time.Now().Add(-2 * time.Hour)
				mustApply(t, s, old)
				mustApply(t, s, saga.Transition{SagaID: "s10", EventSource: "/t", EventID: "done", Step: "x",
					OnSuccess: saga.Outcome{Outcome: "done", Status: saga.StatusCompensationFailed}})
				before := time.Now().UnixMilli()
				mustApply(t, s, saga.Transition{SagaID: "s10", EventSource: "/t", EventID: "redrive", Step: "x",
					ExpectVersion: saga.AnyVersion, Allow: []saga.Status{saga.StatusCompensationFailed},
					OnSuccess: saga.Outcome{Outcome: "redriven", Status: saga.StatusCompensating}})
				if s10, err := rdb.ZScore(ctx, redisstore.ActiveKey, "s10").Result(); err != nil || s10 < float64(before) {
					t.Fatalf("index score of a saga redriven past its deadline %v, %v; want about now (%d)", s10, err, before)
				}
				off, _ := redisstore.New(rdb, redisstore.Options{NoActiveIndex: true})
				mustApply(t, off, start("s8"))
				if err := rdb.ZScore(ctx, redisstore.ActiveKey, "s8").Err(); err != redis.Nil {
					t.Fatalf("indexed with the index off (%v)", err)
				}
			})

			t.Run("compact layout: chunked data, short types and times round-trip", func(t *testing.T) {
				rdb := b.new(t)
				clock := time.UnixMilli(1_800_000_000_000)
				s := newStore(t, rdb, func() time.Time { return clock })
				data := []byte(`{"order_id":"` + strings.Repeat("x", 150) + `","n":1}`)
				tr := start("s9")
				tr.Data, tr.EventType = data, "io.ksaga.order.create"
				tr.OnSuccess.Reply = &saga.Reply{Type: "io.ksaga.test.created"}
				r := mustApply(t, s, tr)
				if string(r.Reply.Data) != string(data) {
					t.Fatalf("reply data %s", r.Reply.Data)
				}
				clock = clock.Add(1500 * time.Millisecond)
				other := saga.Transition{SagaID: "s9", EventSource: "/t", EventID: "x", EventType: "com.example.other", Step: "x",
					OnSuccess: saga.Outcome{Outcome: "done", Reply: &saga.Reply{Type: "com.example.reply"}}}
				first := mustApply(t, s, other)
				again := mustApply(t, s, other)
				if !again.Duplicate || again.Reply.Type != "com.example.reply" || !again.Reply.Time.Equal(first.Reply.Time) || !first.Reply.Time.Equal(clock) {
					t.Fatalf("reply times %v / %v, want %v", first.Reply.Time, again.Reply.Time, clock)
				}
				dup := mustApply(t, s, tr)
				if !dup.Duplicate || dup.Reply.Type != "io.ksaga.test.created" || string(dup.Reply.Data) != string(data) {
					t.Fatalf("duplicate of the start: %+v %s", dup, dup.Reply.Data)
				}
				st := mustGet(t, s, "s9")
				if string(st.Data) != string(data) || st.Steps[0].EventType != "io.ksaga.order.create" || st.Steps[1].EventType != "com.example.other" ||
					!st.Steps[1].At.Equal(clock) || !st.CreatedAt.Equal(clock.Add(-1500*time.Millisecond)) {
					t.Fatalf("state %+v", st)
				}
				if b.name == "redis-server" {
					if enc := rdb.ObjectEncoding(context.Background(), redisstore.Key("s9")).Val(); enc != "listpack" {
						t.Fatalf("saga hash encoding %q, want listpack (compact)", enc)
					}
				}
			})

			t.Run("unfinished sagas expire at deadline plus retention", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				mustApply(t, s, start("s5"))
				ttl := rdb.TTL(context.Background(), redisstore.Key("s5")).Val()
				if ttl < time.Hour || ttl > time.Hour+time.Minute+time.Second {
					t.Fatalf("ttl %v, want about 1h1m", ttl)
				}
			})

			t.Run("100 concurrent events end as a serial order would", func(t *testing.T) {
				rdb := b.new(t)
				s := newStore(t, rdb, nil)
				mustApply(t, s, start("s6"))
				const n = 100
				var wg sync.WaitGroup
				errs := make(chan error, 2*n)
				for i := range n {
					for range 2 { // every event twice, concurrently: at-least-once delivery
						wg.Add(1)
						go func() {
							defer wg.Done()
							_, err := s.Apply(context.Background(), saga.Transition{
								SagaID: "s6", EventSource: "/t", EventID: fmt.Sprintf("e%03d", i), EventType: "io.ksaga.test.tick",
								Step: fmt.Sprintf("tick%03d", i), Effect: count.Call([]string{"ticks"}),
								OnSuccess: saga.Outcome{Outcome: "done", Reply: &saga.Reply{Type: "io.ksaga.test.ticked", Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}},
							})
							errs <- err
						}()
					}
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				st := mustGet(t, s, "s6")
				if st.Version != n+1 || len(st.Steps) != n+1 {
					t.Fatalf("version %d, %d steps; want %d", st.Version, len(st.Steps), n+1)
				}
				var names []string
				for _, r := range st.Steps[1:] {
					names = append(names, r.Step)
				}
				sort.Strings(names)
				for i, name := range names {
					if name != fmt.Sprintf("tick%03d", i) {
						t.Fatalf("step %d is %s", i, name)
					}
				}
				if got, _ := rdb.Get(context.Background(), "ticks").Int(); got != n {
					t.Fatalf("effect ran %d times, want %d", got, n)
				}
			})
		})
	}
}

func TestRedisDownIsTransient(t *testing.T) {
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	s := newStore(t, rdb, nil)
	srv.Stop()
	_, err := s.Apply(context.Background(), start("down"))
	if saga.Code(err) != saga.ETransient {
		t.Fatalf("err %v (code %q), want transient", err, saga.Code(err))
	}
	srv.Restart() // a restarted server has lost the scripts: Run falls back to EVAL
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := s.Apply(context.Background(), start("down"))
		if err == nil {
			if !r.Applied {
				t.Fatalf("after restart: %+v", r)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A server out of memory (maxmemory with noeviction) answers 503, like one
// that is down: the Broker retries, and the event applies once memory is
// back.
func TestRedisOutOfMemoryIsTransient(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	s := newStore(t, rdb, nil)
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(ctx, start("oom"))
	if saga.Code(err) != saga.ETransient || saga.StatusCode(err) != 503 {
		t.Fatalf("err %v (code %q, HTTP %d), want transient", err, saga.Code(err), saga.StatusCode(err))
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if r := mustApply(t, s, start("oom")); !r.Applied || r.Version != 1 {
		t.Fatalf("after memory is back: %+v", r)
	}
}

// A create without a deadline is refused before it reaches Redis: the
// script would give the saga a one-second expiry and index it as overdue
// since 1970.
func TestCreateNeedsADeadline(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	s := newStore(t, rdb, nil)
	tr := start("nodl")
	tr.Deadline = time.Time{}
	_, err := s.Apply(context.Background(), tr)
	if err == nil || saga.Code(err) != saga.EInternal || !strings.Contains(err.Error(), "needs a Deadline") {
		t.Fatalf("err %v (code %q), want an internal error naming the deadline", err, saga.Code(err))
	}
	if n := rdb.Exists(context.Background(), redisstore.Key("nodl")).Val(); n != 0 {
		t.Fatalf("the saga was written")
	}
}

func TestGetUnknown(t *testing.T) {
	s := newStore(t, testredis.Start(t).Client(t), nil)
	if _, err := s.Get(context.Background(), "missing"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
}

// TestNewRefusesSubSecondRetention: Redis expires in whole seconds, so a
// retention under 1s would expire a saga the moment it finishes.
func TestNewRefusesSubSecondRetention(t *testing.T) {
	if _, err := redisstore.New(nil, redisstore.Options{Retention: 500 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "under 1s") {
		t.Errorf("500ms retention: %v", err)
	}
	if _, err := redisstore.New(nil, redisstore.Options{Retention: time.Second}); err != nil {
		t.Errorf("1s retention: %v", err)
	}
}

// TestHistoryEntryVersion: an entry with a reason knows the version its
// transition made (the reason is stored under it); others say 0.
func TestHistoryEntryVersion(t *testing.T) {
	s := newStore(t, testredis.Start(t).Client(t), nil)
	mustApply(t, s, start("h1"))
	mustApply(t, s, saga.Transition{SagaID: "h1", EventSource: "/t", EventID: "f", Step: "payment",
		OnSuccess: saga.Outcome{Outcome: "failed", Status: saga.StatusCompensating, Reason: "no money"}})
	st := mustGet(t, s, "h1")
	if st.Steps[0].Version != 0 || st.Steps[1].Version != 2 || st.Steps[1].Reason != "no money" {
		t.Fatalf("history %+v", st.Steps)
	}
}
