package manifest

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/logging"

	eventingconfig "knative.dev/eventing/pkg/apis/config"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	servingconfig "knative.dev/serving/pkg/apis/config"
)

// brokerDefaults is the config-br-defaults "default-br-config" entry of a
// stock Knative Eventing install (config/core/configmaps/default-broker.yaml).
const brokerDefaults = `clusterDefault:
  brokerClass: MTChannelBasedBroker
  apiVersion: v1
  kind: ConfigMap
  name: config-br-default-channel
  namespace: knative-eventing
  delivery:
    retry: 10
    backoffPolicy: exponential
    backoffDelay: PT0.2S
`

// webhookContext builds the context Knative's admission webhooks give to
// SetDefaults and Validate for a CREATE: what eventing's cmd/webhook ctxFunc
// adds (feature flags, config-br-defaults), serving's config store (its
// defaults, with the given serving feature flags), and knative.dev/pkg's
// apis.WithinCreate. A no-op logger keeps
// Knative's debug logging (e.g. the CESQL parser's recovered panic) quiet.
func webhookContext(ctx context.Context, features, servingFeatures map[string]string) (context.Context, error) {
	flags, err := featureFlags(features)
	if err != nil {
		return nil, err
	}
	sf, err := servingconfig.NewFeaturesConfigFromMap(servingFeatures)
	if err != nil {
		return nil, fmt.Errorf("manifest: serving feature flags: %w", err)
	}
	defaults, err := eventingconfig.NewDefaultsConfigFromMap(map[string]string{eventingconfig.BrokerDefaultsKey: brokerDefaults})
	if err != nil {
		return nil, fmt.Errorf("manifest: config-br-defaults: %w", err)
	}
	ctx = logging.WithLogger(ctx, zap.NewNop().Sugar())
	ctx = apis.WithinCreate(ctx)
	ctx = feature.ToContext(ctx, flags)
	ctx = eventingconfig.ToContext(ctx, &eventingconfig.Config{Defaults: defaults})
	ctx = servingconfig.ToContext(ctx, &servingconfig.Config{Features: sf})
	ctx = servingconfig.ToContext(ctx, servingconfig.FromContextOrDefaults(ctx)) // Defaults, Autoscaler
	return ctx, nil
}

// featureFlags builds eventing's feature Flags from a config-features map.
// Unlike Knative (which logs and keeps them), unknown values are an error:
// a typo such as "enable" would otherwise silently leave a feature off.
func featureFlags(m map[string]string) (feature.Flags, error) {
	known := make(map[string]string, len(m))
	free := make(map[string]string)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, key := m[k], strings.TrimSpace(k)
		switch {
		case oneOf(v, "enabled", "disabled", "allowed"),
			key == feature.TransportEncryption && oneOf(v, "permissive", "strict"),
			key == feature.AuthorizationDefaultMode && oneOf(v, "allow-all", "deny-all", "allow-same-namespace"):
			known[k] = v
		case key == feature.OIDCDiscoveryBaseURL, key == feature.RequestReplyDefaultTimeout,
			strings.HasPrefix(key, feature.NodeSelectorLabel), strings.HasPrefix(key, "_"):
			free[key] = v
		default:
			return nil, fmt.Errorf("manifest: feature flag %q: unknown value %q (want enabled, disabled or allowed)", k, v)
		}
	}
	flags, err := feature.NewFlagsConfigFromMap(known)
	if err != nil {
		return nil, fmt.Errorf("manifest: feature flags: %w", err)
	}
	for k, v := range free {
		if !strings.HasPrefix(k, "_") {
			flags[k] = feature.Flag(v)
		}
	}
	return flags, nil
}

func oneOf(v string, words ...string) bool {
	for _, w := range words {
		if strings.EqualFold(v, w) {
			return true
		}
	}
	return false
}

// webhook runs SetDefaults then Validate, as the defaulting and validating
// admission webhooks do, and returns the findings (errors and admission
// warnings) as Problems without Source or Object. A panic inside Knative's
// code becomes a Problem.
func webhook(ctx context.Context, v any) (ps Problems) {
	defer func() {
		if r := recover(); r != nil {
			ps = append(ps, Problem{Message: fmt.Sprintf("internal error: Knative defaulting/validation panicked: %v", r), Severity: SeverityError, Code: CodeInvalid})
		}
	}()
	if d, ok := v.(apis.Defaultable); ok {
		d.SetDefaults(ctx)
	}
	val, ok := v.(apis.Validatable)
	if !ok {
		return nil
	}
	fe := val.Validate(ctx)
	if t, ok := v.(*eventingv1.Trigger); ok {
		fe = fixFilterPaths(ctx, t, fe)
	}
	return fieldProblems(fe)
}

// fieldProblems flattens a FieldError into Problems, errors first.
func fieldProblems(fe *apis.FieldError) Problems {
	var ps Problems
	for _, lvl := range []apis.DiagnosticLevel{apis.ErrorLevel, apis.WarningLevel} {
		sev := SeverityError
		if lvl == apis.WarningLevel {
			sev = SeverityWarning
		}
		for _, e := range fe.Filter(lvl).WrappedErrors() {
			ps = append(ps, Problem{
				Field:    strings.Join(e.Paths, ", "),
				Message:  e.Message,
				Detail:   e.Details,
				Severity: sev,
				Code:     CodeInvalid,
			})
		}
	}
	return ps
}

// fixFilterPaths replaces the errors Knative reports for spec.filters with
// the same errors at the right paths. Knative v0.50 gets two things wrong:
//
//   - "multiple dialects found" is an apis.ErrGeneric with no path at all;
//   - ValidateSubscriptionAPIFiltersList applies ViaIndex(i) to the errors
//     accumulated so far, so an error in filters[0] of a three-element list
//     is reported at "spec.filters[2][1][0]...".
//
// The replacement calls the same exported Knative validators per element.
// If, against expectation, it finds nothing while Knative did, Knative's
// errors are kept (a pathless one is pinned to "spec.filters").
func fixFilterPaths(ctx context.Context, t *eventingv1.Trigger, fe *apis.FieldError) *apis.FieldError {
	if fe == nil || len(t.Spec.Filters) == 0 {
		return fe
	}
	dialect := eventingv1.ValidateOneOf(&eventingv1.SubscriptionsAPIFilter{
		Exact:  map[string]string{"a": "a"},
		Prefix: map[string]string{"a": "a"},
	}).Message

	var kept, dropped *apis.FieldError
	for _, lvl := range []apis.DiagnosticLevel{apis.ErrorLevel, apis.WarningLevel} {
		for _, e := range fe.Filter(lvl).WrappedErrors() {
			var keep, drop []string
			for _, p := range e.Paths {
				if p == "spec.filters" || strings.HasPrefix(p, "spec.filters[") || strings.HasPrefix(p, "spec.filters.") {
					drop = append(drop, p)
				} else if p != "" {
					keep = append(keep, p)
				}
			}
			if len(keep) == 0 && len(drop) == 0 {
				if e.Message == dialect {
					drop = []string{"spec.filters"}
				} else {
					keep = []string{apis.CurrentField}
				}
			}
			if len(keep) > 0 {
				kept = kept.Also(&apis.FieldError{Message: e.Message, Details: e.Details, Level: e.Level, Paths: keep})
			}
			if len(drop) > 0 {
				dropped = dropped.Also(&apis.FieldError{Message: e.Message, Details: e.Details, Level: e.Level, Paths: drop})
			}
		}
	}
	if dropped == nil {
		return fe
	}
	if fixed := validateFilterList(ctx, t.Spec.Filters).ViaField("filters").ViaField("spec"); fixed != nil {
		return kept.Also(fixed)
	}
	return kept.Also(dropped)
}

// validateFilterList is eventingv1.ValidateSubscriptionAPIFiltersList with
// the index applied to each element's errors only.
func validateFilterList(ctx context.Context, fs []eventingv1.SubscriptionsAPIFilter) *apis.FieldError {
	var errs *apis.FieldError
	for i := range fs {
		errs = errs.Also(validateFilter(ctx, &fs[i]).ViaIndex(i))
	}
	return errs
}

// validateFilter is eventingv1.ValidateSubscriptionAPIFilter with the
// dialect error pinned to the filter itself.
func validateFilter(ctx context.Context, f *eventingv1.SubscriptionsAPIFilter) *apis.FieldError {
	if f == nil {
		return nil
	}
	var errs *apis.FieldError
	if e := eventingv1.ValidateOneOf(f); e != nil {
		errs = errs.Also(&apis.FieldError{Message: e.Message, Details: e.Details, Level: e.Level, Paths: []string{apis.CurrentField}})
	}
	return errs.Also(
		eventingv1.ValidateAttributesNames(f.Exact).ViaField("exact"),
		eventingv1.ValidateAttributesNames(f.Prefix).ViaField("prefix"),
		eventingv1.ValidateAttributesNames(f.Suffix).ViaField("suffix"),
		validateFilterList(ctx, f.All).ViaField("all"),
		validateFilterList(ctx, f.Any).ViaField("any"),
		validateFilter(ctx, f.Not).ViaField("not"),
		eventingv1.ValidateCESQLExpression(ctx, f.CESQL).ViaField("cesql"),
	)
}
