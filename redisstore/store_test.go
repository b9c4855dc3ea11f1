package redisstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestStore runs the store conformance suite on a real redis-server.
func TestStore(t *testing.T) {
	sagatest.StoreSuite(t, func(t *testing.T) (saga.Store, redis.UniversalClient) {
		rdb := sagatest.Redis(t)
		s, err := redisstore.New(rdb, redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s, rdb
	})
}

// TestStoreCluster runs the store conformance suite on a 3-master Redis
// Cluster: the sharded layout, and effects whose keys are on other nodes
// than their sagas' (the suite's effect keys are spread over slots).
func TestStoreCluster(t *testing.T) {
	sagatest.StoreSuite(t, func(t *testing.T) (saga.Store, redis.UniversalClient) {
		rdb := redisstore.ClusterForTest(t)
		s, err := redisstore.New(rdb, redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s, rdb
	})
}

// TestBusinessKeyExpiresWithItsSaga checks that a saga's business key
// lives as long as its record: set at the create, kept when the saga ends
// (retention), and lengthened again when it is resumed. A change gets the
// key only when it may write it.
func TestBusinessKeyExpiresWithItsSaga(t *testing.T) {
	rdb := sagatest.Redis(t)
	s, err := redisstore.New(rdb, redisstore.Options{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const def = "keyed"
	ttls := func(id, key string, want time.Duration) {
		t.Helper()
		rec, k := recordAndKeyTTL(t, rdb, id, def, key)
		if d := rec - want; d < -5*time.Second || d > 0 {
			t.Fatalf("saga %s expires in %s, want %s", id, rec, want)
		}
		if d := k - rec; d < -time.Second || d > time.Second {
			t.Fatalf("business key %s expires in %s, its saga in %s", key, k, rec)
		}
	}
	apply := func(c saga.Change) {
		t.Helper()
		r, err := s.Apply(ctx, c)
		if err != nil || !r.Applied {
			t.Fatalf("%s: %+v %v", c.Event.ID, r, err)
		}
	}
	change := func(id string, v int64, allow saga.Status, to saga.Status) saga.Change {
		return saga.Change{SagaID: id, Saga: def, Key: "key-" + id, Event: saga.EventRef{Source: "/t", ID: fmt.Sprintf("%s-%d", id, v), Type: "t"},
			Version: v, Allow: []saga.Status{allow}, Step: "s", Success: saga.Move{Outcome: "ok", Status: to}}
	}
	for _, id := range []string{"ends", "resumed"} {
		apply(saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id, Type: "t"}, Allow: []saga.Status{saga.StatusAccepted},
			Create:  &saga.Create{Saga: def, Key: "key-" + id, Data: []byte(`{}`), Deadline: time.Now().Add(time.Hour)},
			Success: saga.Move{Outcome: "ok", Status: saga.StatusRunning}})
		ttls(id, "key-"+id, 2*time.Hour) // its deadline, then the retention
		apply(change(id, 1, saga.StatusRunning, saga.StatusRunning))
		ttls(id, "key-"+id, 2*time.Hour)
	}
	apply(change("ends", 2, saga.StatusRunning, saga.StatusCompleted))
	ttls("ends", "key-ends", time.Hour)

	apply(change("resumed", 2, saga.StatusRunning, saga.StatusCompensationFailed))
	ttls("resumed", "key-resumed", time.Hour)
	apply(change("resumed", 3, saga.StatusCompensationFailed, saga.StatusCompensating))
	ttls("resumed", "key-resumed", 2*time.Hour)
}

// TestBusinessKeyFollowsItsNewestSaga checks that a business key taken
// over by a newer saga (the same order submitted again once the first
// ended, or while it runs) follows the newer saga only: the older one's
// end or resumption must not shorten or lengthen it, or ByKey would lose
// the newer, still running saga.
func TestBusinessKeyFollowsItsNewestSaga(t *testing.T) {
	rdb := sagatest.Redis(t)
	s, err := redisstore.New(rdb, redisstore.Options{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const def, key = "keyed", "order-1"
	apply := func(c saga.Change) {
		t.Helper()
		r, err := s.Apply(ctx, c)
		if err != nil || !r.Applied {
			t.Fatalf("%s: %+v %v", c.Event.ID, r, err)
		}
	}
	create := func(id string, deadline time.Duration) {
		apply(saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id, Type: "t"},
			Create:  &saga.Create{Saga: def, Key: key, Data: []byte(`{}`), Deadline: time.Now().Add(deadline)},
			Success: saga.Move{Outcome: "ok", Status: saga.StatusRunning}})
	}
	change := func(id string, v int64, allow, to saga.Status) {
		apply(saga.Change{SagaID: id, Saga: def, Key: key, Event: saga.EventRef{Source: "/t", ID: fmt.Sprintf("%s-%d", id, v), Type: "t"},
			Version: v, Allow: []saga.Status{allow}, Step: "s", Success: saga.Move{Outcome: "ok", Status: to}})
	}
	check := func(when string) {
		t.Helper()
		id, err := s.ByKey(ctx, def, key)
		if err != nil || id != "newer" {
			t.Fatalf("%s: ByKey = %q, %v; want the newer saga", when, id, err)
		}
		rec, k := recordAndKeyTTL(t, rdb, "newer", def, key)
		if d := k - rec; d < -time.Second || d > time.Second {
			t.Fatalf("%s: the business key expires in %s, the newer saga holding it in %s", when, k, rec)
		}
	}
	create("older", time.Hour)
	create("newer", 10*time.Hour)
	check("created")
	change("older", 1, saga.StatusRunning, saga.StatusCompensationFailed)
	check("the older saga ended")
	change("older", 2, saga.StatusCompensationFailed, saga.StatusCompensating)
	check("the older saga resumed")
	change("older", 3, saga.StatusCompensating, saga.StatusCompensated)
	check("the older saga ended again")
}

// recordAndKeyTTL returns how long saga id's record and its business key
// (of definition def) have left to live.
func recordAndKeyTTL(t *testing.T, rdb redis.UniversalClient, id, def, key string) (rec, k time.Duration) {
	t.Helper()
	ctx := context.Background()
	rec, err := rdb.TTL(ctx, "ksaga:{"+id+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	if k, err = rdb.TTL(ctx, "ksaga:idx:"+def+":k:"+key).Result(); err != nil {
		t.Fatal(err)
	}
	return rec, k
}

// TestAcceptedKeyFollowsItsSagaStartedWithout checks that the business
// key an accepted saga was recorded with follows the saga when its start
// gives none (or another): the start of an accepted saga keeps the
// record's key, so its end must expire that key with the record.
func TestAcceptedKeyFollowsItsSagaStartedWithout(t *testing.T) {
	rdb := sagatest.Redis(t)
	s, err := redisstore.New(rdb, redisstore.Options{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const def = "keyed"
	for _, startKey := range []string{"", "another"} {
		id := "s-" + startKey
		key := "accepted-" + id
		deadline := time.Now().Add(10 * time.Hour)
		r, err := s.Apply(ctx, saga.Change{SagaID: id, Saga: def, Key: key, Event: saga.EventRef{Source: "/t", ID: id + ".accept", Type: "t"},
			Create:  &saga.Create{Saga: def, Key: key, Data: []byte(`{}`), Deadline: deadline, Accept: true},
			Step:    "a",
			Success: saga.Move{Outcome: "accepted", Status: saga.StatusAccepted}})
		if err != nil || !r.Applied {
			t.Fatalf("accept: %+v %v", r, err)
		}
		// the start fails at once: nothing to undo, the saga ends
		r, err = s.Apply(ctx, saga.Change{SagaID: id, Saga: def, Key: key, Event: saga.EventRef{Source: "/t", ID: id, Type: "t"},
			Create:  &saga.Create{Saga: def, Key: startKey, Data: []byte(`{}`), Deadline: deadline},
			Version: r.Version, Allow: []saga.Status{saga.StatusAccepted}, Step: "a",
			Success: saga.Move{Outcome: "done", Status: saga.StatusRunning},
			Failure: &saga.Move{Outcome: "rejected", Status: saga.StatusCompensated}, Fail: true})
		if err != nil || !r.Applied || r.Status != saga.StatusCompensated {
			t.Fatalf("start: %+v %v", r, err)
		}
		rec, k := recordAndKeyTTL(t, rdb, id, def, key)
		if d := k - rec; d < -time.Second || d > time.Second {
			t.Errorf("start key %q: the business key %s expires in %s, its ended saga in %s", startKey, key, k, rec)
		}
	}
}

// TestEffectArgumentNamedWithABracket checks that only a name ending in
// "[]" is a list: an effect's argument or key whose name merely ends in
// "]" reaches the effect under its name, as the effect's own script on a
// Redis Cluster reads it.
func TestEffectArgumentNamedWithABracket(t *testing.T) {
	rdb := sagatest.Redis(t)
	s, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fx := saga.Effect{Name: "bracket", Lua: `redis.call('SET', keys['out]'], args['v]'] or 'missing')`}
	r, err := s.Apply(ctx, saga.Change{SagaID: "b1", Saga: "br", Event: saga.EventRef{Source: "/t", ID: "b1", Type: "t"},
		Create:  &saga.Create{Saga: "br", Data: []byte(`{}`), Deadline: time.Now().Add(time.Hour)},
		Effect:  fx.Call().Key("out]", "bracket:out").Arg("v]", "value"),
		Success: saga.Move{Outcome: "ok", Status: saga.StatusRunning}})
	if err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	if got, err := rdb.Get(ctx, "bracket:out").Result(); err != nil || got != "value" {
		t.Fatalf("the effect wrote %q (%v), want the argument's value", got, err)
	}
}
