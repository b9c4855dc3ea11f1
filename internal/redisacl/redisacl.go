// Package redisacl gives every function its own Redis user (Redis 7 ACL),
// allowed only the commands and key patterns it needs, so that a
// compromised function cannot write another function's domain: payment
// cannot touch inventory:*, inventory cannot touch payment:*.
//
// The permissions are data: each Knative Service names its own key
// patterns in the ksaga.io/redis-keys annotation (and, rarely, extra
// commands in ksaga.io/redis-commands); what every function needs for the
// saga store is StoreKeys (redisstore's layout) and StoreCommands, and
// every step's effects get EffectCommands on its own keys. Users
// turns them into ACL rules, Line into a line of an ACL file (the Redis
// StatefulSet's, manifests/redis) and Apply into ACL SETUSER commands (what
// `ksaga dev --redis-acl` runs on a real Redis).
//
// Lua scripts run with the caller's permissions: every key a function's
// scripts touch must match its patterns and every command they call must be
// allowed, which is why the commands of the store's scripts are in
// StoreCommands and those of the steps' effects in EffectCommands.
package redisacl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/redisstore"
)

// Annotations of a Knative Service.
const (
	// KeysAnnotation lists, space- or comma-separated, the Redis key
	// patterns (Redis glob) the function may read and write besides
	// StoreKeys, e.g. "payment:*". A pattern prefixed with %R~ or %W~ is
	// read-only or write-only, as in an ACL rule.
	KeysAnnotation = "ksaga.io/redis-keys"
	// CommandsAnnotation lists extra command rules (+cmd, +cmd|sub, +@cat)
	// beyond StoreCommands.
	CommandsAnnotation = "ksaga.io/redis-commands"
)

// StoreKeys are the key patterns of the saga store, which every function
// uses: redisstore.KeyPatterns, the one place that knows the layout (the
// sagas' hashes "ksaga:{<id>}", the indexes "ksaga:idx:*", the dead
// letters "ksaga:dl*" and, on a Redis Cluster, the effects' barriers
// "ksaga:b:*"). The Broker's streams (ksaga:broker:*) are not among them:
// functions never touch them.
var StoreKeys = redisstore.KeyPatterns()

// StoreCommands are the commands of the saga store (redisstore), which
// every function may run: connecting, its scripts (loaded by SHA, sent
// again with EVAL when Redis lost them) and the commands those scripts
// call (Lua runs with the caller's permissions), and its reads of records,
// indexes and dead letters (Load, List, Due, Stats, Compact, DeadLetters).
// TestStoreSuiteAsACLUser runs the store's whole conformance suite as a
// user with exactly these: a command the store starts to use fails it.
// (redisstore.Store.Sample, for benchmarks, scans and measures keys: not a
// function's business.)
var StoreCommands = []string{
	// connecting (go-redis: AUTH or HELLO, SELECT for a database, CLIENT
	// SETNAME for a named client) and the health check
	"+ping", "+hello", "+auth", "+client|setname", "+select",
	// the change, note, reschedule and dead-letter scripts
	"+evalsha", "+eval", "+script|load",
	"+hget", "+hmget", "+hset", "+hincrby", "+hdel", "+expire",
	"+zadd", "+zrem", "+sadd", "+set", "+lpush", "+ltrim", "+xadd",
	// reads and index upkeep
	"+hgetall", "+get", "+exists", "+smembers", "+lrange",
	"+zrange", "+zrangebyscore", "+zrevrangebyscore", "+zcard", "+zcount", "+zremrangebyscore",
	"+xrange", "+xrevrange",
	// on a Redis Cluster: the client's slot map and command table, the
	// pending change's and the barriers' expiry, the barrier's clock (TIME),
	// and the writes that wait for a replica
	"+cluster|slots", "+command", "+pttl", "+pexpire", "+time", "+wait",
}

// EffectCommands are what a step's own effects (saga.Effect scripts, run
// inside the store's change script) and its domain reads may run on its
// own keys, besides StoreCommands: counters (balances, stock), hashes
// (orders), streams (an outbox). They only reach the keys of the
// function's ksaga.io/redis-keys (and the store's); anything rarer is a
// ksaga.io/redis-commands annotation.
var EffectCommands = []string{
	"+mget", "+hsetnx", "+incr", "+incrby", "+decr", "+decrby",
}

// User is one function's Redis user.
type User struct {
	Name     string   // the Knative Service's name
	Keys     []string // ACL key rules: ~pattern, %R~pattern, %W~pattern
	Commands []string // ACL command rules after -@all
}

// Options tune Users.
type Options struct {
	// FaultInjection lets each function use its fault keys
	// (knfunc.FaultKey: ksaga:fault:<service>:*, read and counted down),
	// for --fault-injection.
	FaultInjection bool
}

// Users returns one User per Knative Service: StoreKeys and StoreCommands
// plus what its annotations add. Services sharing a name in different
// namespaces share a user (one Redis per namespace is the norm).
func Users(services []*servingv1.Service, o Options) ([]User, error) {
	var out []User
	var errs []error
	seen := map[string]bool{}
	for _, svc := range services {
		if seen[svc.Name] {
			continue
		}
		seen[svc.Name] = true
		u := User{Name: svc.Name, Commands: slices.Concat(StoreCommands, EffectCommands)}
		for _, k := range StoreKeys {
			u.Keys = append(u.Keys, "~"+k)
		}
		for _, k := range fields(svc.Annotations[KeysAnnotation]) {
			if !strings.HasPrefix(k, "~") && !strings.HasPrefix(k, "%") {
				k = "~" + k
			}
			if err := checkKeyRule(k); err != nil {
				errs = append(errs, fmt.Errorf("service %s/%s: %s: %w", svc.Namespace, svc.Name, KeysAnnotation, err))
				continue
			}
			u.Keys = append(u.Keys, k)
		}
		for _, c := range fields(svc.Annotations[CommandsAnnotation]) {
			if !strings.HasPrefix(c, "+") || strings.ContainsAny(c, " \t") {
				errs = append(errs, fmt.Errorf("service %s/%s: %s: %q: want +command, +command|subcommand or +@category", svc.Namespace, svc.Name, CommandsAnnotation, c))
				continue
			}
			u.Commands = append(u.Commands, c)
		}
		if o.FaultInjection {
			u.Keys = append(u.Keys, "~ksaga:fault:"+svc.Name+":*")
		}
		out = append(out, u)
	}
	return out, errors.Join(errs...)
}

func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// checkKeyRule accepts ~p, %R~p, %W~p and %RW~p with a non-empty pattern;
// "allkeys" and "~*" are refused: a function never needs every key.
func checkKeyRule(k string) error {
	p := k
	if strings.HasPrefix(p, "%") {
		i := strings.IndexByte(p, '~')
		if i < 0 || (p[1:i] != "R" && p[1:i] != "W" && p[1:i] != "RW") {
			return fmt.Errorf("%q: want ~pattern, %%R~pattern or %%W~pattern", k)
		}
		p = p[i:]
	}
	if p == "~" || p == "~*" {
		return fmt.Errorf("%q: a function's user may not have every key", k)
	}
	return nil
}

// Rules are the ACL SETUSER arguments that make the user exactly this
// (reset first, so applying them again changes nothing), enabled with
// password.
func (u User) Rules(password string) []string {
	r := []string{"reset", "on", ">" + password, "resetchannels"}
	r = append(r, u.Keys...)
	r = append(r, "-@all")
	return append(r, u.Commands...)
}

// Line is the user's line of an ACL file ("user <name> <rules>"); the
// password is written as given (an ACL file may hold #<sha256> instead).
func (u User) Line(password string) string {
	return "user " + u.Name + " " + strings.Join(u.Rules(password)[1:], " ")
}

// Apply creates or resets every user on rdb (a connection with ACL
// rights) with its password; on a Redis Cluster on every node, replicas
// too (a node's users are its own, and a replica may become a master).
func Apply(ctx context.Context, rdb redis.UniversalClient, users []User, passwords map[string]string) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return Apply(ctx, node, users, passwords)
		})
	}
	for _, u := range users {
		pw := passwords[u.Name]
		if pw == "" {
			return fmt.Errorf("redis acl: no password for user %s", u.Name)
		}
		args := []any{"ACL", "SETUSER", u.Name}
		for _, r := range u.Rules(pw) {
			args = append(args, r)
		}
		if err := rdb.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redis acl: user %s: %w", u.Name, err)
		}
	}
	return nil
}

// NewPassword returns a random password.
func NewPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("redis acl: password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// URLFor returns base (a redis:// or rediss:// URL) with the user and
// password set.
func URLFor(base, user, password string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("redis acl: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", fmt.Errorf("redis acl: %s URLs cannot carry a user (want redis:// or rediss://)", u.Scheme)
	}
	u.User = url.UserPassword(user, password)
	return u.String(), nil
}
