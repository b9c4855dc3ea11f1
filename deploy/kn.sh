#!/usr/bin/env bash
# deploy/kn.sh: deploy ksaga with the kn CLI, for users who prefer it to
# `make deploy` (kubectl apply -k). It creates the same namespace, config,
# Redis, Knative Services, Broker and Triggers as deploy/overlays/$MODE-$BROKER;
# deploy/deploy_test.go runs it with DRY_RUN=1 and compares the result with the
# overlay, so the two paths cannot drift apart.
#
# kn cannot express everything. These come from the same YAML files, applied
# with kubectl: the namespace, the ConfigMaps and Secrets (the sagas'
# definitions among them), the Redis StatefulSet and the broker's config
# objects (Kafka ConfigMap, RabbitmqCluster and RabbitmqBrokerConfig). A
# Trigger's delivery, labels and annotations, and the PingSource's label and
# its sink's audience, are set with `kubectl patch` after `kn trigger create`
# and `kn source ping create` (kn has no flags for them). The SinkBindings
# are `kn source binding create`.
#
# Re-running it updates: Services are replaced (kn service create --force),
# an existing Broker gets `kn broker update` (its class and config cannot
# change), an existing Trigger, SinkBinding or PingSource `kn ... update`.
#
# Environment:
#   MODE              choreography (default) | orchestration
#   BROKER            mt-channel (default) | kafka | rabbitmq
#   REDIS             in-cluster (default) | external: skip manifests/redis/
#                     (set REDIS_URL in manifests/10-config.yaml first)
#   OBSERVABILITY     0 (default) | 1: also apply manifests/observability
#                     (needs the Prometheus Operator CRDs)
#   DEMO              0 (default) | 1: also run the Job that loads the demo data
#                     (deploy/demo/seed-job.yaml)
#   OIDC              0 only: sender identity (deploy/components/oidc) is not
#                     scripted here; use `make deploy OIDC=1`
#   IMAGE_<FUNCTION>  the image of one function, e.g. IMAGE_PAYMENT=ghcr.io/me/payment:v1
#                     (IMAGE_ORDER_API, IMAGE_ORDER, IMAGE_PAYMENT, IMAGE_INVENTORY,
#                     IMAGE_NOTIFICATION, IMAGE_USERS, IMAGE_ORCHESTRATOR,
#                     IMAGE_DEADLETTER, IMAGE_SWEEPER, IMAGE_CONSOLE)
#   KO_DOCKER_REPO    for the functions without IMAGE_<FUNCTION>: build and push
#                     them with `ko build --base-import-paths`
#   DRY_RUN=1         print the commands instead of running them, as for an empty
#                     namespace (no cluster, kn or ko needed); an image ko would
#                     build is shown as ko://<import path>
#   KN, KUBECTL, KO   the commands to use (default kn, kubectl, ko)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
MODE=${MODE:-choreography}
BROKER=${BROKER:-mt-channel}
REDIS=${REDIS:-in-cluster}
OBSERVABILITY=${OBSERVABILITY:-0}
DEMO=${DEMO:-0}
OIDC=${OIDC:-0}
DRY_RUN=${DRY_RUN:-0}
KN=${KN:-kn}
KUBECTL=${KUBECTL:-kubectl}
KO=${KO:-ko}
NS=saga
MODULE=github.com/ksaga/ksaga

die() {
  echo "kn.sh: $*" >&2
  exit 1
}

case $MODE in choreography | orchestration) ;; *) die "MODE=$MODE: want choreography or orchestration" ;; esac
case $BROKER in mt-channel | kafka | rabbitmq) ;; *) die "BROKER=$BROKER: want mt-channel, kafka or rabbitmq" ;; esac
case $REDIS in in-cluster | external) ;; *) die "REDIS=$REDIS: want in-cluster or external" ;; esac
case $OBSERVABILITY in 0 | 1) ;; *) die "OBSERVABILITY=$OBSERVABILITY: want 0 or 1" ;; esac
[[ $OIDC == 0 ]] || die "OIDC=$OIDC: sender identity is deployed by \`make deploy OIDC=1\` (deploy/components/oidc), not by kn.sh"
case $DEMO in 0 | 1) ;; *) die "DEMO=$DEMO: want 0 or 1" ;; esac
case $DRY_RUN in 0 | 1) ;; *) die "DRY_RUN=$DRY_RUN: want 0 or 1" ;; esac
FUNCTIONS="deadletter users order-api order payment inventory notification orchestrator sweeper console"

# quote prints its arguments as one shell command line.
quote() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}

# run runs a command, or prints it with DRY_RUN=1.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    quote "$@"
  else
    (cd "$root" && "$@")
  fi
}

# say prints a progress line (a comment, in a dry run).
say() {
  if [[ $DRY_RUN == 1 ]]; then echo "# $*"; else echo "kn.sh: $*" >&2; fi
}

# exists reports whether the object KIND NAME exists (never, in a dry run).
exists() {
  [[ $DRY_RUN == 0 ]] && "$KUBECTL" get "$1" "$2" -n "$NS" >/dev/null 2>&1
}

# image prints the image of function $1: IMAGE_<FUNCTION>, or what ko builds.
image() {
  local var
  var=IMAGE_$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')
  if [[ -n ${!var:-} ]]; then
    printf '%s\n' "${!var}"
  elif [[ $DRY_RUN == 1 ]]; then
    printf 'ko://%s/functions/%s\n' "$MODULE" "$1"
  elif [[ -n ${KO_DOCKER_REPO:-} ]]; then
    (cd "$root" && "$KO" build --base-import-paths "./functions/$1")
  else
    die "no image for $1: set KO_DOCKER_REPO (ko builds and pushes it) or $var"
  fi
}

# ksvc NAME FLAGS... creates or replaces the Knative Service NAME with the
# settings every function shares (its own Redis user among them) plus FLAGS
# (see manifests/29-*.yaml and manifests/3*.yaml).
ksvc() {
  local name=$1 var
  shift
  var=image_${name//-/_}
  run "$KN" service create "$name" --force -n "$NS" --image "${!var}" \
    --label "app.kubernetes.io/name=$name" --label app.kubernetes.io/part-of=ksaga \
    --env-from cm:ksaga-config --env-value-from "REDIS_URL=secret:ksaga-redis-users:$name" \
    --probe-readiness http:::/readyz --probe-liveness http:::/healthz \
    --security-context strict \
    --annotation-revision autoscaling.knative.dev/class=kpa.autoscaling.knative.dev \
    --scale-init 1 \
    "$@"
}

# Every image first (ko builds and pushes here), so that a missing image
# stops the script before it changes anything in the cluster.
for fn in $FUNCTIONS; do
  ref=$(image "$fn")
  printf -v "image_${fn//-/_}" '%s' "$ref"
done

# ---------------------------------------------------------------------------
say "namespace, config, Secrets and the sagas' definitions (manifests/)"
run "$KUBECTL" apply -f manifests/00-namespace.yaml -f manifests/10-config.yaml -f manifests/20-sagas.yaml

if [[ $REDIS == in-cluster ]]; then
  say "Redis (manifests/redis/)"
  run "$KUBECTL" apply -f manifests/redis/20-services.yaml -f manifests/redis/21-statefulset.yaml -f manifests/redis/22-acl.yaml
  run "$KUBECTL" rollout status statefulset/redis -n "$NS" --timeout=180s
fi
if [[ $DEMO == 1 ]]; then
  say "demo users and products (deploy/demo/seed-job.yaml)"
  run "$KUBECTL" apply -f deploy/demo/seed-job.yaml
fi

case $BROKER in
kafka)
  say "Kafka broker config (brokers/kafka/)"
  run "$KUBECTL" apply -f brokers/kafka/00-kafka-broker-config.yaml
  ;;
rabbitmq)
  say "RabbitmqCluster and RabbitmqBrokerConfig (brokers/rabbitmq/)"
  run "$KUBECTL" apply -f brokers/rabbitmq/00-rabbitmq-cluster.yaml -f brokers/rabbitmq/01-rabbitmq-broker-config.yaml
  ;;
esac

# ---------------------------------------------------------------------------
# The Knative Services: manifests/3*.yaml explains every choice.
say "Knative Services"
ksvc deadletter --cluster-local --port 8080 --concurrency-limit 10 --timeout 30 \
  --env-from cm:ksaga-sagas \
  --scale-metric concurrency --scale-target 10 --scale-min 0 --scale-max 2 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=0s \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service ksaga.io/emits=io.ksaga.order.rejected,io.ksaga.payment.failed,io.ksaga.inventory.failed,io.ksaga.order.confirmfailed

ksvc users --cluster-local --port h2c:8080 --concurrency-limit 200 --timeout 10 \
  --scale-metric rps --scale-target 500 --scale-min 0 --scale-max 10 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=10m \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service 'ksaga.io/redis-keys=users:*'

# order-api: the only public Service (the REST API).
ksvc order-api --port 8080 --concurrency-limit 100 --timeout 30 \
  --scale-metric concurrency --scale-target 50 --scale-min 1 --scale-max 20 \
  --request cpu=100m,memory=64Mi --limit memory=256Mi \
  -e USERS_URL=http://users.saga.svc.cluster.local -e USERS_TIMEOUT=5s \
  --annotation-service ksaga.io/emits=io.ksaga.order.create,io.ksaga.order.rejected,io.ksaga.payment.failed,io.ksaga.inventory.failed,io.ksaga.order.confirmfailed \
  --annotation-service 'ksaga.io/redis-keys=%R~order:*'

ksvc order --cluster-local --port 8080 --concurrency-limit 100 --timeout 30 \
  --scale-metric concurrency --scale-target 50 --scale-min 0 --scale-max 20 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=2m \
  --request cpu=100m,memory=64Mi --limit memory=256Mi \
  -e USERS_URL=http://users.saga.svc.cluster.local -e USERS_TIMEOUT=5s \
  --annotation-service ksaga.io/emits=io.ksaga.order.created,io.ksaga.order.rejected,io.ksaga.order.confirmed,io.ksaga.order.cancelled \
  --annotation-service 'ksaga.io/redis-keys=order:*'

ksvc payment --cluster-local --port 8080 --concurrency-limit 50 --timeout 30 \
  --scale-metric concurrency --scale-target 20 --scale-min 0 --scale-max 10 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=2m \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service ksaga.io/emits=io.ksaga.payment.authorized,io.ksaga.payment.failed,io.ksaga.payment.refunded \
  --annotation-service 'ksaga.io/redis-keys=payment:*'

ksvc inventory --cluster-local --port 8080 --concurrency-limit 50 --timeout 30 \
  --scale-metric concurrency --scale-target 20 --scale-min 0 --scale-max 10 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=2m \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service ksaga.io/emits=io.ksaga.inventory.reserved,io.ksaga.inventory.failed,io.ksaga.inventory.released \
  --annotation-service 'ksaga.io/redis-keys=inventory:*'

ksvc notification --cluster-local --port 8080 --concurrency-limit 100 --timeout 30 \
  --scale-metric concurrency --scale-target 50 --scale-min 0 --scale-max 5 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=0s \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service ksaga.io/emits=io.ksaga.notification.sent \
  --annotation-service 'ksaga.io/redis-keys=notification:*' \
  --annotation-service 'ksaga.io/redis-commands=+xreadgroup +xack +xautoclaim +xgroup|create +xinfo|groups +xpending +xtrim +xlen'

ksvc orchestrator --cluster-local --port 8080 --concurrency-limit 100 --timeout 30 \
  --env-from cm:ksaga-sagas \
  --scale-metric concurrency --scale-target 50 --scale-min 0 --scale-max 20 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=2m \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service ksaga.io/emits=io.ksaga.payment.authorize,io.ksaga.payment.refund,io.ksaga.inventory.reserve,io.ksaga.inventory.release,io.ksaga.order.confirm,io.ksaga.order.cancel,io.ksaga.notification.send,io.ksaga.saga.completed,io.ksaga.saga.compensated

# The generic operations publish any event of a saga again (docs/protocol.md).
all_types=io.ksaga.order.rejected,io.ksaga.payment.failed,io.ksaga.inventory.failed,io.ksaga.order.confirmfailed,io.ksaga.order.create,io.ksaga.order.created,io.ksaga.payment.authorized,io.ksaga.inventory.reserved,io.ksaga.order.confirmed,io.ksaga.order.cancelled,io.ksaga.payment.refunded,io.ksaga.inventory.released,io.ksaga.notification.sent,io.ksaga.payment.authorize,io.ksaga.payment.refund,io.ksaga.inventory.reserve,io.ksaga.inventory.release,io.ksaga.order.confirm,io.ksaga.order.cancel,io.ksaga.notification.send
ksvc sweeper --cluster-local --port 8080 --concurrency-limit 1 --timeout 30 \
  --env-from cm:ksaga-sagas \
  --scale-metric concurrency --scale-target 1 --scale-min 0 --scale-max 1 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=0s \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service "ksaga.io/emits=$all_types"

# The console's domain views (manifests/39-console.yaml, docs/console.md).
views='[{"name": "balance", "saga": "order", "title": "Balance of user {data.user_id}", "base": "PAYMENT_URL", "path": "/balances/{data.user_id}"}, {"name": "stock", "saga": "order", "title": "Stock of {data.items.sku}", "base": "INVENTORY_URL", "path": "/stock/{data.items.sku}"}]'
ksvc console --cluster-local --port 8080 --concurrency-limit 100 --timeout 30 \
  -e PAYMENT_URL=http://payment.saga.svc.cluster.local -e INVENTORY_URL=http://inventory.saga.svc.cluster.local \
  -e "KSAGA_CONSOLE_VIEWS=$views" \
  --env-from cm:ksaga-sagas --env-from secret:ksaga-console \
  --scale-metric concurrency --scale-target 20 --scale-min 0 --scale-max 2 \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=5m \
  --request cpu=50m,memory=32Mi --limit memory=128Mi \
  --annotation-service "ksaga.io/emits=io.ksaga.payment.refund,io.ksaga.inventory.release,io.ksaga.order.cancel,io.ksaga.order.rejected,io.ksaga.payment.failed,io.ksaga.inventory.failed,io.ksaga.order.confirmfailed,io.ksaga.order.create,io.ksaga.order.created,io.ksaga.payment.authorized,io.ksaga.inventory.reserved,io.ksaga.order.confirmed,io.ksaga.order.cancelled,io.ksaga.payment.refunded,io.ksaga.inventory.released,io.ksaga.notification.sent,io.ksaga.payment.authorize,io.ksaga.inventory.reserve,io.ksaga.order.confirm,io.ksaga.notification.send"

# ---------------------------------------------------------------------------
# The Broker: brokers/$BROKER/broker.yaml.
delivery=(--retry 5 --backoff-policy exponential --backoff-delay PT0.2S --timeout PT10S --dl-sink ksvc:deadletter)
case $BROKER in
mt-channel) class=MTChannelBasedBroker config=cm:config-br-default-channel:knative-eventing ;;
kafka) class=Kafka config=cm:kafka-broker-config:$NS ;;
rabbitmq) class=RabbitMQBroker config=eventing.knative.dev/v1alpha1:RabbitmqBrokerConfig:ksaga-rabbitmq:$NS ;;
esac
if exists broker default; then
  have=$("$KUBECTL" get broker default -n "$NS" -o jsonpath='{.metadata.annotations.eventing\.knative\.dev/broker\.class}')
  [[ $have == "$class" ]] || die "Broker $NS/default exists with class $have, not $class; the class cannot change: delete the Broker (and its Triggers) first"
  say "Broker default ($class): update delivery"
  run "$KN" broker update default -n "$NS" "${delivery[@]}"
else
  say "Broker default ($class)"
  run "$KN" broker create default -n "$NS" --class "$class" --broker-config "$config" "${delivery[@]}"
fi
if [[ $BROKER == mt-channel ]]; then
  # kn cannot set it: the channel answers 202 once it has the event
  # (brokers/mt-channel/broker.yaml says why)
  run "$KUBECTL" patch broker default -n "$NS" --type merge -p '{"metadata":{"annotations":{"messaging.knative.dev/async-handler":"true"}}}'
fi
# kn cannot set it either: the dead letter sink's OIDC audience, so that
# with sender identity on the broker sends deadletter a token it accepts.
run "$KUBECTL" patch broker default -n "$NS" --type merge -p '{"spec":{"delivery":{"deadLetterSink":{"audience":"serving.knative.dev/service/'"$NS"'/deadletter"}}}}'

# ---------------------------------------------------------------------------
# The Triggers: triggers/$MODE/*.yaml (name, event type, subscriber).
choreography=(
  "order-on-create io.ksaga.order.create order"
  "payment-on-order-created io.ksaga.order.created payment"
  "inventory-on-payment-authorized io.ksaga.payment.authorized inventory"
  "order-on-inventory-reserved io.ksaga.inventory.reserved order"
  "payment-on-inventory-failed io.ksaga.inventory.failed payment"
  "order-on-payment-failed io.ksaga.payment.failed order"
  "order-on-payment-refunded io.ksaga.payment.refunded order"
  "notification-on-order-confirmed io.ksaga.order.confirmed notification"
  "notification-on-order-cancelled io.ksaga.order.cancelled notification"
  "inventory-on-order-confirmfailed io.ksaga.order.confirmfailed inventory"
  "payment-on-inventory-released io.ksaga.inventory.released payment"
)
orchestration=(
  "order-on-create io.ksaga.order.create order"
  "payment-on-authorize io.ksaga.payment.authorize payment"
  "payment-on-refund io.ksaga.payment.refund payment"
  "inventory-on-reserve io.ksaga.inventory.reserve inventory"
  "inventory-on-release io.ksaga.inventory.release inventory"
  "order-on-confirm io.ksaga.order.confirm order"
  "order-on-cancel io.ksaga.order.cancel order"
  "notification-on-send io.ksaga.notification.send notification"
  "orchestrator-on-order-created io.ksaga.order.created orchestrator"
  "orchestrator-on-order-rejected io.ksaga.order.rejected orchestrator"
  "orchestrator-on-payment-authorized io.ksaga.payment.authorized orchestrator"
  "orchestrator-on-payment-failed io.ksaga.payment.failed orchestrator"
  "orchestrator-on-payment-refunded io.ksaga.payment.refunded orchestrator"
  "orchestrator-on-inventory-reserved io.ksaga.inventory.reserved orchestrator"
  "orchestrator-on-inventory-failed io.ksaga.inventory.failed orchestrator"
  "orchestrator-on-inventory-released io.ksaga.inventory.released orchestrator"
  "orchestrator-on-order-confirmed io.ksaga.order.confirmed orchestrator"
  "orchestrator-on-order-cancelled io.ksaga.order.cancelled orchestrator"
  "orchestrator-on-notification-sent io.ksaga.notification.sent orchestrator"
  "orchestrator-on-order-confirmfailed io.ksaga.order.confirmfailed orchestrator"
)

# What kn cannot set on a Trigger, as a JSON merge patch: the label, the
# broker-specific annotations (deploy/components/kafka-keda,
# deploy/components/rabbitmq-parallelism), the subscriber's audience and the
# delivery of triggers/*.
case $BROKER in
kafka)
  annotations='{"autoscaling.eventing.knative.dev/class":"keda.autoscaling.knative.dev","autoscaling.eventing.knative.dev/min-scale":"1","autoscaling.eventing.knative.dev/max-scale":"10","autoscaling.eventing.knative.dev/lag-threshold":"20","autoscaling.eventing.knative.dev/polling-interval":"10","autoscaling.eventing.knative.dev/cooldown-period":"60"}'
  ;;
rabbitmq) annotations='{"rabbitmq.eventing.knative.dev/parallelism":"10"}' ;;
*) annotations='{}' ;;
esac
trigger_delivery='{"retry":5,"backoffPolicy":"exponential","backoffDelay":"PT0.2S","timeout":"PT10S","deadLetterSink":{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"deadletter"},"audience":"serving.knative.dev/service/'$NS'/deadletter"}}'

say "Triggers ($MODE)"
if [[ $MODE == choreography ]]; then triggers=("${choreography[@]}"); else triggers=("${orchestration[@]}"); fi
for t in "${triggers[@]}"; do
  read -r name type sink <<<"$t"
  if exists trigger "$name"; then
    run "$KN" trigger update "$name" -n "$NS" --filter "type=$type" --sink "ksvc:$sink"
  else
    run "$KN" trigger create "$name" -n "$NS" --broker default --filter "type=$type" --sink "ksvc:$sink"
  fi
  # the subscriber's OIDC audience (Serving publishes none; docs/security.md)
  patch='{"metadata":{"labels":{"app.kubernetes.io/part-of":"ksaga"},"annotations":'$annotations'},"spec":{"subscriber":{"audience":"serving.knative.dev/service/'$NS/$sink'"},"delivery":'$trigger_delivery'}}'
  run "$KUBECTL" patch trigger "$name" -n "$NS" --type merge -p "$patch"
done

# ---------------------------------------------------------------------------
say "SinkBindings (manifests/40-sinkbindings.yaml): K_SINK, the Broker, of the functions that publish"
for fn in order-api deadletter sweeper console; do
  verb=create
  if exists sinkbinding "$fn-to-broker"; then verb=update; fi
  run "$KN" source binding "$verb" "$fn-to-broker" -n "$NS" --subject "Service:serving.knative.dev/v1:$fn" --sink broker:default
done

say "PingSource sweeper-ping (manifests/38-sweeper.yaml): wakes the sweeper every 15 s"
verb=create
if exists pingsource sweeper-ping; then verb=update; fi
run "$KN" source ping "$verb" sweeper-ping -n "$NS" --schedule '*/15 * * * * *' --sink ksvc:sweeper
# the label, and the sink's OIDC audience (Serving publishes none)
run "$KUBECTL" patch pingsource sweeper-ping -n "$NS" --type merge -p '{"metadata":{"labels":{"app.kubernetes.io/part-of":"ksaga"}},"spec":{"sink":{"audience":"serving.knative.dev/service/'"$NS"'/sweeper"}}}'

if [[ $OBSERVABILITY == 1 ]]; then
  say "monitoring (manifests/observability)"
  run "$KUBECTL" apply -k manifests/observability
fi

if [[ $BROKER == kafka ]]; then
  echo "kn.sh: KEDA scales the Triggers' Kafka consumers only with KEDA installed and config-kafka-features controller-autoscaler-keda: enabled (docs/deploy.md)" >&2
fi
