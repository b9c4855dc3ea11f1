package orders

import (
	"context"
	"time"
)

// userChecker answers whether a user exists.
type userChecker interface {
	Exists(ctx context.Context, id int32) (bool, error)
}

// userCache remembers the users function's answers for a while: users are
// reference data, and asking for every order costs a synchronous gRPC call
// (about a third of a saga's CPU in the benchmark). A user that exists is
// remembered for ttl; an unknown one for a shorter time, so a user created
// moments ago is seen soon; errors are never cached.
type userCache struct {
	next     userChecker
	ttl, neg time.Duration
	now      func() time.Time
	entries  *ttlMap[int32, bool] // exists
}

// maxCachedUsers bounds the cache; past it, it starts over.
const maxCachedUsers = 100_000

func newUserCache(next userChecker, ttl time.Duration) *userCache {
	return &userCache{next: next, ttl: ttl, neg: min(ttl, 5*time.Second), now: time.Now, entries: newTTLMap[int32, bool](maxCachedUsers)}
}

// Exists implements userChecker.
func (c *userCache) Exists(ctx context.Context, id int32) (bool, error) {
	now := c.now()
	if exists, ok := c.entries.get(id, now); ok {
		return exists, nil
	}
	exists, err := c.next.Exists(ctx, id)
	if err != nil {
		return false, err
	}
	ttl := c.ttl
	if !exists {
		ttl = c.neg
	}
	c.entries.put(id, exists, now.Add(ttl))
	return exists, nil
}
