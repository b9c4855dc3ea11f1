package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// A change whose effect's keys are in another hash slot than its saga's
// (a Redis Cluster: the saga's shard and, say, a customer's balance may be
// on two nodes) cannot be one script. It runs as three, each on one node
// (docs/redis-cluster.md tells why this is safe):
//
//  1. prepare, on the saga's slot: the same checks as the one script
//     (dedupe, definition, version, status, stack), then the change is
//     stored in the saga's pending key, as it was decided, with its
//     attempt number and its effect's hash tag, and indexed as pending.
//     The saga does not move. From now on any other change of the saga
//     answers "busy" until the pending change is resolved; a redelivery
//     of the same event resumes it.
//  2. effect, on the effect's slot: the effect runs with its barrier, a
//     key named by (saga, version, event, attempt) written in the same
//     script: an attempt's effect runs at most once, and never once its
//     barrier says "x".
//  3. commit, on the saga's slot: the stored change is applied with the
//     effect's result (the rest of the one script: version, history,
//     stack, reply, indexes) and the pending change removed.
//
// A change that finds another event's change pending resolves it first:
// it blocks the attempt's barrier unless the effect ran (resolve, on the
// effect's slot), then commits the pending change with what the barrier
// holds — the change as its step decided it if the effect ran, else
// nothing (the attempt is dropped; the next one gets a new barrier). The
// deadline sweeper's Compact resolves changes left pending by a crash the
// same way.

// changeAttempts bounds how often a change is tried again within Apply
// when another change was pending or its own attempt was blocked.
const changeAttempts = 4

// pendingStale is how old a pending change is before Compact resolves it.
const pendingStale = 30 * time.Second

// waitReplicas bounds how long a write that must survive a failover
// waits for a replica to have it.
const waitReplicas = 2 * time.Second

// An attempt's effect may run only within effectWindow of its prepare (by
// Redis's clock; later, the attempt is dropped and the next one runs).
// Its barrier lives as long as the pending change could (resolving it
// needs the barrier), then, once the change is committed, only
// committedBarrier more: long enough to refuse the attempt's late calls
// (effectWindow, and the nodes' clocks' drift) and a resolution after a
// failover lost the commit.
const (
	effectWindow     = 10 * time.Minute
	committedBarrier = time.Hour
)

func errBusy(ch saga.Change) error {
	return saga.Transient(fmt.Errorf("saga %s: another change kept it busy", ch.SagaID), "the saga")
}

// applySplit applies a change whose effect runs in another slot (tag).
func (s *Store) applySplit(ctx context.Context, ch saga.Change, c *call, sc *effectScripts, tag string) (saga.Result, error) {
	dedupe := dedupeField(ch.Event.Source, ch.Event.ID)
	for range changeAttempts {
		vals, err := s.prepare(ctx, ch, c, tag)
		if err != nil {
			return saga.Result{}, err
		}
		switch vals[0] {
		case "busy":
			if err := s.resolve(ctx, ch.SagaID, vals); err != nil {
				return saga.Result{}, err
			}
			continue
		case "prepared", "pending":
		default:
			return parseResult(vals)
		}
		p, err := parsePending(vals)
		if err != nil {
			return saga.Result{}, err
		}
		if p.tag != tag {
			return saga.Result{}, fmt.Errorf("saga %s: the effect of %s touches {%s}, its pending attempt {%s}: a step must decide the same from the same record",
				ch.SagaID, ch.Event.Type, tag, p.tag)
		}
		r, err := s.runEffect(ctx, ch, sc, p, dedupe)
		if err != nil {
			return saga.Result{}, err
		}
		if vals, err = s.commit(ctx, ch, c, p, r); err != nil {
			return saga.Result{}, err
		}
		if vals[0] == "blocked" || vals[0] == "gone" {
			continue // resolved without this attempt's effect: try again
		}
		if vals[0] == "applied" || vals[0] == "failed" {
			s.shortenBarrier(ctx, barrierKey(p.tag, ch.SagaID, p.version, dedupe, p.attempt))
		}
		return parseResult(vals)
	}
	return saga.Result{}, errBusy(ch)
}

// prepare is step 1 of a split change.
func (s *Store) prepare(ctx context.Context, ch saga.Change, c *call, tag string) ([]string, error) {
	vals, err := s.evalStrings(ctx, s.scripts[""].change, false, c.keys, append([]any{"a.mode", "prepare", "a.btag", tag}, c.args...)...)
	if err != nil {
		return nil, changeErr(ch, err)
	}
	return vals, nil
}

// commit is step 3 of a split change: attempt p's change, with its
// effect's result r.
func (s *Store) commit(ctx context.Context, ch saga.Change, c *call, p pending, r string) ([]string, error) {
	vals, err := s.evalStrings(ctx, s.scripts[""].change, ch.Create != nil, c.keys,
		"a.mode", "commit", "a.attempt", p.attempt, "a.eres", r, "a.dedupe", dedupeField(ch.Event.Source, ch.Event.ID))
	if err != nil {
		return nil, changeErr(ch, err)
	}
	return vals, nil
}

// pending is a change left pending, as prepare or busy answer it.
type pending struct {
	attempt int64
	tag     string
	version int64
	ttl     time.Duration // of the pending change (and its saga); <= 0: none
	at      int64         // prepared (unix ms, Redis's clock): prepare only
	dedupe  string        // busy only
	keys    []string      // busy only
}

// parsePending reads {code, attempt, tag, version, ttl ms, at} (prepare)
// or {code, attempt, tag, version, ttl ms, dedupe, keys} (busy).
func parsePending(v []string) (pending, error) {
	if len(v) < 5 {
		return pending{}, fmt.Errorf("redisstore: %s answer with %d values", v[0], len(v))
	}
	a, err1 := strconv.ParseInt(v[1], 10, 64)
	ver, err2 := strconv.ParseInt(v[3], 10, 64)
	ttl, err3 := strconv.ParseInt(v[4], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return pending{}, fmt.Errorf("redisstore: %s answer: %w", v[0], err)
	}
	p := pending{attempt: a, tag: v[2], version: ver, ttl: time.Duration(ttl) * time.Millisecond}
	switch {
	case len(v) >= 7:
		p.dedupe, p.keys = v[5], strings.Split(v[6], "\x00")
	case len(v) == 6:
		p.at, _ = strconv.ParseInt(v[5], 10, 64)
	}
	return p, nil
}

// barrierTTL is how long an attempt's barrier lives: its change's life,
// plus the retention (a late effect is refused by notafter meanwhile).
func (s *Store) barrierTTL(p pending) int64 {
	return (max(p.ttl, 0) + s.retention).Milliseconds()
}

// runEffect runs the effect of attempt p with its barrier, and returns
// the barrier ("+", "-reason", "x" or "late").
func (s *Store) runEffect(ctx context.Context, ch saga.Change, sc *effectScripts, p pending, dedupe string) (string, error) {
	ec := &call{keys: []string{barrierKey(p.tag, ch.SagaID, p.version, dedupe, p.attempt)}}
	notafter := int64(0)
	if p.at > 0 {
		notafter = p.at + effectWindow.Milliseconds()
	}
	ec.arg("ttl", s.barrierTTL(p))
	ec.arg("notafter", notafter)
	addEffect(ec, ch.Effect)
	r, err := s.evalString(ctx, sc.effect, true, ec.keys, ec.args...)
	if err != nil {
		return "", changeErr(ch, err)
	}
	return r, nil
}

// shortenBarrier gives a committed attempt's barrier committedBarrier to
// live, in the background: the commit is done, and if this is lost the
// barrier merely lives its full time.
func (s *Store) shortenBarrier(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	go func() {
		defer cancel()
		_ = s.rdb.Do(ctx, "PEXPIRE", key, committedBarrier.Milliseconds(), "LT").Err() // LT: never longer
	}()
}

// resolve settles the change another event left pending, from a busy
// answer: blocks its barrier unless its effect ran, then commits it (or
// drops it).
func (s *Store) resolve(ctx context.Context, sagaID string, busy []string) error {
	p, err := parsePending(busy)
	if err != nil {
		return err
	}
	if p.dedupe == "" || len(p.keys) == 0 {
		return fmt.Errorf("redisstore: saga %s: busy answer without its change", sagaID)
	}
	return s.settle(ctx, sagaID, p)
}

func (s *Store) settle(ctx context.Context, sagaID string, p pending) error {
	r, err := s.evalString(ctx, resolveScript, true, []string{barrierKey(p.tag, sagaID, p.version, p.dedupe, p.attempt)}, s.barrierTTL(p))
	if err != nil {
		return saga.Transient(fmt.Errorf("resolve the pending change of saga %s: %w", sagaID, err), "redis")
	}
	_, err = s.evalStrings(ctx, s.scripts[""].change, true, p.keys, "a.mode", "commit", "a.attempt", p.attempt, "a.eres", r, "a.dedupe", p.dedupe)
	if err != nil {
		if isScriptError(err) {
			return fmt.Errorf("commit the pending change of saga %s: %w", sagaID, err)
		}
		return saga.Transient(err, "redis")
	}
	return nil
}

// resolveStale resolves changes pending for longer than pendingStale (a
// step that crashed between prepare and commit, and whose event is not
// delivered again), up to budget per shard. It returns how many.
func (s *Store) resolveStale(ctx context.Context, now time.Time, budget int) (int, error) {
	if !s.l.cluster {
		return 0, nil
	}
	pipe := s.rdb.Pipeline()
	lists := make([]*redis.StringSliceCmd, s.l.shards())
	upTo := "(" + strconv.FormatInt(now.Add(-pendingStale).UnixMilli(), 10)
	for sh := range lists {
		lists[sh] = pipe.ZRangeByScore(ctx, s.l.pendingsKey(sh), &redis.ZRangeBy{Min: "-inf", Max: upTo, Count: int64(budget)})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, saga.Transient(err, "redis")
	}
	resolved := 0
	var errs []error
	for sh, l := range lists {
		for _, id := range l.Val() {
			f, err := s.rdb.HMGet(ctx, s.l.pendingKey(id), "n", "t", "v", "d", "ks").Result()
			if err != nil {
				return resolved, saga.Transient(err, "redis")
			}
			str := func(i int) string { v, _ := f[i].(string); return v }
			if str(3) == "" { // resolved meanwhile, or expired
				if err := s.rdb.ZRem(ctx, s.l.pendingsKey(sh), id).Err(); err != nil {
					return resolved, saga.Transient(err, "redis")
				}
				continue
			}
			ttl, _ := s.rdb.PTTL(ctx, s.l.pendingKey(id)).Result()
			p, err := parsePending([]string{"stale", str(0), str(1), str(2), strconv.FormatInt(ttl.Milliseconds(), 10), str(3), str(4)})
			if err == nil {
				err = s.settle(ctx, id, p)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("saga %s: %w", id, err))
				continue
			}
			resolved++
		}
	}
	return resolved, errors.Join(errs...)
}

// evalStrings runs a script answering an array of strings.
func (s *Store) evalStrings(ctx context.Context, sc *redis.Script, durable bool, keys []string, args ...any) ([]string, error) {
	v, err := s.eval(ctx, sc, durable, keys, args...).StringSlice()
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, errors.New("redisstore: script answered nothing")
	}
	return v, nil
}

func (s *Store) evalString(ctx context.Context, sc *redis.Script, durable bool, keys []string, args ...any) (string, error) {
	return s.eval(ctx, sc, durable, keys, args...).Text()
}

// eval runs a script. A durable write on a Redis Cluster whose master has
// replicas returns once a replica has it too (WAIT, on the connection
// that wrote): it survives the master's failover. Writes that need it:
// a saga's creation (answered 202), an effect before the saga records it,
// a barrier blocked by a resolution.
func (s *Store) eval(ctx context.Context, sc *redis.Script, durable bool, keys []string, args ...any) *redis.Cmd {
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !durable || !ok {
		return sc.Run(ctx, s.rdb, keys, args...)
	}
	node, err := cc.MasterForKey(ctx, keys[0])
	if err != nil || s.replicaCount(ctx, cc, slot(keys[0])) == 0 {
		return sc.Run(ctx, s.rdb, keys, args...)
	}
	for try := 0; ; try++ {
		var ev *redis.Cmd
		var wait *redis.Cmd
		_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			ev = p.EvalSha(ctx, sc.Hash(), keys, args...)
			wait = p.Do(ctx, "WAIT", 1, waitReplicas.Milliseconds())
			return nil
		})
		err := ev.Err()
		switch {
		case err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") && try == 0:
			if err := sc.Load(ctx, node).Err(); err != nil {
				return errCmd(ctx, err)
			}
			continue
		case err != nil && redirected(err):
			// the slot moved (or is moving): the cluster client follows
			// it; the write's durability is checked on the next attempt
			cc.ReloadState(ctx)
			return errCmd(ctx, saga.Transient(err, "redis"))
		case err != nil:
			var re redis.Error
			if !errors.As(err, &re) { // the node is unreachable: the cluster may have failed over
				cc.ReloadState(ctx)
			}
			return ev
		case wait.Err() != nil:
			return errCmd(ctx, saga.Transient(wait.Err(), "redis"))
		case mustInt(wait) < 1:
			s.slots.Store(slotMap{}) // look again: it may have none now
			return errCmd(ctx, saga.Transient(errors.New("no replica acknowledged the write in time"), "redis"))
		}
		return ev
	}
}

func errCmd(ctx context.Context, err error) *redis.Cmd {
	c := redis.NewCmd(ctx)
	c.SetErr(err)
	return c
}

func redirected(err error) bool {
	m := err.Error()
	return strings.HasPrefix(m, "MOVED ") || strings.HasPrefix(m, "ASK ") || strings.HasPrefix(m, "TRYAGAIN") || strings.HasPrefix(m, "CLUSTERDOWN")
}

// slotMap is the cluster's slots and their nodes (master first), as
// CLUSTER SLOTS said at most replicaCountFor ago.
type slotMap struct {
	slots []redis.ClusterSlot
	at    time.Time
}

const replicaCountFor = 5 * time.Second

// replicaCount is how many replicas serve slot (CLUSTER SLOTS: every
// function may run it, unlike INFO).
func (s *Store) replicaCount(ctx context.Context, cc *redis.ClusterClient, slot int) int {
	m, ok := s.slots.Load().(slotMap)
	if !ok || time.Since(m.at) > replicaCountFor {
		slots, err := cc.ClusterSlots(ctx).Result()
		if err != nil {
			return 0
		}
		m = slotMap{slots: slots, at: time.Now()}
		s.slots.Store(m)
	}
	for _, r := range m.slots {
		if slot >= int(r.Start) && slot <= int(r.End) {
			return len(r.Nodes) - 1
		}
	}
	return 0
}

// recentCap is how many finished sagas a shard's stats list keeps: about
// 1,000 in all.
func (s *Store) recentCap() int { return max(1000/s.l.shards(), 16) }

// deadLetterCap is how many dead letters a shard's stream keeps: about
// maxDeadLetters in all.
func (s *Store) deadLetterCap() int { return max(maxDeadLetters/s.l.shards(), 100) }

func mustInt(c *redis.Cmd) int64 {
	n, _ := c.Int64()
	return n
}
