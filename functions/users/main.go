// Command users is the user directory of the order saga: the seed article's
// gRPC UserService.GetUser (proto/user), served over h2c so that it runs as
// a Knative Service with a port named h2c. Users are Redis hashes under
// ordersaga.UserKey (fields username and email), loaded by the demo fixture.
// The function itself is package userserver, so that other functions' tests
// can run it in-process.
package main

import (
	"context"
	"io"

	"github.com/ksaga/ksaga/functions/users/userserver"
	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return userserver.Run(ctx, getenv, stdout)
}
