package redisacl_test

import (
	"context"
	stdpath "path"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/redisacl"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

func service(name string, annotations map[string]string) *servingv1.Service {
	return &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: name, Annotations: annotations}}
}

// debit is a domain script like a step's: it writes the function's own key
// and the saga's hash in one EVAL, as the saga store's transitions do.
const debit = `
redis.call('DECRBY', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'step', 'paid')
return redis.call('GET', KEYS[1])`

// connect returns a client logged in as user.
func connect(t *testing.T, srv *testredis.Server, user, password string) redis.UniversalClient {
	t.Helper()
	u, err := redisacl.URLFor(srv.URL(), user, password)
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

func isNoPerm(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOPERM") }

// TestUsersConfineEachFunctionToItsKeys applies the users on a real
// redis-server: a function's user runs its own domain script (writing its
// key and the saga's hash, the caller's permissions applying inside the
// script), and cannot write another function's domain, the broker's
// streams or the fault switches, by command or by script.
func TestUsersConfineEachFunctionToItsKeys(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	admin := srv.Client(t)
	users, err := redisacl.Users([]*servingv1.Service{
		service("payment", map[string]string{redisacl.KeysAnnotation: "payment:*"}),
		service("inventory", map[string]string{redisacl.KeysAnnotation: "inventory:*"}),
		service("orchestrator", nil),
	}, redisacl.Options{FaultInjection: true})
	if err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{"payment": "p-secret", "inventory": "i-secret", "orchestrator": "o-secret"}
	if err := redisacl.Apply(ctx, admin, users, pw); err != nil {
		t.Fatal(err)
	}
	// Applying again resets rather than accumulates.
	if err := redisacl.Apply(ctx, admin, users, pw); err != nil {
		t.Fatal(err)
	}
	admin.Set(ctx, "payment:balance:1", 100, 0)
	admin.Set(ctx, "inventory:stock:book", 10, 0)
	admin.Set(ctx, "ksaga:fault:payment:io.ksaga.x", "fail", 0)

	payment := connect(t, srv, "payment", "p-secret")
	got, err := payment.Eval(ctx, debit, []string{"payment:balance:1", "ksaga:{saga-1}"}, 40).Result()
	if err != nil || got != "60" {
		t.Fatalf("payment's own script: %v, %v; want 60", got, err)
	}
	if v, err := payment.Get(ctx, "ksaga:fault:payment:io.ksaga.x").Result(); err != nil || v != "fail" {
		t.Errorf("payment reads its own fault switch: %q, %v", v, err)
	}
	if err := payment.Decr(ctx, "ksaga:fault:payment:io.ksaga.y").Err(); err != nil {
		t.Errorf("payment counts its own fault switch down: %v", err)
	}

	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"SET another function's key", func() error { return payment.Set(ctx, "inventory:stock:book", 0, 0).Err() }},
		{"a script on another function's key", func() error {
			return payment.Eval(ctx, debit, []string{"inventory:stock:book", "ksaga:{saga-1}"}, 10).Err()
		}},
		{"a script on its key and another's", func() error {
			return payment.Eval(ctx, "redis.call('DECRBY', KEYS[1], 1); redis.call('INCRBY', KEYS[2], 1)", []string{"payment:balance:1", "inventory:stock:book"}).Err()
		}},
		{"read another function's key", func() error { return payment.Get(ctx, "inventory:stock:book").Err() }},
		{"write the broker's stream", func() error {
			return payment.XAdd(ctx, &redis.XAddArgs{Stream: "ksaga:broker:{saga/default}", Values: []string{"k", "v"}}).Err()
		}},
		{"read another's fault switch", func() error { return payment.Get(ctx, "ksaga:fault:inventory:io.ksaga.x").Err() }},
		{"delete a saga", func() error { return payment.Del(ctx, "ksaga:{saga-1}").Err() }},
		{"flush everything", func() error { return payment.FlushAll(ctx).Err() }},
		{"change the ACL", func() error { return payment.Do(ctx, "ACL", "SETUSER", "payment", "allkeys").Err() }},
		{"orchestrator writes a balance", func() error {
			return connect(t, srv, "orchestrator", "o-secret").IncrBy(ctx, "payment:balance:1", 1000).Err()
		}},
	} {
		if err := c.run(); !isNoPerm(err) {
			t.Errorf("%s: %v, want NOPERM", c.name, err)
		}
	}
	if v := admin.Get(ctx, "inventory:stock:book").Val(); v != "10" {
		t.Errorf("inventory:stock:book = %s after the refused writes, want 10", v)
	}
	if v := admin.Get(ctx, "payment:balance:1").Val(); v != "60" {
		t.Errorf("payment:balance:1 = %s, want 60 (only payment's own debit)", v)
	}
	if _, err := connect(t, srv, "payment", "wrong").Ping(ctx).Result(); err == nil {
		t.Error("a wrong password connects")
	}
}

// TestStoreSuiteAsACLUser runs the saga store's whole conformance suite
// (sagatest.StoreSuite) on a real redis-server as a user with StoreKeys and
// StoreCommands only (plus the suite's own effect: SET and INCRBY on
// suite:*), so the lists cannot drift from what redisstore does: a key
// outside the layout's patterns or a command missing from StoreCommands
// fails a case with NOPERM. The suite checks effects with the admin client.
func TestStoreSuiteAsACLUser(t *testing.T) {
	sagatest.StoreSuite(t, func(t *testing.T) (saga.Store, redis.UniversalClient) {
		srv := testredis.Start(t)
		admin := srv.Client(t)
		u := redisacl.User{Name: "store", Commands: append(slices.Clone(redisacl.StoreCommands), "+incrby")}
		for _, k := range redisacl.StoreKeys {
			u.Keys = append(u.Keys, "~"+k)
		}
		u.Keys = append(u.Keys, "~suite:*")
		if err := redisacl.Apply(context.Background(), admin, []redisacl.User{u}, map[string]string{"store": "s-secret"}); err != nil {
			t.Fatal(err)
		}
		s, err := redisstore.New(connect(t, srv, "store", "s-secret"), redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s, admin
	})
}

// TestStoreKeysAreTheLayout: the ACL patterns are redisstore's, and none
// of them reaches the Broker's streams or the fault switches.
func TestStoreKeysAreTheLayout(t *testing.T) {
	if !slices.Equal(redisacl.StoreKeys, redisstore.KeyPatterns()) {
		t.Errorf("StoreKeys %q, want redisstore.KeyPatterns() %q", redisacl.StoreKeys, redisstore.KeyPatterns())
	}
	for _, k := range redisacl.StoreKeys {
		for _, other := range []string{"ksaga:broker:{saga/default}", "ksaga:fault:payment:x", "payment:balance:1"} {
			if ok, _ := stdpath.Match(k, other); ok {
				t.Errorf("store pattern %q matches %s", k, other)
			}
		}
	}
}

func TestUsersRefuseEveryKey(t *testing.T) {
	for _, keys := range []string{"*", "~*", "%R~*", "%X~a:*"} {
		_, err := redisacl.Users([]*servingv1.Service{service("x", map[string]string{redisacl.KeysAnnotation: keys})}, redisacl.Options{})
		if err == nil {
			t.Errorf("%s = %q: accepted", redisacl.KeysAnnotation, keys)
		}
	}
	if _, err := redisacl.Users([]*servingv1.Service{service("x", map[string]string{redisacl.CommandsAnnotation: "-@all"})}, redisacl.Options{}); err == nil {
		t.Errorf("%s = -@all: accepted", redisacl.CommandsAnnotation)
	}
}

func TestLine(t *testing.T) {
	users, err := redisacl.Users([]*servingv1.Service{service("payment", map[string]string{redisacl.KeysAnnotation: "payment:*, %R~users:*"})}, redisacl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	line := users[0].Line("pw")
	for _, want := range []string{"user payment on >pw resetchannels ", " ~payment:* ", " %R~users:* ", " -@all ", " +evalsha "} {
		if !strings.Contains(line+" ", want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "reset ") {
		t.Errorf("an ACL file line starts fresh; %q resets", line)
	}
}

func TestURLFor(t *testing.T) {
	got, err := redisacl.URLFor("redis://:admin@127.0.0.1:6379/2", "payment", "p w/?")
	if err != nil || got != "redis://payment:p%20w%2F%3F@127.0.0.1:6379/2" {
		t.Errorf("URLFor = %q, %v", got, err)
	}
	if _, err := redisacl.URLFor("unix:///tmp/redis.sock", "payment", "pw"); err == nil {
		t.Error("a unix URL is accepted")
	}
}
