package ordersaga

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// User is a demo user.
type User struct {
	ID           int32
	Username     string
	Email        string
	BalanceCents int64
}

// Product is a demo SKU.
type Product struct {
	SKU        string
	PriceCents int64
	Stock      int64
}

// Fixture is the documented demo data (README "Try it"). ksaga dev knows
// no saga and does not load it: deploy/demo/seed.redis holds the same data
// as Redis commands, which `ksaga dev --seed deploy/demo/seed.redis` (make
// run) runs at start and the demo's seed Job (deploy/demo/seed-job.yaml,
// checked against Fixture by the deploy tests) pipes into redis-cli in a
// cluster. The tests load it with LoadFixture.
var Fixture = struct {
	Users    []User
	Products []Product
}{
	Users: []User{
		{1, "alice", "alice@example.com", 100000},
		{2, "bob", "bob@example.com", 500},
		{3, "carol", "carol@example.com", 0},
	},
	Products: []Product{
		{"book", 1250, 1000},
		{"lamp", 4999, 1},
	},
}

// LoadFixture writes the fixture into Redis. Existing keys are kept (a
// restart of `ksaga dev` against a real Redis does not reset balances);
// pass overwrite to reset them.
func LoadFixture(ctx context.Context, rdb redis.UniversalClient, overwrite bool) error {
	set := func(p redis.Pipeliner, key string, v any) {
		if overwrite {
			p.Set(ctx, key, v, 0)
		} else {
			p.SetNX(ctx, key, v, 0)
		}
	}
	pipelined := rdb.TxPipelined // all or nothing on one primary
	if _, ok := rdb.(*redis.ClusterClient); ok {
		pipelined = rdb.Pipelined // a transaction's keys must share a slot
	}
	_, err := pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range Fixture.Users {
			if overwrite {
				p.Del(ctx, UserKey(u.ID))
			}
			p.HSetNX(ctx, UserKey(u.ID), "username", u.Username)
			p.HSetNX(ctx, UserKey(u.ID), "email", u.Email)
			set(p, BalanceKey(u.ID), u.BalanceCents)
		}
		for _, pr := range Fixture.Products {
			set(p, CatalogKey(pr.SKU), pr.PriceCents)
			set(p, StockKey(pr.SKU), pr.Stock)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load fixture: %w", err)
	}
	return nil
}
