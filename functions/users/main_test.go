package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/proto"

	"github.com/ksaga/ksaga/functions/users/userserver"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/proto/user/userconnect"
	"github.com/ksaga/ksaga/sagatest"
)

type env struct {
	redis  *testredis.Server
	fn     *sagatest.Func
	users  userconnect.UserServiceClient
	health *grpchealth.Client
}

// h2cClient is an HTTP client that speaks only HTTP/2 without TLS (prior
// knowledge), as gRPC clients do with an http:// target.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// setup starts redis-server with the fixture, the users function, and
// connect clients to it that speak the gRPC protocol over h2c (prior
// knowledge, no TLS).
func setup(t *testing.T) env {
	t.Helper()
	srv := testredis.Start(t)
	if err := ordersaga.LoadFixture(context.Background(), srv.Client(t), true); err != nil {
		t.Fatal(err)
	}
	fn := sagatest.Start(t, userserver.Setup, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "users", "LOG_LEVEL": "debug"})
	hc := h2cClient(t)
	return env{
		redis:  srv,
		fn:     fn,
		users:  userconnect.NewUserServiceClient(hc, fn.URL, connect.WithGRPC()),
		health: grpchealth.NewClient(hc, fn.URL, connect.WithGRPC()),
	}
}

func getUser(t *testing.T, c userconnect.UserServiceClient, id int32) (*user.UserResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.GetUser(ctx, connect.NewRequest(&user.UserRequest{UserId: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func TestGetUser(t *testing.T) {
	e := setup(t)
	for _, u := range ordersaga.Fixture.Users {
		got, err := getUser(t, e.users, u.ID)
		if err != nil {
			t.Fatalf("GetUser(%d): %v", u.ID, err)
		}
		if got.GetUserId() != u.ID || got.GetUsername() != u.Username || got.GetEmail() != u.Email {
			t.Fatalf("GetUser(%d) = %v, want %+v", u.ID, got, u)
		}
	}
	tests := map[string]struct {
		id   int32
		want connect.Code
	}{
		"unknown":  {999, connect.CodeNotFound},
		"zero":     {0, connect.CodeInvalidArgument},
		"negative": {-1, connect.CodeInvalidArgument},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := getUser(t, e.users, tt.id)
			if connect.CodeOf(err) != tt.want {
				t.Fatalf("GetUser(%d): %v, want %s", tt.id, err, tt.want)
			}
		})
	}
	e.fn.Out.Lines(t) // every log line is JSON
}

// TestRawGRPC calls GetUser as any gRPC client does, with no gRPC library:
// an HTTP/2 cleartext POST of a length-prefixed protobuf message, with
// content-type application/grpc and te: trailers, and the status in the
// grpc-status trailer (or in the headers of a Trailers-Only answer).
func TestRawGRPC(t *testing.T) {
	e := setup(t)
	hc := h2cClient(t)
	tests := map[string]struct {
		id         int32
		wantStatus string
		want       *user.UserResponse
	}{
		"found":   {1, "0", &user.UserResponse{UserId: 1, Username: ordersaga.Fixture.Users[0].Username, Email: ordersaga.Fixture.Users[0].Email}},
		"unknown": {999, "5", nil}, // NOT_FOUND
		"zero":    {0, "3", nil},   // INVALID_ARGUMENT
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			msg, err := proto.Marshal(&user.UserRequest{UserId: tt.id})
			if err != nil {
				t.Fatal(err)
			}
			frame := make([]byte, 5, 5+len(msg)) // flag 0 (uncompressed), big-endian length
			binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
			frame = append(frame, msg...)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.fn.URL+"/user.UserService/GetUser", bytes.NewReader(frame))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			req.Header.Set("Grpc-Timeout", "5S")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, err := io.ReadAll(resp.Body) // trailers arrive after the body
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/grpc" {
				t.Fatalf("response %s %d %q", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			status := resp.Trailer.Get("Grpc-Status")
			if status == "" { // Trailers-Only
				status = resp.Header.Get("Grpc-Status")
			}
			if status != tt.wantStatus {
				t.Fatalf("grpc-status %q (message %q), want %q", status, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"), tt.wantStatus)
			}
			if tt.want == nil {
				if len(body) != 0 {
					t.Fatalf("a message with an error status: %x", body)
				}
				return
			}
			if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
				t.Fatalf("not one uncompressed length-prefixed message: %x", body)
			}
			got := new(user.UserResponse)
			if err := proto.Unmarshal(body[5:], got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("GetUser(%d) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	e := setup(t)
	e.redis.Stop()
	_, err := getUser(t, e.users, 1)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("GetUser with Redis down: %v, want Unavailable", err)
	}
	e.redis.Restart() // an empty server: no persistence
	if err := ordersaga.LoadFixture(context.Background(), e.redis.Client(t), true); err != nil {
		t.Fatal(err)
	}
	sagatest.Eventually(t, 5*time.Second, func() error {
		_, err := getUser(t, e.users, 1)
		return err
	})
	lines := e.fn.Out.Lines(t)
	found := false
	for _, l := range lines {
		if l["msg"] == "grpc call" && l["code"] == "Unavailable" && l["level"] == "ERROR" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no error log line for the Unavailable call:\n%s", e.fn.Out.String())
	}
}

func TestHealth(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, svc := range []string{"", "user.UserService"} {
		resp, err := e.health.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || resp.Status != grpchealth.StatusServing {
			t.Fatalf("health %q: %v %v", svc, resp, err)
		}
	}
	// knfunc's HTTP/1.1 health routes still work next to gRPC.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.fn.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func TestHealthNotServingWhenDraining(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream := e.health.Watch(ctx, &grpchealth.CheckRequest{})
	if r := <-stream; r.Err != nil || r.Response == nil || r.Response.Status != grpchealth.StatusServing {
		t.Fatalf("first status %+v", r)
	}
	e.fn.Cancel() // SIGTERM
	r, ok := <-stream
	if ok && r.Err == nil && r.Response.Status != grpchealth.StatusNotServing {
		t.Fatalf("status after SIGTERM %v, want NOT_SERVING", r.Response)
	}
}
