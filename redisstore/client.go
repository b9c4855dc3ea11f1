package redisstore

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a go-redis UniversalClient for a URL:
//
//	redis://[user:password@]host:port/db         one server
//	rediss://...                                  the same over TLS
//	redis://host:port?master_name=m&addr=h2:p     Sentinel (host:port and addr are sentinels)
//	redis://host:port?cluster=true&addr=h2:p      Cluster (seed nodes)
//
// Query parameters are go-redis's (dial_timeout, pool_size, protocol, ...).
// Unless the URL says otherwise, the client fails fast — a 1s dial timeout
// and one retry instead of go-redis's 5s and three — because a step that
// cannot reach Redis should answer 503 at once and let the Broker retry with
// its own backoff; and it speaks RESP2 (protocol=2), not go-redis's default
// RESP3: ksaga uses no push notifications (client-side caching, maintenance
// events), and with RESP3 go-redis peeks each connection for pushes around
// every command.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("REDIS_URL: scheme %q: want redis:// or rediss://", u.Scheme)
	}
	q := u.Query()
	switch {
	case q.Get("master_name") != "":
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (sentinel): %w", err)
		}
		failFast(q, &o.DialTimeout, &o.MaxRetries, &o.Protocol)
		return redis.NewFailoverClient(o), nil
	case strings.EqualFold(q.Get("cluster"), "true"):
		q.Del("cluster")
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (cluster): %w", err)
		}
		failFast(q, &o.DialTimeout, &o.MaxRetries, &o.Protocol)
		// go-redis's request routing policies look up every command's
		// COMMAND info, fetched once per client — and again before every
		// command while a function's ACL user may not run COMMAND. ksaga
		// sends no command that spans slots (every script's keys share one),
		// so the plain per-slot routing is all it needs.
		o.DisableRoutingPolicies = true
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		failFast(q, &o.DialTimeout, &o.MaxRetries, &o.Protocol)
		return redis.NewClient(o), nil
	}
}

// failFast sets the fail-fast defaults the URL's query does not override.
func failFast(q url.Values, dialTimeout *time.Duration, maxRetries, protocol *int) {
	if !q.Has("dial_timeout") {
		*dialTimeout = time.Second
	}
	if !q.Has("max_retries") {
		*maxRetries = 1
	}
	if !q.Has("protocol") {
		*protocol = 2
	}
}
