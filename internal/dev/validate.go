package dev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ksaga/ksaga/internal/manifest"
)

// Combination is one set of paths `ksaga validate` checks, as `ksaga dev`
// would load them.
type Combination struct {
	Name  string   // e.g. "brokers/mt-channel + triggers/choreography + manifests"
	Paths []string // the paths to load
}

// Combinations returns what `ksaga validate` checks without -f: every
// brokers/<class> × every triggers/<mode>, each with manifests (and
// policies, when the folder exists), under dir
// (the classes and modes are the subfolders that exist). A brokers/ or
// triggers/ folder without subfolders counts as one class or mode. It is an
// error if brokers/, triggers/ or manifests/ is missing.
func Combinations(dir string) ([]Combination, error) {
	var errs []error
	options := func(parent string) []string {
		p := filepath.Join(dir, parent)
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("folder %s not found", p))
			return nil
		}
		subs := subfolders(p)
		if len(subs) == 0 {
			return []string{parent}
		}
		out := make([]string, len(subs))
		for i, s := range subs {
			out[i] = filepath.ToSlash(filepath.Join(parent, s))
		}
		return out
	}
	brokers, triggers := options(BrokersDir), options(TriggersDir)
	if st, err := os.Stat(filepath.Join(dir, ManifestsDir)); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("folder %s not found", filepath.Join(dir, ManifestsDir)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("validate (run ksaga from the project folder, or pass -f): %w", err)
	}
	var out []Combination
	for _, b := range brokers {
		for _, t := range triggers {
			c := Combination{
				Name:  b + " + " + t + " + " + ManifestsDir,
				Paths: []string{filepath.Join(dir, b), filepath.Join(dir, t), filepath.Join(dir, ManifestsDir)},
			}
			if st, err := os.Stat(filepath.Join(dir, PoliciesDir)); err == nil && st.IsDir() {
				c.Name += " + " + PoliciesDir
				c.Paths = append(c.Paths, filepath.Join(dir, PoliciesDir))
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// Report is the result of validating one set of paths.
type Report struct {
	Name     string
	Summary  string            // what was loaded, e.g. "1 Broker, 9 Triggers, ..."
	Problems manifest.Problems // errors and warnings, in order
	Skipped  []string          // objects `ksaga dev` does not run
}

// Errors counts the error-level problems.
func (r *Report) Errors() int { return len(r.Problems.Errors()) }

// Validate loads paths exactly as `ksaga dev` does and reports every
// problem at once:
//
//   - Knative's admission validation and strict decoding (manifest.Load);
//   - dangling references, e.g. a Trigger whose subscriber Service does not
//     exist, and missing ConfigMap/Secret keys (manifest.Check);
//   - Trigger filters on types that no Service lists in its ksaga.io/emits
//     annotation;
//   - images that are not ko://, and anything else `ksaga dev` cannot run
//     locally;
//   - Triggers that leave an event of a saga definition (KSAGA_SAGAS)
//     undelivered in either mode (sagaWiringProblems);
//   - with EventPolicies (validated as with Knative's authentication-oidc
//     feature on), what would break with sender identity on: a delivery
//     without the receiver's audience, a sender or reply the policies
//     refuse (senderIdentityProblems).
//
// All of these are errors; only Knative's own warnings (e.g. serving's
// securityContext advice) stay warnings. It fails only when a path cannot
// be read.
func Validate(name string, paths []string) (*Report, error) {
	l, err := load(paths, true, true)
	if err != nil {
		return nil, err
	}
	r := &Report{Name: name, Summary: counts(l.set), Problems: l.problems, Skipped: l.skipped}
	if len(r.Problems.Errors()) == 0 {
		r.Problems = append(r.Problems, localProblems(l.set)...)
		r.Problems = append(r.Problems, senderIdentityProblems(l.set)...)
		r.Problems = append(r.Problems, sagaWiringProblems(l.set)...)
	}
	for i, p := range r.Problems {
		if p.Code == manifest.CodeUnemittedType || p.Code == manifest.CodeNotLocal || p.Code == manifest.CodeSenderIdentity {
			r.Problems[i].Severity = manifest.SeverityError
		}
	}
	return r, nil
}

// Write prints the report: a header (when it has a Name), one line per
// problem and skipped object, and a summary line.
func (r *Report) Write(w io.Writer) {
	var b strings.Builder
	if r.Name != "" {
		fmt.Fprintf(&b, "== %s ==\n", r.Name)
	}
	for _, p := range r.Problems {
		b.WriteString(p.String() + "\n")
	}
	for _, s := range r.Skipped {
		b.WriteString("info: " + s + "\n")
	}
	verdict := "OK"
	if r.Errors() > 0 {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "%s: %s; %s, %s\n", verdict, r.Summary,
		plural(r.Errors(), "error"), plural(len(r.Problems.Warnings()), "warning"))
	_, _ = io.WriteString(w, b.String())
}
