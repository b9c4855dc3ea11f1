package saga

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorCode classifies an error by what the sender of an event should do.
type ErrorCode string

// Error codes, mapped to HTTP statuses by StatusCode with Knative's delivery
// semantics in mind (Knative's delivery table): 400 is never retried, 5xx always is.
const (
	EInvalid   ErrorCode = "invalid"   // malformed or invalid event: 400, dead-lettered at once
	ETransient ErrorCode = "transient" // a dependency is unavailable: 503, retried
	EInternal  ErrorCode = "internal"  // a bug: 500, retried
)

// ErrNotFound reports a saga that does not exist (or has expired).
var ErrNotFound = errors.New("saga not found")

// Error is an error with a code. Message is safe to show to the sender.
type Error struct {
	Code    ErrorCode
	Message string
	Err     error
	// Security marks an event refused because it contradicts the saga's
	// record (forged, tampered with, or replayed into another saga): a
	// security event, logged as such.
	Security bool
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Invalid returns an EInvalid error: the event can never be processed.
func Invalid(format string, args ...any) error {
	return &Error{Code: EInvalid, Message: fmt.Sprintf(format, args...)}
}

// Refused returns an EInvalid error for an event that contradicts the
// saga's record: the event is refused (400) and changes nothing.
func Refused(format string, args ...any) error {
	return &Error{Code: EInvalid, Message: fmt.Sprintf(format, args...), Security: true}
}

// IsSecurity reports whether err refuses an event as a security event.
func IsSecurity(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Security
}

// Transient wraps err as an ETransient error: the event should be retried.
func Transient(err error, format string, args ...any) error {
	return &Error{Code: ETransient, Message: fmt.Sprintf(format, args...), Err: err}
}

// Code returns the code of the first *Error in err's chain, EInternal for any
// other non-nil error, and "" for nil.
func Code(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// StatusCode maps an error to the HTTP status a step answers with.
// Never 404 or 409: Knative retries both, so "unknown saga" or "already done"
// must not be reported that way.
func StatusCode(err error) int {
	switch Code(err) {
	case "":
		return http.StatusOK
	case EInvalid:
		return http.StatusBadRequest
	case ETransient:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
