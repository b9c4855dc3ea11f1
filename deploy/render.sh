#!/usr/bin/env bash
# deploy/render.sh: print the manifests of one deployment, as `kubectl apply -k`
# sees them: deploy/overlays/$MODE-$BROKER, plus optional components.
# `make deploy` pipes this through `ko resolve` into `kubectl apply`.
#
#   MODE           choreography (default) | orchestration
#   BROKER         mt-channel (default) | kafka | rabbitmq
#   REDIS          in-cluster (default) | external: leave manifests/redis out
#                  (deploy/components/external-redis; REDIS_URL in manifests/10-config.yaml)
#                  | cluster: a 3-master Redis Cluster instead (deploy/components/redis-cluster)
#   OBSERVABILITY  0 (default) | 1: add manifests/observability
#                  (deploy/components/observability; needs the Prometheus Operator CRDs)
#   DEMO           0 (default) | 1: add the Job that loads the demo users and products
#                  (deploy/components/demo-data)
#   OIDC           0 (default) | 1: sender identity: the EventPolicies of policies/ and
#                  the functions' token checks (deploy/components/oidc; needs Knative's
#                  authentication-oidc feature, docs/security.md)
#   KUSTOMIZE      the kustomize command (default: kubectl kustomize)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
MODE=${MODE:-choreography}
BROKER=${BROKER:-mt-channel}
REDIS=${REDIS:-in-cluster}
OBSERVABILITY=${OBSERVABILITY:-0}
DEMO=${DEMO:-0}
OIDC=${OIDC:-0}
read -r -a kustomize <<<"${KUSTOMIZE:-kubectl kustomize}"

die() {
  echo "render.sh: $*" >&2
  exit 2
}

overlay=$MODE-$BROKER
[[ -f $root/deploy/overlays/$overlay/kustomization.yaml ]] ||
  die "no overlay deploy/overlays/$overlay (MODE: choreography|orchestration, BROKER: mt-channel|kafka|rabbitmq)"

components=()
case $REDIS in
in-cluster) ;;
external) components+=(external-redis) ;;
cluster) components+=(redis-cluster) ;;
*) die "REDIS=$REDIS: want in-cluster, external or cluster" ;;
esac
case $OBSERVABILITY in
0) ;;
1) components+=(observability) ;;
*) die "OBSERVABILITY=$OBSERVABILITY: want 0 or 1" ;;
esac
case $DEMO in
0) ;;
1) components+=(demo-data) ;;
*) die "DEMO=$DEMO: want 0 or 1" ;;
esac
case $OIDC in
0) ;;
1) components+=(oidc) ;;
*) die "OIDC=$OIDC: want 0 or 1" ;;
esac

if [[ ${#components[@]} == 0 ]]; then
  exec "${kustomize[@]}" "$root/deploy/overlays/$overlay"
fi

# Kustomize wants relative paths to other kustomizations, so the wrapper
# overlay lives (briefly) next to the others.
tmp=$(mktemp -d "$root/deploy/.render.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "- ../overlays/$overlay"
  echo "components:"
  for c in "${components[@]}"; do echo "- ../components/$c"; done
} >"$tmp/kustomization.yaml"
"${kustomize[@]}" "$tmp"
