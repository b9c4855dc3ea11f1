//go:build !ksagapprof

package dev

import "net/http"

// pprofHandler is nil without the ksagapprof build tag.
var pprofHandler http.Handler
