package knfunc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Sink sends events to K_SINK, as a SinkBinding subject does: binary mode,
// K_CE_OVERRIDES applied, retried with backoff on the codes Knative retries.
type Sink struct {
	URL       string
	Overrides map[string]string
	Client    *http.Client
	// Attempts is the number of tries (default 4: waits 50, 100, 200 ms).
	Attempts int
	// Token, if set, gives the bearer token sent with every request (see
	// TokenFile): with Knative's authentication-oidc, the Broker answers 401
	// without one.
	Token *TokenFile
}

// NewSink returns a Sink for url.
func NewSink(url string, overrides map[string]string) *Sink {
	return &Sink{URL: url, Overrides: overrides, Client: NewHTTPClient(10 * time.Second), Attempts: 4}
}

// Send delivers e. A 2xx answer is success; 400 and other non-retryable
// answers are Invalid errors; when retries run out the error is Transient.
func (s *Sink) Send(ctx context.Context, e event.Event) error {
	e = e.Clone()
	for k, v := range s.Overrides {
		e.SetExtension(k, v)
	}
	attempts := max(s.Attempts, 1)
	var last error
	wait := 50 * time.Millisecond
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return saga.Transient(ctx.Err(), "send %s to %s", e.Type(), s.URL)
			case <-time.After(wait):
			}
			wait *= 2
		}
		code, err := s.post(ctx, &e)
		if err == nil && code == http.StatusUnauthorized && s.Token.Reload() {
			code, err = s.post(ctx, &e) // the token was renewed since it was read
		}
		switch {
		case err == nil && code/100 == 2:
			return nil
		case err == nil && !retryable(code):
			return saga.Invalid("send %s to %s: HTTP %d", e.Type(), s.URL, code)
		case err == nil:
			last = fmt.Errorf("HTTP %d", code)
		default:
			last = err
		}
	}
	return saga.Transient(last, "send %s to %s", e.Type(), s.URL)
}

func (s *Sink) post(ctx context.Context, e *event.Event) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return 0, fmt.Errorf("encode event: %w", err)
	}
	telemetry.Inject(ctx, req.Header)
	tok, err := s.Token.Get()
	if err != nil {
		return 0, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// retryable is Knative's retry table (kncloudevents.SelectiveRetry).
func retryable(code int) bool {
	return code >= 500 || code == 404 || code == 408 || code == 409 || code == 429
}
