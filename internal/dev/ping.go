package dev

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/types"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/devoidc"
)

// PingSourcesPath is where the ingress fires a PingSource now:
// POST /.ksaga/pingsources/<namespace>/<name> sends its event to its sink
// at once, as its schedule would (`ksaga dev` only: tests and demos need
// not wait for the next tick). 202 once the sink accepted it, 404 for an
// unknown PingSource, 502 when the sink did not take it.
const PingSourcesPath = "/.ksaga/pingsources/"

// pinger runs the manifests' PingSources as Knative's mtping adapter does:
// each schedule (cron, with optional seconds and descriptors, in the
// source's timezone) sends a dev.knative.sources.ping event with the
// source's data to its sink, with five retries backing off from 50 ms.
// With sender identity on, each send carries a token of the PingSource's
// OIDC identity (<name>-oidc-sources.knative.dev-pingsource) for the sink's
// audience (its spec.sink.audience, or a Broker's), as mtping requests one
// for status.sinkAudience; a sink without an audience gets no token.
// Differences from a cluster: no random delay of up to half a second
// before each send, and the sink is resolved once, at start.
type pinger struct {
	cron   *cron.Cron
	log    *slog.Logger
	client *http.Client
	jobs   map[types.NamespacedName]*pingJob
}

// pingJob is one PingSource.
type pingJob struct {
	name     string // namespace/name
	target   string // the sink's URL
	event    event.Event
	subject  string // the PingSource's OIDC identity
	audience string // the sink's; "" sends no token
	token    tokenFunc
}

// tokenFunc returns a token of subject for audience (nil: sender identity
// off).
type tokenFunc func(subject, audience string) (string, error)

// newPinger schedules every PingSource; it does not run them until start.
func newPinger(ctx context.Context, sources []*sourcesv1.PingSource, resolve devbroker.Resolver, token tokenFunc, log *slog.Logger) (*pinger, error) {
	p := &pinger{
		cron: cron.New(cron.WithParser(cron.NewParser(
			cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor))),
		log:    log,
		client: &http.Client{Timeout: 30 * time.Second}, // http.DefaultTransport: the dev dialer
		jobs:   make(map[types.NamespacedName]*pingJob, len(sources)),
	}
	for _, src := range sources {
		sink, err := resolve(ctx, src.Spec.Sink, src.Namespace)
		if err != nil {
			return nil, fmt.Errorf("PingSource %s/%s: sink: %w", src.Namespace, src.Name, err)
		}
		e, err := pingEvent(src)
		if err != nil {
			return nil, err
		}
		j := &pingJob{name: src.Namespace + "/" + src.Name, target: sink.String(), event: e}
		if token != nil {
			j.token = token
			j.subject = devoidc.ResourceSubject(pingSourceGVK, src.Namespace, src.Name)
			j.audience = sinkAudience(src.Spec.Sink, src.Namespace)
		}
		schedule := src.Spec.Schedule
		if src.Spec.Timezone != "" {
			schedule = "CRON_TZ=" + src.Spec.Timezone + " " + schedule
		}
		if _, err := p.cron.AddFunc(schedule, func() {
			if err := p.send(ctx, j); err != nil {
				p.log.Warn("ping not delivered", "pingsource", j.name, "sink", j.target, "error", err)
			}
		}); err != nil {
			return nil, fmt.Errorf("PingSource %s: schedule %q: %w", j.name, src.Spec.Schedule, err)
		}
		p.jobs[types.NamespacedName{Namespace: src.Namespace, Name: src.Name}] = j
		args := []any{"pingsource", j.name, "schedule", src.Spec.Schedule, "sink", j.target, "fire", PingSourcesPath + j.name}
		if j.token != nil && j.audience != "" {
			args = append(args, "audience", j.audience)
		}
		log.Info("PingSource scheduled", args...)
	}
	return p, nil
}

// pingEvent is the event a PingSource sends (mtping's makeEvent).
func pingEvent(src *sourcesv1.PingSource) (event.Event, error) {
	e := event.New()
	e.SetType(sourcesv1.PingSourceEventType)
	e.SetSource(sourcesv1.PingSourceSource(src.Namespace, src.Name))
	if o := src.Spec.CloudEventOverrides; o != nil {
		for k, v := range o.Extensions {
			e.SetExtension(k, v)
		}
	}
	var data []byte
	switch {
	case src.Spec.DataBase64 != "":
		var err error
		if data, err = base64.StdEncoding.DecodeString(src.Spec.DataBase64); err != nil {
			return e, fmt.Errorf("PingSource %s/%s: dataBase64: %w", src.Namespace, src.Name, err)
		}
	case src.Spec.Data != "":
		data = []byte(src.Spec.Data)
	}
	if data != nil {
		if err := e.SetData(src.Spec.ContentType, data); err != nil {
			return e, fmt.Errorf("PingSource %s/%s: data: %w", src.Namespace, src.Name, err)
		}
	}
	return e, nil
}

// errRefused is a ping the sink answered with a status it is not retried on.
var errRefused = errors.New("refused by the sink")

// send posts one ping, retrying 5xx, 404, 409, 429 and transport errors,
// and returns nil once the sink accepted it.
func (p *pinger) send(ctx context.Context, j *pingJob) error {
	e := j.event.Clone()
	e.SetID(uuid.NewString())
	e.SetTime(time.Now())
	wait := 50 * time.Millisecond
	var last error
	for attempt := 0; attempt <= 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		code, err := p.post(ctx, j, &e)
		switch {
		case err == nil && code/100 == 2:
			p.log.Debug("ping sent", "pingsource", j.name, "id", e.ID(), "sink", j.target)
			return nil
		case err == nil && code < 500 && code != 404 && code != 409 && code != 429:
			p.log.Warn("ping refused", "pingsource", j.name, "sink", j.target, "code", code)
			return fmt.Errorf("%w: HTTP %d", errRefused, code)
		case err != nil:
			last = err
		default:
			last = fmt.Errorf("HTTP %d", code)
		}
	}
	return last
}

func (p *pinger) post(ctx context.Context, j *pingJob, e *event.Event) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.target, nil)
	if err != nil {
		return 0, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return 0, err
	}
	if req.Body == nil {
		req.Body = io.NopCloser(bytes.NewReader(nil))
	}
	if j.token != nil && j.audience != "" {
		tok, err := j.token(j.subject, j.audience)
		if err != nil {
			return 0, fmt.Errorf("token of %s: %w", j.subject, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// ServeHTTP fires a PingSource now: POST PingSourcesPath<ns>/<name>.
func (p *pinger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, PingSourcesPath)
	ns, name, ok := strings.Cut(rest, "/")
	j := p.jobs[types.NamespacedName{Namespace: ns, Name: name}]
	switch {
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST fires a PingSource now", http.StatusMethodNotAllowed)
		return
	case !ok || j == nil:
		http.Error(w, fmt.Sprintf("ksaga dev: no PingSource %s (it has: %s)", rest, strings.Join(p.names(), ", ")), http.StatusNotFound)
		return
	}
	if err := p.send(r.Context(), j); err != nil {
		http.Error(w, fmt.Sprintf("ksaga dev: PingSource %s: its sink %s did not take the event: %v", j.name, j.target, err), http.StatusBadGateway)
		return
	}
	p.log.Info("PingSource fired on request", "pingsource", j.name, "sink", j.target)
	w.WriteHeader(http.StatusAccepted)
}

// names lists the PingSources, sorted.
func (p *pinger) names() []string {
	out := make([]string, 0, len(p.jobs))
	for _, j := range p.jobs {
		out = append(out, j.name)
	}
	sort.Strings(out)
	return out
}

// start runs the schedules until stop.
func (p *pinger) start() { p.cron.Start() }

// stop ends the schedules and waits for running sends.
func (p *pinger) stop() { <-p.cron.Stop().Done() }
