// Package devscale is Knative Serving's autoscaling for `ksaga dev`: how many
// processes each Knative Service runs, and the path every request to it
// takes.
//
// In a cluster, the activator holds requests to a revision at zero and
// reports concurrency to the autoscaler, each pod's queue-proxy enforces
// containerConcurrency, the autoscaler's decider turns the stable and panic
// window averages into a desired scale, and the KPA reconciler applies it
// within the scale bounds, scaling to zero only after the revision has been
// inactive long enough. Here:
//
//   - Pool is the activator and the queue-proxies of one service: every
//     request (from ksaga dev's ingress or its broker) takes a slot on the
//     least loaded ready replica below containerConcurrency, or is held in a
//     FIFO queue until one is free or starts; it counts concurrency and
//     requests as the activator's ConcurrencyReporter does, with
//     knative.dev/networking's RequestStats.
//   - Autoscaler feeds those stats to Knative's MetricCollector
//     (pkg/autoscaler/metrics) and runs Knative's decider
//     (pkg/autoscaler/scaling: target, panic mode, scale-up and scale-down
//     rates, scale-down delay, activation-scale) every 2 s, and at once for
//     the first request to a service at zero. The desired scale goes through
//     the KPA reconciler's rules (scale bounds, initial scale, scale to zero
//     after the stable window and the retention, activation timeout),
//     ported from pkg/reconciler/autoscaling/kpa with the PodAutoscaler's
//     own status methods; then the Target (ksaga dev's processes) gets the
//     new replica count.
//   - Settings come from the Service's revision template and the
//     config-autoscaler ConfigMap through Knative's own code: its config
//     parser and validation, the PodAutoscaler's annotation accessors,
//     MakeDecider, MakeMetric and GetInitialScale.
//
// The activator is always in the path (as with target-burst-capacity -1):
// no stats are scraped from replicas, and the grace period counts from the
// start. An Override shortens the windows for demos and tests.
package devscale
