# syntax=docker/dockerfile:1
#
# Builds one ksaga function into a distroless image, for users without ko:
#
#   docker build --build-arg FUNCTION=payment -t registry.example.com/ksaga/payment .
#
# FUNCTION is a folder of functions/: order, payment, inventory, notification,
# users, orchestrator, deadletter. `make docker` prints the command for each.
# The go build flags are the ones .ko.yaml gives ko (deploy/deploy_test.go
# runs this exact go build line for every function and checks the size).

# The Go of go.mod's go directive (deploy/deploy_test.go checks they agree).
ARG GO_VERSION=1.26

# Build on the builder's own platform and cross-compile: no emulation for
# multi-arch images (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY . .
ARG FUNCTION
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN test -n "$FUNCTION" && test -f "functions/$FUNCTION/main.go" \
    || { echo "--build-arg FUNCTION=<name> is required, one of: $(ls functions | tr '\n' ' ')" >&2; exit 1; }
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/function ./functions/$FUNCTION

# The same base image as .ko.yaml's defaultBaseImage.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/function /function
# Numeric, so that the kubelet can check runAsNonRoot.
USER 65532:65532
# Knative routes to PORT (8080 unless the Service says otherwise).
EXPOSE 8080
ENTRYPOINT ["/function"]
