package dev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/internal/manifest"
)

// TestSagaWiring: `ksaga validate` fails when the Triggers leave an event
// of a saga definition undelivered in both modes, and names the events.
func TestSagaWiring(t *testing.T) {
	for _, tc := range []struct {
		mode, remove string
		want         []string // in the message
	}{
		{"choreography", "02-inventory-on-payment-authorized.yaml", []string{`saga "order"`, "wire choreography", "delivers io.ksaga.payment.authorized:"}},
		{"choreography", "10-payment-on-inventory-released.yaml", []string{"wire choreography", "delivers io.ksaga.inventory.released:"}},
		{"orchestration", "03-inventory-on-reserve.yaml", []string{"wire orchestration", "delivers io.ksaga.inventory.reserve:"}},
		{"orchestration", "14-orchestrator-on-inventory-failed.yaml", []string{"wire orchestration", "delivers io.ksaga.inventory.failed:"}},
	} {
		t.Run(tc.mode+"/"+tc.remove, func(t *testing.T) {
			dir := copyProject(t)
			paths := []string{filepath.Join(dir, BrokersDir, "mt-channel"), filepath.Join(dir, TriggersDir, tc.mode), filepath.Join(dir, ManifestsDir)}
			r, err := Validate("", paths)
			if err != nil {
				t.Fatal(err)
			}
			if n := r.Errors(); n != 0 {
				t.Fatalf("the shipped %s wiring: %d errors: %v", tc.mode, n, r.Problems)
			}
			if err := os.Remove(filepath.Join(dir, TriggersDir, tc.mode, tc.remove)); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, TriggersDir, tc.mode, "kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
			if r, err = Validate("", paths); err != nil {
				t.Fatal(err)
			}
			var msgs []string
			for _, p := range r.Problems.Errors() {
				if p.Code == manifest.CodeSagaWiring {
					msgs = append(msgs, p.Message)
				}
			}
			if len(msgs) != 1 {
				t.Fatalf("saga-wiring errors: %q (all: %v)", msgs, r.Problems)
			}
			for _, w := range tc.want {
				if !strings.Contains(msgs[0], w) {
					t.Errorf("%q lacks %q", msgs[0], w)
				}
			}
		})
	}
}
