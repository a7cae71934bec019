# kptrace with the tools its bundles run: `kptrace monitor` in a cluster (deploy/), or any command on a node.
#
#   docker build -t kptrace:0.1.0 .
#   docker run --rm kptrace:0.1.0 --version
#   docker run --rm --network host --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW kptrace:0.1.0 \
#       drift --local --node-name "$(hostname)" --cluster-state cluster.json
#
# The image's user is 65532 (non-root): right for the Deployment (reads nodes through the API) and every
# command on files. Reading this node's rules (--local, the DaemonSet) needs uid 0 with CAP_NET_ADMIN
# (and CAP_NET_RAW for iptables-legacy): deploy/daemonset.yaml sets runAsUser 0 and says why.

ARG PYTHON=3.12
ARG DEBIAN=bookworm

FROM python:${PYTHON}-slim-${DEBIAN} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY grammars/ grammars/
COPY kptrace/ kptrace/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON}-slim-${DEBIAN}
LABEL org.opencontainers.image.title="kptrace" \
      org.opencontainers.image.description="Trace packets through kube-proxy data planes; a drift monitor with Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
# Debian's own versions of the data-plane tools, as the nodes run them; pinning exact Debian revisions would
# break the build at every security update of the suite.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables nftables ipset ipvsadm conntrack iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/kptrace-*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin kptrace
USER 65532:65532
EXPOSE 9633
ENTRYPOINT ["kptrace"]
CMD ["monitor", "--help"]
