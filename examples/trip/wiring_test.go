package trip_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ksaga/ksaga/examples/trip"
)

// object is what this test reads of a manifest.
type object struct {
	Kind     string
	Metadata struct {
		Name, Namespace string
		Annotations     map[string]string
	}
	Spec struct {
		Broker string
		Filter struct {
			Attributes map[string]string
		}
		Subscriber struct{ Ref struct{ Name string } }
		Delivery   struct {
			Retry          int
			DeadLetterSink struct{ Ref struct{ Name string } }
		}
	}
}

func objects(t *testing.T, dir string) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: %v %v", dir, files, err)
	}
	var out []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---\n") {
			var o object
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, o)
		}
	}
	return out
}

// TestTriggersFollowTheDefinition: the Triggers of each mode are exactly
// what trip.Saga routes — in choreography each step hears the events its
// Definition runs it on, in orchestration each step hears its commands and
// the orchestrator every result — one Trigger per subscription, each
// retried and then dead-lettered. A Trigger missing here would only show
// at run time, as trips waiting until their deadline.
func TestTriggersFollowTheDefinition(t *testing.T) {
	d := trip.Saga
	want := map[string]map[string]string{"choreography": {}, "orchestration": {}} // mode: type → subscriber
	for _, typ := range d.Commands() {
		r, _ := d.Route(typ)
		want["orchestration"][typ] = d.StepDef(r).Name
	}
	want["choreography"][d.Steps[0].Command] = d.Steps[0].Name
	for _, typ := range d.Results() {
		if r, ok := d.Route(typ); ok {
			want["choreography"][typ] = d.StepDef(r).Name
		}
		want["orchestration"][typ] = "orchestrator"
	}
	for mode, subs := range want {
		got := map[string]string{}
		for _, o := range objects(t, filepath.Join("triggers", mode)) {
			typ := o.Spec.Filter.Attributes["type"]
			if o.Kind != "Trigger" || o.Metadata.Namespace != "trip" || o.Spec.Broker != "default" || len(o.Spec.Filter.Attributes) != 1 ||
				o.Spec.Delivery.Retry < 1 || o.Spec.Delivery.DeadLetterSink.Ref.Name != "deadletter" {
				t.Errorf("%s: %s %s: want a Trigger of trip/default on one type, retried, then dead-lettered", mode, o.Kind, o.Metadata.Name)
			}
			if _, dup := got[typ]; dup {
				t.Errorf("%s: two Triggers on %s", mode, typ)
			}
			got[typ] = o.Spec.Subscriber.Ref.Name
		}
		if !reflect.DeepEqual(got, subs) {
			t.Errorf("%s Triggers (type → subscriber):\n%v\nwant\n%v", mode, got, subs)
		}
	}
}

// TestEmitsFollowTheDefinition: each Knative Service's ksaga.io/emits
// annotation (what ksaga validate checks Trigger filters and the Broker's
// EventPolicies against) lists what it emits: a step its results, the
// orchestrator the commands it sends, the functions that publish a saga's
// events again every type (sweeper and console, which may re-send a start)
// or every type but the start (deadletter: a dead-lettered start fails its
// trip or is kept, never sent again).
func TestEmitsFollowTheDefinition(t *testing.T) {
	d := trip.Saga
	notStart := func(c string) bool { return c == d.Steps[0].Command }
	sent := slices.DeleteFunc(d.Commands(), notStart) // a client sends the first
	want := map[string][]string{"orchestrator": sent, "deadletter": slices.DeleteFunc(d.Types(), notStart), "sweeper": d.Types(), "console": d.Types()}
	for _, s := range d.Steps {
		want[s.Name] = append(want[s.Name], s.Succeeded, s.Failed)
		if s.Compensable() {
			want[s.Name] = append(want[s.Name], s.Compensated)
		}
	}
	got := map[string][]string{}
	for _, o := range objects(t, "manifests") {
		if o.Kind == "Service" {
			got[o.Metadata.Name] = strings.Split(o.Metadata.Annotations["ksaga.io/emits"], ",")
		}
	}
	for _, m := range []map[string][]string{got, want} {
		for _, v := range m {
			slices.Sort(v)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("emits:\n%v\nwant\n%v", got, want)
	}
}
