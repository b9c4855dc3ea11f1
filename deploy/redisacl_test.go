package deploy_test

import (
	"context"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/internal/redisacl"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
)

var updateACL = flag.Bool("update", false, "rewrite the users of manifests/redis/22-acl.yaml and the ksaga-redis-users Secret from the Knative Services' annotations")

// aclFile returns the in-cluster Redis's ACL file (the ksaga-redis-acl
// Secret) as user name → line, and each line's password.
func aclFile(t *testing.T) (raw string, lines, passwords map[string]string) {
	t.Helper()
	set := loadClean(t, "brokers/mt-channel", "manifests")
	sec := set.Secret("saga", "ksaga-redis-acl")
	if sec == nil {
		t.Fatal("no Secret saga/ksaga-redis-acl")
	}
	raw = string(sec.Data["users.acl"])
	lines, passwords = map[string]string{}, map[string]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "user" {
			t.Fatalf("users.acl line %q: want user NAME RULES...", l)
		}
		lines[f[1]] = l
		for _, r := range f[2:] {
			if p, ok := strings.CutPrefix(r, ">"); ok {
				passwords[f[1]] = p
			}
		}
	}
	return raw, lines, passwords
}

// TestRedisUsers: the in-cluster Redis has one user per Knative Service
// whose line is exactly internal/redisacl's rules for the Service's
// annotations (so the ACL file is data derived from the manifests, not a
// second truth), the admin (default) user has REDIS_PASSWORD, and every
// function connects as its own user: REDIS_URL from ksaga-redis-users with
// that user's password, and no access to the admin Secret.
func TestRedisUsers(t *testing.T) {
	if *updateACL {
		set, _ := load(t, "brokers/mt-channel", "manifests")
		users, err := redisacl.Users(set.Services(), redisacl.Options{})
		if err != nil {
			t.Fatal(err)
		}
		writeUsers(t, users, set)
	}
	set := loadClean(t, "brokers/mt-channel", "manifests")
	users, err := redisacl.Users(set.Services(), redisacl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, lines, passwords := aclFile(t)
	admin := set.Secret("saga", "ksaga-redis")
	if lines["default"] != "user default on >"+string(admin.Data["REDIS_PASSWORD"])+" ~* &* +@all" {
		t.Errorf("default user %q: want every right with REDIS_PASSWORD (the probes and the demo Job use it)", lines["default"])
	}
	urls := set.Secret("saga", "ksaga-redis-users")
	if urls == nil {
		t.Fatal("no Secret saga/ksaga-redis-users")
	}
	if len(lines) != len(users)+1 {
		t.Errorf("users.acl has %d users, want default + one per Knative Service (%d)", len(lines), len(users))
	}
	for _, u := range users {
		pw := passwords[u.Name]
		if want := u.Line(pw); lines[u.Name] != want {
			t.Errorf("users.acl for %s:\n got %s\nwant %s\n(regenerate the line from redisacl.User.Line)", u.Name, lines[u.Name], want)
		}
		want := "redis://" + u.Name + ":" + url.PathEscape(pw) + "@redis.saga.svc.cluster.local:6379/0"
		if got := string(urls.Data[u.Name]); got != want {
			t.Errorf("ksaga-redis-users[%s] = %q, want %q (its user, the ACL file's password)", u.Name, got, want)
		}
	}
	for _, svc := range set.Services() {
		c := svc.Spec.Template.Spec.Containers[0]
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil && ef.SecretRef.Name == "ksaga-redis" {
				t.Errorf("%s reads the admin Secret ksaga-redis", svc.Name)
			}
		}
		ok := false
		for _, e := range c.Env {
			ok = ok || e.Name == "REDIS_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
				e.ValueFrom.SecretKeyRef.Name == "ksaga-redis-users" && e.ValueFrom.SecretKeyRef.Key == svc.Name
		}
		if !ok {
			t.Errorf("%s: REDIS_URL is not ksaga-redis-users[%s]", svc.Name, svc.Name)
		}
	}
}

// writeUsers rewrites the users of the ACL file (keeping the default user
// and every password; a new user gets change-me-<name>) and the
// ksaga-redis-users Secret's URLs: go test ./deploy -run TestRedisUsers -update.
func writeUsers(t *testing.T, users []redisacl.User, set *manifest.Set) {
	t.Helper()
	passwords := map[string]string{}
	for l := range strings.SplitSeq(string(set.Secret("saga", "ksaga-redis-acl").Data["users.acl"]), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "user" {
			for _, r := range f[2:] {
				if p, ok := strings.CutPrefix(r, ">"); ok {
					passwords[f[1]] = p
				}
			}
		}
	}
	var acl, urls strings.Builder
	acl.WriteString("    user default on >" + passwords["default"] + " ~* &* +@all\n")
	for _, u := range users {
		pw := passwords[u.Name]
		if pw == "" {
			pw = "change-me-" + u.Name
		}
		acl.WriteString("    " + u.Line(pw) + "\n")
		urls.WriteString("  " + u.Name + ": redis://" + u.Name + ":" + url.PathEscape(pw) + "@redis.saga.svc.cluster.local:6379/0\n")
	}
	rewrite := func(file string, block *regexp.Regexp, body string) {
		b, err := os.ReadFile(path(file))
		if err != nil {
			t.Fatal(err)
		}
		loc := block.FindSubmatchIndex(b)
		if loc == nil {
			t.Fatalf("%s: no block %s", file, block)
		}
		out := append(append(append([]byte{}, b[:loc[2]]...), body...), b[loc[3]:]...)
		if err := os.WriteFile(path(file), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("manifests/redis/22-acl.yaml", regexp.MustCompile(`(?s)  users\.acl: \|\n((?:    .*\n)+)`), acl.String())
	rewrite("manifests/10-config.yaml", regexp.MustCompile(`(?s)name: ksaga-redis-users\n.*?stringData:\n((?:  .*\n)+)`), urls.String())
}

// TestRedisACLFile starts a real redis-server with the shipped ACL file, as
// the StatefulSet does: each function's user (every Knative Service's)
// connects, runs the saga store's scripts and its own domain script, and
// cannot write another function's domain or delete a saga; order-api only
// reads orders; the console and the sweeper reach no domain at all.
func TestRedisACLFile(t *testing.T) {
	ctx := context.Background()
	raw, _, passwords := aclFile(t)
	file := filepath.Join(t.TempDir(), "users.acl")
	if err := os.WriteFile(file, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testredis.Start(t, testredis.Option{"--aclfile", file})
	as := func(user string) redis.UniversalClient {
		t.Helper()
		u, err := redisacl.URLFor(srv.URL(), user, passwords[user])
		if err != nil {
			t.Fatal(err)
		}
		rdb, err := redisstore.NewClient(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	adm := as("default")
	if err := adm.Set(ctx, "inventory:stock:book", 5, 0).Err(); err != nil {
		t.Fatalf("admin: %v", err)
	}
	for _, fn := range functionNames(t) {
		rdb := as(fn)
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Errorf("%s: %v", fn, err)
			continue
		}
		// The saga store: a transition's script on the saga's hash, its
		// index and a dead letter.
		if err := rdb.Eval(ctx, "redis.call('HSET', KEYS[1], 'v', 1); redis.call('ZADD', KEYS[2], 1, 'x'); redis.call('XADD', KEYS[3], '*', 'k', 'v'); return 1",
			[]string{"ksaga:{s-" + fn + "}", "ksaga:idx:order:due", "ksaga:dl"}).Err(); err != nil {
			t.Errorf("%s: the store's script: %v", fn, err)
		}
		if fn != "inventory" {
			if err := rdb.Eval(ctx, "return redis.call('DECRBY', KEYS[1], 1)", []string{"inventory:stock:book"}).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
				t.Errorf("%s decremented inventory's stock: %v, want NOPERM", fn, err)
			}
		}
		if err := rdb.Del(ctx, "ksaga:{s-"+fn+"}").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s deleted a saga: %v, want NOPERM", fn, err)
		}
	}
	// order-api reads orders and the catalogue, and writes neither.
	if err := adm.HSet(ctx, "order:o:1", "status", "pending").Err(); err != nil {
		t.Fatal(err)
	}
	api := as("order-api")
	if v, err := api.HGet(ctx, "order:o:1", "status").Result(); err != nil || v != "pending" {
		t.Errorf("order-api reads an order: %q, %v", v, err)
	}
	if err := api.HSet(ctx, "order:o:1", "status", "confirmed").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("order-api writes an order: %v, want NOPERM", err)
	}
	// the console and the sweeper have no domain: no balance, no order
	for _, fn := range []string{"console", "sweeper"} {
		if err := as(fn).Get(ctx, "payment:balance:1").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s reads a balance: %v, want NOPERM", fn, err)
		}
		if err := as(fn).HGetAll(ctx, "order:o:1").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s reads an order: %v, want NOPERM", fn, err)
		}
	}
	if err := as("payment").Eval(ctx, "return redis.call('INCRBY', KEYS[1], 100)", []string{"payment:balance:1"}).Err(); err != nil {
		t.Errorf("payment's own script: %v", err)
	}
	if err := as("inventory").Eval(ctx, "return redis.call('DECRBY', KEYS[1], 1)", []string{"inventory:stock:book"}).Err(); err != nil {
		t.Errorf("inventory's own script: %v", err)
	}
	if v := adm.Get(ctx, "inventory:stock:book").Val(); v != "4" {
		t.Errorf("stock = %s, want 4: only inventory's own decrement", v)
	}
}
