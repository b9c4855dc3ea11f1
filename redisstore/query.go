package redisstore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// Bounds of a List page.
const (
	DefaultPage = 50
	MaxPage     = 1000
)

// Reads that span sagas (Definitions, Due, List, Stats, ByKey, Compact)
// read every shard's index (one on one primary, 64 on a Redis
// Cluster), in one pipeline — go-redis sends each node its share at once
// — and merge the answers.

// Definitions returns the names of the definitions whose sagas the store
// has seen.
func (s *Store) Definitions(ctx context.Context) ([]string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, s.l.shards())
	for sh := range cmds {
		cmds[sh] = pipe.SMembers(ctx, s.l.defsKey(sh))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, saga.Transient(err, "redis")
	}
	var defs []string
	for _, c := range cmds {
		defs = append(defs, c.Val()...)
	}
	slices.Sort(defs)
	return slices.Compact(defs), nil
}

// zitem is an index entry.
type zitem struct {
	id    string
	score float64
}

// less orders index entries by score, then id (Redis' own order).
func (a zitem) less(b zitem) bool {
	if a.score != b.score {
		return a.score < b.score
	}
	return a.id < b.id
}

// Due implements saga.Store.
func (s *Store) Due(ctx context.Context, now time.Time, limit int, sagas ...string) ([]string, error) {
	defs := sagas
	if len(defs) == 0 {
		var err error
		if defs, err = s.Definitions(ctx); err != nil {
			return nil, err
		}
	}
	upTo := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	var cmds []*redis.ZSliceCmd
	for _, def := range defs {
		for sh := range s.l.shards() {
			cmds = append(cmds, pipe.ZRangeByScoreWithScores(ctx, s.l.indexKey(sh, def, "due"), &redis.ZRangeBy{Min: "-inf", Max: upTo, Count: int64(limit)}))
		}
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, saga.Transient(err, "redis")
	}
	var all []zitem
	for _, c := range cmds {
		for _, z := range c.Val() {
			all = append(all, zitem{z.Member.(string), z.Score})
		}
	}
	slices.SortFunc(all, func(a, b zitem) int {
		if a.less(b) {
			return -1
		}
		return 1
	})
	ids := make([]string, 0, min(len(all), limit))
	for _, d := range all[:min(len(all), limit)] {
		ids = append(ids, d.id)
	}
	return ids, nil
}

// cursor is a page position: the score and id of the last entry read.
type cursor struct {
	score float64
	id    string
}

func parseCursor(raw string) (cursor, bool, error) {
	if raw == "" {
		return cursor{}, false, nil
	}
	s, id, ok := strings.Cut(raw, "_")
	score, err := strconv.ParseFloat(s, 64)
	if !ok || err != nil || id == "" {
		return cursor{}, false, saga.Invalid("cursor %q: not one of this API's", raw)
	}
	return cursor{score, id}, true, nil
}

func (c cursor) String() string { return strconv.FormatFloat(c.score, 'f', -1, 64) + "_" + c.id }

// List implements saga.Store. The index read depends on the query: the
// due index for Overdue (earliest due first), a status index for one
// status (newest first: by creation, or by end for terminal statuses), and
// the creation index otherwise (newest first). The indexes of every
// definition and shard are merged.
func (s *Store) List(ctx context.Context, q saga.Query) (saga.Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	if len(q.Status) > 1 {
		return saga.Page{}, saga.Invalid("list by one status at a time")
	}
	if len(q.Status) == 1 && !q.Status[0].Valid() {
		return saga.Page{}, saga.Invalid("status %q: want one of %v", q.Status[0], saga.Statuses)
	}
	cur, has, err := parseCursor(q.Cursor)
	if err != nil {
		return saga.Page{}, err
	}
	defs := []string{q.Saga}
	if q.Saga == "" {
		if defs, err = s.Definitions(ctx); err != nil {
			return saga.Page{}, err
		}
	}
	asc := q.Overdue
	lo, hi := "-inf", "+inf"
	if !q.From.IsZero() {
		lo = strconv.FormatInt(q.From.UnixMilli(), 10)
	}
	if !q.To.IsZero() {
		hi = "(" + strconv.FormatInt(q.To.UnixMilli(), 10)
	}
	if q.Overdue {
		lo, hi = "-inf", "("+strconv.FormatInt(q.Now.UnixMilli(), 10)
	}
	var keys []string
	for _, def := range defs {
		for sh := range s.l.shards() {
			key := s.l.indexKey(sh, def, "created")
			switch {
			case q.Overdue:
				key = s.l.indexKey(sh, def, "due")
			case len(q.Status) == 1:
				key = s.l.statusKey(sh, def, string(q.Status[0]))
			}
			keys = append(keys, key)
		}
	}
	var after *cursor
	if has {
		after = &cur
	}
	items, err := s.merged(ctx, keys, asc, lo, hi, after, limit+1)
	if err != nil {
		return saga.Page{}, err
	}
	page := saga.Page{Sagas: []saga.State{}}
	more := len(items) > limit
	items = items[:min(len(items), limit)]
	states, err := s.getMany(ctx, idsOf(items, func(i zitem) string { return i.id }))
	if err != nil {
		return saga.Page{}, err
	}
	for _, st := range states {
		if st != nil {
			page.Sagas = append(page.Sagas, *st)
		}
	}
	if more && len(items) > 0 {
		last := items[len(items)-1]
		page.Next = cursor{last.score, last.id}.String()
	}
	return page, nil
}

// merged returns the first n entries of several sorted sets merged, in
// score then id order (descending unless asc), within [lo, hi] and after
// the cursor. Each set is read from the cursor's score with its ties
// skipped by id, so a page ends and the next begins at one entry,
// whatever sets tie.
func (s *Store) merged(ctx context.Context, keys []string, asc bool, lo, hi string, after *cursor, n int) ([]zitem, error) {
	type source struct {
		key    string
		offset int64
		items  []zitem
		done   bool
	}
	srcs := make([]*source, len(keys))
	for i, k := range keys {
		srcs[i] = &source{key: k}
	}
	beyond := func(z zitem) bool { // z comes after the cursor
		if after == nil {
			return true
		}
		if asc {
			return after.less(z)
		}
		return z.less(zitem{after.id, after.score})
	}
	for {
		pipe := s.rdb.Pipeline()
		cmds := map[*source]*redis.ZSliceCmd{}
		for _, src := range srcs {
			need := n - len(src.items)
			if src.done || need <= 0 {
				continue
			}
			from, to := lo, hi
			if after != nil { // from the cursor's score, ties skipped below
				if asc {
					from = strconv.FormatFloat(after.score, 'f', -1, 64)
				} else {
					to = strconv.FormatFloat(after.score, 'f', -1, 64)
				}
			}
			by := &redis.ZRangeBy{Min: from, Max: to, Offset: src.offset, Count: int64(need)}
			if asc {
				cmds[src] = pipe.ZRangeByScoreWithScores(ctx, src.key, by)
			} else {
				cmds[src] = pipe.ZRevRangeByScoreWithScores(ctx, src.key, by)
			}
		}
		if len(cmds) == 0 {
			break
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, saga.Transient(err, "redis")
		}
		for src, c := range cmds {
			zs := c.Val()
			src.offset += int64(len(zs))
			src.done = len(zs) < int(n-len(src.items))
			for _, z := range zs {
				if it := (zitem{z.Member.(string), z.Score}); beyond(it) {
					src.items = append(src.items, it)
				}
			}
		}
	}
	var all []zitem
	for _, src := range srcs {
		all = append(all, src.items...)
	}
	slices.SortFunc(all, func(a, b zitem) int {
		c := -1
		if b.less(a) {
			c = 1
		}
		if !asc {
			c = -c
		}
		return c
	})
	return all[:min(len(all), n)], nil
}

func (c cursor) less(z zitem) bool { return zitem{c.id, c.score}.less(z) }

func idsOf[T any](items []T, id func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = id(it)
	}
	return out
}

// getMany reads sagas in one round trip; a saga that has expired is nil.
func (s *Store) getMany(ctx context.Context, ids []string) ([]*saga.State, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.l.sagaKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, saga.Transient(err, "redis")
	}
	out := make([]*saga.State, len(ids))
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			continue
		}
		st, err := parseState(ids[i], m)
		if err != nil {
			return nil, err
		}
		out[i] = &st
	}
	return out, nil
}

// Stats implements saga.Store.
func (s *Store) Stats(ctx context.Context, def string, now time.Time) (saga.Stats, error) {
	pipe := s.rdb.Pipeline()
	// terminal sagas are scored by end time and expire Retention after it
	old := "(" + strconv.FormatInt(now.Add(-s.retention).UnixMilli(), 10)
	var counts []*redis.IntCmd
	var statuses []saga.Status
	var overdue []*redis.IntCmd
	var recent []*redis.StringSliceCmd
	for sh := range s.l.shards() {
		for _, st := range saga.Statuses {
			if st.Terminal() {
				pipe.ZRemRangeByScore(ctx, s.l.statusKey(sh, def, string(st)), "-inf", old)
			}
			counts = append(counts, pipe.ZCard(ctx, s.l.statusKey(sh, def, string(st))))
			statuses = append(statuses, st)
		}
		overdue = append(overdue, pipe.ZCount(ctx, s.l.indexKey(sh, def, "due"), "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10)))
		recent = append(recent, pipe.LRange(ctx, s.l.indexKey(sh, def, "stats"), 0, -1))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return saga.Stats{}, saga.Transient(err, "redis")
	}
	out := saga.Stats{Saga: def, ByStatus: map[saga.Status]int{}}
	for _, st := range saga.Statuses {
		out.ByStatus[st] = 0
	}
	for i, c := range counts {
		out.ByStatus[statuses[i]] += int(c.Val())
	}
	for _, c := range overdue {
		out.Overdue += int(c.Val())
	}
	for _, c := range recent {
		for _, v := range c.Val() {
			p := strings.SplitN(v, ":", 3)
			if len(p) != 3 {
				continue
			}
			at, err1 := strconv.ParseInt(p[0], 10, 64)
			d, err2 := strconv.ParseInt(p[1], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			out.Recent = append(out.Recent, saga.Finished{At: time.UnixMilli(at).UTC(), Duration: time.Duration(d) * time.Millisecond, Status: saga.Status(p[2])})
		}
	}
	if len(recent) > 1 { // newest first, as one list keeps them
		slices.SortStableFunc(out.Recent, func(a, b saga.Finished) int { return b.At.Compare(a.At) })
		out.Recent = out.Recent[:min(len(out.Recent), 1000)]
	}
	return out, nil
}

// ByKey implements saga.Store. On a Redis Cluster the business key is
// indexed in its saga's shard, which the key does not name: every shard
// is asked, in one pipeline. A key given to several sagas (in several
// shards) finds the one created last, as on one primary, where the newer
// saga's create overwrites the key.
func (s *Store) ByKey(ctx context.Context, def, key string) (string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, s.l.shards())
	for sh := range cmds {
		cmds[sh] = pipe.Get(ctx, s.l.businessKey(sh, def, key))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", saga.Transient(err, "redis")
	}
	var ids []string
	for _, c := range cmds {
		if id, err := c.Result(); err == nil {
			ids = append(ids, id)
		}
	}
	switch len(ids) {
	case 0:
		return "", saga.ErrNotFound
	case 1:
		return ids[0], nil
	}
	pipe = s.rdb.Pipeline()
	created := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		created[i] = pipe.HGet(ctx, s.l.sagaKey(id), "ca")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", saga.Transient(err, "redis")
	}
	newest, at := ids[0], int64(-1)
	for i, c := range created {
		if ms, err := c.Int64(); err == nil && ms > at {
			newest, at = ids[i], ms
		}
	}
	return newest, nil
}

// Compact removes index entries of sagas that have expired, up to budget
// entries read per index, and (Redis Cluster) resolves changes a crash
// left pending (see cluster.go); the deadline sweeper calls it on every
// pass. It returns how many entries it removed and changes it resolved.
func (s *Store) Compact(ctx context.Context, now time.Time, budget int) (int, error) {
	resolved, rerr := s.resolveStale(ctx, now, budget)
	defs, err := s.Definitions(ctx)
	if err != nil {
		return resolved, errors.Join(rerr, err)
	}
	removed := resolved
	old := "(" + strconv.FormatInt(now.Add(-s.retention).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	var trims []*redis.IntCmd
	for _, def := range defs {
		for sh := range s.l.shards() {
			for _, st := range saga.Statuses {
				if st.Terminal() { // scored by end time: exact
					trims = append(trims, pipe.ZRemRangeByScore(ctx, s.l.statusKey(sh, def, string(st)), "-inf", old))
				}
			}
		}
	}
	if len(trims) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return removed, errors.Join(rerr, saga.Transient(err, "redis"))
		}
	}
	for _, c := range trims {
		removed += int(c.Val())
	}
	for _, def := range defs {
		for sh := range s.l.shards() {
			var keys []string
			for _, st := range saga.Statuses {
				if !st.Terminal() {
					keys = append(keys, s.l.statusKey(sh, def, string(st)))
				}
			}
			keys = append(keys, s.l.indexKey(sh, def, "created"), s.l.indexKey(sh, def, "due"))
			for _, key := range keys {
				n, err := s.compactOldest(ctx, key, budget)
				removed += n
				if err != nil {
					return removed, errors.Join(rerr, err)
				}
			}
		}
	}
	return removed, rerr
}

// compactOldest removes the lowest-scored entries of index key whose saga
// is gone, reading batches while whole batches are gone, up to budget.
func (s *Store) compactOldest(ctx context.Context, key string, budget int) (int, error) {
	const batch = 200
	removed := 0
	for read := 0; read < budget; read += batch {
		ids, err := s.rdb.ZRange(ctx, key, 0, batch-1).Result()
		if err != nil {
			return removed, saga.Transient(err, "redis")
		}
		if len(ids) == 0 {
			return removed, nil
		}
		pipe := s.rdb.Pipeline()
		ex := make([]*redis.IntCmd, len(ids))
		for i, id := range ids {
			ex[i] = pipe.Exists(ctx, s.l.sagaKey(id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return removed, saga.Transient(err, "redis")
		}
		var gone []any
		for i, c := range ex {
			if c.Val() == 0 {
				gone = append(gone, ids[i])
			}
		}
		if len(gone) > 0 {
			if err := s.rdb.ZRem(ctx, key, gone...).Err(); err != nil {
				return removed, saga.Transient(err, "redis")
			}
			removed += len(gone)
		}
		if len(gone) < len(ids) {
			return removed, nil
		}
	}
	return removed, nil
}

// Footprint is what one saga's record costs in Redis.
type Footprint struct {
	State    saga.State
	Bytes    int64         // MEMORY USAGE of its hash
	TTL      time.Duration // -1: no expiry
	Encoding string        // listpack (compact) or hashtable
}

// Sample returns the footprint of up to n sagas, found by scanning (every
// master of a Redis Cluster; for benchmarks and diagnostics, never on a
// request's path).
func (s *Store) Sample(ctx context.Context, n int) ([]Footprint, error) {
	var ids []string
	scan := func(ctx context.Context, c redis.UniversalClient, match string, id func(string) (string, bool)) error {
		var cur uint64
		for len(ids) < n {
			keys, next, err := c.Scan(ctx, cur, match, 1000).Result()
			if err != nil {
				return saga.Transient(err, "redis")
			}
			for _, k := range keys {
				if v, ok := id(k); ok && len(ids) < n {
					ids = append(ids, v)
				}
			}
			if cur = next; cur == 0 {
				return nil
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		var masters []*redis.Client
		var mu sync.Mutex
		_ = cc.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			masters = append(masters, m)
			return nil
		})
		for _, m := range masters {
			err := scan(ctx, m, "ksaga:{*}:s:*", func(k string) (string, bool) {
				_, id, ok := strings.Cut(k, "}:s:")
				return id, ok
			})
			if err != nil {
				return nil, err
			}
		}
	} else {
		err := scan(ctx, s.rdb, "ksaga:{*", func(k string) (string, bool) {
			if strings.HasPrefix(k, "ksaga:{") && strings.HasSuffix(k, "}") {
				return k[len("ksaga:{") : len(k)-1], true
			}
			return "", false
		})
		if err != nil {
			return nil, err
		}
	}
	type cmds struct {
		usage *redis.IntCmd
		ttl   *redis.DurationCmd
		enc   *redis.StringCmd
	}
	pipe := s.rdb.Pipeline()
	cs := make([]cmds, len(ids))
	for i, id := range ids {
		k := s.l.sagaKey(id)
		cs[i] = cmds{pipe.MemoryUsage(ctx, k, 0), pipe.TTL(ctx, k), pipe.ObjectEncoding(ctx, k)}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, saga.Transient(err, "redis")
	}
	states, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []Footprint
	for i, st := range states {
		if st == nil {
			continue
		}
		out = append(out, Footprint{State: *st, Bytes: cs[i].usage.Val(), TTL: cs[i].ttl.Val(), Encoding: cs[i].enc.Val()})
	}
	return out, nil
}
