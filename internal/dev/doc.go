// Package dev runs a project's Knative manifests on one machine, without a
// cluster: it is the library behind `ksaga dev` and `ksaga validate`.
//
// Run loads Brokers, Triggers, Knative Services, SinkBindings, ConfigMaps and
// Secrets with internal/manifest (Knative's own types, defaulting and
// validation), builds every Knative Service whose image is
// ko://<import path> with `go build`, runs each as supervised child
// processes (its replicas, scaled by internal/devscale as Knative's
// autoscaler would) with the environment Knative Serving would give it,
// serves everything on one loopback port like a cluster's ingress, and runs
// the Brokers on the local data plane of internal/devbroker against Redis (a
// real server, or an embedded miniredis). GET / on the ingress lists
// everything; GET /.ksaga/services gives the services and their replicas as
// JSON; POST /.ksaga/pingsources/<ns>/<name> fires a PingSource now (a
// development aid with no equivalent in a cluster: tests and demos need not
// wait for its schedule).
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
//   - Ports. Every replica of a function runs on its own free loopback port
//     (PORT and LISTEN_ADDRESS=127.0.0.1:<port>), because all processes
//     share one network namespace; Knative gives each pod PORT=<containerPort>
//     (8080) and the server binds all interfaces.
//   - Scale. Each Knative Service runs as Knative's autoscaler would run it
//     (internal/devscale): its initial scale at start; scale to zero once it
//     has been idle for the stable window and the
//     scale-to-zero-pod-retention-period (the replica leaves the routing,
//     drains, then gets SIGTERM); activation when a request or a delivery
//     reaches it at zero (held, as by the activator, while a process
//     starts); more replicas when the concurrency or rps it gets goes above
//     its target; containerConcurrency as a hard limit of requests in
//     flight per replica. The decisions are Knative's own code (the metric
//     collector, the decider, the KPA's scale-to-zero rules), from the
//     template's autoscaling.knative.dev annotations and the manifests'
//     knative-serving/config-autoscaler (Knative's defaults without one).
//     --scale=always-on keeps exactly one process per Service instead, with
//     no limit (the old behaviour, for benchmarks). Where it differs from
//     a cluster:
//     the activator is always in the request path (as with
//     target-burst-capacity -1), so the concurrency is measured there and
//     scale-to-zero-grace-period only counts from ksaga dev's start;
//     routing changes at once; a replica is ready when its GET /readyz
//     first answers 200 (probed from 1 ms, doubling to 25 ms), where
//     queue-proxy probes the container's readiness probe; the decider runs
//     every 2 s (Knative's tick) and stats are reported every second, but
//     a request to a service at zero runs it at once, as the activator's
//     first stat does; a request held longer than the revision's
//     timeoutSeconds, or beyond 10,000 held requests, is answered 503; a
//     delivery held is not a failed attempt (the Trigger's timeout starts
//     when a replica takes it, where the activator's hold counts in it); a
//     replica scaled down may drain for timeoutSeconds; the HPA class is
//     not scaled on CPU (its initial replicas stay); max-scale 0 is
//     unbounded, as in Knative, whatever this machine can take.
//     --scale-window shortens every stable window (below Knative's minimum
//     of 6 s if asked) and caps the retention, grace period and scale-down
//     delay, for demos and tests. A crashed process is restarted with
//     exponential backoff (100ms doubling to 10s, reset after 30s up), where
//     Kubernetes would use CrashLoopBackOff (10s doubling to 5m).
//   - Probes. A replica takes requests once GET /readyz answers 200, and
//     start-up waits for every Service's initial scale; the manifests'
//     readiness and liveness probes are not run after that.
//   - Ingress limits. A request's headers must arrive within 10 s
//     (ReadHeaderTimeout) and its body within 10 s of them (BodyTimeout,
//     else 408 and the connection closed), so slow clients cannot hold
//     connections; gRPC and Connect streams (content-type application/grpc*
//     or application/connect+*) are exempt, their bodies last as long as the
//     call. Responses have no time limit (streams, server-sent events). An
//     idle keep-alive connection is closed after 120 s. Knative's ingress
//     and activator have no body deadline; the revision's timeoutSeconds
//     bounds a request there.
//   - Streams. The ingress proxies HTTP/2 cleartext to a port named h2c;
//     when a function ends a stream before the client has finished sending
//     (a gRPC server ending a bidi stream, an error answered early), the
//     rest of the client's body is no longer read, so the stream ends at
//     once.
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
//     functions and their routes still run, and still scale: a delivery to
//     a Service at zero starts it), then the ingress stops, then the
//     autoscalers, then every replica gets SIGTERM and, after
//     ShutdownTimeout (10s), SIGKILL. Knative would give each pod
//     terminationGracePeriodSeconds = timeoutSeconds. Accepted but
//     undelivered events stay in Redis for the next start.
package dev
