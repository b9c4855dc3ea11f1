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

// Dead letters are kept in one capped stream (maxDeadLetters, trimmed
// approximately: the oldest go first), so listing with a filter reads at
// most that many entries. A redelivered dead letter (the sink's answer
// lost) is kept once: its marker lives keptMarkerTTL.
const (
	maxDeadLetters = 10000
	keptMarkerTTL  = 24 * time.Hour
)

// keptMarker is the key marking the dead letter of an event for one
// destination as kept.
func keptMarker(dl *saga.DeadLetter) string {
	sum := sha256.Sum256([]byte(dl.EventSource + "\x00" + dl.EventID + "\x00" + dl.Destination))
	return deadLetterKey + ":kept:" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// KeepDeadLetter implements saga.Store.
func (s *Store) KeepDeadLetter(ctx context.Context, dl saga.DeadLetter) (bool, error) {
	n, err := keepDLScript.Run(ctx, s.rdb, []string{deadLetterKey, keptMarker(&dl)}, int64(keptMarkerTTL/time.Second), maxDeadLetters,
		"saga_id", dl.SagaID, "type", dl.EventType, "id", dl.EventID, "source", dl.EventSource, "dest", dl.Destination,
		"code", dl.Code, "body", dl.Body, "reason", dl.Reason, "handling", dl.Handling, "event", dl.Event).Int()
	if err != nil {
		return false, saga.Transient(err, "redis")
	}
	return n == 1, nil
}

// DeadLetters implements saga.Store: newest first, filtered while read
// (the stream is capped).
func (s *Store) DeadLetters(ctx context.Context, q saga.DeadLetterQuery) (saga.DeadLetterPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	end := "+"
	if q.Cursor != "" {
		if !validStreamID(q.Cursor) {
			return saga.DeadLetterPage{}, saga.Invalid("cursor %q: not one of this API's", q.Cursor)
		}
		end = "(" + q.Cursor
	}
	page := saga.DeadLetterPage{DeadLetters: []saga.DeadLetter{}}
	const batch = 500
	for {
		msgs, err := s.rdb.XRevRangeN(ctx, deadLetterKey, end, "-", batch).Result()
		if err != nil {
			return saga.DeadLetterPage{}, saga.Transient(err, "redis")
		}
		for _, m := range msgs {
			dl := parseDeadLetter(m)
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
		if len(msgs) < batch {
			return s.withReplays(ctx, page)
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
}

// DeadLetter implements saga.Store.
func (s *Store) DeadLetter(ctx context.Context, id string) (saga.DeadLetter, error) {
	if !validStreamID(id) {
		return saga.DeadLetter{}, saga.ErrNotFound
	}
	msgs, err := s.rdb.XRange(ctx, deadLetterKey, id, id).Result()
	if err != nil {
		return saga.DeadLetter{}, saga.Transient(err, "redis")
	}
	if len(msgs) == 0 {
		return saga.DeadLetter{}, saga.ErrNotFound
	}
	page, err := s.withReplays(ctx, saga.DeadLetterPage{DeadLetters: []saga.DeadLetter{parseDeadLetter(msgs[0])}})
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

func parseDeadLetter(m redis.XMessage) saga.DeadLetter {
	get := func(k string) string { v, _ := m.Values[k].(string); return v }
	dl := saga.DeadLetter{ID: m.ID, SagaID: get("saga_id"), EventType: get("type"), EventID: get("id"),
		EventSource: get("source"), Destination: get("dest"), Code: get("code"), Body: get("body"),
		Reason: get("reason"), Handling: get("handling"), Event: []byte(get("event"))}
	if ms, _, ok := strings.Cut(m.ID, "-"); ok {
		dl.At = msTime(ms)
	}
	return dl
}

// validStreamID reports whether id is a stream entry id ("<ms>-<seq>").
func validStreamID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return ok && err1 == nil && err2 == nil
}
