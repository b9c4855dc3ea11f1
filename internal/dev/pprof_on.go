//go:build ksagapprof

package dev

import (
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves Go's profiler at /debug/pprof/ on the ingress in
// builds tagged ksagapprof (GOFLAGS=-tags=ksagapprof, which also reaches the
// functions ksaga dev builds).
var pprofHandler http.Handler = func() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}()
