"""kube-proxy's endpoint selection, ported once and shared by every backend check.

This is ``CategorizeEndpoints`` (kubernetes ``pkg/proxy/topology.go``) in kptrace's words: which of a
Service port's endpoints a node's kube-proxy programs for cluster-wide traffic, which for
node-local traffic, and whether the Service has any usable endpoint at all. See
``docs/kube-proxy.md`` section 5 (the team's notes) for the rules and the version differences.

>>> eps = (Endpoint("10.0.0.1", 80, local=True), Endpoint("10.0.0.2", 80, ready=False, serving=True, terminating=True))
>>> s = categorize_endpoints(eps, PortPolicy(), "node1")
>>> [e.address for e in s.cluster], s.local, s.has_any
(['10.0.0.1:80'], None, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["CURRENT", "Endpoint", "PortPolicy", "Profile", "Selection", "categorize_endpoints", "profile_for_version"]


class Endpoint(NamedTuple):
    """One endpoint of one Service port as kube-proxy holds it (endpointslicecache.go).

    A NamedTuple rather than a frozen dataclass: as immutable, and a 100k-endpoint cluster builds
    100k of them (frozen dataclasses' __init__ cost 1.2 s of a 10k-Service check;
    benchmarks/run.py, the "kptrace drift, 10k Services" row)."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    local: bool = False
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()
    node_name: str | None = None

    @property
    def address(self) -> str:
        """``ip:port``, ``[ipv6]:port``: kube-proxy's endpoint string (and what KUBE-SEP names hash)."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def serving_terminating(self) -> bool:
        return self.serving and self.terminating


@dataclass(frozen=True, slots=True)
class PortPolicy:
    """What of a Service port decides the selection (kube-proxy's ServicePort methods)."""

    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local (meaningful only when externally accessible)
    externally_accessible: bool = False  # has a NodePort, an external IP or a load-balancer IP

    @property
    def uses_cluster_endpoints(self) -> bool:
        # eTP Local still needs the cluster list: pod and node traffic to external destinations
        # short-circuits to it.
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or (self.external_local and self.externally_accessible)


@dataclass(frozen=True, slots=True)
class Profile:
    """The kube-proxy behaviours that changed between versions; CURRENT is today's."""

    #: PreferSameTrafficDistribution (beta, on by default, ~1.34+): node hints (trafficDistribution
    #: PreferSameNode) win over zone hints.
    node_hints: bool = True
    #: Before ~1.30 topology applied only with the service.kubernetes.io/topology-mode (or
    #: topology-aware-hints) annotation set and not "disabled".
    topology_needs_annotation: bool = False
    #: Fallback to serving+terminating endpoints when none is ready, cluster-wide and for Local policy
    #: (ProxyTerminatingEndpoints, on by default since 1.26; one gate switched both).
    cluster_terminating_fallback: bool = True
    local_terminating_fallback: bool = True
    #: The rest change what is programmed, not the selection.
    #: LoadBalancer ingress with ipMode Proxy is left to the load balancer (LoadBalancerIPMode, ~1.30+).
    lb_ip_mode: bool = True
    #: eTP Local without local endpoints: a filter DROP per external destination (~1.25+); before, the
    #: KUBE-XLB/SVL chain ended in KUBE-MARK-DROP instead.
    external_drop_rules: bool = True
    #: An ACCEPT in filter KUBE-NODEPORTS for health-check node ports (~1.21+).
    health_check_accept: bool = True
    #: IPVS mode, eTP Local with no local endpoint: the external virtual services fall back to the cluster
    #: endpoints (~1.21+, kubernetes#97081); before, they were left without real servers.
    ipvs_local_fallback: bool = True
    version: str = "current"


CURRENT = Profile()


def profile_for_version(version: str | None) -> Profile:
    """The behaviours of kube-proxy ``MAJOR.MINOR`` (``None``/``current``: today's). Version
    boundaries are approximate (~) and documented in docs/commands/drift.md.

    >>> profile_for_version("1.29").topology_needs_annotation
    True
    """
    if version in (None, "", "current"):
        return CURRENT
    try:
        major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    except ValueError:
        from kptrace.errors import UsageError

        raise UsageError(f"--kube-proxy-version {version!r} is not MAJOR.MINOR", hint="e.g. --kube-proxy-version 1.29") from None
    m = (major, minor)
    return Profile(node_hints=m >= (1, 34), topology_needs_annotation=m < (1, 30),
                   cluster_terminating_fallback=m >= (1, 26), local_terminating_fallback=m >= (1, 26),
                   lb_ip_mode=m >= (1, 30), external_drop_rules=m >= (1, 25), health_check_accept=m >= (1, 21),
                   ipvs_local_fallback=m >= (1, 21), version=version)


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome for one Service port on one node.

    ``cluster``/``local`` are None when the port never uses that policy (kube-proxy's nil), and
    an empty tuple when it does but nothing qualifies."""

    cluster: tuple[Endpoint, ...] | None
    local: tuple[Endpoint, ...] | None
    all_reachable: tuple[Endpoint, ...]
    has_any: bool
    topology: str = ""  # "", "PreferSameZone" or "PreferSameNode": how the cluster list was filtered
    terminating_fallback: bool = False  # the cluster or local list fell back to serving+terminating endpoints


def categorize_endpoints(endpoints: tuple[Endpoint, ...] | list[Endpoint], policy: PortPolicy, node_name: str,
                         zone: str = "", *, topology_allowed: bool = True, profile: Profile = CURRENT) -> Selection:
    """Split a port's endpoints into the cluster-policy list, the local-policy list and all the
    endpoints this node can reach, the way kube-proxy does.

    ``zone`` is the node's ``topology.kubernetes.io/zone`` label; ``topology_allowed`` is False where
    an older kube-proxy would not look at hints (no topology annotation)."""
    if not endpoints:
        return Selection(() if policy.uses_cluster_endpoints else None, () if policy.uses_local_endpoints else None, (), False)
    cluster: tuple[Endpoint, ...] | None = None
    local: tuple[Endpoint, ...] | None = None
    has_any = False
    topology = ""
    fallback = False

    if policy.uses_cluster_endpoints:
        topology = _topology_mode(endpoints, node_name, zone, profile) if topology_allowed else ""
        cluster = tuple(e for e in endpoints if e.ready and _available(e, topology, node_name, zone))
        if not cluster and profile.cluster_terminating_fallback:
            # No ready endpoint anywhere (topology never filters to nothing): use the ones still serving
            # while they terminate.
            cluster = tuple(e for e in endpoints if e.serving_terminating)
            fallback = bool(cluster)
        has_any = bool(cluster)

    if not policy.uses_local_endpoints:
        return Selection(cluster, None, cluster or (), has_any, topology, fallback)

    local_ready = local_st = False
    for e in endpoints:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.local
        elif e.serving_terminating and profile.local_terminating_fallback:
            has_any = True
            local_st = local_st or e.local
    local_fallback = False
    if local_ready:
        local = tuple(e for e in endpoints if e.local and e.ready)
    elif local_st and profile.local_terminating_fallback:
        local = tuple(e for e in endpoints if e.local and e.serving_terminating)
        local_fallback = True
    else:
        local = ()
    fallback = fallback or local_fallback

    if not policy.uses_cluster_endpoints:
        return Selection(None, local, local, has_any, topology, fallback)
    if not topology and not local_fallback:
        # The cluster list holds every ready endpoint and the local list only ready ones: a superset.
        return Selection(cluster, local, cluster or (), has_any, topology, fallback)
    merged = {e.address: e for e in (cluster or ())}
    merged.update((e.address, e) for e in local)
    return Selection(cluster, local, tuple(merged.values()), has_any, topology, fallback)


def _topology_mode(endpoints, node_name: str, zone: str, profile: Profile) -> str:
    ready = [e for e in endpoints if e.ready]
    if not ready:
        return ""
    if profile.node_hints and all(e.node_hints for e in ready) and any(node_name in e.node_hints for e in ready):
        return "PreferSameNode"
    if all(e.zone_hints for e in ready) and any(zone in e.zone_hints for e in ready):
        return "PreferSameZone"
    return ""


def _available(e: Endpoint, mode: str, node_name: str, zone: str) -> bool:
    if mode == "PreferSameNode":
        return node_name in e.node_hints
    if mode == "PreferSameZone":
        return zone in e.zone_hints
    return True
