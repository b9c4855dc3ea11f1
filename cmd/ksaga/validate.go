package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ksaga/ksaga/internal/dev"
)

const validateUsage = `Usage: ksaga validate [-f PATH]...

Loads the manifests exactly as ksaga dev would and reports every problem at once:
Knative's own validation (the admission webhooks' checks, as with sender identity
on), references that do not resolve (a Trigger's subscriber Service, a Broker, a
ConfigMap key, an EventPolicy's sender), Trigger filters on event types no Service
lists in its ksaga.io/emits annotation, what sender identity would refuse (a
Trigger without its subscriber's audience, a reply the EventPolicies refuse), and
what ksaga dev cannot run locally (images that are not ko://).

Without -f it checks every combination brokers/<class> x triggers/<mode>, each with
manifests/ (and policies/), one section each. Warnings are printed but only errors fail
(exit status 1).

Flags:
`

// runValidate is `ksaga validate`.
func runValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ksaga validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), validateUsage)
		fs.PrintDefaults()
	}
	var paths stringsFlag
	fs.Var(&paths, "f", "a manifest file or folder `PATH` (repeatable); replaces the default combinations")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("validate: %v", err)
	}
	if fs.NArg() > 0 {
		return usageError("validate: unexpected arguments %q (manifests are given with -f)", fs.Args())
	}

	combos := []dev.Combination{{Name: "-f " + strings.Join(paths, " -f "), Paths: paths}}
	if len(paths) == 0 {
		var err error
		if combos, err = dev.Combinations("."); err != nil {
			return err
		}
	}
	failed := 0
	for i, c := range combos {
		if i > 0 {
			_, _ = fmt.Fprintln(stdout)
		}
		r, err := dev.Validate(c.Name, c.Paths)
		if err != nil {
			return err
		}
		r.Write(stdout)
		if r.Errors() > 0 {
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("validate: %d of %d %s failed", failed, len(combos), pluralWord(len(combos), "combination"))}
	}
	return nil
}

func pluralWord(n int, w string) string {
	if n == 1 {
		return w
	}
	return w + "s"
}
