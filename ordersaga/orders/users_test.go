package orders

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/proto/user/userconnect"
	"github.com/ksaga/ksaga/saga"
)

// flakyUsers answers UNAVAILABLE to its first failures calls, then the
// user, or code for every call when code is set (0 is OK).
type flakyUsers struct {
	failures int32
	code     connect.Code
	delay    time.Duration
	calls    atomic.Int32
}

func (f *flakyUsers) GetUser(ctx context.Context, req *connect.Request[user.UserRequest]) (*connect.Response[user.UserResponse], error) {
	n := f.calls.Add(1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
	}
	if n <= f.failures {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("scaling from zero"))
	}
	if f.code != 0 {
		return nil, connect.NewError(f.code, errors.New(f.code.String()))
	}
	return connect.NewResponse(&user.UserResponse{UserId: req.Msg.GetUserId(), Username: "u"}), nil
}

// startUsers serves f as a connect handler that accepts gRPC over h2c (and
// HTTP/1.1) on a free port and returns its http:// URL.
func startUsers(t *testing.T, f *flakyUsers) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(userconnect.NewUserServiceHandler(f))
	return startH2C(t, mux)
}

// startH2C serves h over HTTP/1.1 and h2c on a free port and returns its
// http:// URL.
func startH2C(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
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
		"not found":          {&flakyUsers{code: connect.CodeNotFound}, time.Second, false, false, 1},
		"invalid argument":   {&flakyUsers{code: connect.CodeInvalidArgument}, time.Second, false, false, 1},
		"internal: no retry": {&flakyUsers{code: connect.CodeInternal}, time.Second, false, true, 1},
		"always unavailable": {&flakyUsers{failures: 100}, 2 * time.Second, false, true, 4},
		"deadline":           {&flakyUsers{delay: time.Minute}, time.Second, false, true, 1}, // room for the dial on a slow machine
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

// rawGRPCUsers is a gRPC UserService written with no gRPC library, as
// the wire protocol says: it checks that the request is a gRPC call (HTTP/2,
// POST to /user.UserService/GetUser, content-type application/grpc, te:
// trailers, one length-prefixed UserRequest) and answers the n-th call with
// statuses[n-1] (the last one from then on): "0" with a UserResponse and
// grpc-status in the trailers, any other as a Trailers-Only answer.
func rawGRPCUsers(t *testing.T, calls *atomic.Int32, statuses ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1))
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request: %v", err)
			return
		}
		ct := r.Header.Get("Content-Type")
		if r.ProtoMajor != 2 || r.Method != http.MethodPost || r.URL.Path != "/user.UserService/GetUser" ||
			(ct != "application/grpc" && ct != "application/grpc+proto") || r.Header.Get("Te") != "trailers" {
			t.Errorf("not a gRPC call: %s %s %s content-type %q te %q", r.Proto, r.Method, r.URL.Path, ct, r.Header.Get("Te"))
		}
		req := new(user.UserRequest)
		if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
			t.Errorf("not one uncompressed length-prefixed message: %x", body)
		} else if err := proto.Unmarshal(body[5:], req); err != nil {
			t.Errorf("request message: %v", err)
		}
		w.Header().Set("Content-Type", "application/grpc")
		status := statuses[min(n, len(statuses))-1]
		if status != "0" { // Trailers-Only
			w.Header().Set("Grpc-Status", status)
			w.Header().Set("Grpc-Message", "raw status "+status)
			w.WriteHeader(http.StatusOK)
			return
		}
		msg, err := proto.Marshal(&user.UserResponse{UserId: req.GetUserId(), Username: "u"})
		if err != nil {
			t.Error(err)
			return
		}
		var frame bytes.Buffer
		frame.WriteByte(0)
		_ = binary.Write(&frame, binary.BigEndian, uint32(len(msg)))
		frame.Write(msg)
		_, _ = w.Write(frame.Bytes())
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
}

// TestUsersClientSpeaksGRPC shows that the client works with any gRPC
// server, not only connect-go's: it calls one written from the wire
// protocol, which answers UNAVAILABLE twice, then OK; or NOT_FOUND.
func TestUsersClientSpeaksGRPC(t *testing.T) {
	tests := map[string]struct {
		statuses []string
		exists   bool
		calls    int32
	}{
		"retries unavailable": {[]string{"14", "14", "0"}, true, 3},
		"not found":           {[]string{"5"}, false, 1},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int32
			u := newUsers(t, startH2C(t, rawGRPCUsers(t, &calls, tt.statuses...)), 2*time.Second)
			ok, err := u.Exists(t.Context(), 1)
			if err != nil || ok != tt.exists {
				t.Fatalf("Exists: %v %v", ok, err)
			}
			if n := calls.Load(); n != tt.calls {
				t.Fatalf("server saw %d calls, want %d", n, tt.calls)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for i, w := range want {
		if got := usersRetry.backoff(i + 1); got != w {
			t.Errorf("backoff after attempt %d = %v, want %v", i+1, got, w)
		}
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
	c, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil || c.Users.Addr != "users:80" || c.Users.Authority != "users" || c.UsersTimeout != 2*time.Second ||
		c.UsersCacheTTL != 30*time.Second || c.CatalogueCacheTTL != 5*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, env := range []map[string]string{
		{"USERS_URL": "ftp://x"}, {"USERS_TIMEOUT": "soon"}, {"USERS_TIMEOUT": "0s"}, {"USERS_CACHE_TTL": "-1s"}, {"CATALOGUE_CACHE_TTL": "often"},
	} {
		if _, err := ConfigFromEnv(func(k string) string { return env[k] }); err == nil {
			t.Errorf("bad config %v accepted", env)
		}
	}
	c, err = ConfigFromEnv(func(k string) string { return map[string]string{"CATALOGUE_CACHE_TTL": "0"}[k] })
	if err != nil || c.CatalogueCacheTTL != 0 {
		t.Errorf("CATALOGUE_CACHE_TTL=0: %+v %v", c, err)
	}
}
