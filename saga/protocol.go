package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// CloudEvents extension attributes of the saga protocol (docs/protocol.md).
const (
	// ExtCorrelationID carries the saga id (CloudEvents correlation extension).
	ExtCorrelationID = "correlationid"
	// ExtCausationID carries the id of the event that caused this one.
	ExtCausationID = "causationid"
	// ExtSagaVersion carries the saga's version after the transition that
	// emitted the event; the next step applies its transition only at that
	// version (compare-and-set across steps).
	ExtSagaVersion = "sagaversion"
)

// TypePrefix prefixes every event type of ksaga's own catalogue.
const TypePrefix = "io.ksaga."

// replyNamespace scopes deterministic reply ids.
var replyNamespace = uuid.MustParse("6f1c2a52-7b1e-4c0e-9a55-3a0b8f3e2d11")

// ReplyID is the id of the reply of type replyType to the event (source, id):
// a UUIDv5, so every redelivery of that event gets a reply with the same id.
func ReplyID(source, id, replyType string) string {
	return uuid.NewSHA1(replyNamespace, []byte(source+"\n"+id+"\n"+replyType)).String()
}

// SagaIDOf returns the event's correlationid extension, or "".
func SagaIDOf(e event.Event) string {
	v, _ := e.Extensions()[ExtCorrelationID].(string)
	return v
}

// SagaVersionOf returns the event's sagaversion extension (0 if absent).
// A present but malformed value is an Invalid error.
func SagaVersionOf(e event.Event) (int64, error) {
	if _, ok := e.Extensions()[ExtSagaVersion]; !ok {
		return 0, nil
	}
	return RequireVersion(e)
}

// RequireVersion returns the event's sagaversion extension, a positive
// integer; missing or malformed is an Invalid error. Every saga event after
// a saga's start carries it.
func RequireVersion(e event.Event) (int64, error) {
	raw, ok := e.Extensions()[ExtSagaVersion]
	if !ok {
		return 0, Invalid("event has no %s extension: every saga event after the start carries the version it was emitted at", ExtSagaVersion)
	}
	var s string
	switch v := raw.(type) {
	case string:
		s = v
	case int32: // a JSON number in structured mode
		if v <= 0 {
			return 0, Invalid("extension %s: %d is not a version", ExtSagaVersion, v)
		}
		return int64(v), nil
	default:
		return 0, Invalid("extension %s: unexpected type %T", ExtSagaVersion, raw)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, Invalid("extension %s: %q is not a version", ExtSagaVersion, s)
	}
	return n, nil
}

// idNamespace scopes saga ids derived from events.
var idNamespace = uuid.MustParse("0b6e3c8e-2f4a-5d7b-9c1e-7a2d4f6b8e10")

// IDFromEvent is the id of a saga started by a command without a
// correlationid: a UUIDv5 of the command's source and id, so a redelivery
// of the command reaches the same saga and is deduplicated.
func IDFromEvent(source, id string) string {
	return uuid.NewSHA1(idNamespace, []byte(source+"\n"+id)).String()
}

// decodeStrict unmarshals JSON data into v: unknown fields and trailing
// data are errors.
func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("no data")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// SameJSON reports whether a and b are the same JSON value (whitespace,
// member order and number spelling aside).
func SameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil || da.More() || db.More() {
		return false
	}
	return reflect.DeepEqual(normNumbers(x), normNumbers(y))
}

// normNumbers rewrites json.Numbers to a canonical text, so 1.0 and 1 are
// the same number.
func normNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, ok := new(big.Int).SetString(t.String(), 10); ok {
			return i.String()
		}
		if f, err := t.Float64(); err == nil {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		return t.String()
	case map[string]any:
		for k, e := range t {
			t[k] = normNumbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = normNumbers(e)
		}
	}
	return v
}

// mergeReason returns JSON object data with "reason" set, deterministically:
// added as the first member, or replacing one the data already has (then
// members are re-encoded in sorted order). Other data is returned unchanged.
func mergeReason(data []byte, reason string) []byte {
	trimmed := bytes.TrimSpace(data)
	if reason == "" || len(trimmed) < 2 || trimmed[0] != '{' {
		return data
	}
	r, _ := json.Marshal(reason)
	if bytes.Contains(trimmed, []byte(`"reason"`)) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return data
		}
		m["reason"] = r
		out, err := json.Marshal(m)
		if err != nil {
			return data
		}
		return out
	}
	out := make([]byte, 0, len(trimmed)+len(r)+12)
	out = append(out, `{"reason":`...)
	out = append(out, r...)
	rest := bytes.TrimSpace(trimmed[1:])
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}
