package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/sagatest"
)

// postEvent sends a binary-mode CloudEvent with extra headers to path on
// host (empty: the broker ingress) and returns the status.
func (d *devProc) postEvent(host, path, typ, sagaID string, hdr http.Header) int {
	d.t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.URL(path), strings.NewReader(orderData))
	if err != nil {
		d.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": uid("forged"), "ce-source": "curl", "ce-type": typ,
		"ce-correlationid": sagaID, "ce-sagaversion": "4", "content-type": "application/json"} {
		req.Header.Set(k, v)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return d.do(req)
}

// TestE2ESenderIdentity runs `ksaga dev` as shipped (sender identity and
// per-function Redis users on, real redis-server): the README's curl start
// of a saga is accepted and the saga completes (every delivery carried a
// token the functions accepted, every reply passed the Broker's policies,
// every step ran as its own Redis user); a step result posted the same way
// is refused (403) and changes nothing; a function reached directly
// refuses a request without a token, with a token for another audience or
// from another issuer (401); the sweeper takes a ping only with its
// PingSource's token (ksaga dev's fire endpoint sends one; a direct post
// is 401); and a function's Redis user cannot write another function's
// domain.
func TestE2ESenderIdentity(t *testing.T) {
	t.Parallel()
	redis := testredis.Start(t)
	d := startDev(t, "--redis-url", redis.URL())
	for _, want := range []string{`msg="sender identity on (--oidc)`, `msg="redis: every function connects as its own ACL user (--redis-acl)`} {
		if !strings.Contains(d.Log(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	ctx := context.Background()
	rdb := redis.Client(t)

	id := uid("readme")
	if code := d.postBinary(uid("id"), id); code != http.StatusAccepted {
		t.Fatalf("the README's curl start: %d, want 202", code)
	}
	d.waitCompleted(sagaTimeout, id)
	_, before, err := d.saga(id)
	if err != nil {
		t.Fatal(err)
	}
	balance := rdb.Get(ctx, "payment:balance:1").Val()
	stock := rdb.Get(ctx, "inventory:stock:book").Val()

	t.Run("a step result from outside is refused and changes nothing", func(t *testing.T) {
		for _, typ := range []string{"io.ksaga.inventory.reserved", "io.ksaga.order.created", "io.ksaga.inventory.failed", "io.ksaga.payment.refund"} {
			if code := d.postEvent("", "/saga/default", typ, id, nil); code != http.StatusForbidden {
				t.Errorf("%s posted to the broker: %d, want 403", typ, code)
			}
		}
		sagatest.Eventually(t, 5*time.Second, func() error { // the log comes through a pipe, after the answer
			if !strings.Contains(d.Log(), "may not send io.ksaga.inventory.reserved here") {
				return errors.New("the refusal is not logged")
			}
			return nil
		})
		// 403 is answered before anything is stored: there is nothing in flight to wait for
		if _, after, _ := d.saga(id); after != before {
			t.Errorf("the saga changed:\n%s\n%s", before, after)
		}
		if b, s := rdb.Get(ctx, "payment:balance:1").Val(), rdb.Get(ctx, "inventory:stock:book").Val(); b != balance || s != stock {
			t.Errorf("balance %s→%s, stock %s→%s", balance, b, stock, s)
		}
	})

	pids := d.Pids()
	t.Run("a function refuses what the Broker did not send", func(t *testing.T) {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: other}, (&jose.SignerOptions{}).WithType("JWT"))
		foreign, _ := jwt.Signed(signer).Claims(jwt.Claims{Issuer: "https://kubernetes.default.svc.cluster.local",
			Subject: devoidc.TriggerSubject("saga", "payment-on-order-created"), Audience: jwt.Audience{devoidc.ServiceAudience("saga", "payment")},
			Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).CompactSerialize()
		// A real token of the dev issuer, for the Broker's audience: what
		// order-api holds (its SinkBinding's), stolen.
		sinkToken, err := os.ReadFile(devtest.Environ(t, pids["saga/order-api"])["KSAGA_SINK_TOKEN_FILE"])
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name string
			hdr  http.Header
		}{
			{"no token", nil},
			{"a token for another audience", http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(sinkToken))}}},
			{"a token of another issuer", http.Header{"Authorization": {"Bearer " + foreign}}},
		} {
			if code := d.postEvent(d.serviceHost("payment"), "/", "io.ksaga.order.created", id, c.hdr); code != http.StatusUnauthorized {
				t.Errorf("payment, %s: %d, want 401", c.name, code)
			}
		}
		if b := rdb.Get(ctx, "payment:balance:1").Val(); b != balance {
			t.Errorf("balance %s→%s", balance, b)
		}
		// The stolen token is order-api's SinkBinding's, valid at the
		// Broker only for order-api's own types.
		hdr := http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(sinkToken))}}
		if code := d.postEvent("", "/saga/default", "io.ksaga.inventory.reserved", id, hdr); code != http.StatusForbidden {
			t.Errorf("order-api's identity sends inventory.reserved: %d, want 403", code)
		}
	})

	t.Run("the sweeper takes its PingSource's pings only", func(t *testing.T) {
		if code := d.postEvent(d.serviceHost("sweeper"), "/", "dev.knative.sources.ping", "", nil); code != http.StatusUnauthorized {
			t.Errorf("a ping posted to the sweeper without a token: %d, want 401", code)
		}
		before := strings.Count(d.Out.String(), `"msg":"swept"`)
		if code := d.FirePingSource(t, "sweeper-ping"); code != http.StatusAccepted {
			t.Fatalf("fire the sweeper's PingSource: %d, want 202", code)
		}
		sagatest.Eventually(t, 10*time.Second, func() error {
			if after := strings.Count(d.Out.String(), `"msg":"swept"`); after <= before {
				return fmt.Errorf("the sweeper did not run a pass (%d passes logged before, %d after)", before, after)
			}
			return nil
		})
	})

	t.Run("a function's Redis user cannot write another's domain", func(t *testing.T) {
		url := devtest.Environ(t, pids["saga/payment"])["REDIS_URL"]
		if !strings.HasPrefix(url, "redis://payment:") {
			t.Fatalf("payment's REDIS_URL %q is not its own user", url)
		}
		c, err := redisstore.NewClient(url)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		if err := c.Set(ctx, "inventory:stock:book", 0, 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("payment's user sets inventory's stock: %v, want NOPERM", err)
		}
		if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: "ksaga:broker:{saga/default}", Values: []string{"k", "v"}}).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("payment's user writes the broker's stream: %v, want NOPERM", err)
		}
		if s := rdb.Get(ctx, "inventory:stock:book").Val(); s != stock {
			t.Errorf("stock %s→%s", stock, s)
		}
	})

	t.Run("the issuer is served on the ingress", func(t *testing.T) {
		resp, err := http.Get(d.URL(devoidc.DiscoveryPath))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if want := fmt.Sprintf(`"issuer":"http://localhost:%d"`, d.Port); resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("discovery: %d %s, want %s", resp.StatusCode, b, want)
		}
	})
}

// TestE2ESenderIdentityOff: with --oidc=false ksaga dev behaves as a
// cluster without authentication-oidc: no policies loaded, anything
// accepted from anyone, the functions take events without a token.
func TestE2ESenderIdentityOff(t *testing.T) {
	t.Parallel()
	d := startDev(t, "--oidc=false")
	if !strings.Contains(d.Log(), `msg="sender identity off (--oidc=false)`) || regexp.MustCompile(`[0-9]+ EventPolic`).MatchString(d.Log()) {
		t.Errorf("log does not say sender identity is off, or loaded policies")
	}
	id := uid("off")
	if code := d.postBinary(uid("id"), id); code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	d.waitCompleted(sagaTimeout, id)
	if code := d.postEvent("", "/saga/default", "io.ksaga.notification.sent", uid("nobody"), nil); code != http.StatusAccepted {
		t.Errorf("a result posted to the broker without sender identity: %d, want 202 (as before)", code)
	}
	if code := d.postEvent(d.serviceHost("notification"), "/", "io.ksaga.order.confirmed", uid("nobody"), nil); code == http.StatusUnauthorized {
		t.Errorf("a function asks for a token with sender identity off")
	}
}
