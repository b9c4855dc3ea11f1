package devbroker

import (
	"context"
	"fmt"
	"log/slog"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/zap"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/eventing/pkg/eventfilter/attributes"
	"knative.dev/eventing/pkg/eventfilter/subscriptionsapi"
)

// buildFilter materialises a Trigger's filter with Knative's precedence
// (broker/filter filterEvent): spec.filters wins over spec.filter entirely;
// no filter matches everything. The CESQL parser of sdk-go/sql panics on
// some syntax errors, so a panic becomes an error.
func buildFilter(zl *zap.Logger, log *slog.Logger, t *eventingv1.Trigger) (f eventfilter.Filter, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("invalid filters: %v", r)
		}
	}()
	switch {
	case len(t.Spec.Filters) > 0:
		f := eventfilter.Filter(allOf(materializeList(zl, t.Spec.Filters)))
		if hasCESQL(t.Spec.Filters) {
			f = safeFilter{inner: f, log: log.With(slog.String("trigger", t.Namespace+"/"+t.Name))}
		}
		return f, nil
	case t.Spec.Filter != nil:
		return attributes.NewAttributesFilter(t.Spec.Filter.Attributes), nil
	default:
		return subscriptionsapi.NewNoFilter(), nil
	}
}

// materialize is subscriptionsapi.MaterializeSubscriptionsAPIFilter with
// two changes: all/any are allOf/anyOf (see there), and the operand of a
// not that fails to materialise is NoFilter instead of nil (same result,
// but Knative's notFilter.Cleanup would dereference the nil). As in
// Knative, an element that fails to materialise (e.g. exact with an empty
// value) is skipped.
func materialize(zl *zap.Logger, f eventingv1.SubscriptionsAPIFilter) eventfilter.Filter {
	var (
		out eventfilter.Filter
		err error
	)
	switch {
	case len(f.Exact) > 0:
		out, err = subscriptionsapi.NewExactFilter(f.Exact)
	case len(f.Prefix) > 0:
		out, err = subscriptionsapi.NewPrefixFilter(f.Prefix)
	case len(f.Suffix) > 0:
		out, err = subscriptionsapi.NewSuffixFilter(f.Suffix)
	case len(f.All) > 0:
		out = allOf(materializeList(zl, f.All))
	case len(f.Any) > 0:
		out = anyOf(materializeList(zl, f.Any))
	case f.Not != nil:
		inner := materialize(zl, *f.Not)
		if inner == nil {
			inner = subscriptionsapi.NewNoFilter()
		}
		out = subscriptionsapi.NewNotFilter(inner)
	case f.CESQL != "":
		out, err = subscriptionsapi.NewCESQLFilter(f.CESQL)
	}
	if err != nil {
		zl.Debug("invalid filter expression, skipping it", zap.Error(err))
		return nil
	}
	return out
}

func materializeList(zl *zap.Logger, fs []eventingv1.SubscriptionsAPIFilter) []eventfilter.Filter {
	out := make([]eventfilter.Filter, 0, len(fs))
	for _, f := range fs {
		if m := materialize(zl, f); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// safeFilter turns a panic of a Trigger's filter into a non-match of the
// whole Trigger, logged at error level. Knative's CESQL filter asserts that
// an expression's value is a boolean, which a valid Trigger ("cesql: type")
// does not guarantee; in a cluster the panic ends one broker-filter request
// (no delivery), here it would end the process, and again at every restart
// while the entry stays pending. Only Triggers with a CESQL expression are
// wrapped: the other filters cannot panic, and their hot path keeps no
// defer. The whole Trigger is wrapped, not the expression, so that a "not"
// around it cannot turn the failure into a match.
type safeFilter struct {
	inner eventfilter.Filter
	log   *slog.Logger // with the Trigger's name
}

func (f safeFilter) Filter(ctx context.Context, ev cloudevents.Event) (res eventfilter.FilterResult) {
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("devbroker: the trigger's filter failed on an event; it does not match",
				slog.String("id", ev.ID()), slog.String("type", ev.Type()), slog.Any("panic", p))
			res = eventfilter.FailFilter
		}
	}()
	return f.inner.Filter(ctx, ev)
}

func (f safeFilter) Cleanup() { f.inner.Cleanup() }

// hasCESQL reports whether fs has a CESQL expression, at any depth.
func hasCESQL(fs []eventingv1.SubscriptionsAPIFilter) bool {
	for _, f := range fs {
		if f.CESQL != "" || hasCESQL(f.All) || hasCESQL(f.Any) || (f.Not != nil && hasCESQL([]eventingv1.SubscriptionsAPIFilter{*f.Not})) {
			return true
		}
	}
	return false
}

// allOf has the results of Knative's allFilter: FailFilter as soon as one
// operand fails, otherwise the result of the last operand (NoFilter when
// empty). Knative's version also reorders its operands by failure rate in
// a background goroutine; that goroutine races with Filter in eventing
// v0.50.0 (the race detector flags it), and the reordering only saves
// evaluation time, so it is left out. Filter is pure and safe for
// concurrent use.
type allOf []eventfilter.Filter

func (fs allOf) Filter(ctx context.Context, ev cloudevents.Event) eventfilter.FilterResult {
	res := eventfilter.NoFilter
	for _, f := range fs {
		if res = f.Filter(ctx, ev); res == eventfilter.FailFilter {
			return res
		}
	}
	return res
}

func (fs allOf) Cleanup() {
	for _, f := range fs {
		f.Cleanup()
	}
}

// anyOf has the results of Knative's anyFilter: PassFilter as soon as one
// operand passes, otherwise the result of the last operand (NoFilter when
// empty). See allOf for why it is not Knative's type.
type anyOf []eventfilter.Filter

func (fs anyOf) Filter(ctx context.Context, ev cloudevents.Event) eventfilter.FilterResult {
	res := eventfilter.NoFilter
	for _, f := range fs {
		if res = f.Filter(ctx, ev); res == eventfilter.PassFilter {
			return res
		}
	}
	return res
}

func (fs anyOf) Cleanup() {
	for _, f := range fs {
		f.Cleanup()
	}
}
