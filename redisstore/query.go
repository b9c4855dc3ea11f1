package redisstore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// Bounds of a List page.
const (
	DefaultPage = 50
	MaxPage     = 1000
)

// Definitions returns the names of the definitions whose sagas the store
// has seen.
func (s *Store) Definitions(ctx context.Context) ([]string, error) {
	defs, err := s.rdb.SMembers(ctx, defsKey).Result()
	if err != nil {
		return nil, saga.Transient(err, "redis")
	}
	slices.Sort(defs)
	return defs, nil
}

// Due implements saga.Store.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]string, error) {
	defs, err := s.Definitions(ctx)
	if err != nil {
		return nil, err
	}
	type due struct {
		id    string
		score float64
	}
	var all []due
	upTo := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	for _, def := range defs {
		zs, err := s.rdb.ZRangeByScoreWithScores(ctx, indexKey(def, "due"), &redis.ZRangeBy{Min: "-inf", Max: upTo, Count: int64(limit)}).Result()
		if err != nil {
			return nil, saga.Transient(err, "redis")
		}
		for _, z := range zs {
			all = append(all, due{z.Member.(string), z.Score})
		}
	}
	slices.SortFunc(all, func(a, b due) int {
		switch {
		case a.score < b.score:
			return -1
		case a.score > b.score:
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	ids := make([]string, 0, min(len(all), limit))
	for _, d := range all[:min(len(all), limit)] {
		ids = append(ids, d.id)
	}
	return ids, nil
}

// cursor is a page position: the score of the last item read and how
// many items with exactly that score were read.
type cursor struct {
	score float64
	skip  int64
}

func parseCursor(raw string) (cursor, bool, error) {
	if raw == "" {
		return cursor{}, false, nil
	}
	s, n, ok := strings.Cut(raw, "_")
	score, err1 := strconv.ParseFloat(s, 64)
	skip, err2 := strconv.ParseInt(n, 10, 64)
	if !ok || err1 != nil || err2 != nil || skip < 0 {
		return cursor{}, false, saga.Invalid("cursor %q: not one of this API's", raw)
	}
	return cursor{score, skip}, true, nil
}

// List implements saga.Store. The index read depends on the query: the
// due index for Overdue (earliest due first), a status index for one
// status (newest first: by creation, or by end for terminal statuses), and
// the creation index otherwise (newest first). With several definitions
// the pages of each are merged.
func (s *Store) List(ctx context.Context, q saga.Query) (saga.Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	if len(q.Status) > 1 {
		return saga.Page{}, saga.Invalid("list by one status at a time")
	}
	defs := []string{q.Saga}
	if q.Saga == "" {
		var err error
		if defs, err = s.Definitions(ctx); err != nil {
			return saga.Page{}, err
		}
	}
	cur, has, err := parseCursor(q.Cursor)
	if err != nil {
		return saga.Page{}, err
	}
	asc := q.Overdue
	from, to := "-inf", "+inf"
	if !q.From.IsZero() {
		from = strconv.FormatInt(q.From.UnixMilli(), 10)
	}
	if !q.To.IsZero() {
		to = "(" + strconv.FormatInt(q.To.UnixMilli(), 10)
	}
	if q.Overdue {
		from, to = "-inf", "("+strconv.FormatInt(q.Now.UnixMilli(), 10)
	}
	type item struct {
		id    string
		score float64
	}
	var items []item
	// The cursor's skip counts the items with its score already read, in
	// the merged order: the definitions' in turn (sorted), so it is spent
	// across them in that order, not on each.
	skip := cur.skip
	for _, def := range defs {
		key := indexKey(def, "created")
		switch {
		case q.Overdue:
			key = indexKey(def, "due")
		case len(q.Status) == 1:
			if !q.Status[0].Valid() {
				return saga.Page{}, saga.Invalid("status %q: want one of %v", q.Status[0], saga.Statuses)
			}
			key = statusKey(def, q.Status[0])
		}
		lo, hi := from, to
		// the page continues at the cursor's score; ties are skipped by count
		if has {
			if asc {
				lo = strconv.FormatFloat(cur.score, 'f', -1, 64)
			} else {
				hi = strconv.FormatFloat(cur.score, 'f', -1, 64)
			}
		}
		by := &redis.ZRangeBy{Min: lo, Max: hi, Count: int64(limit) + cur.skip + 1}
		var zs []redis.Z
		if asc {
			zs, err = s.rdb.ZRangeByScoreWithScores(ctx, key, by).Result()
		} else {
			zs, err = s.rdb.ZRevRangeByScoreWithScores(ctx, key, by).Result()
		}
		if err != nil {
			return saga.Page{}, saga.Transient(err, "redis")
		}
		for _, z := range zs {
			if has && z.Score == cur.score && skip > 0 {
				skip--
				continue
			}
			items = append(items, item{z.Member.(string), z.Score})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		c := 0
		switch {
		case a.score < b.score:
			c = -1
		case a.score > b.score:
			c = 1
		}
		if !asc {
			c = -c
		}
		return c
	})
	page := saga.Page{Sagas: []saga.State{}}
	more := len(items) > limit
	items = items[:min(len(items), limit)]
	states, err := s.getMany(ctx, idsOf(items, func(i item) string { return i.id }))
	if err != nil {
		return saga.Page{}, err
	}
	for _, st := range states {
		if st != nil {
			page.Sagas = append(page.Sagas, *st)
		}
	}
	if more && len(items) > 0 {
		last := items[len(items)-1].score
		n := int64(0)
		for _, it := range items {
			if it.score == last {
				n++
			}
		}
		if has && cur.score == last {
			n += cur.skip
		}
		page.Next = strconv.FormatFloat(last, 'f', -1, 64) + "_" + strconv.FormatInt(n, 10)
	}
	return page, nil
}

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
		cmds[i] = pipe.HGetAll(ctx, sagaKey(id))
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
	counts := map[saga.Status]*redis.IntCmd{}
	for _, st := range saga.Statuses {
		if st.Terminal() {
			pipe.ZRemRangeByScore(ctx, statusKey(def, st), "-inf", old)
		}
		counts[st] = pipe.ZCard(ctx, statusKey(def, st))
	}
	overdue := pipe.ZCount(ctx, indexKey(def, "due"), "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
	recent := pipe.LRange(ctx, indexKey(def, "stats"), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return saga.Stats{}, saga.Transient(err, "redis")
	}
	out := saga.Stats{Saga: def, ByStatus: map[saga.Status]int{}, Overdue: int(overdue.Val())}
	for st, c := range counts {
		out.ByStatus[st] = int(c.Val())
	}
	for _, v := range recent.Val() {
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
	return out, nil
}

// ByKey implements saga.Store.
func (s *Store) ByKey(ctx context.Context, def, key string) (string, error) {
	id, err := s.rdb.Get(ctx, businessKey(def, key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", saga.ErrNotFound
	}
	if err != nil {
		return "", saga.Transient(err, "redis")
	}
	return id, nil
}

// Compact removes index entries of sagas that have expired, up to budget
// entries read per index; the deadline sweeper calls it on every pass. It
// returns how many it removed.
func (s *Store) Compact(ctx context.Context, now time.Time, budget int) (int, error) {
	defs, err := s.Definitions(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	old := "(" + strconv.FormatInt(now.Add(-s.retention).UnixMilli(), 10)
	for _, def := range defs {
		for _, st := range saga.Statuses {
			key := statusKey(def, st)
			if st.Terminal() { // scored by end time: exact
				n, err := s.rdb.ZRemRangeByScore(ctx, key, "-inf", old).Result()
				if err != nil {
					return removed, saga.Transient(err, "redis")
				}
				removed += int(n)
				continue
			}
			n, err := s.compactOldest(ctx, key, budget)
			removed += n
			if err != nil {
				return removed, err
			}
		}
		for _, name := range []string{"created", "due"} {
			n, err := s.compactOldest(ctx, indexKey(def, name), budget)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
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
			ex[i] = pipe.Exists(ctx, sagaKey(id))
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

// Sample returns the footprint of up to n sagas, found by scanning (for
// benchmarks and diagnostics, never on a request's path).
func (s *Store) Sample(ctx context.Context, n int) ([]Footprint, error) {
	var ids []string
	var cur uint64
	for len(ids) < n {
		keys, next, err := s.rdb.Scan(ctx, cur, "ksaga:{*", 1000).Result()
		if err != nil {
			return nil, saga.Transient(err, "redis")
		}
		for _, k := range keys {
			if len(ids) < n && strings.HasPrefix(k, "ksaga:{") && strings.HasSuffix(k, "}") {
				ids = append(ids, k[len("ksaga:{"):len(k)-1])
			}
		}
		if cur = next; cur == 0 {
			break
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
		k := sagaKey(id)
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
