package ordersaga_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

var update = flag.Bool("update", false, "rewrite manifests/20-sagas.yaml from ordersaga.Saga")

const sagasManifest = "../manifests/20-sagas.yaml"

// TestSagasManifest: the ksaga-sagas ConfigMap, which configures the
// generic functions (orchestrator, deadletter, sweeper, console), declares
// exactly ordersaga.Saga. After changing the definition, run
// go test ./ordersaga -update.
func TestSagasManifest(t *testing.T) {
	if err := ordersaga.Saga.Validate(); err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent([]*saga.Definition{ordersaga.Saga}, "    ", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want := `# The saga definitions the generic functions serve (orchestrator,
# deadletter, sweeper, console read KSAGA_SAGAS through envFrom): the order
# saga, exactly as ordersaga.Saga declares it. Generated: after changing the
# definition, run go test ./ordersaga -update.
apiVersion: v1
kind: ConfigMap
metadata:
  name: ksaga-sagas
  namespace: saga
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
		t.Fatalf("%v (run go test ./ordersaga -update)", err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("%s is not ordersaga.Saga: run go test ./ordersaga -update", sagasManifest)
	}
	// and it reads back as the same definition
	i := strings.Index(want, "KSAGA_SAGAS: |\n")
	var lines []string
	for _, l := range strings.Split(want[i+len("KSAGA_SAGAS: |\n"):], "\n") {
		lines = append(lines, strings.TrimPrefix(l, "    "))
	}
	defs, err := saga.ParseDefinitions([]byte(strings.Join(lines, "\n")))
	if err != nil || len(defs) != 1 || defs[0].Name != ordersaga.Saga.Name || len(defs[0].Steps) != len(ordersaga.Saga.Steps) {
		t.Fatalf("the manifest does not read back: %v %v", defs, err)
	}
}
