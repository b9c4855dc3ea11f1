# Deploying to a Knative cluster (docs/deploy.md). The Makefile includes this
# file: `make help` lists these targets with the others.
#
#   make deploy KO_DOCKER_REPO=ghcr.io/you/ksaga MODE=orchestration BROKER=kafka
#   make deploy-kn IMAGE_PAYMENT=...      (or KO_DOCKER_REPO=...; DRY_RUN=1 to print)

KO ?= ko
KUBECTL ?= kubectl
MODE ?= choreography
# mt-channel | kafka | rabbitmq: selects deploy/overlays/$(MODE)-$(BROKER)
BROKER ?= mt-channel
# in-cluster | external (REDIS_URL in manifests/10-config.yaml) | cluster (deploy/components/redis-cluster)
REDIS ?= in-cluster
# 1: also deploy manifests/observability (needs the Prometheus Operator CRDs)
OBSERVABILITY ?= 0
# 1: also run the Job that loads the demo users and products (deploy/demo)
DEMO ?= 0
# 1: sender identity: policies/ and the functions' token checks (deploy/components/oidc;
# the cluster needs Knative's authentication-oidc, docs/security.md)
OIDC ?= 0
# every folder of functions/ (deploy/images_test.go checks it)
KSAGA_FUNCTIONS := order-api order payment inventory notification users orchestrator deadletter sweeper console
DOCKER_REPO ?= $(if $(KO_DOCKER_REPO),$(KO_DOCKER_REPO),registry.example.com/ksaga)

.PHONY: require-ko-repo
require-ko-repo:
	@test -n "$(KO_DOCKER_REPO)" || { echo "KO_DOCKER_REPO is required: the registry ko pushes to, e.g. KO_DOCKER_REPO=ghcr.io/you/ksaga (kind: kind.local)"; exit 1; }

.PHONY: render
render: ## Print the manifests `make deploy` applies (MODE, BROKER, REDIS, OBSERVABILITY, DEMO, OIDC), images still ko://
	@MODE=$(MODE) BROKER=$(BROKER) REDIS=$(REDIS) OBSERVABILITY=$(OBSERVABILITY) DEMO=$(DEMO) OIDC=$(OIDC) deploy/render.sh

.PHONY: deploy
deploy: require-ko-repo ## Build the images with ko and apply deploy/overlays/MODE-BROKER (KO_DOCKER_REPO required; also REDIS, OBSERVABILITY, DEMO, OIDC)
	set -o pipefail; MODE=$(MODE) BROKER=$(BROKER) REDIS=$(REDIS) OBSERVABILITY=$(OBSERVABILITY) DEMO=$(DEMO) OIDC=$(OIDC) deploy/render.sh \
	  | KO_DOCKER_REPO=$(KO_DOCKER_REPO) $(KO) resolve --base-import-paths -f - \
	  | $(KUBECTL) apply -f -

.PHONY: undeploy
undeploy: ## Delete what `make deploy` created, the saga namespace (and Redis' volume) included
	set -o pipefail; MODE=$(MODE) BROKER=$(BROKER) REDIS=$(REDIS) OBSERVABILITY=$(OBSERVABILITY) DEMO=$(DEMO) OIDC=$(OIDC) deploy/render.sh \
	  | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy-kn
deploy-kn: ## The same deployment with kn commands (deploy/kn.sh; IMAGE_<FUNCTION> or KO_DOCKER_REPO; DRY_RUN=1 prints)
	MODE=$(MODE) BROKER=$(BROKER) REDIS=$(REDIS) OBSERVABILITY=$(OBSERVABILITY) DEMO=$(DEMO) OIDC=$(OIDC) deploy/kn.sh

.PHONY: images
images: require-ko-repo ## Build and push every function's image with ko, print the references
	cd $(CURDIR) && KO_DOCKER_REPO=$(KO_DOCKER_REPO) $(KO) build --base-import-paths $(addprefix ./functions/,$(KSAGA_FUNCTIONS))

.PHONY: docker
docker: ## Print docker build/push commands for every function (no ko needed; pipe to sh to run)
	@for f in $(KSAGA_FUNCTIONS); do \
	  echo "docker build --build-arg FUNCTION=$$f -t $(DOCKER_REPO)/$$f:latest . && docker push $(DOCKER_REPO)/$$f:latest"; \
	done
	@echo "# then: make deploy-kn $(foreach f,$(KSAGA_FUNCTIONS),IMAGE_$(shell echo $(f) | tr a-z- A-Z_)=$(DOCKER_REPO)/$(f):latest)" >&2
