package main

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/saga"
)

// flakyUsers answers UNAVAILABLE to its first failures calls, then the
// user, or code for every call when code is set.
type flakyUsers struct {
	user.UnimplementedUserServiceServer
	failures int32
	code     codes.Code
	delay    time.Duration
	calls    atomic.Int32
}

func (f *flakyUsers) GetUser(ctx context.Context, req *user.UserRequest) (*user.UserResponse, error) {
	n := f.calls.Add(1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if n <= f.failures {
		return nil, status.Error(codes.Unavailable, "scaling from zero")
	}
	if f.code != codes.OK {
		return nil, status.Error(f.code, f.code.String())
	}
	return &user.UserResponse{UserId: req.GetUserId(), Username: "u"}, nil
}

// startUsers serves f over plain gRPC (h2c) on a free port and returns its
// http:// URL.
func startUsers(t *testing.T, f *flakyUsers) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	user.RegisterUserServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String()
}

// downURL is the URL of a port nothing listens on.
func downURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func newUsers(t *testing.T, rawURL string, timeout time.Duration) *usersClient {
	t.Helper()
	target, err := parseUsersURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u, err := dialUsers(target, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return u
}

func TestUsersClientRetriesUnavailable(t *testing.T) {
	f := &flakyUsers{failures: 2}
	u := newUsers(t, startUsers(t, f), 2*time.Second)
	ok, err := u.Exists(t.Context(), 1)
	if err != nil || !ok {
		t.Fatalf("Exists: %v %v", ok, err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("server saw %d calls, want 3", n)
	}
}

func TestUsersClientAnswers(t *testing.T) {
	tests := map[string]struct {
		server    *flakyUsers
		timeout   time.Duration
		exists    bool
		transient bool
		calls     int32
	}{
		"not found":          {&flakyUsers{code: codes.NotFound}, time.Second, false, false, 1},
		"invalid argument":   {&flakyUsers{code: codes.InvalidArgument}, time.Second, false, false, 1},
		"internal: no retry": {&flakyUsers{code: codes.Internal}, time.Second, false, true, 1},
		"always unavailable": {&flakyUsers{failures: 100}, 2 * time.Second, false, true, 4},
		"deadline":           {&flakyUsers{delay: time.Minute}, 100 * time.Millisecond, false, true, 1},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			u := newUsers(t, startUsers(t, tt.server), tt.timeout)
			ok, err := u.Exists(t.Context(), 1)
			if ok != tt.exists || (saga.Code(err) == saga.ETransient) != tt.transient || (err != nil) != tt.transient {
				t.Fatalf("Exists: %v %v", ok, err)
			}
			if n := tt.server.calls.Load(); n != tt.calls {
				t.Fatalf("server saw %d calls, want %d", n, tt.calls)
			}
		})
	}
}

func TestPostOrderRetriesUsers(t *testing.T) {
	f := &flakyUsers{failures: 2}
	e := setup(t, map[string]string{"USERS_URL": startUsers(t, f)})
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("users saw %d calls, want 3", n)
	}
}

func TestUsersDown(t *testing.T) {
	e := setup(t, map[string]string{"USERS_URL": downURL(t), "USERS_TIMEOUT": "1s"})
	start := time.Now()
	r := e.request(t, http.MethodPost, "/orders", `{"user_id": 1, "items": [{"sku": "book", "qty": 1}]}`, nil)
	var body apiError
	r.decode(t, &body)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || body.Error == "" {
		t.Fatalf("POST with users down: %d %s", r.Status, r.Body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v: the deadline is USERS_TIMEOUT", d)
	}
	// The Create step answers 503 too: the broker retries it later.
	c := e.post(t, sagaEvent("c1", ordersaga.Create, "s1", 0, bookOrder()))
	if c.Status != http.StatusServiceUnavailable {
		t.Fatalf("Create with users down: %d %s", c.Status, c.Body)
	}
	if len(e.sink.events()) != 0 || e.orderKeys(t) != 0 {
		t.Fatal("an order was started with users down")
	}
}

func TestParseUsersURL(t *testing.T) {
	tests := map[string]struct {
		want usersTarget
		bad  bool
	}{
		"http://users.saga.svc.cluster.local": {want: usersTarget{Addr: "users.saga.svc.cluster.local:80", Authority: "users.saga.svc.cluster.local"}},
		"http://users.saga.localhost:8080":    {want: usersTarget{Addr: "users.saga.localhost:8080", Authority: "users.saga.localhost:8080"}},
		"http://users/":                       {want: usersTarget{Addr: "users:80", Authority: "users"}},
		"https://users.example.com":           {want: usersTarget{Addr: "users.example.com:443", Authority: "users.example.com", TLS: true}},
		"http://[::1]:9000":                   {want: usersTarget{Addr: "[::1]:9000", Authority: "[::1]:9000"}},
		"users:80":                            {bad: true},
		"grpc://users":                        {bad: true},
		"http://":                             {bad: true},
		"http://users/api":                    {bad: true},
		"http://users?x=1":                    {bad: true},
	}
	for raw, tt := range tests {
		got, err := parseUsersURL(raw)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("parseUsersURL(%q) = %+v, %v; want %+v (bad %v)", raw, got, err, tt.want, tt.bad)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	c, err := configFromEnv(func(string) string { return "" })
	if err != nil || c.Users.Addr != "users:80" || c.UsersTimeout != 2*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	env := map[string]string{"USERS_URL": "ftp://x", "USERS_TIMEOUT": "soon"}
	if _, err := configFromEnv(func(k string) string { return env[k] }); err == nil {
		t.Fatal("bad config accepted")
	}
}
