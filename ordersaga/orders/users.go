package orders

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/proto/user/userconnect"
	"github.com/ksaga/ksaga/saga"
)

// usersRetry is the retry policy of GetUser, the one grpc-go's service
// config gave: UNAVAILABLE (the users function scaling from zero, a pod
// going away, Redis down behind it) is retried with exponential backoff, up
// to 4 attempts, waiting a random time up to 50, 100, 200 ms between them
// (doubling, capped at 1s). The per-call deadline (USERS_TIMEOUT) bounds the
// whole. Other codes are not retried.
var usersRetry = retryPolicy{
	MaxAttempts:    4,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     time.Second,
	Multiplier:     2,
}

// retryPolicy is a gRPC retry policy (gRFC A6) for UNAVAILABLE.
type retryPolicy struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// backoff is the most to wait after the attempt-th failure (1-based): the
// initial backoff times the multiplier to the attempt-1, capped at
// MaxBackoff. The wait itself is random in [0, backoff), as in gRPC.
func (p retryPolicy) backoff(attempt int) time.Duration {
	b := float64(p.InitialBackoff)
	for range attempt - 1 {
		b *= p.Multiplier
		if b >= float64(p.MaxBackoff) {
			return p.MaxBackoff
		}
	}
	return time.Duration(b)
}

// usersClient asks the users function whether a user exists, with the gRPC
// protocol (connect-go) over HTTP/2: cleartext (h2c, as Knative serves a
// port named h2c) for http://, TLS for https://.
type usersClient struct {
	transport *http.Transport
	client    userconnect.UserServiceClient
	timeout   time.Duration
	retry     retryPolicy
}

// dialUsers returns a client of the users function at t. It does not
// connect yet: it connects on the first call (and the users function may be
// scaled to zero until then), then reuses the connection. It dials t's host
// with knfunc.Dial (*.localhost is 127.0.0.1) and sends t.Authority as the
// :authority, so that Knative's ingress routes the call.
func dialUsers(t usersTarget, timeout time.Duration) (*usersClient, error) {
	if t.Authority == "" {
		return nil, fmt.Errorf("users client for %q: no host", t.Addr)
	}
	scheme := "http"
	if t.TLS {
		scheme = "https"
	}
	tr := &http.Transport{
		DialContext:         knfunc.Dial,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		// Find a dead connection (a pod gone without a FIN) by pinging it
		// when idle, rather than by a call's deadline.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true) // http://: HTTP/2 with prior knowledge
	tr.Protocols.SetHTTP2(true)            // https://: HTTP/2 over TLS
	client := userconnect.NewUserServiceClient(&http.Client{Transport: tr}, scheme+"://"+t.Authority, connect.WithGRPC())
	return &usersClient{transport: tr, client: client, timeout: timeout, retry: usersRetry}, nil
}

// Exists reports whether the user exists: NOT_FOUND (and INVALID_ARGUMENT,
// which is as permanent) is false; any other failure, after the retries
// (DEADLINE_EXCEEDED included), is a saga.Transient error.
func (u *usersClient) Exists(ctx context.Context, id int32) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	err := u.getUser(ctx, id)
	if err == nil {
		return true, nil
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeInvalidArgument:
		return false, nil
	default:
		return false, saga.Transient(err, "users service: GetUser(%d)", id)
	}
}

// getUser calls GetUser, retrying UNAVAILABLE by u.retry until ctx is done.
func (u *usersClient) getUser(ctx context.Context, id int32) error {
	for attempt := 1; ; attempt++ {
		_, err := u.client.GetUser(ctx, connect.NewRequest(&user.UserRequest{UserId: id}))
		if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || attempt >= u.retry.MaxAttempts {
			return err
		}
		var d time.Duration
		if b := u.retry.backoff(attempt); b > 0 {
			d = rand.N(b)
		}
		wait := time.NewTimer(d)
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			code := connect.CodeDeadlineExceeded
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				code = connect.CodeCanceled
			}
			return connect.NewError(code, fmt.Errorf("%w before retry %d of %v", ctx.Err(), attempt+1, err))
		}
	}
}

// Close closes the idle connections.
func (u *usersClient) Close() error {
	u.transport.CloseIdleConnections()
	return nil
}
