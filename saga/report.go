package saga

import "context"

// Report is what a Participant did with one event, for whoever serves the
// step to observe (metrics, traces): the runtime puts an empty Report in the
// context with WithReport, and Participant.Handle fills it. Steps need not
// know about it.
type Report struct {
	Handled bool   // a transition was applied, deduped or refused
	Step    string // the transition's step
	Result  Result
}

type reportKey struct{}

// WithReport returns a context carrying an empty Report, and the Report.
func WithReport(ctx context.Context) (context.Context, *Report) {
	r := &Report{}
	return context.WithValue(ctx, reportKey{}, r), r
}

func report(ctx context.Context, step string, res Result) {
	if r, ok := ctx.Value(reportKey{}).(*Report); ok {
		r.Handled, r.Step, r.Result = true, step, res
	}
}

// Outcome classifies a handled event: "applied", "business_failure",
// "duplicate", "refused" (a security event: it contradicts the saga's
// record) or "stale" (the saga moved on, or is unknown).
func (r *Report) Outcome() string {
	switch {
	case !r.Handled:
		return ""
	case r.Result.Duplicate:
		return "duplicate"
	case r.Result.Skipped == "refused":
		return "refused"
	case r.Result.Skipped != "":
		return "stale"
	case r.Result.Failed:
		return "business_failure"
	default:
		return "applied"
	}
}

// Finished returns the status the saga entered with this event, if it was
// a start (running, from nothing or accepted) or an end (a terminal
// status); "" otherwise. Counting it
// once per saga needs no extra Redis call: the Store reports the status
// before and after.
func (r *Report) Finished() Status {
	res := r.Result
	if !r.Handled || !res.Applied || res.From == res.Status {
		return ""
	}
	if res.From == "" || res.From == StatusAccepted || res.Status.Terminal() {
		return res.Status
	}
	return ""
}

// ReportResult fills the context's Report (see WithReport) for code that
// handles events without a Participant (the orchestrator, the dead-letter
// sink).
func ReportResult(ctx context.Context, step string, res Result) { report(ctx, step, res) }
