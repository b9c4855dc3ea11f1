package trip_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/saga"
)

var update = flag.Bool("update", false, "rewrite manifests/20-sagas.yaml from trip.Saga")

const sagasManifest = "manifests/20-sagas.yaml"

// TestSagasManifest: the ksaga-sagas ConfigMap, which configures the
// generic functions (orchestrator, deadletter, sweeper, console), declares
// exactly trip.Saga. After changing the definition, run
// go test ./examples/trip -run Manifest -update.
func TestSagasManifest(t *testing.T) {
	js, err := json.MarshalIndent([]*saga.Definition{trip.Saga}, "    ", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want := `# The saga definitions the generic functions serve (orchestrator,
# deadletter, sweeper, console read KSAGA_SAGAS through envFrom): the trip
# saga, exactly as trip.Saga declares it. Generated: after changing the
# definition, run go test ./examples/trip -run Manifest -update.
apiVersion: v1
kind: ConfigMap
metadata:
  name: ksaga-sagas
  namespace: trip
data:
  KSAGA_SAGAS: |
    ` + string(js) + "\n"
	if *update {
		if err := os.WriteFile(sagasManifest, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(sagasManifest)
	if err != nil {
		t.Fatalf("%v (run go test ./examples/trip -run Manifest -update)", err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("%s is not trip.Saga: run go test ./examples/trip -run Manifest -update", sagasManifest)
	}
	// and it reads back as the same, valid definition
	_, block, _ := strings.Cut(string(got), "KSAGA_SAGAS: |\n")
	defs, err := saga.ParseDefinitions([]byte(strings.ReplaceAll(block, "\n    ", "\n")))
	if err != nil || len(defs) != 1 {
		t.Fatalf("the manifest does not read back: %v %v", defs, err)
	}
	if back, _ := json.Marshal(defs[0]); !bytes.Equal(back, mustJSON(t, trip.Saga)) {
		t.Fatalf("the manifest reads back as %s", back)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
