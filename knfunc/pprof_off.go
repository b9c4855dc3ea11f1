//go:build !ksagapprof

package knfunc

import "net/http"

// registerPprof does nothing without the ksagapprof build tag.
func registerPprof(*http.ServeMux) {}
