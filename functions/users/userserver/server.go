// Package userserver is the users function: the seed article's gRPC
// UserService.GetUser (proto/user) on Redis, with the standard gRPC health
// service, served over h2c by knfunc. It is a package of its own, not part
// of the users command, so that other functions' tests (the order function's)
// can run the real users function in-process.
package userserver

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/proto/user"
)

// Run is the users function's whole life (see knfunc.Run): it serves
// UserService and grpc.health.v1.Health over h2c, next to knfunc's HTTP/1.1
// health routes, until ctx is done.
func Run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return knfunc.Run(ctx, getenv, stdout, Setup)
}

// Setup builds the users function from its environment.
func Setup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	srv, stop := NewServer(ctx, env.Redis, env.Logger)
	return &knfunc.Function{Handler: srv, HTTP2: true, Close: stop}, nil
}

// redisTimeout bounds GetUser's Redis call. go-redis alone retries a dead
// server for seconds (dial retries times command retries), longer than the
// order function's whole deadline (USERS_TIMEOUT, 2s): answering UNAVAILABLE
// early leaves the caller time to retry, and a lookup of one hash never
// takes this long when Redis is up.
const redisTimeout = 500 * time.Millisecond

// userServer implements user.UserServiceServer on Redis.
type userServer struct {
	user.UnimplementedUserServiceServer
	rdb redis.UniversalClient
}

// GetUser answers the user with the request's id. Errors, as gRPC codes:
// INVALID_ARGUMENT for an id ≤ 0, NOT_FOUND for an unknown user,
// UNAVAILABLE when Redis cannot be reached within redisTimeout (the order
// function's client retries it), and the context's code when the caller
// gave up.
func (s *userServer) GetUser(ctx context.Context, req *user.UserRequest) (*user.UserResponse, error) {
	id := req.GetUserId()
	if id <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "user_id must be a positive integer, got %d", id)
	}
	rctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	m, err := s.rdb.HGetAll(rctx, ordersaga.UserKey(id)).Result()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, status.FromContextError(ctxErr).Err()
		}
		return nil, status.Errorf(codes.Unavailable, "user store: %v", err)
	}
	if len(m) == 0 { // HGETALL answers an empty map for a missing key
		return nil, status.Errorf(codes.NotFound, "user %d not found", id)
	}
	return &user.UserResponse{UserId: id, Username: m["username"], Email: m["email"]}, nil
}

// NewServer returns the gRPC server of the function, serving UserService and
// the standard gRPC health service (grpc.health.v1.Health, for a Knative
// grpc probe). The health service reports SERVING until ctx is done (SIGTERM:
// the function drains), then NOT_SERVING. The returned func stops the server;
// call it once the HTTP server has drained.
func NewServer(ctx context.Context, rdb redis.UniversalClient, logger *slog.Logger) (*grpc.Server, func() error) {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(logCalls(logger)))
	user.RegisterUserServiceServer(srv, &userServer{rdb: rdb})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(user.UserService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	stopHealth := context.AfterFunc(ctx, hs.Shutdown)
	return srv, func() error {
		stopHealth()
		hs.Shutdown()
		srv.Stop()
		return nil
	}
}

// logCalls logs every call as JSON through logger: failures that are the
// server's problem (UNAVAILABLE, INTERNAL, ...) at error level, answers about
// the request (NOT_FOUND, INVALID_ARGUMENT, a caller that gave up) at debug.
func logCalls(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		level := slog.LevelDebug
		if isServerFault(code) {
			level = slog.LevelError
		}
		attrs := []any{"method", info.FullMethod, "code", code.String(), "duration_ms", time.Since(start).Milliseconds()}
		if err != nil {
			attrs = append(attrs, "error", status.Convert(err).Message())
		}
		logger.Log(ctx, level, "grpc call", attrs...)
		return resp, err
	}
}

// isServerFault reports whether a code means the server failed, rather than
// the request or the caller.
func isServerFault(c codes.Code) bool {
	switch c {
	case codes.OK, codes.NotFound, codes.InvalidArgument, codes.Canceled, codes.DeadlineExceeded, codes.Unimplemented:
		return false
	}
	return true
}
