// Package dev runs a project's Knative manifests on one machine, without a
// cluster: it is the library behind `ksaga dev` and `ksaga validate`.
//
// Run loads Brokers, Triggers, Knative Services, SinkBindings, ConfigMaps and
// Secrets with internal/manifest (Knative's own types, defaulting and
// validation), builds every Knative Service whose image is
// ko://<import path> with `go build`, runs each as a supervised child process
// with the environment Knative Serving would give it, serves everything on
// one loopback port like a cluster's ingress, and runs the Brokers on the
// local data plane of internal/devbroker against Redis (a real server, or an
// embedded miniredis).
//
// # How the local runtime differs from a cluster
//
//   - Addresses. A Knative Service is reached at
//     http://<svc>.<ns>.localhost:<port> (routed by Host, like Knative's
//     ingress; curl and browsers resolve *.localhost to loopback), a Broker
//     at http://localhost:<port>/<ns>/<broker> instead of
//     http://broker-ingress.knative-eventing.svc.cluster.local/<ns>/<broker>.
//     Env values that name a Knative Service's cluster address
//     (http://<svc>.<ns>.svc.cluster.local, <svc>.<ns>.svc, <svc>.<ns>, and
//     http://<svc> in the same namespace) or the broker ingress are rewritten
//     to these dev URLs.
//   - Ports. Every function runs on its own free loopback port (PORT and
//     LISTEN_ADDRESS=127.0.0.1:<port>), because all processes share one
//     network namespace; Knative gives each pod PORT=<containerPort> (8080)
//     and the server binds all interfaces.
//   - Scale. Exactly one process per Knative Service, always running: no
//     scale to zero, no activator buffering, no autoscaling annotations, no
//     containerConcurrency limit, no timeoutSeconds on requests. A crashed
//     process is restarted with exponential backoff (100ms doubling to 10s,
//     reset after 30s up), where Kubernetes would use CrashLoopBackOff
//     (10s doubling to 5m).
//   - Probes. Start-up waits until GET /readyz of every function answers
//     200; the manifests' readiness/liveness probes are not run after that.
//   - Environment. A function gets PORT, K_SERVICE, K_REVISION
//     (<name>-00001: there is one revision), K_CONFIGURATION, its env and
//     envFrom (ConfigMaps and Secrets of the loaded manifests; fieldRef only
//     for metadata.namespace), K_SINK and K_CE_OVERRIDES of the SinkBindings
//     whose subject it is, and then the dev overrides: REDIS_URL (the dev
//     Redis, replacing the Secret's; as the function's own user with
//     RedisACL), LISTEN_ADDRESS, KSAGA_OIDC_* and KSAGA_SINK_TOKEN_FILE
//     with OIDC, KSAGA_FAULT_INJECTION
//     with --fault-injection, OTEL_* from ksaga's own environment and
//     --env. It inherits only PATH, HOME, TMPDIR, TZ and the Go runtime
//     variables of ksaga's environment, not the rest; there are no Kubernetes
//     service-link variables, no HOSTNAME of a pod, no downward-API files.
//   - Sender identity (Config.OIDC, `--oidc`, on by default): an OIDC
//     issuer on the ingress port plays the API server's; deliveries carry
//     tokens of the Triggers' identities, SinkBinding subjects get token
//     files (KSAGA_SINK_TOKEN_FILE, where a pod has /oidc/token), functions
//     get KSAGA_OIDC_* to verify them, and the broker ingress enforces the
//     EventPolicies of policies/. A request without a token is the outside
//     producer ksaga-producer, where a cluster answers 401 (oidc.go).
//   - Redis users (Config.RedisACL, with a real Redis): one ACL user per
//     function, set up with ACL SETUSER, where a cluster's Redis loads an
//     ACL file (redisacl.go).
//   - Not applied. Resources and limits, securityContext, volumes, service
//     accounts, TLS (K_CA_CERTS), network visibility labels
//     (cluster-local Services are reachable from the host), Kubernetes
//     Deployments, StatefulSets, core Services, PrometheusRules and
//     Kustomizations (listed at start-up and skipped).
//   - Broker. Every Broker class (MTChannelBasedBroker, Kafka, RabbitMQ, ...)
//     runs on the same local data plane: events are stored in a Redis stream
//     per Broker and acknowledged with 202 once stored, like the Kafka
//     broker (the MT channel broker with InMemoryChannel is synchronous and
//     not durable). Triggers are evaluated in process with Knative's filter
//     packages and delivered with its kncloudevents dispatcher; see
//     internal/devbroker.
//   - Redis. Without --redis-url an embedded miniredis runs inside the dev
//     process: nothing survives a restart of `ksaga dev`.
//   - Shutdown. On Ctrl-C the broker ingress stops accepting events (503),
//     the Broker stops reading and drains its in-flight deliveries (the
//     functions and their routes still run, so a delivery and the calls it
//     makes can finish), then the ingress stops, then every function gets
//     SIGTERM and, after ShutdownTimeout (10s), SIGKILL. Knative would give
//     each pod terminationGracePeriodSeconds = timeoutSeconds. Accepted but
//     undelivered events stay in Redis for the next start.
package dev
