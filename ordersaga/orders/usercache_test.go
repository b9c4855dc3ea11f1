package orders

import (
	"context"
	"errors"
	"testing"
	"time"
)

type countingUsers struct {
	calls int
	known map[int32]bool
	err   error
}

func (c *countingUsers) Exists(_ context.Context, id int32) (bool, error) {
	c.calls++
	return c.known[id], c.err
}

func TestUserCache(t *testing.T) {
	users := &countingUsers{known: map[int32]bool{1: true}}
	c := newUserCache(users, 30*time.Second)
	clock := time.Unix(1000, 0)
	c.now = func() time.Time { return clock }
	ctx := context.Background()
	for range 3 {
		if ok, err := c.Exists(ctx, 1); !ok || err != nil {
			t.Fatalf("user 1: %v %v", ok, err)
		}
	}
	if users.calls != 1 {
		t.Fatalf("%d calls for a known user, want 1", users.calls)
	}
	if ok, _ := c.Exists(ctx, 9); ok {
		t.Fatal("user 9 exists?")
	}
	clock = clock.Add(6 * time.Second) // unknown users are remembered 5s only
	users.known[9] = true
	if ok, _ := c.Exists(ctx, 9); !ok || users.calls != 3 {
		t.Fatalf("a user created after a miss must be seen after 5s: %v, %d calls", ok, users.calls)
	}
	clock = clock.Add(31 * time.Second)
	c.Exists(ctx, 1)
	if users.calls != 4 {
		t.Fatalf("expired entry not refreshed: %d calls", users.calls)
	}
	users.err = errors.New("unavailable")
	clock = clock.Add(time.Minute)
	if _, err := c.Exists(ctx, 1); err == nil {
		t.Fatal("errors must pass through")
	}
	users.err = nil
	if _, err := c.Exists(ctx, 1); err != nil || users.calls != 6 {
		t.Fatalf("errors must not be cached: %v, %d calls", err, users.calls)
	}
}
