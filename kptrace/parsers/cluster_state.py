"""Cluster state from Kubernetes JSON or YAML: what ``kubectl get services,endpointslices,nodes -A -o
json`` prints (a v1 ``List``), the typed lists (``ServiceList`` ...), single objects, multi-document
YAML, and the live API's list bodies. Only the fields kube-proxy reads are kept.

>>> st = parse_cluster_state('{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "s", "namespace": "n"},'
...                          ' "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}]}', "c.json")
>>> st.services[0].cluster_ips, st.services[0].ports[0].protocol
(('10.0.0.1',), 'TCP')
"""

from __future__ import annotations

import gc
import json
from typing import Any

from kptrace.errors import Diagnostic, InputError, ParseError
from kptrace.model.cluster import ClusterState, EndpointPort, EndpointSlice, Node, Service, ServicePort, SliceEndpoint

__all__ = ["parse_cluster_state", "state_from_objects"]

_KINDS = ("Service", "EndpointSlice", "Node")
_EMPTY: dict = {}


def parse_cluster_state(text: str, source: str) -> ClusterState:
    """Parse JSON (anything starting with ``{`` or ``[``) or YAML; errors say file:line:col."""
    # A large cluster is ~1M small objects, all kept: the cyclic GC finds nothing to free and its passes
    # cost ~40% of the parse (benchmarks/drift.py).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, source)
    finally:
        if enabled:
            gc.enable()


def _parse(text: str, source: str) -> ClusterState:
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{source}: empty cluster state",
                         hint="give what `kubectl get services,endpointslices,nodes -A -o json` prints")
    if stripped[0] in "{[":
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError as e:
            line_text = text.splitlines()[e.lineno - 1] if e.lineno - 1 < len(text.splitlines()) else ""
            raise ParseError([Diagnostic("error", f"not valid JSON: {e.msg}", source, e.lineno, e.colno, line_text, 1,
                                         hint="the file should be what `kubectl get services,endpointslices,nodes -A -o json` prints")]) from None
    else:
        docs = _yaml_docs(text, source)
    return state_from_objects(docs, source)


def _yaml_docs(text: str, source: str) -> list[Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the kubernetes client
        raise InputError(f"{source}: reading YAML needs PyYAML", hint="pip install pyyaml, or give JSON (-o json)") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        col = mark.column + 1 if mark else 0
        lines = text.splitlines()
        quoted = lines[line - 1] if 0 < line <= len(lines) else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ParseError([Diagnostic("error", f"not valid YAML: {problem}", source, line, col, quoted, 1,
                                     hint="the file should be what `kubectl get services,endpointslices,nodes -A -o yaml` prints")]) from None


def state_from_objects(docs: list[Any], source: str) -> ClusterState:
    """Build the state from decoded documents: Lists (nested too) and single objects."""
    services: list[Service] = []
    slices: list[EndpointSlice] = []
    nodes: list[Node] = []
    other: dict[str, int] = {}
    versions = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, list):
            for i, o in enumerate(obj):
                walk(o, f"{path}[{i}]")
            return
        if not isinstance(obj, dict):
            raise InputError(f"{source}: {path or 'top level'} is not a Kubernetes object",
                             hint="give what `kubectl get services,endpointslices,nodes -A -o json` prints")
        kind = obj.get("kind") or ""
        if "items" in obj and (kind.endswith("List") or not kind):
            rv = (obj.get("metadata") or {}).get("kptrace/resourceVersions")
            if isinstance(rv, dict):
                versions.extend(sorted(rv.items()))
            item_kind = kind[:-4] if kind.endswith("List") and kind != "List" else ""
            for i, item in enumerate(obj.get("items") or []):
                if item_kind and isinstance(item, dict) and not item.get("kind"):
                    item = {**item, "kind": item_kind}
                walk(item, f"{path}.items[{i}]" if path else f"items[{i}]")
            return
        where = f"{source} {path}".rstrip()
        try:
            if kind == "Service":
                services.append(_service(obj, where))
            elif kind == "EndpointSlice":
                slices.append(_slice(obj, where))
            elif kind == "Node":
                nodes.append(_node(obj))
            else:
                other[kind or "(no kind)"] = other.get(kind or "(no kind)", 0) + 1
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            name = (obj.get("metadata") or {}).get("name", "?") if isinstance(obj, dict) else "?"
            raise InputError(f"{where}: {kind} {name!r} is malformed ({type(e).__name__}: {e})",
                             hint="compare it with `kubectl get` output; kptrace reads the v1 / discovery.k8s.io/v1 fields") from None

    walk(docs[0] if len(docs) == 1 else docs, "")
    if not services and not slices and not nodes:
        found = ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "nothing"
        raise InputError(f"{source}: no Services, EndpointSlices or Nodes in it (found {found})",
                         hint="give what `kubectl get services,endpointslices,nodes -A -o json` prints")
    return ClusterState(tuple(services), tuple(slices), tuple(nodes), source, tuple(versions))


def _ip(text: str) -> str:
    """IPv6 in its canonical form (as iptables-save prints it and kube-proxy's net.IP.String() writes it)."""
    if ":" not in text:
        return text
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text


def _pairs(d: dict | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


def _service(obj: dict, where: str) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    cluster_ips = tuple(_ip(a) for a in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    ports = tuple(ServicePort(p.get("name") or "", (p.get("protocol") or "TCP").upper(), int(p["port"]),
                              str(p.get("targetPort", "")), int(p.get("nodePort") or 0))
                  for p in spec.get("ports") or [])
    lb_ips, proxy_ips = [], []
    for ing in (status.get("loadBalancer") or {}).get("ingress") or []:
        ip = ing.get("ip")
        if ip:
            (proxy_ips if ing.get("ipMode") == "Proxy" else lb_ips).append(_ip(ip))
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or 10800)
    return Service(
        namespace=meta.get("namespace") or "default", name=meta["name"], type=spec.get("type") or "ClusterIP",
        cluster_ips=cluster_ips, ports=ports, external_ips=tuple(_ip(a) for a in spec.get("externalIPs") or ()),
        lb_ips=tuple(lb_ips), lb_proxy_ips=tuple(proxy_ips), source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()),
        external_policy=spec.get("externalTrafficPolicy") or "Cluster", internal_policy=spec.get("internalTrafficPolicy") or "Cluster",
        health_check_node_port=int(spec.get("healthCheckNodePort") or 0), affinity_timeout=affinity,
        labels=_pairs(meta.get("labels")), annotations=_pairs(meta.get("annotations")), has_selector=bool(spec.get("selector")),
        traffic_distribution=spec.get("trafficDistribution") or "", location=where,
    )


def _slice(obj: dict, where: str) -> EndpointSlice:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    ports = tuple(EndpointPort(p.get("name"), (p.get("protocol") or "TCP").upper(),
                               int(p["port"]) if p.get("port") is not None else None)
                  for p in obj.get("ports") or [])
    eps = []
    for e in obj.get("endpoints") or ():
        cond = e.get("conditions") or _EMPTY
        hints = e.get("hints")
        zh = nh = ()
        if hints:
            zh = tuple(z["name"] for z in hints.get("forZones") or ())
            nh = tuple(n["name"] for n in hints.get("forNodes") or ())
        addrs = e.get("addresses") or ()
        eps.append(SliceEndpoint(tuple(_ip(a) for a in addrs) if addrs and ":" in addrs[0] else tuple(addrs), cond.get("ready"), cond.get("serving"), cond.get("terminating"),
                                 e.get("nodeName"), e.get("zone"), zh, nh))
    return EndpointSlice(meta.get("namespace") or "default", meta.get("name", ""), labels.get("kubernetes.io/service-name", ""),
                         obj.get("addressType") or "IPv4", ports, tuple(eps), _pairs(labels), where)


def _node(obj: dict) -> Node:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    addrs = tuple((a.get("type", ""), a.get("address", "")) for a in status.get("addresses") or [])
    cidrs = tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    return Node(meta["name"], _pairs(meta.get("labels")), addrs, cidrs)
