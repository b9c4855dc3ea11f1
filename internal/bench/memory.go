package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// Memory is the Redis memory a finished saga leaves behind, from MEMORY
// USAGE (SAMPLES 0: every field) on a sample of finished sagas: the saga's
// own record (read through the store: redisstore.Store.Sample), and the
// keys the functions write for it (the workload's).
type Memory struct {
	Sampled  int            `json:"sampled"`
	SagaHash SizeStats      `json:"saga_hash"`
	Encoding map[string]int `json:"saga_hash_encoding"` // OBJECT ENCODING → count
	HashTTL  TTLStats       `json:"saga_hash_ttl"`
	Related  []RelatedKeys  `json:"related_keys"`
	// Streams are the workload's streams of one entry per saga (an
	// outbox): each one's MEMORY USAGE divided by its length.
	Streams []StreamMemory `json:"streams"`
	Total   SizeStats      `json:"total_per_saga"` // hash + related keys + the streams' entries
	// UsedMemoryPerSaga is INFO used_memory's growth over the run divided
	// by the sagas started (includes the keys' dictionary and expiry
	// overhead; the broker's stream entries are deleted once delivered).
	UsedMemoryPerSaga float64 `json:"used_memory_per_saga"`
	ActiveIndexLen    int64   `json:"active_index_len"` // sagas unfinished after the run (accepted, running, compensating)
	Error             string  `json:"error,omitempty"`
}

// StreamMemory is a stream's size per entry.
type StreamMemory struct {
	Key        string  `json:"key"`
	About      string  `json:"about"`
	Len        int64   `json:"len"`
	EntryBytes float64 `json:"entry_bytes"`
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

// measureMemory samples up to n finished sagas of the workload w.
func measureMemory(ctx context.Context, rdb redis.UniversalClient, nodes []*redis.Client, w *Workload, n int, usedBefore int64, sagasStarted int64) Memory {
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
	related := w.Related
	m.Related = make([]RelatedKeys, len(related))
	for i := range related {
		m.Related[i].Pattern = related[i].Pattern
	}
	type rel struct {
		usage *redis.IntCmd
		ttl   *redis.DurationCmd
	}
	var hashSizes, totals []float64
	var finished []int
	rels := make([][]rel, len(fps))
	pipe := rdb.Pipeline()
	for i, fp := range fps {
		if fp.State.Saga != w.Def.Name {
			continue
		}
		switch fp.State.Status {
		case saga.StatusCompleted, saga.StatusCompensated, saga.StatusCompensationFailed:
		default:
			continue
		}
		finished = append(finished, i)
		for _, r := range related {
			k := r.Key(fp.State)
			if k == "" {
				rels[i] = append(rels[i], rel{})
				continue
			}
			rels[i] = append(rels[i], rel{usage: pipe.MemoryUsage(ctx, k, 0), ttl: pipe.TTL(ctx, k)})
		}
	}
	type streamCmds struct {
		usage, len *redis.IntCmd
	}
	streams := make([]streamCmds, len(w.Streams))
	for i, st := range w.Streams {
		streams[i] = streamCmds{pipe.MemoryUsage(ctx, st.Key, 0), pipe.XLen(ctx, st.Key)}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && m.Error == "" {
		m.Error = fmt.Sprintf("related keys: %v", err)
	}
	var perSaga float64 // the streams' entries
	for i, st := range w.Streams {
		sm := StreamMemory{Key: st.Key, About: st.About, Len: streams[i].len.Val()}
		if sm.Len > 0 {
			sm.EntryBytes = round1(float64(streams[i].usage.Val()) / float64(sm.Len))
		}
		perSaga += sm.EntryBytes
		m.Streams = append(m.Streams, sm)
	}
	if st, err := store.Stats(ctx, w.Def.Name, time.Now()); err == nil {
		m.ActiveIndexLen = int64(st.ByStatus[saga.StatusAccepted] + st.ByStatus[saga.StatusRunning] + st.ByStatus[saga.StatusCompensating])
	}
	relSizes := make([][]float64, len(related))
	for _, i := range finished {
		h := float64(fps[i].Bytes)
		hashSizes = append(hashSizes, h)
		m.HashTTL.add(fps[i].TTL)
		m.Encoding[fps[i].Encoding]++
		total := h + perSaga
		for j, r := range rels[i] {
			if r.usage == nil || r.usage.Err() != nil || r.usage.Val() == 0 { // redis.Nil: no such key
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
