package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/internal/redisacl"
)

// applyRedisACL gives every Knative Service its own user on the real Redis
// rdb (ksaga's own connection must have ACL rights): the rules of
// redisacl.Users (the saga store's keys and commands, plus the Service's
// ksaga.io/redis-keys), a new random password each start, and returns the
// REDIS_URL of each function (redisURL with its user and password), by
// Service name, and keep, which puts the users back whenever redis-server
// has forgotten them (a restart without an ACL file: they live in memory)
// until ctx is done; run it in the background. When redis-server has an
// ACL file (aclfile, as a cluster's Redis loads its users from one), the
// users are saved to it, so a restart loads them with the data and the
// functions are never refused in between. The users stay in Redis after
// ksaga dev stops; the next start resets them.
func applyRedisACL(ctx context.Context, rdb redis.UniversalClient, set *manifest.Set, redisURL string, faults bool, log *slog.Logger) (map[string]string, func(context.Context), error) {
	users, err := redisacl.Users(set.Services(), redisacl.Options{FaultInjection: faults})
	if err != nil {
		return nil, nil, err
	}
	passwords := make(map[string]string, len(users))
	urls := make(map[string]string, len(users))
	for _, u := range users {
		pw, err := redisacl.NewPassword()
		if err != nil {
			return nil, nil, err
		}
		passwords[u.Name] = pw
		if urls[u.Name], err = redisacl.URLFor(redisURL, u.Name, pw); err != nil {
			return nil, nil, err
		}
	}
	if err := redisacl.Apply(ctx, rdb, users, passwords); err != nil {
		return nil, nil, fmt.Errorf("%w (needs Redis 7 and a --redis-url user allowed to run ACL SETUSER; --redis-acl=false runs every function as that user)", err)
	}
	if err := saveACL(ctx, rdb); err != nil {
		log.Warn("redis: the functions' ACL users are not saved (a restart of redis-server forgets them until ksaga dev puts them back)", "error", err)
	}
	keep := func(ctx context.Context) {
		if len(users) == 0 {
			return
		}
		tick := time.NewTicker(aclCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// one user stands for all: they are created together
			err := rdb.Do(ctx, "ACL", "GETUSER", users[0].Name).Err()
			if !errors.Is(err, redis.Nil) {
				continue // there, or Redis unreachable: look again later
			}
			if err := redisacl.Apply(ctx, rdb, users, passwords); err != nil {
				log.Warn("redis: could not put the functions' ACL users back", "error", err)
				continue
			}
			if err := saveACL(ctx, rdb); err != nil {
				log.Warn("redis: could not save the functions' ACL users", "error", err)
			}
			log.Warn("redis: the functions' ACL users were gone (redis-server restarted without an ACL file); put back")
		}
	}
	return urls, keep, nil
}

// aclCheckInterval is how often ksaga dev checks that redis-server still
// has the functions' users.
const aclCheckInterval = time.Second

// saveACL writes redis-server's users to its ACL file (ACL SAVE) when it
// has one, on every node of a Redis Cluster; without one it does nothing.
func saveACL(ctx context.Context, rdb redis.UniversalClient) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error { return saveACL(ctx, node) })
	}
	cfg, err := rdb.ConfigGet(ctx, "aclfile").Result()
	if err != nil {
		return fmt.Errorf("redis acl: CONFIG GET aclfile: %w", err)
	}
	if cfg["aclfile"] == "" {
		return nil
	}
	if err := rdb.Do(ctx, "ACL", "SAVE").Err(); err != nil {
		return fmt.Errorf("redis acl: ACL SAVE to %s: %w", cfg["aclfile"], err)
	}
	return nil
}
