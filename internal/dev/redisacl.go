package dev

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/internal/redisacl"
)

// applyRedisACL gives every Knative Service its own user on the real Redis
// rdb (ksaga's own connection must have ACL rights): the rules of
// redisacl.Users (the saga store's keys and commands, plus the Service's
// ksaga.io/redis-keys), a new random password each start, and returns the
// REDIS_URL of each function (redisURL with its user and password), by
// Service name. The users stay in Redis after ksaga dev stops (in memory:
// a restart of redis-server without an ACL file forgets them); the next
// start resets them.
func applyRedisACL(ctx context.Context, rdb redis.UniversalClient, set *manifest.Set, redisURL string, faults bool) (map[string]string, error) {
	users, err := redisacl.Users(set.Services(), redisacl.Options{FaultInjection: faults})
	if err != nil {
		return nil, err
	}
	passwords := make(map[string]string, len(users))
	urls := make(map[string]string, len(users))
	for _, u := range users {
		pw, err := redisacl.NewPassword()
		if err != nil {
			return nil, err
		}
		passwords[u.Name] = pw
		if urls[u.Name], err = redisacl.URLFor(redisURL, u.Name, pw); err != nil {
			return nil, err
		}
	}
	if err := redisacl.Apply(ctx, rdb, users, passwords); err != nil {
		return nil, fmt.Errorf("%w (needs Redis 7 and a --redis-url user allowed to run ACL SETUSER; --redis-acl=false runs every function as that user)", err)
	}
	return urls, nil
}
