package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// Memory is the Redis memory a finished saga leaves behind, from MEMORY
// USAGE (SAMPLES 0: every field) on a sample of finished sagas: the saga's
// own hash, and the keys the functions write for it.
type Memory struct {
	Sampled  int            `json:"sampled"`
	SagaHash SizeStats      `json:"saga_hash"`
	Encoding map[string]int `json:"saga_hash_encoding"` // OBJECT ENCODING → count
	HashTTL  TTLStats       `json:"saga_hash_ttl"`
	Related  []RelatedKeys  `json:"related_keys"`
	// OutboxEntryBytes is the notification outbox stream's MEMORY USAGE
	// divided by its length: one entry per saga, not expired but trimmed
	// by the relay once sent and past 100,000 entries.
	OutboxEntryBytes float64   `json:"outbox_entry_bytes"`
	OutboxLen        int64     `json:"outbox_len"`
	Total            SizeStats `json:"total_per_saga"` // hash + related keys + outbox share
	// UsedMemoryPerSaga is INFO used_memory's growth over the run divided
	// by the sagas started (includes the keys' dictionary and expiry
	// overhead; the broker's stream entries are deleted once delivered).
	UsedMemoryPerSaga float64 `json:"used_memory_per_saga"`
	ActiveIndexLen    int64   `json:"active_index_len"` // sagas unfinished after the run (accepted, running, compensating)
	Error             string  `json:"error,omitempty"`
}

// SizeStats summarises sizes in bytes.
type SizeStats struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	Max  float64 `json:"max"`
}

// TTLStats summarises TTLs in seconds; NoExpiry counts keys without one.
type TTLStats struct {
	MinS     int64 `json:"min_s"`
	MaxS     int64 `json:"max_s"`
	NoExpiry int   `json:"no_expiry"`
}

// RelatedKeys is one kind of key a saga leaves besides its hash.
type RelatedKeys struct {
	Pattern string  `json:"pattern"`
	Present int     `json:"present"` // of the sampled sagas, how many have one
	Mean    float64 `json:"mean_bytes"`
	TTL     TTLStats
}

func sizeStats(xs []float64) SizeStats {
	if len(xs) == 0 {
		return SizeStats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	p := func(q float64) float64 {
		i := int(float64(len(s))*q+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return SizeStats{Mean: round1(sum / float64(len(s))), P50: p(0.5), P95: p(0.95), Max: s[len(s)-1]}
}

func (t *TTLStats) add(ttl time.Duration) {
	if ttl < 0 { // -1: no expiry (-2, missing, is filtered out before)
		t.NoExpiry++
		return
	}
	s := int64(ttl / time.Second)
	if t.MinS == 0 || s < t.MinS {
		t.MinS = s
	}
	t.MaxS = max(t.MaxS, s)
}

// measureMemory samples up to n finished sagas.
func measureMemory(ctx context.Context, rdb redis.UniversalClient, nodes []*redis.Client, n int, usedBefore int64, sagasStarted int64) Memory {
	var m Memory
	m.Encoding = map[string]int{}
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		m.Error = err.Error()
		return m
	}
	fps, err := store.Sample(ctx, n)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	ids := make([]string, len(fps))
	states := make([]saga.State, len(fps))
	for i, fp := range fps {
		ids[i], states[i] = fp.State.ID, fp.State
	}
	// The keys the functions write for a saga.
	related := []struct {
		pattern string
		key     func(sagaID, orderID string) string
	}{
		{"order:o:<order id>", func(_, o string) string { return ordersaga.OrderKey(o) }},
	}
	m.Related = make([]RelatedKeys, len(related))
	for i := range related {
		m.Related[i].Pattern = related[i].pattern
	}
	type rel struct {
		usage *redis.IntCmd
		ttl   *redis.DurationCmd
	}
	var hashSizes, totals []float64
	var finished []int
	rels := make([][]rel, len(ids))
	pipe := rdb.Pipeline()
	for i, id := range ids {
		switch states[i].Status {
		case saga.StatusCompleted, saga.StatusCompensated, saga.StatusCompensationFailed:
		default:
			continue
		}
		finished = append(finished, i)
		var o struct {
			OrderID string `json:"order_id"`
		}
		_ = json.Unmarshal(states[i].Data, &o)
		for _, r := range related {
			k := r.key(id, o.OrderID)
			rels[i] = append(rels[i], rel{usage: pipe.MemoryUsage(ctx, k, 0), ttl: pipe.TTL(ctx, k)})
		}
	}
	outboxUsage := pipe.MemoryUsage(ctx, ordersaga.OutboxKey, 0)
	outboxLen := pipe.XLen(ctx, ordersaga.OutboxKey)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && m.Error == "" {
		m.Error = fmt.Sprintf("related keys: %v", err)
	}
	m.OutboxLen = outboxLen.Val()
	if m.OutboxLen > 0 {
		m.OutboxEntryBytes = round1(float64(outboxUsage.Val()) / float64(m.OutboxLen))
	}
	if st, err := store.Stats(ctx, "order", time.Now()); err == nil {
		m.ActiveIndexLen = int64(st.ByStatus[saga.StatusAccepted] + st.ByStatus[saga.StatusRunning] + st.ByStatus[saga.StatusCompensating])
	}
	relSizes := make([][]float64, len(related))
	for _, i := range finished {
		h := float64(fps[i].Bytes)
		hashSizes = append(hashSizes, h)
		m.HashTTL.add(fps[i].TTL)
		m.Encoding[fps[i].Encoding]++
		total := h + m.OutboxEntryBytes
		for j, r := range rels[i] {
			if r.usage.Err() != nil || r.usage.Val() == 0 { // redis.Nil: no such key
				continue
			}
			u := float64(r.usage.Val())
			relSizes[j] = append(relSizes[j], u)
			m.Related[j].Present++
			m.Related[j].TTL.add(r.ttl.Val())
			total += u
		}
		totals = append(totals, total)
	}
	for j := range related {
		m.Related[j].Mean = sizeStats(relSizes[j]).Mean
	}
	m.Sampled = len(finished)
	m.SagaHash = sizeStats(hashSizes)
	m.Total = sizeStats(totals)
	if sagasStarted > 0 {
		m.UsedMemoryPerSaga = round1(float64(usedMemory(ctx, nodes)-usedBefore) / float64(sagasStarted))
	}
	return m
}
