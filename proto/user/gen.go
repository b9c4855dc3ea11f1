// Package user is the generated Go code of user.proto
// (gRPC UserService.GetUser): the messages here (protoc-gen-go), the
// connect-go client and handler in userconnect (protoc-gen-connect-go), which
// speak the gRPC protocol, among others. Regenerate with `make proto`; the
// .proto is kept as it was first written (for a Python service), with no Go
// options, so its Go package is given with M flags.
package user

//go:generate protoc --plugin=protoc-gen-go=../../bin/protoc-gen-go --plugin=protoc-gen-connect-go=../../bin/protoc-gen-connect-go --go_out=. --go_opt=paths=source_relative --go_opt=Muser.proto=github.com/ksaga/ksaga/proto/user --connect-go_out=. --connect-go_opt=paths=source_relative --connect-go_opt=Muser.proto=github.com/ksaga/ksaga/proto/user user.proto
