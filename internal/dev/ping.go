package dev

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// pinger runs the manifests' PingSources as Knative's mtping adapter does:
// each schedule (cron, with optional seconds and descriptors, in the
// source's timezone) sends a dev.knative.sources.ping event with the
// source's data to its sink, with five retries backing off from 50 ms.
// Differences from a cluster: no random delay of up to half a second
// before each send, and the sink is resolved once, at start.
type pinger struct {
	cron   *cron.Cron
	log    *slog.Logger
	client *http.Client
}

// newPinger schedules every PingSource; it does not run them until start.
func newPinger(ctx context.Context, sources []*sourcesv1.PingSource, resolve devbroker.Resolver, log *slog.Logger) (*pinger, error) {
	p := &pinger{
		cron: cron.New(cron.WithParser(cron.NewParser(
			cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor))),
		log:    log,
		client: &http.Client{Timeout: 30 * time.Second}, // http.DefaultTransport: the dev dialer
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
		schedule := src.Spec.Schedule
		if src.Spec.Timezone != "" {
			schedule = "CRON_TZ=" + src.Spec.Timezone + " " + schedule
		}
		name := src.Namespace + "/" + src.Name
		target := sink.String()
		if _, err := p.cron.AddFunc(schedule, func() { p.send(ctx, name, target, e) }); err != nil {
			return nil, fmt.Errorf("PingSource %s: schedule %q: %w", name, src.Spec.Schedule, err)
		}
		log.Info("PingSource scheduled", "pingsource", name, "schedule", src.Spec.Schedule, "sink", target)
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

// send posts one ping, retrying 5xx and transport errors.
func (p *pinger) send(ctx context.Context, name, target string, tmpl event.Event) {
	e := tmpl.Clone()
	e.SetID(uuid.NewString())
	e.SetTime(time.Now())
	wait := 50 * time.Millisecond
	var last string
	for attempt := 0; attempt <= 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait *= 2
		}
		code, err := p.post(ctx, target, &e)
		switch {
		case err == nil && code/100 == 2:
			p.log.Debug("ping sent", "pingsource", name, "id", e.ID(), "sink", target)
			return
		case err == nil && code < 500 && code != 404 && code != 409 && code != 429:
			p.log.Warn("ping refused", "pingsource", name, "sink", target, "code", code)
			return
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("HTTP %d", code)
		}
	}
	p.log.Warn("ping not delivered", "pingsource", name, "sink", target, "error", last)
}

func (p *pinger) post(ctx context.Context, target string, e *event.Event) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
	if err != nil {
		return 0, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return 0, err
	}
	if req.Body == nil {
		req.Body = io.NopCloser(bytes.NewReader(nil))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// start runs the schedules until stop.
func (p *pinger) start() { p.cron.Start() }

// stop ends the schedules and waits for running sends.
func (p *pinger) stop() { <-p.cron.Stop().Done() }
