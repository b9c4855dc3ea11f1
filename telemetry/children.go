package telemetry

import "sync"

// Children remembers the children of a metric vector by key, so that a hot
// path does not join and hash label values for every event. The keys must
// be bounded (by configuration or by code), as the vector's label sets are.
type Children[K comparable, M any] struct {
	with func(K) M // the vector's WithLabelValues, for a key
	m    sync.Map  // K → M
}

// NewChildren returns a Children whose child for a key is with(key).
func NewChildren[K comparable, M any](with func(K) M) *Children[K, M] {
	return &Children[K, M]{with: with}
}

// Get returns the child for k, creating it on first use.
func (c *Children[K, M]) Get(k K) M {
	if v, ok := c.m.Load(k); ok {
		return v.(M)
	}
	v, _ := c.m.LoadOrStore(k, c.with(k))
	return v.(M)
}
