package knfunc

import (
	"encoding/json"
	"errors"
	"net/http"
)

// jsonErrors answers the requests mux has no route for as JSON, as every
// other error of a function is: 404 {"error": ...}, or 405 with its Allow
// header.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusOnly{header: http.Header{}}
		h.ServeHTTP(rec, r)
		msg := "not found: " + r.Method + " " + r.URL.Path
		if rec.status == http.StatusMethodNotAllowed {
			msg = "method " + r.Method + " not allowed on " + r.URL.Path
			w.Header().Set("Allow", rec.header.Get("Allow"))
		} else if rec.status != http.StatusNotFound {
			mux.ServeHTTP(w, r) // a redirect (a cleaned path): as the mux answers it
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	})
}

// statusOnly records the status and headers a handler answers with.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// ErrUnauthenticated reports a request without valid credentials (401).
var ErrUnauthenticated = errors.New("credentials required: send Authorization: Bearer <token>")
