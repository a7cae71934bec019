"""What kube-proxy should program on one node, from the cluster state: per Service port and address
family, the entry points, the endpoints of the cluster-policy and local-policy chains, the "has no
(local) endpoints" REJECT/DROP rules, and session affinity.

The Service and EndpointSlice handling follows kube-proxy's own (``pkg/proxy/service.go``,
``endpointslicecache.go``, ``iptables/proxier.go``); the endpoint choice is
:func:`kptrace.checks.selection.categorize_endpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kptrace.checks.selection import CURRENT, Endpoint, PortPolicy, Profile, Selection, categorize_endpoints
from kptrace.model.cluster import (
    HEADLESS_LABEL,
    PROXY_NAME_LABEL,
    TOPOLOGY_ANNOTATIONS,
    ZONE_LABEL,
    ClusterState,
    EndpointSlice,
    Service,
    ServicePort,
)
from kptrace.model.kube import service_chain_hash

__all__ = ["ExpectedPort", "Ignored", "expected_ports", "service_port_name"]


@dataclass(frozen=True, slots=True)
class ExpectedPort:
    service: Service
    port: ServicePort
    family: int
    spn: str  # ns/name:portname, or ns/name for an unnamed port (ServicePortName.String())
    protocol: str  # lower case, as in the chain hash
    cluster_ip: str
    node_port: int
    external_ips: tuple[str, ...]
    lb_ips: tuple[str, ...]
    source_ranges: tuple[str, ...]
    health_check_node_port: int
    policy: PortPolicy
    affinity_timeout: int | None
    selection: Selection
    endpoint_count: int  # endpoints kube-proxy knows for the port (before selection)
    hash: str  # kube-proxy's chain hash of spn + protocol
    profile: Profile = CURRENT

    @property
    def has_endpoints(self) -> bool:
        return self.selection.has_any

    @property
    def cluster_chain_endpoints(self) -> tuple[Endpoint, ...] | None:
        """What KUBE-SVC-… should list, or None when kube-proxy writes no such chain."""
        s = self.selection
        return s.cluster if s.cluster and self.policy.uses_cluster_endpoints else None

    @property
    def local_chain_endpoints(self) -> tuple[Endpoint, ...] | None:
        """What KUBE-SVL-… should list, or None when kube-proxy writes no such chain."""
        s = self.selection
        return s.local if s.local and self.policy.uses_local_endpoints else None

    @property
    def has_internal_endpoints(self) -> bool:
        if self.policy.internal_local:
            return bool(self.selection.local)
        return self.has_endpoints

    @property
    def has_external_endpoints(self) -> bool:
        if self.policy.external_local and self.policy.externally_accessible:
            return bool(self.selection.local)
        return self.has_endpoints


@dataclass(frozen=True, slots=True)
class Ignored:
    service: str  # ns/name
    reason: str


def service_port_name(svc: Service, port: ServicePort) -> str:
    return f"{svc.namespace}/{svc.name}:{port.name}" if port.name else f"{svc.namespace}/{svc.name}"


def _family(addr: str) -> int:
    return 6 if ":" in addr else 4


def _network(cidr: str) -> str:
    """kube-proxy's form of a source range: trimmed, host bits cleared (``203.0.113.7/24`` -> ``203.0.113.0/24``)."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        return cidr.strip()


def expected_ports(state: ClusterState, node_name: str, family: int, *, profile: Profile = CURRENT,
                   node_labels: dict[str, str] | None = None) -> tuple[list[ExpectedPort], list[Ignored]]:
    """Every Service port kube-proxy on ``node_name`` programs for ``family``, and the Services it
    leaves out (with why)."""
    node = state.node(node_name)
    labels = dict(node.labels) if node is not None else {}
    labels.update(node_labels or {})
    zone = labels.get(ZONE_LABEL, "")
    by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
    want_type = "IPv6" if family == 6 else "IPv4"
    for sl in state.slices:
        # kube-proxy watches slices without the headless label; each family's proxier gets its own
        # address type (FQDN slices are never used).
        if (sl.address_type != want_type or not sl.service or sl.label(HEADLESS_LABEL) is not None
                or sl.label(PROXY_NAME_LABEL) is not None):  # the informer's label selector applies to slices too
            continue
        by_service.setdefault((sl.namespace, sl.service), []).append(sl)

    out: list[ExpectedPort] = []
    ignored: list[Ignored] = []
    for svc in state.services:
        reason = _ignored(svc, family)
        if reason:
            ignored.append(Ignored(svc.key, reason))
            continue
        cluster_ip = next(ip for ip in svc.cluster_ips if _family(ip) == family)
        slices = sorted(by_service.get((svc.namespace, svc.name), ()), key=lambda s: s.name)
        # before ~1.30 topology needed the hints annotation (the deprecated one first, then topology-mode)
        hints = svc.annotation(TOPOLOGY_ANNOTATIONS[1]) or svc.annotation(TOPOLOGY_ANNOTATIONS[0]) or ""
        topology_allowed = not profile.topology_needs_annotation or hints not in ("", "disabled", "Disabled")
        ext_ips = tuple(ip for ip in svc.external_ips if _family(ip) == family)
        lb_ips = tuple(ip for ip in svc.lb_ips + (() if profile.lb_ip_mode else svc.lb_proxy_ips) if _family(ip) == family)
        ranges = tuple(_network(r) for r in svc.source_ranges if _family(r.strip().split("/")[0]) == family)
        for port in svc.ports:
            node_port = port.node_port if svc.type in ("NodePort", "LoadBalancer") else 0
            accessible = bool(node_port or ext_ips or lb_ips)
            policy = PortPolicy(internal_local=svc.internal_policy == "Local",
                                external_local=svc.external_policy == "Local" and (accessible or svc.type in ("NodePort", "LoadBalancer")),
                                externally_accessible=accessible)
            endpoints = _endpoints(slices, port, node_name, family)
            selection = categorize_endpoints(endpoints, policy, node_name, zone, topology_allowed=topology_allowed, profile=profile)
            hc = svc.health_check_node_port if (svc.type == "LoadBalancer" and svc.external_policy == "Local") else 0
            hc = hc if profile.health_check_accept else 0
            out.append(ExpectedPort(
                service=svc, port=port, family=family, spn=service_port_name(svc, port), protocol=port.protocol.lower(),
                cluster_ip=cluster_ip, node_port=node_port, external_ips=ext_ips, lb_ips=lb_ips,
                source_ranges=ranges if lb_ips else (), health_check_node_port=hc, policy=policy,
                affinity_timeout=svc.affinity_timeout, selection=selection, endpoint_count=len(endpoints),
                hash=service_chain_hash(service_port_name(svc, port), port.protocol), profile=profile))
    return out, ignored


def _ignored(svc: Service, family: int) -> str:
    if svc.label(PROXY_NAME_LABEL) is not None:
        return f"label {PROXY_NAME_LABEL}={svc.label(PROXY_NAME_LABEL)}: another proxy serves it"
    if svc.label(HEADLESS_LABEL) is not None:
        return f"label {HEADLESS_LABEL}"
    if svc.type == "ExternalName":
        return "type ExternalName (DNS only)"
    if not svc.cluster_ips or svc.cluster_ips[0] in ("None", ""):
        return "headless (clusterIP None)"
    if not any(_family(ip) == family for ip in svc.cluster_ips if ip != "None"):
        return f"no IPv{family} cluster IP"
    return ""


def _endpoints(slices: list[EndpointSlice], port: ServicePort, node_name: str, family: int) -> tuple[Endpoint, ...]:
    """The port's endpoints across the Service's slices, as kube-proxy's endpoint cache merges them:
    slice ports matched by name and protocol (a named target port is already resolved to a number in
    the slice), the first address of each endpoint, duplicates (the same ip:port in two slices) kept
    once, preferring the local copy."""
    found: dict[str, Endpoint] = {}
    v6 = family == 6
    empty: frozenset[str] = frozenset()
    for sl in slices:
        for sp in sl.ports:
            if sp.name != port.name or sp.protocol != port.protocol or not sp.port:
                continue
            for e in sl.endpoints:
                if not e.addresses:
                    continue
                ip = e.addresses[0]
                if (":" in ip) != v6:
                    continue
                local = e.node_name is not None and e.node_name == node_name
                key = f"[{ip}]:{sp.port}" if v6 else f"{ip}:{sp.port}"
                # the same ip:port in two slices (a reused pod IP): the copy that is not terminating wins
                if key not in found or e.terminating is not True:
                    found[key] = Endpoint(
                        ip, sp.port, e.ready is not False, e.serving is not False, e.terminating is True, local,
                        frozenset(e.zone_hints) if e.zone_hints else empty, frozenset(e.node_hints) if e.node_hints else empty,
                        e.node_name)
    # kube-proxy writes endpoints sorted by their ip:port string
    return tuple(found[k] for k in sorted(found))
