package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ksaga/ksaga/knfunc"
)

// The REST API's callers are authenticated when KSAGA_API_OIDC_ISSUER is
// set (knfunc.VerifierFromEnv with this prefix: the issuer, its discovery
// URL, the audience tokens must be issued for, and optionally the subjects
// allowed, the clock skew, a CA file): every route then needs
// "Authorization: Bearer <JWT>" of that issuer for that audience (401
// otherwise; 503 while the issuer's keys cannot be fetched), and the token
// must name the user the request is about (403 otherwise): the user an
// order is placed for, the user of the order read or cancelled.
const apiOIDCPrefix = "KSAGA_API_OIDC_"

// envUserClaim names the claim that holds the caller's user id. Empty (the
// default): the token's subject is "user:<id>" (subjectPrefix). Set, e.g.
// to "user_id": that claim holds the id, as a JSON number or a string of
// digits (for an identity provider whose subjects are its own).
const envUserClaim = apiOIDCPrefix + "USER_CLAIM"

// subjectPrefix starts the subject of a token that names a user.
const subjectPrefix = "user:"

// userAuthorizer returns api.authorize: the caller (verified by
// knfunc.Verifier.Authenticate) must be user userID.
func userAuthorizer(claim string) func(r *http.Request, userID int32) error {
	return func(r *http.Request, userID int32) error {
		c, ok := knfunc.CallerOf(r.Context())
		if !ok {
			return knfunc.ErrUnauthenticated
		}
		got, err := callerUser(c, claim)
		if err != nil {
			return knfunc.Forbidden("%v", err)
		}
		if got != userID {
			return knfunc.Forbidden("the token is user %d's: it may not act for user %d", got, userID)
		}
		return nil
	}
}

// callerUser is the user id a verified token names: its subject
// "user:<id>", or the claim named claim.
func callerUser(c knfunc.Claims, claim string) (int32, error) {
	if claim == "" {
		id, ok := strings.CutPrefix(c.Subject, subjectPrefix)
		if !ok {
			return 0, fmt.Errorf("the token's subject %q names no user (want %s<id>)", c.Subject, subjectPrefix)
		}
		return userID(id)
	}
	var all map[string]json.RawMessage
	if err := c.Decode(&all); err != nil {
		return 0, fmt.Errorf("the token's claims: %w", err)
	}
	raw, ok := all[claim]
	if !ok {
		return 0, fmt.Errorf("the token has no %q claim naming its user", claim)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw) // a JSON number
	}
	return userID(s)
}

// userID parses a user id written canonically: a positive int32 in
// decimal, no sign, no leading zero.
func userID(s string) (int32, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("the token names user %q, not a user id", s)
	}
	return int32(n), nil
}
