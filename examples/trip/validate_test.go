package trip_test

import (
	"bytes"
	"testing"

	"github.com/ksaga/ksaga/internal/dev"
)

// TestValidate: `ksaga validate` passes the trip's manifests in both modes,
// with its EventPolicies (policies/) and without them — with them, every
// Trigger, dead letter sink and the PingSource name their receiver's
// audience and identity it allows, every reply and every SinkBinding's send
// passes the Broker's policies: sender identity on breaks nothing.
func TestValidate(t *testing.T) {
	for _, mode := range modes {
		for _, policies := range []bool{true, false} {
			paths := []string{"broker", "triggers/" + mode, "manifests"}
			if policies {
				paths = append(paths, "policies")
			}
			r, err := dev.Validate(mode, paths)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			r.Write(&out)
			if r.Errors() > 0 || len(r.Problems.Warnings()) > 0 {
				t.Errorf("%s, policies %v:\n%s", mode, policies, out.String())
			}
		}
	}
}
