package saga

import (
	"encoding/json"
	"testing"
)

func TestMergeReason(t *testing.T) {
	tests := []struct{ data, reason, want string }{
		{`{"a":1}`, "no money", `{"reason":"no money","a":1}`},
		{`{}`, "x", `{"reason":"x"}`},
		{` { "a" : 1 } `, "x", `{"reason":"x","a" : 1 }`},
		{`{"reason":"old","a":1}`, "new", `{"a":1,"reason":"new"}`},
		{`{"a":1}`, "", `{"a":1}`},
		{`[1,2]`, "x", `[1,2]`},
		{`"text"`, "x", `"text"`},
	}
	for _, tt := range tests {
		got := string(mergeReason([]byte(tt.data), tt.reason))
		if got != tt.want {
			t.Errorf("mergeReason(%s, %q) = %s, want %s", tt.data, tt.reason, got, tt.want)
		}
		if json.Valid([]byte(tt.data)) && !json.Valid([]byte(got)) {
			t.Errorf("mergeReason(%s) produced invalid JSON %s", tt.data, got)
		}
		var m map[string]any
		if json.Unmarshal([]byte(got), &m) == nil && tt.reason != "" && m["reason"] != tt.reason {
			t.Errorf("reason %v", m["reason"])
		}
	}
}

func TestReplyIDIsDeterministic(t *testing.T) {
	a := ReplyID("/s", "1", "t")
	if a != ReplyID("/s", "1", "t") || a == ReplyID("/s", "2", "t") || a == ReplyID("/s", "1", "u") || a == ReplyID("/s2", "1", "t") {
		t.Fatal("ReplyID must depend on source, id and type only")
	}
}

func TestSagaVersionOf(t *testing.T) {
	e := newEvent()
	if v, err := SagaVersionOf(e); v != 0 || err != nil {
		t.Fatalf("absent: %d %v", v, err)
	}
	e.SetExtension(ExtSagaVersion, "12")
	if v, err := SagaVersionOf(e); v != 12 || err != nil {
		t.Fatalf("12: %d %v", v, err)
	}
	e.SetExtension(ExtSagaVersion, "x")
	if _, err := SagaVersionOf(e); Code(err) != EInvalid {
		t.Fatalf("bad version: %v", err)
	}
	// Structured mode: a JSON number arrives as int32.
	e.SetExtension(ExtSagaVersion, int32(7))
	if v, err := SagaVersionOf(e); v != 7 || err != nil {
		t.Fatalf("int32 7: %d %v", v, err)
	}
	e.SetExtension(ExtSagaVersion, int32(-1)) // would mean "any version" to the store
	if _, err := SagaVersionOf(e); Code(err) != EInvalid {
		t.Fatalf("int32 -1: %v, want invalid", err)
	}
}
