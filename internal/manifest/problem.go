package manifest

import (
	"fmt"
	"strings"
)

// Severity says whether a Problem blocks (Error) or is advisory (Warning).
type Severity int

const (
	// SeverityError marks a problem the cluster would reject, or that makes
	// the set unusable (a dangling reference, a missing key).
	SeverityError Severity = iota
	// SeverityWarning marks an advisory problem: an admission warning, or
	// something that works in a cluster but not under `ksaga dev`.
	SeverityWarning
)

// String returns "error" or "warning".
func (s Severity) String() string {
	switch s {
	case SeverityError:
		return "error"
	case SeverityWarning:
		return "warning"
	default:
		return fmt.Sprintf("severity(%d)", int(s))
	}
}

// Code classifies a Problem so that callers can treat some kinds specially.
type Code string

const (
	// CodeSyntax: the document is not valid YAML or not a Kubernetes object.
	CodeSyntax Code = "syntax"
	// CodeSchema: strict decoding failed (unknown or duplicate field, wrong type).
	CodeSchema Code = "schema"
	// CodeInvalid: the object failed the checks of the admission webhook or
	// the API server (or produced an admission warning).
	CodeInvalid Code = "invalid"
	// CodeDuplicate: two documents define the same object.
	CodeDuplicate Code = "duplicate"
	// CodeUnknownKind: an apiVersion/kind that Load neither decodes nor
	// skips on purpose (SkippedKinds), e.g. "kind: Triger" or
	// "apiVersion: eventing.knative.dev/v2".
	CodeUnknownKind Code = "unknown-kind"
	// CodeReference: a reference to another object, or to a key in a
	// ConfigMap or Secret, does not resolve within the set.
	CodeReference Code = "reference"
	// CodeNotLocal: the object is valid for a cluster but `ksaga dev` cannot
	// run it (a ksvc image that is not ko://<import path>).
	CodeNotLocal Code = "not-runnable-locally"
	// CodeUnemittedType: a Trigger filters on an event type no function emits.
	CodeUnemittedType Code = "unemitted-type"
	// CodeIgnoredField: a field is set but has no effect.
	CodeIgnoredField Code = "ignored-field"
	// CodeSenderIdentity: with sender identity (authentication-oidc) on, a
	// delivery would carry no token or one its receiver refuses, or an
	// EventPolicy would refuse a sender the saga needs.
	CodeSenderIdentity Code = "sender-identity"
	// CodeSagaWiring: the Triggers do not wire every event of a saga
	// definition (KSAGA_SAGAS) in either mode: a saga would wait on an
	// event no Trigger delivers until its deadline.
	CodeSagaWiring Code = "saga-wiring"
)

// Problem is one finding about one document.
type Problem struct {
	Source            // where the document is; zero for problems not tied to a file
	Object   string   // the object, "Kind namespace/name"; empty if it could not be identified
	Field    string   // the field path(s), e.g. "spec.filters[1].cesql"; several are joined with ", "
	Message  string   // what is wrong
	Detail   string   // optional longer explanation
	Severity Severity // SeverityError or SeverityWarning
	Code     Code     // the kind of problem
}

// String formats the problem on one line (plus an indented detail line when
// there is a Detail), as "file:line: Kind ns/name: field: message".
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.Source.String())
		b.WriteString(": ")
	}
	if p.Severity != SeverityError {
		b.WriteString(p.Severity.String())
		b.WriteString(": ")
	}
	if p.Object != "" {
		b.WriteString(p.Object)
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Detail != "" {
		b.WriteString("\n\t")
		b.WriteString(strings.ReplaceAll(strings.TrimSpace(p.Detail), "\n", "\n\t"))
	}
	return b.String()
}

// Problems is a list of problems. As an error it prints one problem per line.
type Problems []Problem

// Error implements error.
func (ps Problems) Error() string {
	var errs, warns int
	for _, p := range ps {
		if p.Severity == SeverityError {
			errs++
		} else {
			warns++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "manifest: %s, %s", plural(errs, "error"), plural(warns, "warning"))
	for _, p := range ps {
		b.WriteString("\n  ")
		b.WriteString(strings.ReplaceAll(p.String(), "\n", "\n  "))
	}
	return b.String()
}

// Errors returns the problems of SeverityError.
func (ps Problems) Errors() Problems { return ps.filter(SeverityError) }

// Warnings returns the problems of SeverityWarning.
func (ps Problems) Warnings() Problems { return ps.filter(SeverityWarning) }

// Err returns the error-severity problems as an error, or nil if there are none.
func (ps Problems) Err() error {
	if errs := ps.Errors(); len(errs) > 0 {
		return errs
	}
	return nil
}

func (ps Problems) filter(s Severity) Problems {
	var out Problems
	for _, p := range ps {
		if p.Severity == s {
			out = append(out, p)
		}
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
