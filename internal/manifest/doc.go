// Package manifest loads the project's Kubernetes and Knative YAML with
// Knative's own Go types, and checks it the way a cluster would.
//
// Load reads files and folders like `kubectl apply -R -f`, decodes every
// document strictly into its Go type (Broker, Trigger, Knative Service,
// SinkBinding, ConfigMap, Secret, ...), then runs the admission webhooks'
// SetDefaults and Validate with the context Knative's webhooks build for a
// CREATE (feature flags, config-br-defaults, serving defaults). Objects of
// the cluster-only kinds listed in SkippedKinds are kept undecoded in
// Set.Skipped; any other kind is an error, so that a misspelt kind or API
// version cannot silently drop an object from what `ksaga dev` runs. Check adds
// the cross-object checks of `ksaga validate` (dangling references, missing
// ConfigMap keys, images `ksaga dev` cannot build). ResolveEnv and the ksvc
// helpers give `ksaga dev` what it needs to run a Knative Service locally.
//
// Every finding is a Problem that names the file and line, the object and
// the field path; Problems is the error type.
package manifest
