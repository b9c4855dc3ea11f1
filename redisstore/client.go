package redisstore

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a go-redis UniversalClient for a URL:
//
//	redis://[user:password@]host:port/db         one server
//	rediss://...                                  the same over TLS
//	redis://host:port?master_name=m&addr=h2:p     Sentinel (host:port and addr are sentinels)
//	redis://host:port?cluster=true&addr=h2:p      Cluster (seed nodes)
//
// Query parameters are go-redis's (dial_timeout, pool_size, ...).
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
		return redis.NewFailoverClient(o), nil
	case strings.EqualFold(q.Get("cluster"), "true"):
		q.Del("cluster")
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (cluster): %w", err)
		}
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		return redis.NewClient(o), nil
	}
}
