package dev

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"

	"github.com/ksaga/ksaga/internal/devscale"
)

func TestServiceHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want types.NamespacedName
		ok   bool
	}{
		{"order.saga.localhost", types.NamespacedName{Namespace: "saga", Name: "order"}, true},
		{"order.saga.localhost:8080", types.NamespacedName{Namespace: "saga", Name: "order"}, true},
		{"Order.Saga.LOCALHOST.:8080", types.NamespacedName{Namespace: "saga", Name: "order"}, true},
		{"localhost:8080", types.NamespacedName{}, false},
		{"127.0.0.1:8080", types.NamespacedName{}, false},
		{"saga.localhost", types.NamespacedName{}, false},
		{"a.b.c.localhost", types.NamespacedName{}, false},
		{".saga.localhost", types.NamespacedName{}, false},
		{"order.saga.svc.cluster.local", types.NamespacedName{}, false},
		{"", types.NamespacedName{}, false},
	} {
		got, ok := serviceHost(tc.host)
		if got != tc.want || ok != tc.ok {
			t.Errorf("serviceHost(%q) = %v, %v; want %v, %v", tc.host, got, ok, tc.want, tc.ok)
		}
	}
}

// backend starts a function stand-in on loopback that answers with what it
// saw; h2c serves HTTP/2 cleartext too. Its Pool has the server as its one
// ready replica.
func backend(t *testing.T, name string, h2c bool) *function {
	t.Helper()
	return serve(t, name, h2c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s %s host=%s", name, r.Proto, r.Method, r.URL.Path, r.Host)
	}))
}

// serve runs h as the one replica of a function.
func serve(t *testing.T, name string, h2c bool, h http.Handler) *function {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if h2c {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f := stand(name, h2c, time.Second)
	f.pool.Add(strings.TrimPrefix(srv.URL, "http://"))
	return f
}

// stand is a function with an empty Pool (no replica ready).
func stand(name string, h2c bool, hold time.Duration) *function {
	return &function{nn: types.NamespacedName{Namespace: "saga", Name: name}, h2c: h2c,
		url: &apis.URL{Scheme: "http", Host: name + ".saga.localhost"}, pool: devscale.NewPool(devscale.PoolConfig{HoldTimeout: hold})}
}

// serveIngress runs the ingress as ksaga dev does (HTTP/1.1 and h2c).
func serveIngress(t *testing.T, in *ingress) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(in)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ReadHeaderTimeout = ReadHeaderTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestIngressRouting(t *testing.T) {
	order, users := backend(t, "order", false), backend(t, "users", true)
	dead := stand("dead", false, time.Second)
	dead.pool.Add("127.0.0.1:" + strconv.Itoa(freePortT(t))) // nothing listens
	cold := stand("cold", false, 50*time.Millisecond)        // no replica starts
	broker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "broker %s %s", r.Method, r.URL.Path)
	})
	in := newIngress(slog.New(slog.DiscardHandler), []*function{order, users, dead, cold}, broker,
		func(w io.Writer) { fmt.Fprint(w, "the index") })
	in.status = func() any { return map[string]string{"status": "json"} }
	srv := serveIngress(t, in)

	do := func(c *http.Client, method, host, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	h1 := srv.Client()
	h2 := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}

	for _, tc := range []struct {
		name         string
		client       *http.Client
		method, host string
		path         string
		code         int
		body         string
	}{
		{"service by Host", h1, "POST", "order.saga.localhost:8080", "/orders", 200, "order HTTP/1.1 POST /orders host=order.saga.localhost:8080"},
		{"service Host without port", h1, "GET", "order.saga.localhost", "/sagas/1", 200, "order HTTP/1.1 GET /sagas/1 host=order.saga.localhost"},
		{"h2c service gets HTTP/2 from an HTTP/1 client", h1, "POST", "users.saga.localhost:8080", "/user.UserService/GetUser", 200, "users HTTP/2.0 POST /user.UserService/GetUser"},
		{"h2c client to h2c service", h2, "POST", "users.saga.localhost", "/x", 200, "users HTTP/2.0 POST /x"},
		{"h2c client to HTTP/1 service", h2, "GET", "order.saga.localhost", "/x", 200, "order HTTP/1.1 GET /x"},
		{"unknown service", h1, "GET", "nope.saga.localhost:8080", "/", 404, "no Knative Service saga/nope"},
		{"service down", h1, "GET", "dead.saga.localhost:8080", "/", 503, "service saga/dead is not reachable: dial tcp"},
		{"no replica in time", h1, "GET", "cold.saga.localhost:8080", "/", 503, "service saga/cold is not reachable: no replica became available in time"},
		{"services as JSON", h1, "GET", "localhost:8080", "/.ksaga/services", 200, `"status": "json"`},
		{"index", h1, "GET", "localhost:8080", "/", 200, "the index"},
		{"index by IP", h1, "GET", "127.0.0.1:8080", "/", 200, "the index"},
		{"not ready", h1, "GET", "localhost:8080", "/readyz", 503, "starting"},
		{"broker ingress", h1, "POST", "localhost:8080", "/saga/default", 202, "broker POST /saga/default"},
		{"broker ingress over h2c", h2, "POST", "localhost", "/saga/default", 202, "broker POST /saga/default"},
		{"broker answers other methods", h1, "PUT", "localhost:8080", "/", 202, "broker PUT /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(tc.client, tc.method, tc.host, tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("got %d %q, want %d containing %q", code, body, tc.code, tc.body)
			}
		})
	}
	in.ready.Store(true)
	if code, body := do(h1, "GET", "localhost", "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("readyz after ready: %d %q", code, body)
	}
	// Shutting down: no more events, the functions stay reachable.
	in.draining.Store(true)
	if code, _ := do(h1, "POST", "localhost", "/saga/default"); code != 503 {
		t.Errorf("broker ingress while draining: %d", code)
	}
	if code, _ := do(h1, "GET", "localhost", "/readyz"); code != 503 {
		t.Errorf("readyz while draining: %d", code)
	}
	if code, _ := do(h1, "GET", "order.saga.localhost", "/x"); code != 200 {
		t.Errorf("service while draining: %d", code)
	}
}

func h2cOnly() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

func TestDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	other := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	d := &dialer{}
	// localhost and every *.localhost go to 127.0.0.1 on their port: a
	// service's dev URL reaches the ingress, which routes by Host.
	for _, host := range []string{"localhost", "order.saga.localhost", "unknown.saga.localhost", "X.LOCALHOST."} {
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(other)))
		if err != nil {
			t.Errorf("dial %s: %v", host, err)
			continue
		}
		if got := c.RemoteAddr().String(); got != ln.Addr().String() {
			t.Errorf("dial %s reached %s, want %s", host, got, ln.Addr())
		}
		_ = c.Close()
	}
}

func freePortT(t *testing.T) int {
	t.Helper()
	ps, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ps[0]
}
