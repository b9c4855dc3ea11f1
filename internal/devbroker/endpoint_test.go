package devbroker_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"knative.dev/pkg/apis"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// TestEndpointPlacesAndHoldsAttempts: Config.Endpoint chooses where each
// attempt connects (the subscriber URL's host is never dialled), and an
// attempt it holds longer than the Trigger's timeout is neither timed out
// nor retried: the timeout starts once the endpoint is known.
func TestEndpointPlacesAndHoldsAttempts(t *testing.T) {
	e := newEnv(t)
	d := delivery(2, eventingduckv1.BackoffPolicyLinear, "PT0.05S", "")
	d.Timeout = ptr.To("PT1S") // longer than the attempt on a slow machine, shorter than the hold
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("held", withDelivery(d))})
	// The subscriber's own host does not exist: only the endpoint works.
	unreachable, _ := apis.ParseURL("http://held.saga.localhost.invalid:1/held")
	cfg.Resolve = devbroker.DefaultResolver(map[types.NamespacedName]*apis.URL{{Namespace: ns, Name: "held"}: unreachable}, e.ingressURL)
	sinkAddr := strings.TrimPrefix(e.sink.srv.URL, "http://")
	var acquired, released atomic.Int32
	cfg.Endpoint = func(ctx context.Context, u *url.URL) (devbroker.Endpoint, error) {
		if u.Host != unreachable.Host {
			t.Errorf("endpoint asked for %s", u)
		}
		acquired.Add(1)
		select { // held, like a request to a service at zero
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
			return devbroker.Endpoint{}, ctx.Err()
		}
		return devbroker.Endpoint{Addr: sinkAddr, Release: func() { released.Add(1) }}, nil
	}
	e.start(cfg)
	e.send(newEvent("t"))
	got := e.sink.wait(t, "/held", 1)
	e.waitIdle()
	if n := len(e.sink.got("/held")); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
	if got[0].Header.Get("Kn-Namespace") != ns {
		t.Errorf("delivery headers: %v", got[0].Header)
	}
	if n := e.obs.get("retried"); n != 0 {
		t.Errorf("%d retries, want 0: the hold is not part of the attempt", n)
	}
	if a, r := acquired.Load(), released.Load(); a != 1 || r != 1 {
		t.Errorf("endpoint acquired %d, released %d; want 1 and 1", a, r)
	}
}

// TestEndpointErrorIsA503: an attempt the endpoint cannot place fails like
// a 503 from Knative's activator: retried under the delivery policy, then
// dead-lettered with code 503 and the reason as its data.
func TestEndpointErrorIsA503(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("gone", withDelivery(delivery(1, eventingduckv1.BackoffPolicyLinear, "PT0.01S", "dls")))})
	var calls atomic.Int32
	dls := e.sink.url("/dls")
	cfg.Endpoint = func(_ context.Context, u *url.URL) (devbroker.Endpoint, error) {
		if u.Path == dls.Path {
			t.Errorf("dead letters must not be placed by the endpoint")
		}
		calls.Add(1)
		return devbroker.Endpoint{}, errors.New("no replica became available in time")
	}
	e.start(cfg)
	e.send(newEvent("t"))
	r := e.sink.wait(t, "/dls", 1)[0]
	if got := ext(t, r, "knativeerrorcode"); got != "503" {
		t.Errorf("knativeerrorcode %s, want 503", got)
	}
	if got := ext(t, r, "knativeerrordata"); got != b64("no replica became available in time") {
		t.Errorf("knativeerrordata %q", got)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("endpoint asked %d times, want 2 (one retry)", n)
	}
	if n := e.obs.get("retried/gone/503"); n != 1 {
		t.Errorf("retries counted with 503: %d, want 1", n)
	}
	if len(e.sink.got("/gone")) != 0 {
		t.Error("the subscriber's own URL was used")
	}
}
