package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// Dead letters are kept in a capped stream (maxDeadLetters in all,
// trimmed approximately: the oldest go first), so listing with a filter
// reads at most that many entries; on a Redis Cluster each shard has its
// own stream, written in the same script as its sagas' changes, and a
// dead letter's id names its shard ("<stream id>-<shard>"). A
// redelivered dead letter (the sink's answer lost) is kept once: its
// marker lives keptMarkerTTL.
const (
	maxDeadLetters = 10000
	keptMarkerTTL  = 24 * time.Hour
)

// dlShard is the shard of a dead letter: its saga's, or its event's.
func (s *Store) dlShard(dl *saga.DeadLetter) int {
	if dl.SagaID != "" {
		return s.l.shardOf(dl.SagaID)
	}
	return s.l.shardOf(dl.EventSource + "\x00" + dl.EventID)
}

// keptMarker is the key marking the dead letter of an event for one
// destination as kept.
func (s *Store) keptMarker(sh int, dl *saga.DeadLetter) string {
	sum := sha256.Sum256([]byte(dl.EventSource + "\x00" + dl.EventID + "\x00" + dl.Destination))
	return s.l.deadLetterKey(sh) + ":kept:" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// KeepDeadLetter implements saga.Store.
func (s *Store) KeepDeadLetter(ctx context.Context, dl saga.DeadLetter) (bool, error) {
	sh := s.dlShard(&dl)
	n, err := keepDLScript.Run(ctx, s.rdb, []string{s.l.deadLetterKey(sh), s.keptMarker(sh, &dl)}, int64(keptMarkerTTL/time.Second), s.deadLetterCap(),
		"saga_id", dl.SagaID, "type", dl.EventType, "id", dl.EventID, "source", dl.EventSource, "dest", dl.Destination,
		"code", dl.Code, "body", dl.Body, "reason", dl.Reason, "handling", dl.Handling, "event", dl.Event).Int()
	if err != nil {
		return false, saga.Transient(err, "redis")
	}
	return n == 1, nil
}

// streamPos is a dead letter's position: its stream entry's id and its
// shard. Newest first is descending (id, then shard).
type streamPos struct {
	ms, seq uint64
	sh      int
}

func (p streamPos) streamID() string {
	return strconv.FormatUint(p.ms, 10) + "-" + strconv.FormatUint(p.seq, 10)
}

func (p streamPos) after(q streamPos) bool { // p comes before q, newest first
	switch {
	case p.ms != q.ms:
		return p.ms > q.ms
	case p.seq != q.seq:
		return p.seq > q.seq
	}
	return p.sh > q.sh
}

// dlID is the public id of a dead letter.
func (s *Store) dlID(p streamPos) string {
	if !s.l.cluster {
		return p.streamID()
	}
	return p.streamID() + "-" + strconv.Itoa(p.sh)
}

// parseDLID reads a public dead-letter id.
func (s *Store) parseDLID(id string) (streamPos, bool) {
	parts := strings.Split(id, "-")
	want := 2
	if s.l.cluster {
		want = 3
	}
	if len(parts) != want {
		return streamPos{}, false
	}
	ms, err1 := strconv.ParseUint(parts[0], 10, 64)
	seq, err2 := strconv.ParseUint(parts[1], 10, 64)
	p := streamPos{ms: ms, seq: seq}
	if err1 != nil || err2 != nil {
		return streamPos{}, false
	}
	if s.l.cluster {
		sh, err := strconv.Atoi(parts[2])
		if err != nil || sh < 0 || sh >= s.l.shards() || strconv.Itoa(sh) != parts[2] {
			return streamPos{}, false
		}
		p.sh = sh
	}
	return p, true
}

// dlSource reads one shard's stream, newest first, a batch at a time.
type dlSource struct {
	sh   int
	end  string // XREVRANGE end bound
	buf  []redis.XMessage
	done bool
}

// DeadLetters implements saga.Store: newest first, filtered while read
// (the streams are capped). A saga's dead letters are in its shard.
func (s *Store) DeadLetters(ctx context.Context, q saga.DeadLetterQuery) (saga.DeadLetterPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	var cur streamPos
	if q.Cursor != "" {
		var ok bool
		if cur, ok = s.parseDLID(q.Cursor); !ok {
			return saga.DeadLetterPage{}, saga.Invalid("cursor %q: not one of this API's", q.Cursor)
		}
	}
	var srcs []*dlSource
	for sh := range s.l.shards() {
		if q.SagaID != "" && sh != s.l.shardOf(q.SagaID) {
			continue
		}
		src := &dlSource{sh: sh, end: "+"}
		if q.Cursor != "" {
			src.end = "(" + cur.streamID()
			if sh < cur.sh { // entries with the cursor's id in a lower shard come after it
				src.end = cur.streamID()
			}
		}
		srcs = append(srcs, src)
	}
	batch := int64(500)
	if s.l.cluster {
		batch = int64(max(limit+1, 50))
	}
	fill := func(all []*dlSource) error {
		pipe := s.rdb.Pipeline()
		cmds := map[*dlSource]*redis.XMessageSliceCmd{}
		for _, src := range all {
			if len(src.buf) == 0 && !src.done {
				cmds[src] = pipe.XRevRangeN(ctx, s.l.deadLetterKey(src.sh), src.end, "-", batch)
			}
		}
		if len(cmds) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return saga.Transient(err, "redis")
		}
		for src, c := range cmds {
			src.buf = c.Val()
			src.done = int64(len(src.buf)) < batch
		}
		return nil
	}
	page := saga.DeadLetterPage{DeadLetters: []saga.DeadLetter{}}
	for {
		if err := fill(srcs); err != nil {
			return saga.DeadLetterPage{}, err
		}
		var best *dlSource
		var bestPos streamPos
		for _, src := range srcs {
			if len(src.buf) == 0 {
				continue
			}
			p, ok := s.streamPos(src.sh, src.buf[0].ID)
			if !ok {
				src.buf = src.buf[1:]
				continue
			}
			if best == nil || p.after(bestPos) {
				best, bestPos = src, p
			}
		}
		if best == nil {
			if done := func() bool {
				for _, src := range srcs {
					if len(src.buf) > 0 || !src.done {
						return false
					}
				}
				return true
			}(); done {
				return s.withReplays(ctx, page)
			}
			continue
		}
		m := best.buf[0]
		best.buf = best.buf[1:]
		best.end = "(" + m.ID
		dl := s.parseDeadLetter(best.sh, m)
		if (q.SagaID != "" && dl.SagaID != q.SagaID) || (q.Type != "" && dl.EventType != q.Type) ||
			(q.Destination != "" && !strings.Contains(dl.Destination, q.Destination)) {
			continue
		}
		if len(page.DeadLetters) == limit {
			page.Next = page.DeadLetters[limit-1].ID
			return s.withReplays(ctx, page)
		}
		page.DeadLetters = append(page.DeadLetters, dl)
	}
}

func (s *Store) streamPos(sh int, streamID string) (streamPos, bool) {
	ms, seq, ok := strings.Cut(streamID, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	return streamPos{ms: a, seq: b, sh: sh}, ok && err1 == nil && err2 == nil
}

// DeadLetter implements saga.Store.
func (s *Store) DeadLetter(ctx context.Context, id string) (saga.DeadLetter, error) {
	p, ok := s.parseDLID(id)
	if !ok {
		return saga.DeadLetter{}, saga.ErrNotFound
	}
	msgs, err := s.rdb.XRange(ctx, s.l.deadLetterKey(p.sh), p.streamID(), p.streamID()).Result()
	if err != nil {
		return saga.DeadLetter{}, saga.Transient(err, "redis")
	}
	if len(msgs) == 0 {
		return saga.DeadLetter{}, saga.ErrNotFound
	}
	page, err := s.withReplays(ctx, saga.DeadLetterPage{DeadLetters: []saga.DeadLetter{s.parseDeadLetter(p.sh, msgs[0])}})
	if err != nil {
		return saga.DeadLetter{}, err
	}
	return page.DeadLetters[0], nil
}

// MarkReplayed implements saga.Store.
func (s *Store) MarkReplayed(ctx context.Context, id, actor string, at time.Time) error {
	if err := s.rdb.HSet(ctx, replayedKey, id, actor+"\x1f"+strconv.FormatInt(at.UnixMilli(), 10)).Err(); err != nil {
		return saga.Transient(err, "redis")
	}
	return nil
}

func (s *Store) withReplays(ctx context.Context, page saga.DeadLetterPage) (saga.DeadLetterPage, error) {
	if len(page.DeadLetters) == 0 {
		return page, nil
	}
	ids := make([]string, len(page.DeadLetters))
	for i, dl := range page.DeadLetters {
		ids[i] = dl.ID
	}
	vals, err := s.rdb.HMGet(ctx, replayedKey, ids...).Result()
	if err != nil {
		return saga.DeadLetterPage{}, saga.Transient(err, "redis")
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			actor, ms, _ := strings.Cut(str, "\x1f")
			page.DeadLetters[i].ReplayedBy = actor
			page.DeadLetters[i].ReplayedAt = msTime(ms)
		}
	}
	return page, nil
}

func (s *Store) parseDeadLetter(sh int, m redis.XMessage) saga.DeadLetter {
	get := func(k string) string { v, _ := m.Values[k].(string); return v }
	dl := saga.DeadLetter{ID: m.ID, SagaID: get("saga_id"), EventType: get("type"), EventID: get("id"),
		EventSource: get("source"), Destination: get("dest"), Code: get("code"), Body: get("body"),
		Reason: get("reason"), Handling: get("handling"), Event: []byte(get("event"))}
	if p, ok := s.streamPos(sh, m.ID); ok {
		dl.ID = s.dlID(p)
		dl.At = time.UnixMilli(int64(p.ms)).UTC()
	}
	return dl
}
