package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
)

func TestNewClientAuth(t *testing.T) {
	srv := testredis.Start(t,
		testredis.Option{"--requirepass", "s3cret"},
		testredis.Option{"--user", "saga", "on", ">pw", "~ksaga:*", "+@all"},
	)
	addr := srv.Addr()
	tests := []struct {
		name, url string
		wantErr   string
	}{
		{"default user password", "redis://:s3cret@" + addr + "/0", ""},
		{"ACL user", "redis://saga:pw@" + addr + "/0", ""},
		{"wrong password", "redis://saga:nope@" + addr + "/0", "WRONGPASS"},
		{"no auth", "redis://" + addr + "/0", "NOAUTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := redisstore.NewClient(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Set(context.Background(), "ksaga:probe", 1, 0).Err()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("set: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %s", err, tt.wantErr)
			}
		})
	}
	t.Run("ACL key pattern is enforced", func(t *testing.T) {
		c, _ := redisstore.NewClient("redis://saga:pw@" + addr + "/0")
		defer c.Close()
		if err := c.Set(context.Background(), "other:key", 1, 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("err %v, want NOPERM", err)
		}
	})
}

func TestNewClientKinds(t *testing.T) {
	tests := []struct {
		url     string
		want    string // concrete client type
		wantErr bool
	}{
		{"redis://127.0.0.1:6379/0", "*redis.Client", false},
		{"rediss://user:pw@redis.example:6380/1", "*redis.Client", false},
		{"redis://s1:26379?master_name=mymaster&addr=s2:26379", "*redis.Client", false},
		{"redis://n1:7000?cluster=true&addr=n2:7000", "*redis.ClusterClient", false},
		{"http://127.0.0.1:6379", "", true},
		{"redis://127.0.0.1:6379?bogus=1", "", true},
	}
	for _, tt := range tests {
		c, err := redisstore.NewClient(tt.url)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s: want an error", tt.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if got := typeName(c); got != tt.want {
			t.Errorf("%s: client %s, want %s", tt.url, got, tt.want)
		}
		_ = c.Close()
	}
	if c, err := redisstore.NewClient("rediss://h:6380/0"); err == nil {
		if c.(*redis.Client).Options().TLSConfig == nil {
			t.Error("rediss:// without TLS config")
		}
	}
}

func typeName(c redis.UniversalClient) string {
	switch c.(type) {
	case *redis.Client:
		return "*redis.Client"
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	}
	return "?"
}

func TestNewClientFailsFastByDefault(t *testing.T) {
	c, _ := redisstore.NewClient("redis://127.0.0.1:1/0")
	o := c.(*redis.Client).Options()
	if o.DialTimeout != time.Second || o.MaxRetries != 1 || o.Protocol != 2 {
		t.Fatalf("dial timeout %v, max retries %d, protocol %d", o.DialTimeout, o.MaxRetries, o.Protocol)
	}
	c, _ = redisstore.NewClient("redis://127.0.0.1:1/0?dial_timeout=3s&max_retries=5&protocol=3")
	o = c.(*redis.Client).Options()
	if o.DialTimeout != 3*time.Second || o.MaxRetries != 5 || o.Protocol != 3 {
		t.Fatalf("URL overrides: dial timeout %v, max retries %d, protocol %d", o.DialTimeout, o.MaxRetries, o.Protocol)
	}
}

// TestNewClientCluster: the cluster form routes by slot only (see
// NewClient), with the fail-fast defaults.
func TestNewClientCluster(t *testing.T) {
	c, err := redisstore.NewClient("redis://u:p@n1:7000?cluster=true&addr=n2:7000&addr=n3:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := c.(*redis.ClusterClient).Options()
	if !o.DisableRoutingPolicies || o.DialTimeout != time.Second || o.MaxRetries != 1 || o.Protocol != 2 ||
		len(o.Addrs) != 3 || o.Username != "u" || o.Password != "p" {
		t.Fatalf("options: routing policies off %v, dial timeout %v, retries %d, protocol %d, addrs %v, user %q",
			o.DisableRoutingPolicies, o.DialTimeout, o.MaxRetries, o.Protocol, o.Addrs, o.Username)
	}
}
