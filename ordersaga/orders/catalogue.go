package orders

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// catalogue prices SKUs from the catalogue in Redis (one MGET for the
// SKUs it does not remember). Prices are reference data read by every
// order, twice for an order placed through the REST API (the API's check
// and the Create step), so a known price is remembered for ttl: a price
// change reaches new orders within ttl. Unknown SKUs and errors are never
// remembered, so a SKU added to the catalogue is sellable at once. ttl 0
// reads Redis for every quote.
type catalogue struct {
	rdb    redis.UniversalClient
	ttl    time.Duration
	now    func() time.Time
	prices *ttlMap[string, int64] // cents by SKU
}

// maxCachedPrices bounds the cache; past it, it starts over.
const maxCachedPrices = 100_000

func newCatalogue(rdb redis.UniversalClient, ttl time.Duration) *catalogue {
	return &catalogue{rdb: rdb, ttl: ttl, now: time.Now, prices: newTTLMap[string, int64](maxCachedPrices)}
}

// lookup returns the price of each SKU, and whether the catalogue has it.
// Errors are saga.Transient when Redis is unavailable.
func (c *catalogue) lookup(ctx context.Context, skus []string) (cents []int64, known []bool, err error) {
	cents, known = make([]int64, len(skus)), make([]bool, len(skus))
	now := c.now()
	var missing []int // indexes of skus to read
	for i, sku := range skus {
		if cents[i], known[i] = c.prices.get(sku, now); !known[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return cents, known, nil
	}
	keys := make([]string, len(missing))
	for j, i := range missing {
		keys[j] = ordersaga.CatalogKey(skus[i])
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, nil, saga.Transient(err, "redis: catalogue")
	}
	for j, i := range missing {
		s, ok := vals[j].(string)
		if !ok {
			continue // unknown SKU
		}
		price, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("catalogue price of %q: %w", skus[i], err)
		}
		if price < 0 {
			return nil, nil, fmt.Errorf("catalogue price of %q is negative: %d", skus[i], price)
		}
		cents[i], known[i] = price, true
	}
	if c.ttl > 0 {
		for _, i := range missing {
			if known[i] {
				c.prices.put(skus[i], cents[i], now.Add(c.ttl))
			}
		}
	}
	return cents, known, nil
}
