//go:build ksagapprof

package knfunc

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof serves Go's profiler at /debug/pprof/ in builds tagged
// ksagapprof (GOFLAGS=-tags=ksagapprof ksaga dev ...). Normal builds
// leave it out: it would add a megabyte to every function.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
