// Package devbroker is the local broker data plane of "ksaga dev": a
// Knative-faithful Broker for a set of eventing.knative.dev/v1 Brokers and
// Triggers, running in one process and durable in Redis.
//
// It reuses Knative's libraries for the semantics and keeps none of the MT
// broker's HTTP topology (ingress → channel → one broker-filter POST per
// Trigger → subscriber, replies POSTed back to the ingress), which costs
// several HTTP exchanges per event and per Trigger: Knative's own ingress,
// fan-out and filter handlers, run in one process on a 2-core machine,
// spent about 220 µs of CPU per exchange and carried a 4-step saga at
// about 200 sagas/s (docs/benchmarks/README.md):
//
//	producer ──POST /<ns>/<broker>──► ServeHTTP ──XADD──► stream ksaga:broker:{<ns>/<name>}
//	                                                           │ XREADGROUP (batches)
//	                               every Trigger's filter, in process (eventfilter)
//	                                                           │ one pooled goroutine per matching delivery
//	      POST with kncloudevents' RetryConfig (retry formulas, timeout, SelectiveRetry)
//	                                                           │
//	                   2xx + CloudEvent = reply ─► MULTI: XADD reply, XACK+XDEL entry, XREADGROUP > ─ EXEC
//	                   failure ─► dead letter sink (original event + knativeerror*) or drop
//
// Reused from Knative (eventing v0.50.0): the API types; the TTL helpers
// and arrival-time key of pkg/broker; the pass-through header list of
// pkg/utils; the Subscriptions API leaf filters and the legacy attributes
// filter of pkg/eventfilter; RetryConfigFromDeliverySpec (backoff formulas,
// timeout, Retry-After cap), SelectiveRetry, the Dispatcher (for dead
// letters) and the knativeerror* transformers of pkg/kncloudevents.
//
// Deliveries to subscribers are POSTed by send.go under that RetryConfig,
// not by Dispatcher.SendEvent: its otelhttp-wrapped client cost about 50 µs
// of CPU per hop (measured), a third of this broker's cost per event. The
// retry semantics are kncloudevents' own code; the suite checks the timing.
// Plain-http subscribers are reached over the broker's own keep-alive
// connections (conn.go), one goroutine per request instead of net/http's
// three: about 20 µs less per hop; the wire format is still net/http's.
// Parsing and writing CloudEvents is sdk-go's, as in Knative.
//
// The conformance suite in this package's tests has one case per Broker
// behaviour a naive clone gets wrong: the ingress's paths, methods,
// validation, batch refusal, size limit and TTL (default 255, one less per
// pass, refused at 0, stripped before the subscriber); filter semantics
// (filters over filter, legacy "" as present and non-empty, a miss is a
// silent 200); retries of 5xx, 404, 408, 409, 429 and transport errors with
// 0-based backoff; a 2xx with a non-CloudEvent body retried as a 502, a
// CloudEvent body published back as a reply; dead letters with
// knativeerrordest/code/data; and the subscriber's headers (Prefer: reply,
// Kn-Namespace, binary mode, forwarded trace headers).
//
// Sender identity (Config.Auth, see Auth): when set, the ingress
// authenticates and authorizes each sender after parsing the event and
// finding the Broker, as Knative's ingress does (401/403, nothing stored),
// a Trigger's reply is authorized as the Trigger's, and every delivery to a
// destination with an audience carries the Trigger's token.
//
// # Where this broker differs from a cluster broker, and why
//
// Acknowledgement (checklist item 3). The ingress answers 202 once the
// event is stored in Redis (XADD acknowledged), like the Kafka broker
// answers once the record is produced, not like InMemoryChannel, whose 202
// waits for the whole fan-out and reply chain and which answers 500 when a
// Trigger fails without a dead letter sink. Delivery is asynchronous and
// at-least-once; a producer never sees a subscriber's failure. "Stored"
// means what Redis promises: without appendonly the data survives a
// restart of this process but not of redis-server.
//
// Redis failure at ingress → 503 (retryable for every sender), where the
// Kafka broker also answers 503.
//
// Body size. Knative's MT ingress has no limit; this ingress answers 413
// above Config.MaxBodyBytes (default 4 MiB, checked before and while
// reading the body). A reply larger than the limit is rejected like one
// that fails validation (dead letter code 413).
//
// Hostile input. sdk-go has panicked on some malformed requests (a header
// named "CE-", an invalid data_base64); a panic while parsing is a 400.
//
// Redelivery. Stream entries are acknowledged and deleted (XACK+XDEL) only
// when every delivery of the entry has finished: delivered, dead-lettered
// or dropped. Run redelivers the pending entries of its consumer name
// (Config.Consumer) when it starts, so events accepted before a crash or a
// shutdown are delivered by the next Run. While it runs it also claims
// back (XCLAIM) pending entries that no delivery of its own holds once
// they have been idle longer than the longest delivery their Broker's
// Triggers can make: reads whose reply was lost when redis-server died
// after executing them (reclaim.go has the rule). Pending entries of other
// consumer names are not claimed: two dev brokers must not share a Redis
// database with the same broker names. A reply is stored in the same
// MULTI/EXEC that acknowledges the delivered entry, so a crash cannot lose
// the reply or deliver it twice; if the write fails it is retried, and at
// shutdown the entry stays pending and the delivery is repeated (a
// duplicate, never a loss). For an entry matched by several Triggers,
// each finished Trigger is recorded in a Redis set in the same MULTI as
// its reply, so a restart redelivers only to the Triggers that had not
// finished. Filter misses are acknowledged in batches.
//
// Ordering. None, like the Kafka broker's default "unordered" Triggers and
// InMemoryChannel: entries are delivered concurrently (Config.MaxInFlight).
//
// Filtering. Every Trigger is evaluated in process against every event,
// once, with Knative's precedence (spec.filters replaces spec.filter;
// legacy "" = present and non-empty; a filter miss is silent). The
// knativebrokerttl extension is removed before filtering, as broker-filter
// does. Knative's all/any filters reorder their operands by hit rate in a
// goroutine that races with evaluation (eventing v0.50.0, caught by the
// race detector); the broker uses its own all/any with the same results
// and no goroutine. A "not" whose operand fails to materialise is NoFilter
// (Knative gives the same result but its Cleanup would dereference nil).
// A CESQL expression that panics sdk-go's parser makes New fail; Knative's
// webhook rejects such a Trigger. One that parses but does not evaluate to
// a boolean ("cesql: type") panics Knative's filter at the first event: in
// a cluster that ends one broker-filter request (retried, then
// dead-lettered), here the event does not match that Trigger and the
// broker logs the failure at error level.
//
// Extension values. Every extension is stored in its canonical string
// form. In a cluster the ingress → channel → filter hops are binary-mode
// HTTP, which turns e.g. a structured-mode integer 5 into "5" before the
// filter sees it; the broker does the same at ingress so that
// filter.attributes {x: "5"} matches as it does in a cluster. The stored
// event keeps data_base64, which a binary hop would lose (sdk-go then
// writes non-JSON data as a lossy JSON string in structured delivery).
//
// Replies. A 2xx response with a CloudEvent (even 202) is a reply; it is
// not POSTed to the ingress but published back to the same broker stream
// after the ingress rules (TTL put back and decremented, ≤ 0 rejected,
// event.Validate, new knativearrivaltime, size limit). A rejected reply
// sends the original event to the dead letter sink with knativeerrordest =
// the broker ingress URL (Config.IngressURL), code 400 (or 413) and
// knativeerrordata = base64 of the reason; in a cluster the data would be
// the ingress's empty response body. A 2xx with a non-empty body that is
// not a CloudEvent, or an unparsable one, becomes a 502 inside the retry
// decision (a wrapped kncloudevents CheckRetry), so kncloudevents retries
// it and the dead letter code is 502, as with broker-filter; the
// knativeerrordata is the subscriber's body, where broker-filter's 502 has
// an empty one.
//
// Dead letters. The broker sends to the dead letter sink itself, with a
// second Dispatcher.SendEvent carrying Knative's KnativeErrorTransformers
// (knativeerrordest/code/data, data = base64 of the response body cut to
// 1024 characters), instead of SendEvent's WithDeadLetterSink: with that
// option a dead-lettered delivery returns the sink's response and no
// error, indistinguishable from a delivery, a sink that answers with an
// event would be taken for a reply, and the sink would inherit the
// 502-rewriting retry check. As in a cluster, the dead letter event keeps
// knativebrokerttl and knativearrivaltime, and the sink gets the same
// retry policy. Without a dead letter sink, or when it fails too, the
// event is dropped, logged at error level with the Trigger and code, and
// counted (Observer.Dropped).
//
// Duplicate deliveries (Config.DuplicateDeliveries, a test aid). A chosen
// rate of the matching deliveries is made twice, concurrently. Of the
// replies to the deliveries of one entry only the first with a given
// source and id is stored: a step that answers a redelivery with the same
// reply (as ksaga's steps do) would otherwise double every event after it,
// 2^n entries for a chain of n replies.
//
// Delivery format comes from the Trigger's delivery.format only, as in
// broker-filter.
//
// Headers. Subscribers get Prefer: reply, Kn-Namespace, binary mode by
// default, Knative's pass-through headers of the producer's request
// (x-request-id, knative-*, x-b3-*, retry-after) and its W3C trace context
// (traceparent, tracestate, baggage), which the broker stores with the
// entry; in a cluster otelhttp would re-inject the trace context of its own
// spans at each hop. A reply carries the pass-through and trace headers of
// the subscriber's response; without trace headers in the response it
// keeps the trace context of the event it answers.
//
// Placement. With Config.Endpoint, each attempt to an http subscriber asks
// where to connect (ksaga dev: a replica of the Knative Service, chosen and
// possibly held by its activator stand-in). The attempt's timeout starts
// once the endpoint is known, so a hold (a service starting from zero) is
// not a failed attempt; in a cluster the activator's hold counts in the
// Trigger's timeout. An endpoint that cannot be had fails the attempt like
// the activator's 503.
//
// Not implemented: OIDC sender identity and EventPolicy (no 401/403),
// transport encryption settings, EventType auto-creation, the "broker not
// ready" 500 (every configured broker is ready), runtime changes of
// Brokers and Triggers (restart with a new configuration).
//
// Observability. With Config.TracerProvider each delivery is a client span,
// child of the entry's trace context, whose context the subscriber gets.
// Without it nothing is traced and the stored trace headers are forwarded
// as they are. The otel globals are never used: their delegating
// implementation costs about a tenth of the broker's CPU per delivery when
// nothing is installed. Counters go to Config.Observer.
//
// Process-wide settings. New calls kncloudevents.ConfigureConnectionArgs
// with large idle-connection limits (the default of 2 per host exhausts
// ports under load) and sets SYSTEM_NAMESPACE=knative-eventing if unset;
// both are idempotent and are the only globals the package touches.
//
// # Performance notes
//
// The hot path avoids per-event work that does not depend on the event:
// filters and delivery options are built once per Trigger; stream entries
// are read 256 at a time; deliveries run on reused goroutines; replies,
// acknowledgements and the read of new entries share one MULTI/EXEC, and
// the writes of concurrent deliveries (and of concurrent ingress requests)
// are group-committed into one round trip; an event is encoded once per
// delivery, whatever the retries. Most of the remaining cost per hop is
// net/http and sdk-go's encoding and decoding.
package devbroker
