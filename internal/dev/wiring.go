package dev

import (
	"fmt"
	"sort"
	"strings"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
)

// sagaWiringProblems checks the Triggers against the saga definitions the
// manifests give the generic functions (the KSAGA_SAGAS key of a
// ConfigMap): every event a saga can wait on must reach a subscriber in
// the mode the Triggers wire — orchestration when some Trigger takes a
// step's command other than the start, choreography otherwise. In
// choreography that is the command that starts a saga, every result that
// runs the next step or a compensation, and the results the final step
// runs on; in orchestration, every command and every result (for the
// orchestrator). A missing Trigger would otherwise show only at run time,
// as a saga stuck until its deadline. Triggers that do not filter on an
// exact type are not counted.
func sagaWiringProblems(set *manifest.Set) manifest.Problems {
	byType := map[string][]*eventingv1.Trigger{}
	for _, t := range set.Triggers() {
		if typ := exactType(t); typ != "" {
			byType[typ] = append(byType[typ], t)
		}
	}
	var ps manifest.Problems
	for _, o := range set.Objects {
		if o.Kind != "ConfigMap" || o.Group() != "" {
			continue
		}
		raw := configMapValue(set, o, ops.EnvSagas)
		if raw == "" {
			continue
		}
		defs, err := saga.ParseDefinitions([]byte(raw))
		if err != nil {
			ps = append(ps, manifest.Problem{Source: o.Source, Object: o.ID.String(), Field: "data." + ops.EnvSagas,
				Message: err.Error(), Severity: manifest.SeverityError, Code: manifest.CodeSagaWiring})
			continue
		}
		for _, d := range defs {
			// Triggers on a step's command (other than the start) wire
			// orchestration; otherwise choreography.
			mode, want := "choreography", choreographyTypes(d)
			for _, c := range d.Commands() {
				if c != d.Steps[0].Command && len(byType[c]) > 0 {
					mode, want = "orchestration", orchestrationTypes(d)
					break
				}
			}
			if gaps := missing(want, byType); len(gaps) > 0 {
				ps = append(ps, manifest.Problem{Source: o.Source, Object: o.ID.String(), Field: "data." + ops.EnvSagas,
					Message: fmt.Sprintf("saga %q: the Triggers wire %s, but none delivers %s: a saga would wait on it until its deadline",
						d.Name, mode, strings.Join(gaps, ", ")),
					Severity: manifest.SeverityError, Code: manifest.CodeSagaWiring})
			}
		}
	}
	return ps
}

// configMapValue is the value of key in a ConfigMap object.
func configMapValue(set *manifest.Set, o *manifest.Object, key string) string {
	cm := set.ConfigMap(o.Namespace, o.Name)
	if cm == nil {
		return ""
	}
	return cm.Data[key]
}

// exactType is the event type a Trigger's filter requires exactly, if it
// filters on one (legacy attributes, or a SubscriptionsAPI exact filter).
func exactType(t *eventingv1.Trigger) string {
	for _, f := range t.Spec.Filters {
		if typ := f.Exact["type"]; typ != "" {
			return typ
		}
	}
	if len(t.Spec.Filters) == 0 && t.Spec.Filter != nil {
		return t.Spec.Filter.Attributes["type"]
	}
	return ""
}

// choreographyTypes are the events a saga of d waits on in choreography.
func choreographyTypes(d *saga.Definition) []string {
	var out []string
	for _, typ := range d.Types() {
		if r, ok := d.Route(typ); ok && (r.Start() || !isCommand(d, typ)) {
			out = append(out, typ)
		}
	}
	return out
}

// orchestrationTypes are the events a saga of d waits on in
// orchestration: every command, and every result (the orchestrator's).
func orchestrationTypes(d *saga.Definition) []string {
	return append(d.Commands(), d.Results()...)
}

func isCommand(d *saga.Definition, typ string) bool {
	for _, c := range d.Commands() {
		if c == typ {
			return true
		}
	}
	return false
}

// missing lists the types no Trigger delivers, sorted.
func missing(types []string, byType map[string][]*eventingv1.Trigger) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range types {
		if len(byType[t]) == 0 && !seen[t] {
			out = append(out, t)
			seen[t] = true
		}
	}
	sort.Strings(out)
	return out
}
