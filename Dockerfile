# The tcred operator image: one static binary and a CA bundle on an empty base, run as a non-root
# user. `hack/image.sh build` (make image) builds it; `hack/image.sh check` (make image-check) checks it.
#
# Why there is no builder stage: no base image can be pulled where tcred is built and tested (no
# registry but the package registries is reachable), so a `FROM rust` stage could not run.
# hack/image.sh builds the binary on the host instead, static (glibc, -C target-feature=+crt-static;
# the musl target is not installed), and copies it and the host's CA bundle into target/image/,
# the build context. The binary needs no libc, NSS or resolver files at run time: it reaches the
# API server by the IP in KUBERNETES_SERVICE_HOST and resolves Huawei Cloud endpoints in-process
# from /etc/resolv.conf, which the kubelet mounts.
FROM scratch

ARG VERSION=0.1.0
ARG SOURCE_URL=""

LABEL org.opencontainers.image.title="tcred" \
      org.opencontainers.image.description="Kubernetes operator that mints short-lived Huawei Cloud credentials into Secrets and rotates them ahead of expiry" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# Huawei Cloud endpoints are HTTPS; rustls reads the roots from here.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY tcred /tcred

# 65532: "nonroot" in distroless images; the chart's securityContext uses the same IDs.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/tcred"]
CMD ["controller"]
