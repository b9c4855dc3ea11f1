package orders

import (
	"sync"
	"time"
)

// ttlMap is a map whose entries expire, safe for concurrent use and bounded:
// once it holds max entries, it starts over.
type ttlMap[K comparable, V any] struct {
	max int

	mu sync.Mutex
	m  map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLMap[K comparable, V any](max int) *ttlMap[K, V] {
	return &ttlMap[K, V]{max: max, m: map[K]ttlEntry[V]{}}
}

// get returns k's value if it has not expired at now.
func (t *ttlMap[K, V]) get(k K, now time.Time) (V, bool) {
	t.mu.Lock()
	e, ok := t.m[k]
	t.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v for k until expires.
func (t *ttlMap[K, V]) put(k K, v V, expires time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		t.m = map[K]ttlEntry[V]{}
	}
	t.m[k] = ttlEntry[V]{v: v, expires: expires}
}
