package redisstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// These tests drive a change whose effect runs on another node than its
// saga (Redis Cluster) through every crash point: its three scripts
// (prepare, effect, commit) are called one by one, as a step that dies
// between two of them leaves them, and then the event is delivered again,
// another change comes, or the sweeper's Compact runs.

var (
	testCharge = saga.Effect{Name: "test.charge", Lua: `
local balance = tonumber(redis.call('GET', keys.balance) or '')
if balance == nil then return 'unknown account' end
if balance < tonumber(args.amount) then return 'insufficient funds' end
redis.call('DECRBY', keys.balance, args.amount)
`}
	testCredit = saga.Effect{Name: "test.credit", Lua: `redis.call('INCRBY', keys.balance, args.amount)`}
	testWrite  = saga.Effect{Name: "test.write", Lua: `redis.call('INCR', keys.n)`}
)

const (
	balanceKey = "test:balance:{u1}"
	def        = "bar"
)

var bctx = context.Background()

func splitStore(t *testing.T) (*Store, *redis.ClusterClient) {
	t.Helper()
	rdb := ClusterForTest(t)
	s, err := New(rdb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(bctx, balanceKey, 100, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

// started creates saga id, running at version 1 with step "a" to undo.
func started(t *testing.T, s *Store, id string) {
	t.Helper()
	r, err := s.Apply(bctx, saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id + "-start", Type: "t.start"},
		Create: &saga.Create{Saga: def, Data: []byte(`{}`), Deadline: time.Now().Add(time.Hour)}, Step: "a",
		Success: saga.Move{Outcome: "started", Status: saga.StatusRunning, Push: true, Emit: &saga.Emit{Type: "t.pay", ID: id + "-cmd", Source: "/t"}}})
	if err != nil || !r.Applied {
		t.Fatalf("start %s: %+v %v", id, r, err)
	}
}

// pay charges amount at version 1.
func pay(id string, amount int) saga.Change {
	return saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id + "-cmd", Type: "t.pay"}, Version: 1,
		Allow: []saga.Status{saga.StatusRunning}, Step: "pay",
		Effect:  testCharge.Call().Key("balance", balanceKey).Arg("amount", amount),
		Success: saga.Move{Outcome: "paid", Status: saga.StatusRunning, Push: true, Output: []byte(`{"amount":10}`), Emit: &saga.Emit{Type: "t.paid", ID: id + "-paid", Source: "/pay"}},
		Failure: &saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Emit: &saga.Emit{Type: "t.payfailed", ID: id + "-pf", Source: "/pay"}}}
}

// abort fails the saga at version v, as the deadline sweeper does.
func abort(id string, v int64) saga.Change {
	return saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/sweeper", ID: "deadline-" + id, Type: "t.deadline"}, Version: v,
		Allow: []saga.Status{saga.StatusRunning}, Step: "pay",
		Success: saga.Move{Outcome: "timed_out", Status: saga.StatusCompensating, Reason: "deadline", Emit: &saga.Emit{Type: "t.payfailed", ID: "abort-" + id, Source: "/sweeper"}}}
}

// refund undoes pay at version v.
func refund(id string, v int64, amount int) saga.Change {
	return saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id + "-refund", Type: "t.refund"}, Version: v,
		Allow: []saga.Status{saga.StatusCompensating}, Step: "pay",
		Effect:  testCredit.Call().Key("balance", balanceKey).Arg("amount", amount),
		Success: saga.Move{Outcome: "refunded", Pop: "pay", Status: saga.StatusCompensating, Emit: &saga.Emit{Type: "t.refunded", ID: id + "-rf", Source: "/pay"}}}
}

// steps runs a split change's scripts one by one, up to stop ("prepare",
// "effect" or "commit"), and returns its attempt and the effect's
// barrier.
func steps(t *testing.T, s *Store, ch saga.Change, stop string) (pending, string) {
	t.Helper()
	c, sc, tag, err := s.plan(ch, ch.Saga)
	if err != nil || tag == "" {
		t.Fatalf("plan: split %q, %v", tag, err)
	}
	vals, err := s.prepare(bctx, ch, c, tag)
	if err != nil || (vals[0] != "prepared" && vals[0] != "pending") {
		t.Fatalf("prepare: %v %v", vals, err)
	}
	p, err := parsePending(vals)
	if err != nil {
		t.Fatal(err)
	}
	if stop == "prepare" {
		return p, ""
	}
	r, err := s.runEffect(bctx, ch, sc, p, dedupeField(ch.Event.Source, ch.Event.ID))
	if err != nil {
		t.Fatal(err)
	}
	if stop == "effect" {
		return p, r
	}
	if _, err := s.commit(bctx, ch, c, p, r); err != nil {
		t.Fatal(err)
	}
	return p, r
}

// lateEffect runs attempt p's effect (a step that was slow, not dead).
func lateEffect(t *testing.T, s *Store, ch saga.Change, p pending) string {
	t.Helper()
	_, sc, _, err := s.plan(ch, ch.Saga)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.runEffect(bctx, ch, sc, p, dedupeField(ch.Event.Source, ch.Event.ID))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lateCommit commits attempt p with result r.
func lateCommit(t *testing.T, s *Store, ch saga.Change, p pending, r string) []string {
	t.Helper()
	c, _, _, err := s.plan(ch, ch.Saga)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := s.commit(bctx, ch, c, p, r)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func apply(t *testing.T, s *Store, ch saga.Change) saga.Result {
	t.Helper()
	r, err := s.Apply(bctx, ch)
	if err != nil {
		t.Fatalf("apply %s: %v", ch.Event.ID, err)
	}
	return r
}

func balance(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	n, err := rdb.Get(bctx, balanceKey).Int()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func record(t *testing.T, s *Store, id string) saga.State {
	t.Helper()
	st, err := s.Get(bctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// pendingOf is what the saga's pending key holds: the event's dedupe
// field ("" none) and the attempt counter.
func pendingOf(t *testing.T, s *Store, rdb redis.UniversalClient, id string) (string, string) {
	t.Helper()
	v, err := rdb.HMGet(bctx, s.l.pendingKey(id), "d", "n").Result()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := v[0].(string)
	n, _ := v[1].(string)
	return d, n
}

// TestSplitRedelivery: a step that dies after any of its scripts, its
// event delivered again: the effect happens once, the change once.
func TestSplitRedelivery(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	for i, stop := range []string{"prepare", "effect", "commit"} {
		id := "r" + stop
		started(t, s, id)
		steps(t, s, pay(id, 10), stop)
		r := apply(t, s, pay(id, 10))
		if want := stop == "commit"; r.Duplicate != want || r.Applied == want || r.Version != 2 || r.Reply == nil || r.Reply.Type != "t.paid" {
			t.Fatalf("%s: redelivery %+v", stop, r)
		}
		if got := balance(t, rdb); got != 100-10*(i+1) {
			t.Fatalf("%s: balance %d, want %d: the effect ran once per saga", stop, got, 100-10*(i+1))
		}
		if r := apply(t, s, pay(id, 10)); !r.Duplicate || r.Version != 2 {
			t.Fatalf("%s: second redelivery %+v", stop, r)
		}
		st := record(t, s, id)
		if !slices.Equal(st.Compensate, []string{"pay", "a"}) || st.Steps[1].Outcome != "paid" || string(st.Outputs["pay"]) != `{"amount":10}` {
			t.Fatalf("%s: record %+v", stop, st)
		}
		if d, _ := pendingOf(t, s, rdb, id); d != "" {
			t.Fatalf("%s: still pending", stop)
		}
	}
}

// TestSplitAbortBeforeEffect: the saga is aborted while a step's change is
// prepared and its effect has not run (the empty compensation): the
// pending attempt is blocked, the step is not on the stack (nothing to
// undo), and the effect arriving late (the hanging case) does nothing.
func TestSplitAbortBeforeEffect(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "ab")
	p, _ := steps(t, s, pay("ab", 10), "prepare")
	if r := apply(t, s, abort("ab", 1)); !r.Applied || r.Status != saga.StatusCompensating {
		t.Fatalf("abort: %+v", r)
	}
	st := record(t, s, "ab")
	if !slices.Equal(st.Compensate, []string{"a"}) || st.Version != 2 {
		t.Fatalf("after the abort: stack %v version %d: pay never ran", st.Compensate, st.Version)
	}
	if r := lateEffect(t, s, pay("ab", 10), p); r != "x" {
		t.Fatalf("the late effect: barrier %q, want x (blocked)", r)
	}
	if got := balance(t, rdb); got != 100 {
		t.Fatalf("balance %d: a blocked effect ran", got)
	}
	if vals := lateCommit(t, s, pay("ab", 10), p, "x"); vals[0] != "gone" {
		t.Fatalf("the late commit: %v", vals)
	}
	if r := apply(t, s, pay("ab", 10)); r.Skipped != "version" {
		t.Fatalf("the step redelivered after the abort: %+v", r)
	}
	if got := balance(t, rdb); got != 100 || record(t, s, "ab").Version != 2 {
		t.Fatalf("balance %d: the late step moved something", got)
	}
}

// TestSplitAbortAfterEffect: the saga is aborted after a step's effect ran
// but before its change was committed: the change is committed as the
// step decided (the step is on the stack), the abort then applies at the
// next version, the compensation undoes the effect once, and the step's
// late commit or redelivery changes nothing.
func TestSplitAbortAfterEffect(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "ae")
	p, r := steps(t, s, pay("ae", 10), "effect")
	if r != "+" || balance(t, rdb) != 90 {
		t.Fatalf("effect: %q, balance %d", r, balance(t, rdb))
	}
	if r := apply(t, s, abort("ae", 1)); r.Skipped != "version" || r.Version != 2 {
		t.Fatalf("the abort at version 1: %+v (the pending step committed first)", r)
	}
	st := record(t, s, "ae")
	if !slices.Equal(st.Compensate, []string{"pay", "a"}) || st.Status != saga.StatusRunning || st.Next == nil || st.Next.Type != "t.paid" {
		t.Fatalf("resolved: %+v", st)
	}
	if r := apply(t, s, abort("ae", 2)); !r.Applied {
		t.Fatalf("abort at version 2: %+v", r)
	}
	steps(t, s, refund("ae", 3, 10), "prepare")
	// the step's own commit, late: its change was committed by the
	// abort; the refund pending now (same attempt number) is not its own
	if vals := lateCommit(t, s, pay("ae", 10), p, r); vals[0] != "duplicate" {
		t.Fatalf("the step's own late commit: %v", vals)
	}
	if d, _ := pendingOf(t, s, rdb, "ae"); d != dedupeField("/t", "ae-refund") {
		t.Fatalf("the refund is no longer pending: %q", d)
	}
	if r := apply(t, s, refund("ae", 3, 10)); !r.Applied || balance(t, rdb) != 100 {
		t.Fatalf("refund: %+v, balance %d", r, balance(t, rdb))
	}
	for _, ch := range []saga.Change{pay("ae", 10), refund("ae", 3, 10)} {
		if r := apply(t, s, ch); !r.Duplicate {
			t.Fatalf("%s redelivered: %+v", ch.Event.ID, r)
		}
	}
	if got := balance(t, rdb); got != 100 {
		t.Fatalf("balance %d, want 100: charged once, refunded once", got)
	}
}

// TestSplitCompensationBeforeStep: a compensation that comes while its
// step is pending (not done) blocks the step, finds nothing to undo, and
// the step's late effect does nothing.
func TestSplitCompensationBeforeStep(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "cb")
	p, _ := steps(t, s, pay("cb", 10), "prepare")
	if r := apply(t, s, refund("cb", 1, 10)); r.Skipped != "status" {
		t.Fatalf("a refund of a step that never ran: %+v", r)
	}
	if r := lateEffect(t, s, pay("cb", 10), p); r != "x" {
		t.Fatalf("late effect: %q", r)
	}
	if got := balance(t, rdb); got != 100 {
		t.Fatalf("balance %d", got)
	}
	// the step's event again: a new attempt, which runs
	if r := apply(t, s, pay("cb", 10)); !r.Applied || balance(t, rdb) != 90 {
		t.Fatalf("the step after its blocked attempt: %+v, balance %d", r, balance(t, rdb))
	}
	if _, n := pendingOf(t, s, rdb, "cb"); n != "" {
		t.Fatalf("attempt counter kept after the change: %q", n)
	}
}

// TestSplitLate: an attempt's effect runs only within effectWindow of its
// prepare: a redelivery after that drops the attempt and runs a new one,
// and a call of the old attempt arriving later still does nothing.
func TestSplitLate(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "late")
	p, _ := steps(t, s, pay("late", 10), "prepare")
	p.at -= (effectWindow + time.Minute).Milliseconds()
	if err := rdb.HSet(bctx, s.l.pendingKey("late"), "at", p.at).Err(); err != nil {
		t.Fatal(err)
	}
	if r := apply(t, s, pay("late", 10)); !r.Applied || balance(t, rdb) != 90 {
		t.Fatalf("redelivered after the window: %+v, balance %d", r, balance(t, rdb))
	}
	if r := lateEffect(t, s, pay("late", 10), p); r != "late" || balance(t, rdb) != 90 {
		t.Fatalf("the first attempt's call, late: %q, balance %d", r, balance(t, rdb))
	}
}

// TestSplitCommittedBarrier: once its change is committed, an attempt's
// barrier lives committedBarrier, not its saga's whole life.
func TestSplitCommittedBarrier(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "cb1")
	apply(t, s, pay("cb1", 10))
	key := barrierKey(hashTag(balanceKey), "cb1", 1, dedupeField("/t", "cb1-cmd"), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ttl, err := rdb.PTTL(bctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl > 0 && ttl <= committedBarrier {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("barrier TTL %s, want at most %s", ttl, committedBarrier)
		}
		time.Sleep(10 * time.Millisecond) // poll, bounded by the deadline
	}
}

// TestSplitCompactResolves: a change left pending by a crash and never
// delivered again is resolved by the sweeper's Compact: committed if its
// effect ran, dropped (its barrier blocked) if not.
func TestSplitCompactResolves(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "c1")
	started(t, s, "c2")
	p1, _ := steps(t, s, pay("c1", 10), "prepare")
	steps(t, s, pay("c2", 10), "effect")
	if n, err := s.Compact(bctx, time.Now(), 100); err != nil || n != 0 {
		t.Fatalf("a fresh pending change is left alone: %d %v", n, err)
	}
	if n, err := s.Compact(bctx, time.Now().Add(time.Minute), 100); err != nil || n < 2 {
		t.Fatalf("compact: %d %v", n, err)
	}
	if st := record(t, s, "c1"); st.Version != 1 || lateEffect(t, s, pay("c1", 10), p1) != "x" {
		t.Fatalf("c1 (no effect): version %d", st.Version)
	}
	if st := record(t, s, "c2"); st.Version != 2 || !slices.Equal(st.Compensate, []string{"pay", "a"}) {
		t.Fatalf("c2 (effect ran): %+v", st)
	}
	if got := balance(t, rdb); got != 90 {
		t.Fatalf("balance %d", got)
	}
	if r := apply(t, s, pay("c1", 10)); !r.Applied || balance(t, rdb) != 80 {
		t.Fatalf("c1's event after: %+v", r)
	}
	if r := apply(t, s, pay("c2", 10)); !r.Duplicate || balance(t, rdb) != 80 {
		t.Fatalf("c2's event after: %+v", r)
	}
}

// TestSplitCreate: a saga's start whose effect is on another node, left
// pending before it created the saga: there is no saga until it is
// resolved or delivered again, and its effect runs once.
func TestSplitCreate(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	create := func() saga.Change {
		return saga.Change{SagaID: "new", Saga: def, Event: saga.EventRef{Source: "/t", ID: "new-start", Type: "t.start"},
			Create: &saga.Create{Saga: def, Key: "k-new", Data: []byte(`{}`), Deadline: time.Now().Add(time.Hour)}, Step: "a",
			Effect:  testWrite.Call().Key("n", "test:{orders}:new"),
			Success: saga.Move{Outcome: "started", Status: saga.StatusRunning, Push: true, Emit: &saga.Emit{Type: "t.pay", ID: "new-cmd", Source: "/t"}}}
	}
	steps(t, s, create(), "prepare")
	if _, err := s.Get(bctx, "new"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("a pending start is no saga yet: %v", err)
	}
	if _, err := s.Compact(bctx, time.Now().Add(time.Minute), 100); err != nil {
		t.Fatal(err)
	}
	steps(t, s, create(), "effect")
	if r := apply(t, s, create()); !r.Applied || r.Version != 1 {
		t.Fatalf("start delivered again: %+v", r)
	}
	if n, _ := rdb.Get(bctx, "test:{orders}:new").Int(); n != 1 {
		t.Fatalf("the start's effect ran %d times", n)
	}
	if id, err := s.ByKey(bctx, def, "k-new"); err != nil || id != "new" {
		t.Fatalf("by key: %q %v", id, err)
	}
}

// TestSplitConcurrentDuplicates: the same event delivered many times at
// once: one change, one effect.
func TestSplitConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "dup")
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied, dups := 0, 0
	for range 8 {
		wg.Go(func() {
			r, err := s.Apply(bctx, pay("dup", 10))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Applied {
				applied++
			}
			if r.Duplicate {
				dups++
			}
		})
	}
	wg.Wait()
	if applied != 1 || dups != 7 || balance(t, rdb) != 90 {
		t.Fatalf("applied %d, duplicates %d, balance %d", applied, dups, balance(t, rdb))
	}
}

// TestSplitFailure: an effect's business failure on another node selects
// the failure move; an effect failing without one is an error that drops
// the attempt, and the next attempt runs the effect again.
func TestSplitFailure(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "f1")
	r := apply(t, s, pay("f1", 1000))
	if !r.Failed || r.Reason != "insufficient funds" || r.Status != saga.StatusCompensating || r.Reply.Type != "t.payfailed" || balance(t, rdb) != 100 {
		t.Fatalf("failure: %+v", r)
	}
	started(t, s, "f2")
	ch := pay("f2", 1000)
	ch.Failure = nil
	if _, err := s.Apply(bctx, ch); err == nil || !strings.Contains(err.Error(), "no failure outcome") {
		t.Fatalf("want an error: %v", err)
	}
	if d, n := pendingOf(t, s, rdb, "f2"); d != "" || n != "1" {
		t.Fatalf("the failed attempt is dropped: pending %q, attempts %q", d, n)
	}
	if r := apply(t, s, pay("f2", 10)); !r.Applied || balance(t, rdb) != 90 {
		t.Fatalf("the next attempt: %+v, balance %d", r, balance(t, rdb))
	}
}

// TestEffectSlots: an effect's keys must share a slot on a cluster; an
// effect in its saga's own slot runs in the one script (no pending
// change, no barrier).
func TestEffectSlots(t *testing.T) {
	t.Parallel()
	s, rdb := splitStore(t)
	started(t, s, "sl")
	ch := pay("sl", 10)
	ch.Effect = testCharge.Call().Key("balance", balanceKey).Key("other", "test:balance:{u2}")
	if _, err := s.Apply(bctx, ch); err == nil || !strings.Contains(err.Error(), "different hash slots") {
		t.Fatalf("keys in two slots: %v", err)
	}
	local := "test:balance:{" + shardTags[s.l.shardOf("sl")] + "}"
	if err := rdb.Set(bctx, local, 50, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ch = pay("sl", 10)
	ch.Effect = testCharge.Call().Key("balance", local).Arg("amount", 10)
	if r := apply(t, s, ch); !r.Applied {
		t.Fatalf("same slot: %+v", r)
	}
	if n, _ := rdb.Get(bctx, local).Int(); n != 40 {
		t.Fatalf("same-slot effect: %d", n)
	}
	var barriers []string
	var mu sync.Mutex
	_ = rdb.ForEachMaster(bctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, "ksaga:b:*").Result()
		mu.Lock()
		defer mu.Unlock()
		barriers = append(barriers, keys...)
		return err
	})
	if exists, _ := rdb.Exists(bctx, s.l.pendingKey("sl")).Result(); len(barriers) != 0 || exists != 0 {
		t.Fatalf("a one-script change left barriers %v / a pending key", barriers)
	}
}

// TestSlots: Slot agrees with the cluster's CLUSTER KEYSLOT, and every
// shard's tag hashes into its own 256-slot range.
func TestSlots(t *testing.T) {
	t.Parallel()
	rdb := ClusterForTest(t)
	keys := []string{"foo", "{user1000}.following", "bar{}", "{}bar", "a{b", "a{b}c{d}", "{{x}}", "inventory:{stock}:lamp", "ksaga:b:{payment:balance:1}:s"}
	for n, tag := range shardTags {
		if got := slot("{" + tag + "}"); got/256 != n {
			t.Errorf("shard %d: tag %q in slot %d", n, tag, got)
		}
		keys = append(keys, "ksaga:{"+tag+"}:s:x")
	}
	for _, k := range keys {
		want, err := rdb.ClusterKeySlot(bctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := slot(k); got != int(want) {
			t.Errorf("slot of %q: %d, Redis says %d", k, got, want)
		}
	}
	if slot("payment:balance:1") != slot(barrierKey(hashTag("payment:balance:1"), "s", 1, "r", 0)) {
		t.Error("a key without a tag and its barrier are in different slots")
	}
}
