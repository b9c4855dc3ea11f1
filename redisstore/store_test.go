package redisstore_test

import (
	"testing"

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
