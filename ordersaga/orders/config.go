package orders

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Config is the order domain's settings, read from env next to
// knfunc.Config.
type Config struct {
	// Users is USERS_URL, the users function's URL (default http://users,
	// the Knative Service of that name in the same namespace; e.g.
	// http://users.saga.svc.cluster.local, or http://users.saga.localhost:8080
	// under `ksaga dev`). The gRPC client dials its host and port (80 for
	// http, 443 with TLS for https) and sends its host as the :authority, as
	// an HTTP client sends Host, so that Knative's ingress routes the call.
	Users usersTarget
	// UsersTimeout is USERS_TIMEOUT: the deadline of one GetUser call,
	// retries included (default 2s).
	UsersTimeout time.Duration
	// UsersCacheTTL is USERS_CACHE_TTL: how long GetUser answers are reused
	// (default 30s; unknown users at most 5s; 0 turns the cache off).
	UsersCacheTTL time.Duration
	// CatalogueCacheTTL is CATALOGUE_CACHE_TTL: how long a SKU's price is
	// reused (default 5s; unknown SKUs are not remembered; 0 reads the
	// catalogue for every order).
	CatalogueCacheTTL time.Duration
}

// usersTarget is where the users function listens.
type usersTarget struct {
	Addr      string // host:port to dial
	Authority string // the URL's host as written (no default port)
	TLS       bool
}

// ConfigFromEnv reads the config with getenv.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{UsersTimeout: 2 * time.Second, UsersCacheTTL: 30 * time.Second, CatalogueCacheTTL: 5 * time.Second}
	var errs []error
	raw := getenv("USERS_URL")
	if raw == "" {
		raw = "http://users"
	}
	t, err := parseUsersURL(raw)
	if err != nil {
		errs = append(errs, fmt.Errorf("USERS_URL=%q: %w", raw, err))
	}
	c.Users = t
	if v := getenv("USERS_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("USERS_TIMEOUT=%q: want a positive duration like 2s", v))
		}
		c.UsersTimeout = d
	}
	if v := getenv("USERS_CACHE_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("USERS_CACHE_TTL=%q: want a duration like 30s, or 0 for no cache", v))
		}
		c.UsersCacheTTL = d
	}
	if v := getenv("CATALOGUE_CACHE_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("CATALOGUE_CACHE_TTL=%q: want a duration like 5s, or 0 for no cache", v))
		}
		c.CatalogueCacheTTL = d
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("order config: %w", errors.Join(errs...))
	}
	return c, nil
}

// parseUsersURL turns http://host[:port] or https://host[:port] into a dial
// target.
func parseUsersURL(raw string) (usersTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return usersTarget{}, err
	}
	port := ""
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return usersTarget{}, errors.New("want an http:// or https:// URL")
	}
	if u.Hostname() == "" {
		return usersTarget{}, errors.New("no host")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return usersTarget{}, errors.New("want only scheme, host and port")
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return usersTarget{Addr: net.JoinHostPort(u.Hostname(), port), Authority: u.Host, TLS: u.Scheme == "https"}, nil
}
