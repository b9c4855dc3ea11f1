# ksaga — sagas built from scale-to-zero Knative functions.
# `make help` lists the targets.

SHELL := /usr/bin/env bash
GO ?= go
PORT ?= 8080
MODE ?= choreography
# extra flags of ksaga dev, e.g. DEVFLAGS="--scale-window 6s" or DEVFLAGS=--scale=always-on
DEVFLAGS ?=
FUZZTIME ?= 5s
# package:FuzzTarget pairs run briefly by `make test`
FUZZ := ./knfunc:FuzzDecode ./internal/manifest:FuzzLoad ./internal/devbroker:FuzzIngress
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ERRCHECK := github.com/kisielk/errcheck@v1.30.0

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The ksaga CLI, built by `go build` rather than run with `go run`: `go run`
# exits 1 whenever it got a Ctrl-C, whatever the program's own exit status
# (its builder marks the run interrupted), so `make run` could not end with 0.
KSAGA := bin/ksaga

.PHONY: ksaga
ksaga: # build $(KSAGA) with progress (the first build compiles Knative and Kubernetes: minutes)
	@echo "go build -o $(KSAGA) ./cmd/ksaga (the first build on a machine compiles Knative's and Kubernetes' packages, a few minutes: a line every 25 packages)"
	@set -o pipefail; $(GO) build -v -o $(KSAGA) ./cmd/ksaga 2>&1 | \
	  awk '/^[^ \t:#]+$$/ { if (++n % 25 == 0) { printf "  ksaga: %d packages compiled (%s)\n", n, $$0; fflush() }; next } { print; fflush() }'

.PHONY: run
run: ksaga ## Run the whole order saga locally with the demo data (ksaga dev; embedded Redis unless REDIS_URL is set)
	$(KSAGA) dev --port $(PORT) --mode $(MODE) --seed deploy/demo/seed.redis $(if $(REDIS_URL),--redis-url $(REDIS_URL)) $(DEVFLAGS)

.PHONY: test
test: redis-server chromium ## go vet, all tests with the race detector, a short fuzz of each decoder
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 25m ./... # the e2e packages take minutes (a cold build of every function), more on a slow machine
	@set -e; for f in $(FUZZ); do pkg=$${f%%:*}; target=$${f##*:}; \
	  if grep -qs "func $$target(" $$pkg/*_test.go; then \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg >/dev/null; fi; done

.PHONY: redis-server
redis-server: # make sure redis-server is on PATH (tests start their own on free ports)
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is required: install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis)"; exit 1; \
	  fi; }

.PHONY: chromium
chromium: # the console's browser tests drive chromium headless (outside CI they skip without it)
	@[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed: the console's browser tests will skip (Debian/Ubuntu: sudo apt-get install -y chromium)"; \
	  fi; }

.PHONY: bench
bench: redis-server ksaga ## Saga throughput/latency vs this machine's floor (writes docs/benchmarks/results)
	$(KSAGA) bench $(BENCHFLAGS)

.PHONY: bench-console
bench-console: redis-server ## The console's first meaningful paint with 100,000 sagas stored (headless chromium)
	$(GO) test -run '^$$' -bench FirstPaint -benchtime 20x -timeout 30m ./console

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, errcheck
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(ERRCHECK) -ignoretests ./...

.PHONY: fmt
fmt: ## gofmt the tree
	gofmt -w .

.PHONY: build
build: ## Build ksaga and every function into bin/
	$(GO) build -o bin/ ./cmd/ksaga ./functions/...

.PHONY: validate
validate: ksaga ## Validate brokers/, triggers/ and manifests/ with Knative's own validation code
	$(KSAGA) validate

.PHONY: proto
proto: ## Regenerate proto/user from user.proto (needs protoc)
	@command -v protoc >/dev/null || { echo "protoc is required (Debian: apt-get install -y protobuf-compiler)"; exit 1; }
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o bin/protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go
	cd proto/user && $(GO) generate ./
include Makefile.deploy.mk
