package console

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
)

// Authorize is how the admin API names who makes an action request
// (ops.API.Authorize): an actor, ops.ErrUnauthenticated (401) when the
// request has no credentials it accepts, ops.ErrAuthUnavailable (503)
// when they cannot be checked now, or another error (403).
type Authorize = func(r *http.Request) (actor string, err error)

// ActorHeader names the person acting with a shared token: the pages send
// the name the operator entered, and the history records it.
const ActorHeader = "Ksaga-Actor"

// TokenAuth authorizes requests bearing Authorization: Bearer token. The
// actor is the Ksaga-Actor header's name with " (token)" (the token is
// shared: the name is the operator's word), or "token".
func TokenAuth(token string) Authorize {
	return func(r *http.Request) (string, error) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return "", ops.ErrUnauthenticated
		}
		if n := ActorName(r.Header.Get(ActorHeader)); n != "" {
			return n + " (token)", nil
		}
		return "token", nil
	}
}

// EnvOIDCPrefix prefixes the OIDC settings of the console's operators
// (knfunc.OIDCConfigFromEnv): KSAGA_CONSOLE_OIDC_ISSUER, _AUDIENCE,
// _SUBJECTS (who may act), ….
const EnvOIDCPrefix = "KSAGA_CONSOLE_OIDC_"

// OIDCAuth authorizes requests bearing an ID token v accepts; the actor
// is the token's subject. A request without one is unauthenticated (so
// AnyOf tries the next way); a token of a subject v does not allow is
// refused. Nil v: nil (OIDC off).
func OIDCAuth(v *knfunc.Verifier) Authorize {
	if v == nil {
		return nil
	}
	return func(r *http.Request) (string, error) {
		c, err := v.Verify(r)
		if err != nil {
			switch knfunc.AuthStatus(err) {
			case http.StatusUnauthorized:
				return "", fmt.Errorf("%w: %v", ops.ErrUnauthenticated, err)
			case http.StatusServiceUnavailable:
				return "", fmt.Errorf("%w: %v", ops.ErrAuthUnavailable, err)
			}
			return "", err
		}
		return c.Subject, nil
	}
}

// AnyOf authorizes a request with the first of auths that accepts its
// credentials: e.g. an OIDC verifier's (the actor is the token's subject)
// and TokenAuth. A refusal other than ops.ErrUnauthenticated (a valid
// identity that may not act) ends the search. Nil auths are skipped; with
// none, AnyOf returns nil (actions off).
func AnyOf(auths ...Authorize) Authorize {
	var list []Authorize
	for _, a := range auths {
		if a != nil {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		return nil
	}
	return func(r *http.Request) (string, error) {
		for _, a := range list {
			actor, err := a(r)
			if err == nil || !errors.Is(err, ops.ErrUnauthenticated) {
				return actor, err
			}
		}
		return "", ops.ErrUnauthenticated
	}
}

// ActorName keeps a printable, short name: at most 64 printable ASCII
// characters, trimmed ("" if none).
func ActorName(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 64 {
			break
		}
		if c >= ' ' && c < 0x7f {
			b.WriteRune(c)
		}
	}
	return strings.TrimSpace(b.String())
}
