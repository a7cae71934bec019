"""The Service view in IPVS mode: a Service port's virtual services (cluster IP, NodePorts on the node's
addresses, external and load-balancer IPs), their real servers with weights and shares, and where a
connection goes from each origin, traced through iptables, IPVS and POSTROUTING.

IPVS holds no Service names: a name is found through the cluster state (``--cluster-state``, the live
API with ``--node-name``, or the ``cluster.json`` a bundle collected through the API carries); an address
(``IP[:PORT]``) works without one.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable

from kptrace.errors import InputError, NotFoundError
from kptrace.model.addr import parse_endpoint
from kptrace.model.dataplane import Dataplane
from kptrace.model.ipvs import VirtualService
from kptrace.model.kube import service_chain_hash
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin
from kptrace.tracer.service_view import Endpoint, EntryPoint, EntryTrace, ServiceView

__all__ = ["ipvs_service_views"]


def ipvs_service_views(dp: Dataplane, query: str, state=None, node: str | None = None, *,
                       expected_ports: Callable[..., tuple[list[Any], list[Any]]] | None = None) -> list[ServiceView]:
    """The views of the Services ``query`` names (NAMESPACE/NAME[:PORT], or an address).

    A name is found through ``state``, with ``expected_ports`` (``checks.expected.expected_ports``, passed in:
    the tracer does not depend on checks) giving the ports kube-proxy programs on ``node``.
    """
    ipvs = dp.ipvs
    if ipvs is None:
        raise TypeError("ipvs_service_views: the data plane holds no IPVS table")
    query = query.strip()
    groups: list[tuple[str | None, str, list[tuple[str, VirtualService]], Any]] = []  # (spn, proto, [(kind, vs)], expected port)
    if "/" in query and not _is_address(query):
        if state is None:
            raise NotFoundError(f"{query}: IPVS holds no Service names", hint="give the ClusterIP[:PORT], or the cluster state: "
                                "--cluster-state FILE (kubectl get services,endpointslices,nodes -A -o json) or --node-name NODE "
                                "(live API); a bundle collected through the API carries it")
        if expected_ports is None:
            raise TypeError("ipvs_service_views: a Service name needs expected_ports (checks.expected.expected_ports)")
        ns_name, _, port_q = query.partition(":")
        for fam in sorted({vs.family or 4 for vs in ipvs}):
            for e in expected_ports(state, node or "", fam)[0]:
                if f"{e.service.namespace}/{e.service.name}" != ns_name:
                    continue
                if port_q and port_q not in (e.port.name, str(e.port.port)):
                    continue
                groups.append((e.spn, e.protocol, _virtuals_of(dp, e), e))
        if not groups:
            raise NotFoundError(f"no Service {query} in {state.source}", hint="check the name and port (NAMESPACE/NAME[:PORT])")
    else:
        try:
            fam, addr, port = parse_endpoint(query)
        except ValueError:
            raise InputError(f"{query!r} is not a Service name or address", hint="give NAMESPACE/NAME[:PORT] or a ClusterIP[:PORT]") from None
        from kptrace.model.addr import format_addr

        text = format_addr(fam, addr)
        for vs in ipvs:
            if vs.address == text and (port is None or vs.port == port):
                groups.append((None, vs.protocol.lower(), [("VirtualService", vs)], None))
        if not groups:
            raise NotFoundError(f"no IPVS virtual service for {query} in {ipvs.source}")
    return [_view(dp, spn, proto, virtuals, e) for spn, proto, virtuals, e in groups]


def _is_address(q: str) -> bool:
    try:
        parse_endpoint(q)
        return True
    except ValueError:
        return False


def _virtuals_of(dp: Dataplane, e) -> list[tuple[str, VirtualService]]:
    ipvs = dp.ipvs
    assert ipvs is not None  # only ipvs_service_views calls this
    proto = e.protocol.upper()
    out = []
    for kind, addr, port in ([("ClusterIP", e.cluster_ip, e.port.port)] + [("ExternalIP", ip, e.port.port) for ip in e.external_ips]
                             + [("LoadBalancerIP", ip, e.port.port) for ip in e.lb_ips]):
        vs = ipvs.virtual(proto, addr, port)
        if vs is not None:
            out.append((kind, vs))
    if e.node_port:
        out.extend(("NodePort", vs) for vs in ipvs if vs.protocol == proto and vs.port == e.node_port and (vs.family or 4) == e.family)
    return out


def _view(dp: Dataplane, spn: str | None, proto: str, virtuals, e) -> ServiceView:
    warnings: list[str] = []
    assert dp.ipvs is not None  # only ipvs_service_views calls this
    notes = [f"IPVS mode: virtual services from {dp.ipvs.source}"]
    entries = []
    for kind, vs in virtuals:
        entries.append(EntryPoint(kind, vs.address, vs.port, proto, f"IPVS {vs.scheduler or '?'}" + (f" persistent {vs.persistent}s"
                                  if vs.persistent else ""), str(vs.location), vs.text.strip()))
        if not vs.schedulable:
            warnings.append(f"{kind} {vs.endpoint}: the virtual service has no real server taking connections: they fail"
                            + (" (externalTrafficPolicy Local and no endpoint on this node: kube-proxy before ~1.21 left it empty; "
                               "current ones fall back to the cluster endpoints)" if e is not None and e.policy.external_local else ""))
        for rs in vs.real_servers:
            if rs.weight == 0:
                warnings.append(f"{kind} {vs.endpoint}: real server {rs.endpoint} has weight 0 (draining: no new connections)")
    first = next((vs for kind, vs in virtuals if kind in ("ClusterIP", "VirtualService")), virtuals[0][1] if virtuals else None)
    endpoints = []
    if first is not None:
        live = first.schedulable
        total = sum(Fraction(r.weight if r.weight is not None else 1) for r in live) or Fraction(1)
        for rs in first.real_servers:
            share = Fraction(rs.weight if rs.weight is not None else 1) / total if rs in live else Fraction(0)
            if first.scheduler and first.scheduler.lower() == "rr" and rs in live:
                share = Fraction(1, len(live))
            endpoints.append(Endpoint(rs.endpoint, f"weight {rs.weight}", share, False))
    traces = []
    node_ips = dp.node_ips
    for kind, vs in virtuals:
        if vs.address is None or vs.port is None:
            continue
        wanted = (Origin.POD, Origin.NODE) if kind in ("ClusterIP", "VirtualService") else (Origin.EXTERNAL, Origin.POD, Origin.NODE)
        for origin in wanted:
            plan = plan_packet(dp, vs.address, vs.port, origin=origin, proto=proto)
            traces.append(EntryTrace(entries[[v for _, v in virtuals].index(vs)], origin, origin.value, trace_packet(dp, plan)))
    if not node_ips and any(k == "NodePort" for k, _ in virtuals):
        notes.append("NodePort virtual services are listed per node address; give --node-ip to mark which are this node's")
    name = spn or f"? ({virtuals[0][1].protocol} {virtuals[0][1].endpoint}: give the cluster state for the Service's name)"
    ranges: tuple[str, ...] = ()
    if dp.ipsets is not None and e is not None and e.lb_ips:
        s = dp.ipsets.get("KUBE-6-LOAD-BALANCER-SOURCE-CIDR" if ":" in e.cluster_ip else "KUBE-LOAD-BALANCER-SOURCE-CIDR")
        if s is not None:
            ranges = tuple(sorted({m.split(",")[2] for m in s.members if m.split(",")[0] in e.lb_ips}))
    return ServiceView(
        name=name, protocol=proto, hash=service_chain_hash(spn, proto) if spn else "", family=(first.family or 4) if first else 4,
        chains=tuple(f"IPVS {vs.protocol} {vs.endpoint}" for _, vs in virtuals), entry_points=tuple(entries),
        endpoints=tuple(endpoints), source_ranges=ranges,
        internal_policy=("Local" if e.policy.internal_local else "Cluster") if e is not None else "?",
        external_policy=(("Local" if e.policy.external_local else "Cluster") if e.policy.externally_accessible else None) if e is not None else None,
        affinity_timeout=first.persistent if first is not None else None, traces=tuple(traces),
        warnings=tuple(dict.fromkeys(warnings)), notes=tuple(notes))
