// Command users is the user directory of the order saga: the seed article's
// gRPC UserService.GetUser (proto/user), served over h2c so that it runs as
// a Knative Service with a port named h2c. Users are Redis hashes under
// ordersaga.UserKey (fields username and email), loaded by the demo fixture.
// The function itself is package userserver, so that other functions' tests
// can run it in-process.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ksaga/ksaga/functions/users/userserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "users:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return userserver.Run(ctx, getenv, stdout)
}
