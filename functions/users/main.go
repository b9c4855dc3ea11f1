// Command users is the user directory of the order saga: the gRPC
// UserService.GetUser of proto/user/user.proto, served over h2c so that it
// runs as a Knative Service with a port named h2c. Users are Redis hashes
// under ordersaga.UserKey (fields username and email), loaded by the demo
// data. The function itself is package userserver, so that other
// functions' tests can run it in-process.
package main

import (
	"github.com/ksaga/ksaga/functions/users/userserver"
	"github.com/ksaga/ksaga/knfunc"
)

func main() { knfunc.Main(userserver.Setup) }
