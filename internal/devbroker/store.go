package devbroker

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	cetypes "github.com/cloudevents/sdk-go/v2/types"
	"k8s.io/apimachinery/pkg/types"

	knbroker "knative.dev/eventing/pkg/broker"
	"knative.dev/eventing/pkg/kncloudevents/attributes"
	"knative.dev/eventing/pkg/utils"
)

// Redis layout (all keys of a broker share the hash tag {<ns>/<name>}, so a
// MULTI touching them is valid on Redis Cluster too):
//
//	ksaga:broker:{<ns>/<name>}             stream; consumer group "ksaga-devbroker"
//	    entry fields, like a binary-mode HTTP message:
//	        <attribute>     one field per CloudEvents context attribute
//	                        (specversion, id, source, type, subject, time, …),
//	                        in its canonical string form
//	        x:<extension>   one field per extension (always a string, see admit)
//	        data            the event data, raw bytes (absent without data)
//	        data_base64     "1" if the event carried data_base64 (structured mode)
//	        h:<Header-Name> a stored HTTP header (values joined by ", ")
//	ksaga:broker:{<ns>/<name>}:done:<id>   set of trigger names that finished
//	                                       entry <id>; only for entries matched
//	                                       by more than one trigger, deleted
//	                                       together with the entry
//
// Fields instead of one JSON document: decoding JSON was the largest cost
// of reading an entry, and the fields are readable with redis-cli XRANGE.
const (
	keyPrefix       = "ksaga:broker:"
	fieldSpec       = "specversion"
	fieldData       = "data"
	fieldDataBase64 = "data_base64"
	extensionField  = "x:"
	headerField     = "h:"
	doneKeyMiddle   = ":done:"
)

// traceHeaders are the W3C trace-context headers kept with an entry, in
// addition to Knative's pass-through headers (x-request-id, knative-*,
// x-b3-*, retry-after).
var traceHeaders = [...]string{"Traceparent", "Tracestate", "Baggage"}

// noTTL marks an entry whose event carried no usable knativebrokerttl.
const noTTL = int32(-1)

func streamKey(nn types.NamespacedName) string {
	return keyPrefix + "{" + nn.Namespace + "/" + nn.Name + "}"
}

func doneKey(streamKey, id string) string { return streamKey + doneKeyMiddle + id }

// storedHeaders picks the headers to keep with an entry from an incoming
// request (or a subscriber's response): Knative's PassThroughHeaders plus
// W3C trace context.
func storedHeaders(h http.Header) http.Header {
	out := utils.PassThroughHeaders(h)
	for _, k := range traceHeaders {
		if v, ok := h[k]; ok {
			out[k] = v
		}
	}
	return out
}

func hasTraceHeaders(h http.Header) bool {
	for _, k := range traceHeaders {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// encodeEntry builds the XADD field list of an entry.
func encodeEntry(ev *event.Event, h http.Header) ([]any, error) {
	sv := spec.VS.Version(ev.SpecVersion())
	if sv == nil {
		return nil, fmt.Errorf("encode event: unknown specversion %q", ev.SpecVersion())
	}
	exts := ev.Extensions()
	vals := make([]any, 0, 2*(len(sv.Attributes())+len(exts)+len(h)+2))
	for _, a := range sv.Attributes() {
		v := a.Get(ev.Context)
		if v == nil {
			continue
		}
		str, err := cetypes.Format(v)
		if err != nil {
			return nil, fmt.Errorf("encode event: %s: %w", a.Name(), err)
		}
		vals = append(vals, a.Name(), str)
	}
	for k, v := range exts {
		str, err := cetypes.Format(v)
		if err != nil {
			return nil, fmt.Errorf("encode event: extension %s: %w", k, err)
		}
		vals = append(vals, extensionField+k, str)
	}
	if ev.DataEncoded != nil {
		vals = append(vals, fieldData, ev.DataEncoded)
		if ev.DataBase64 {
			vals = append(vals, fieldDataBase64, "1")
		}
	}
	for k, v := range h {
		if len(v) == 0 {
			continue
		}
		vals = append(vals, headerField+k, strings.Join(v, ", "))
	}
	return vals, nil
}

// decodeEntry parses a stream entry back into its event and headers.
func decodeEntry(vals map[string]any) (*event.Event, http.Header, error) {
	specVersion, _ := vals[fieldSpec].(string)
	sv := spec.VS.Version(specVersion)
	if sv == nil {
		return nil, nil, fmt.Errorf("decode event: unknown specversion %q", specVersion)
	}
	ev := &event.Event{Context: sv.NewContext()}
	var h http.Header
	for k, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		switch {
		case k == fieldSpec:
		case k == fieldData:
			ev.DataEncoded = []byte(str)
		case k == fieldDataBase64:
			ev.DataBase64 = true
		case strings.HasPrefix(k, extensionField):
			if err := ev.Context.SetExtension(k[len(extensionField):], str); err != nil {
				return nil, nil, fmt.Errorf("decode event: %w", err)
			}
		case strings.HasPrefix(k, headerField):
			if h == nil {
				h = make(http.Header, 4)
			}
			h[k[len(headerField):]] = []string{str}
		default:
			a := sv.Attribute(k)
			if a == nil {
				return nil, nil, fmt.Errorf("decode event: unknown field %q", k)
			}
			if err := a.Set(ev.Context, str); err != nil {
				return nil, nil, fmt.Errorf("decode event: %w", err)
			}
		}
	}
	return ev, h, nil
}

// admit applies the broker ingress rules to an event that is about to be
// stored (from a producer, or a reply) and that the caller has validated
// (event.Validate → 400 comes first in Knative's ingress): stamp
// knativearrivaltime, default/decrement knativebrokerttl (missing → 255,
// present → −1), reject TTL ≤ 0 (400). Finally every extension is turned
// into its canonical string form, which is what a binary-mode HTTP hop does
// to it in a cluster (ingress → channel → filter), so filters see the same
// values they would see in Knative.
func (b *Broker) admit(ev *event.Event) (int, error) {
	// Knative sets a Timestamp; its canonical string form is stored directly.
	now, _ := cetypes.Format(cetypes.Timestamp{Time: time.Now()})
	if err := ev.Context.SetExtension(knbroker.EventArrivalTime, now); err != nil {
		return http.StatusBadRequest, fmt.Errorf("set %s: %w", knbroker.EventArrivalTime, err)
	}
	*ev = b.ttl(context.Background(), *ev)
	if ttl, err := knbroker.GetTTL(ev.Context); err != nil || ttl <= 0 {
		return http.StatusBadRequest, fmt.Errorf("event dropped: %s is %v (loop?)", knbroker.TTLAttribute, ev.Extensions()[knbroker.TTLAttribute])
	}
	for k, v := range ev.Extensions() {
		if _, ok := v.(string); ok {
			continue
		}
		s, err := cetypes.Format(v)
		if err != nil {
			return http.StatusBadRequest, fmt.Errorf("extension %s: %w", k, err)
		}
		if err := ev.Context.SetExtension(k, s); err != nil {
			return http.StatusBadRequest, fmt.Errorf("extension %s: %w", k, err)
		}
	}
	return 0, nil
}

// errorData is knativeerrordata: base64 (standard encoding) of body,
// truncated to 1024 characters like Knative's dispatcher does (encoding the
// first 768 bytes gives exactly those characters).
func errorData(body []byte) string {
	const maxRaw = attributes.KnativeErrorDataExtensionMaxLength / 4 * 3
	if len(body) > maxRaw {
		body = body[:maxRaw]
	}
	return base64.StdEncoding.EncodeToString(body)
}
