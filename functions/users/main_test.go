package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/proto/user"
)

type env struct {
	redis *testredis.Server
	fn    *fntest.Func
	conn  *grpc.ClientConn
}

// setup starts redis-server with the fixture, the users function, and a
// real gRPC client to it over h2c (prior knowledge, no TLS).
func setup(t *testing.T) env {
	t.Helper()
	srv := testredis.Start(t)
	if err := ordersaga.LoadFixture(context.Background(), srv.Client(t), true); err != nil {
		t.Fatal(err)
	}
	fn := fntest.Start(t, run, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "users", "LOG_LEVEL": "debug"})
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(fn.URL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return env{srv, fn, conn}
}

func getUser(t *testing.T, conn *grpc.ClientConn, id int32) (*user.UserResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return user.NewUserServiceClient(conn).GetUser(ctx, &user.UserRequest{UserId: id})
}

func TestGetUser(t *testing.T) {
	e := setup(t)
	for _, u := range ordersaga.Fixture.Users {
		got, err := getUser(t, e.conn, u.ID)
		if err != nil {
			t.Fatalf("GetUser(%d): %v", u.ID, err)
		}
		if got.GetUserId() != u.ID || got.GetUsername() != u.Username || got.GetEmail() != u.Email {
			t.Fatalf("GetUser(%d) = %v, want %+v", u.ID, got, u)
		}
	}
	tests := map[string]struct {
		id   int32
		want codes.Code
	}{
		"unknown":  {999, codes.NotFound},
		"zero":     {0, codes.InvalidArgument},
		"negative": {-1, codes.InvalidArgument},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := getUser(t, e.conn, tt.id)
			if status.Code(err) != tt.want {
				t.Fatalf("GetUser(%d): %v, want %s", tt.id, err, tt.want)
			}
		})
	}
	e.fn.Out.Lines(t) // every log line is JSON
}

func TestRedisDownIsUnavailable(t *testing.T) {
	e := setup(t)
	e.redis.Stop()
	_, err := getUser(t, e.conn, 1)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("GetUser with Redis down: %v, want Unavailable", err)
	}
	e.redis.Restart() // an empty server: no persistence
	if err := ordersaga.LoadFixture(context.Background(), e.redis.Client(t), true); err != nil {
		t.Fatal(err)
	}
	fntest.Eventually(t, 5*time.Second, func() error {
		_, err := getUser(t, e.conn, 1)
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
	hc := healthpb.NewHealthClient(e.conn)
	for _, svc := range []string{"", "user.UserService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
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
	hc := healthpb.NewHealthClient(e.conn)
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v %v", r, err)
	}
	e.fn.Cancel() // SIGTERM
	r, err := stream.Recv()
	if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status after SIGTERM %v, want NOT_SERVING", r)
	}
}
