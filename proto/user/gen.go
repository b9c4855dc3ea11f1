// Package user is the generated Go code of the seed article's user.proto
// (gRPC UserService.GetUser). Regenerate with `make proto`; the .proto is
// kept exactly as published, so its Go package is given with M flags.
package user

//go:generate protoc --plugin=protoc-gen-go=../../bin/protoc-gen-go --plugin=protoc-gen-go-grpc=../../bin/protoc-gen-go-grpc --go_out=. --go_opt=paths=source_relative --go_opt=Muser.proto=github.com/ksaga/ksaga/proto/user --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-grpc_opt=Muser.proto=github.com/ksaga/ksaga/proto/user user.proto
