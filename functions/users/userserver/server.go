// Package userserver is the users function: the gRPC
// UserService.GetUser (proto/user) on Redis, with the standard gRPC health
// service, served over h2c by knfunc. Both are connect-go handlers: they
// speak the gRPC protocol (any gRPC client works), and gRPC-Web and Connect
// too, on net/http, without linking grpc-go. It is a package of its own, not
// part of the users command, so that other functions' tests (the order
// function's) can run the real users function in-process.
package userserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/proto/user/userconnect"
)

// Setup builds the users function from its environment (see knfunc.Run):
// it serves UserService and grpc.health.v1.Health over h2c, next to
// knfunc's HTTP/1.1 health routes.
func Setup(ctx context.Context, env *knfunc.Env) (*knfunc.Function, error) {
	return &knfunc.Function{Handler: NewHandler(ctx, env.Redis, env.Logger), HTTP2: true}, nil
}

// redisTimeout bounds GetUser's Redis call. go-redis alone retries a dead
// server for seconds (dial retries times command retries), longer than the
// order function's whole deadline (USERS_TIMEOUT, 2s): answering UNAVAILABLE
// early leaves the caller time to retry, and a lookup of one hash never
// takes this long when Redis is up.
const redisTimeout = 500 * time.Millisecond

// maxRequestBytes caps a request message, as grpc-go's server does by
// default (4 MiB); a UserRequest is a few bytes.
const maxRequestBytes = 4 << 20

// userServer implements userconnect.UserServiceHandler on Redis.
type userServer struct {
	rdb redis.UniversalClient
}

var _ userconnect.UserServiceHandler = (*userServer)(nil)

// GetUser answers the user with the request's id. Errors, as gRPC codes:
// INVALID_ARGUMENT for an id ≤ 0, NOT_FOUND for an unknown user,
// UNAVAILABLE when Redis cannot be reached within redisTimeout (the order
// function's client retries it), and the context's code (CANCELED,
// DEADLINE_EXCEEDED) when the caller gave up.
func (s *userServer) GetUser(ctx context.Context, req *connect.Request[user.UserRequest]) (*connect.Response[user.UserResponse], error) {
	id := req.Msg.GetUserId()
	if id <= 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("user_id must be a positive integer, got %d", id))
	}
	rctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	m, err := s.rdb.HGetAll(rctx, ordersaga.UserKey(id)).Result()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, contextError(ctxErr)
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("user store: %w", err))
	}
	if len(m) == 0 { // HGETALL answers an empty map for a missing key
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("user %d not found", id))
	}
	return connect.NewResponse(&user.UserResponse{UserId: id, Username: m["username"], Email: m["email"]}), nil
}

// contextError is the error of a call whose caller gave up: DEADLINE_EXCEEDED
// or CANCELED, as gRPC servers answer.
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeCanceled, err)
}

// NewHandler returns the function's RPC handler: UserService and the
// standard gRPC health service (grpc.health.v1.Health: Check, for a Knative
// grpc probe, and Watch), each at its gRPC path (/user.UserService/GetUser,
// /grpc.health.v1.Health/Check, ...) and 404 elsewhere. The health service
// reports SERVING for "" and "user.UserService" until ctx is done (SIGTERM:
// the function drains), then NOT_SERVING, which it tells watchers too. Every
// unary call is logged (logCalls).
func NewHandler(ctx context.Context, rdb redis.UniversalClient, logger *slog.Logger) http.Handler {
	opts := []connect.HandlerOption{
		connect.WithInterceptors(logCalls(logger)),
		connect.WithReadMaxBytes(maxRequestBytes),
	}
	health := grpchealth.NewStaticChecker(userconnect.UserServiceName)
	context.AfterFunc(ctx, func() {
		health.SetStatus("", grpchealth.StatusNotServing)
		health.SetStatus(userconnect.UserServiceName, grpchealth.StatusNotServing)
	})
	mux := http.NewServeMux()
	mux.Handle(userconnect.NewUserServiceHandler(&userServer{rdb: rdb}, opts...))
	mux.Handle(grpchealth.NewHandler(health, opts...))
	return mux
}

// logCalls logs every unary call as JSON through logger: failures that are
// the server's problem (UNAVAILABLE, INTERNAL, ...) at error level, answers
// about the request (NOT_FOUND, INVALID_ARGUMENT, a caller that gave up) at
// debug. Codes are logged as gRPC names ("NotFound").
func logCalls(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			var code connect.Code // 0: OK
			if err != nil {
				code = connect.CodeOf(err)
			}
			level := slog.LevelDebug
			if isServerFault(code) {
				level = slog.LevelError
			}
			attrs := []any{"method", req.Spec().Procedure, "code", codeName(code), "duration_ms", time.Since(start).Milliseconds()}
			if err != nil {
				msg := err.Error()
				if ce := new(connect.Error); errors.As(err, &ce) {
					msg = ce.Message()
				}
				attrs = append(attrs, "error", msg)
			}
			logger.Log(ctx, level, "grpc call", attrs...)
			return resp, err
		}
	}
}

// isServerFault reports whether a code means the server failed, rather than
// the request or the caller.
func isServerFault(c connect.Code) bool {
	switch c {
	case 0, connect.CodeNotFound, connect.CodeInvalidArgument, connect.CodeCanceled, connect.CodeDeadlineExceeded, connect.CodeUnimplemented:
		return false
	}
	return true
}

// codeNames are the gRPC codes as grpc-go's codes.Code.String spells them,
// which the log lines have always used.
var codeNames = [...]string{
	"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists", "PermissionDenied",
	"ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable",
	"DataLoss", "Unauthenticated",
}

// codeName is c's gRPC name (0 is OK).
func codeName(c connect.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", uint32(c))
}
