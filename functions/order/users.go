package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/saga"
)

// usersServiceConfig retries UNAVAILABLE (the users function scaling from
// zero, a pod going away, Redis down behind it) with exponential backoff:
// up to 4 attempts, waiting a random time up to 50, 100, 200 ms between
// them. The per-call deadline (USERS_TIMEOUT) bounds the whole.
const usersServiceConfig = `{
  "methodConfig": [{
    "name": [{"service": "user.UserService"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// usersClient asks the users function whether a user exists.
type usersClient struct {
	conn    *grpc.ClientConn
	client  user.UserServiceClient
	timeout time.Duration
}

// dialUsers returns a client of the users function at t. It does not
// connect yet: gRPC connects on the first call (and the users function may
// be scaled to zero until then).
func dialUsers(t usersTarget, timeout time.Duration) (*usersClient, error) {
	creds := insecure.NewCredentials() // h2c, as Knative serves a port named h2c
	if t.TLS {
		creds = credentials.NewTLS(nil)
	}
	conn, err := grpc.NewClient("passthrough:///"+t.Addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithAuthority(t.Authority),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return knfunc.Dial(ctx, "tcp", addr)
		}),
		grpc.WithDefaultServiceConfig(usersServiceConfig),
	)
	if err != nil {
		return nil, fmt.Errorf("users client for %s: %w", t.Addr, err)
	}
	return &usersClient{conn: conn, client: user.NewUserServiceClient(conn), timeout: timeout}, nil
}

// Exists reports whether the user exists: NOT_FOUND (and INVALID_ARGUMENT,
// which is as permanent) is false; any other failure, after the retries, is
// a saga.Transient error.
func (u *usersClient) Exists(ctx context.Context, id int32) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	_, err := u.client.GetUser(ctx, &user.UserRequest{UserId: id})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound, codes.InvalidArgument:
		return false, nil
	default:
		return false, saga.Transient(err, "users service: GetUser(%d)", id)
	}
}

// Close closes the connection.
func (u *usersClient) Close() error { return u.conn.Close() }
