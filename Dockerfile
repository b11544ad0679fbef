# syntax=docker/dockerfile:1
#
# Container image for pyrycode-relay. Needs BuildKit (the default builder
# since Docker 23, or `docker buildx build`).
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#       -t pyrycode-relay:latest .
#
# docs/deploy.md walks through running it. The short version:
#
#   docker run -d --name pyrycode-relay --stop-timeout 20 \
#       --ulimit nofile=1048576:1048576 \
#       -p 80:80 -p 443:443 \
#       -v pyrycode-relay-certs:/var/lib/pyrycode-relay/certs \
#       pyrycode-relay:latest --domain relay.example.com --acme-email ops@example.com
#
# Ports
#   80, 443  ACME http-01 and WSS in --domain mode (--http-listen, --https-listen).
#   8080     nothing by default; the usual choice for --insecure-listen
#            0.0.0.0:8080 behind a TLS-terminating proxy.
#   9090     metrics and status page. The relay binds it to 127.0.0.1 by
#            default, which inside a container is the container's own
#            loopback and cannot be reached from outside. To scrape it, run
#            with --metrics-listen 0.0.0.0:9090 --metrics-public and publish
#            it only to the host's loopback or a private network
#            (-p 127.0.0.1:9090:9090), never to the internet. It is not
#            EXPOSEd here on purpose.
#
# Ports below 1024 as a non-root user
#   The relay runs as uid 65532 and needs no capability to bind 80 and 443
#   in the default setup: Docker Engine 20.10 and later (and Podman) set
#   net.ipv4.ip_unprivileged_port_start=0 in every container network
#   namespace they create. That does not hold with --network host, on
#   Kubernetes without the (safe) sysctl in the pod's securityContext, or on
#   CRI-O. There, either
#     * listen on high ports and map them: --https-listen :8443
#       --http-listen :8080 with -p 443:8443 -p 80:8080, or
#     * build with --build-arg SETCAP=1, which gives the binary the file
#       capability cap_net_bind_service (see the caveats next to the RUN
#       line below).

ARG GO_VERSION=1.26

# ---------------------------------------------------------------- build ----
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build

# Filled in by BuildKit; they let `docker buildx build --platform
# linux/amd64,linux/arm64` cross-compile instead of emulating.
ARG TARGETOS
ARG TARGETARCH
# Reported by --version and /healthz.
ARG VERSION=dev
# 1: give the binary cap_net_bind_service (only needed where the sysctl
# above is not set).
ARG SETCAP=0

WORKDIR /src

# Modules first, so that editing source does not invalidate this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
        -o /out/usr/local/bin/pyrycode-relay ./cmd/pyrycode-relay

# The certificate cache must exist in the image, owned by the runtime user,
# so that a fresh named volume mounted over it inherits that owner (Docker
# copies an image directory's contents, owner and mode into a new, empty
# named volume). The relay refuses a cache directory owned by another user
# and forces it to mode 0700 itself.
RUN mkdir -p /out/var/lib/pyrycode-relay/certs \
    && chmod 0700 /out/var/lib/pyrycode-relay/certs

# Optional file capability. BuildKit keeps the security.capability
# attribute through COPY --from; some other builders (kaniko, old Docker
# builders) drop it. Two traps at run time: a binary carrying this
# capability fails to start at all ("operation not permitted") in a
# container started with --cap-drop ALL unless NET_BIND_SERVICE is added
# back, and --security-opt no-new-privileges makes the kernel ignore it.
RUN if [ "${SETCAP}" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libcap2-bin \
        && setcap cap_net_bind_service=+ep /out/usr/local/bin/pyrycode-relay \
        && getcap /out/usr/local/bin/pyrycode-relay; \
    fi

# -------------------------------------------------------------- runtime ----
# distroless/static: no shell, no package manager; it has CA certificates
# (needed for Let's Encrypt, FCM and APNs), tzdata and an /etc/passwd with
# the user "nonroot" (65532:65532). A FROM scratch image would need the CA
# bundle and a passwd entry copied in by hand; this one already has both.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
LABEL org.opencontainers.image.title="pyrycode-relay" \
      org.opencontainers.image.description="WebSocket relay between pyry daemons and the pyrycode mobile app" \
      org.opencontainers.image.source="https://github.com/pyrycode/pyrycode-relay" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=build /out/usr/local/bin/pyrycode-relay /usr/local/bin/pyrycode-relay
COPY --from=build --chown=65532:65532 /out/var/lib/pyrycode-relay/ /var/lib/pyrycode-relay/

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532

# Production checks: --insecure-listen is refused without --trusted-proxies
# and running as root is refused. For a quick local test of plain ws://,
# pass -e PYRYCODE_RELAY_PRODUCTION=0.
ENV PYRYCODE_RELAY_PRODUCTION=1

# Declared after the directory is populated, so a new volume starts out
# with the right owner. Keep it across upgrades: it holds the ACME account
# key and the issued certificates, and losing it means re-issuing (Let's
# Encrypt rate-limits duplicate certificates).
VOLUME ["/var/lib/pyrycode-relay/certs"]

EXPOSE 80 443

# SIGTERM drains: every WebSocket is closed with 1001 "shutting down" and
# the process waits up to --drain-timeout (10 s) before exiting. Docker's
# default stop timeout is also 10 s, so give it more: --stop-timeout 20
# (docker run) or stop_grace_period: 20s (compose).
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no shell or HTTP client. Probe GET /healthz
# on the serving port from outside (orchestrator probe, load balancer).

# --cert-cache is part of the entrypoint rather than CMD so that it stays in
# force when `docker run IMAGE --domain ...` replaces CMD; a later
# --cert-cache on the command line still overrides it.
ENTRYPOINT ["/usr/local/bin/pyrycode-relay", "--cert-cache=/var/lib/pyrycode-relay/certs"]
# The serving mode (--domain, --tls-cert/--tls-key or --insecure-listen) has
# to be chosen by the operator; with no arguments the image prints its flags.
CMD ["--help"]
