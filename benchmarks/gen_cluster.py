#!/usr/bin/env python3
"""The cluster state behind a ``gen_synthetic.py`` dump: the Services, EndpointSlices and Nodes whose
kube-proxy would program exactly that dump on node ``node-0`` (what ``kubectl get
services,endpointslices,nodes -A -o json`` prints). For the drift benchmark.

    python3 benchmarks/gen_cluster.py --services 10000 --endpoints 10 -o /tmp/cluster.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_synthetic import AFFINITY_SECONDS, NODE_IP, PORT, PORT_NAME, TARGET_PORT, _build_services  # noqa: E402

NODE = "node-0"


def cluster_state(services: int, endpoints: int, nodeport_every: int = 10, *, affinity_every: int = 0,
                  endpoints_per_slice: int = 100) -> dict:
    svcs = _build_services(services, endpoints, nodeport_every, 0, 4, affinity_every, 0, 0, 0)
    items: list[dict] = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
         "spec": {"podCIDR": "10.0.0.0/24"}, "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.0.1.0/24"},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.3"}]}},
    ]
    for s in sorted(svcs, key=lambda s: s.i):
        ns, rest = s.spn.split("/", 1)
        name = rest.split(":", 1)[0]
        port = {"name": PORT_NAME, "protocol": "TCP", "port": PORT, "targetPort": TARGET_PORT}
        spec = {"type": "NodePort" if s.nodeport else "ClusterIP", "clusterIP": s.cip, "clusterIPs": [s.cip],
                "ports": [dict(port, nodePort=s.nodeport) if s.nodeport else port], "selector": {"app": name},
                "sessionAffinity": "ClientIP" if s.affinity else "None", "internalTrafficPolicy": "Cluster"}
        if s.affinity:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": AFFINITY_SECONDS}}
        if s.nodeport:
            spec["externalTrafficPolicy"] = "Cluster"
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec})
        eps = [ep for ep, _ in s.eps]
        for k in range(0, max(len(eps), 1), endpoints_per_slice):
            chunk = eps[k:k + endpoints_per_slice]
            items.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": f"{name}-{k // endpoints_per_slice}", "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name}},
                "ports": [{"name": PORT_NAME, "protocol": "TCP", "port": TARGET_PORT}],
                "endpoints": [{"addresses": [ep.rsplit(":", 1)[0]], "conditions": {"ready": True, "serving": True, "terminating": False},
                               "nodeName": "node-1"} for ep in chunk],
            })
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--nodeport-every", type=int, default=10)
    ap.add_argument("--affinity-every", type=int, default=0)
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    data = json.dumps(cluster_state(a.services, a.endpoints, a.nodeport_every, affinity_every=a.affinity_every))
    if a.output == "-":
        sys.stdout.write(data)
    else:
        Path(a.output).write_text(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
