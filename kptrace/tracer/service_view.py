"""Service views: the values every mode's view is made of (iptables: :mod:`.services`, IPVS:
:mod:`.services_ipvs`, nftables: :mod:`.services_nft`), and the tracing of entry points they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from kptrace.model.addr import parse_addr, parse_cidr
from kptrace.model.dataplane import Dataplane
from kptrace.tracer.defaults import ASSUMED_NODE_IP, plan_packet, trace_packet
from kptrace.tracer.packet import Origin
from kptrace.tracer.result import Trace

__all__ = ["Endpoint", "EntryPoint", "EntryTrace", "ServiceView", "host_in", "trace_entries", "traced_shares"]


@dataclass(frozen=True, slots=True)
class EntryPoint:
    kind: str  # ClusterIP | ExternalIP | LoadBalancerIP | ExternalIP/LoadBalancerIP | NodePort | HealthCheckNodePort
    address: str | None  # None for a NodePort: any node address
    port: int
    protocol: str
    via: str  # the chain or verdict the entry rule leads to
    location: str  # file:line of the rule
    text: str


@dataclass(frozen=True, slots=True)
class EntryTrace:
    entry: EntryPoint
    origin: Origin
    label: str  # "pod", "node", "external", "external (in 198.51.100.0/24)"
    trace: Trace


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # ip:port
    chain: str  # KUBE-SEP-...
    probability: Fraction | None  # effective share from a pod to the first ClusterIP; None if not traced
    local: bool = False  # listed in the Local-policy (KUBE-SVL) chain


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str  # ns/name:port as kube-proxy writes it, or "? (hash ...)" when the input does not say
    protocol: str
    hash: str
    family: int
    chains: tuple[str, ...]
    entry_points: tuple[EntryPoint, ...]
    endpoints: tuple[Endpoint, ...]
    source_ranges: tuple[str, ...]
    internal_policy: str
    external_policy: str | None
    affinity_timeout: int | None
    traces: tuple[EntryTrace, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


def trace_entries(dp: Dataplane, family: int, entries: list[EntryPoint], proto: str, source_ranges: list[str],
                  origins: tuple[Origin, ...] | None, warnings: list[str], notes: list[str]) -> list[EntryTrace]:
    """Trace each entry point from each origin that reaches it (and from inside an LB's source range)."""
    node_ips = dp.node_ips_of(family)
    node_ip = node_ips[0] if node_ips else ASSUMED_NODE_IP[family]
    if not node_ips and any(e.kind == "NodePort" for e in entries):
        notes.append(f"NodePorts traced to the stand-in node address {node_ip} (give --node-ip)")
    traces: list[EntryTrace] = []
    for e in entries:
        if e.kind == "HealthCheckNodePort":
            continue
        dst = e.address or node_ip
        try:
            parse_addr(dst)
        except ValueError:  # a rule `parse` refuses, read anyway under --lenient
            warnings.append(f"{e.kind} {e.address!r} at {e.location} is not an address: not traced")
            continue
        wanted = (Origin.POD, Origin.NODE) if e.kind == "ClusterIP" else (Origin.EXTERNAL, Origin.POD, Origin.NODE)
        for origin in wanted:
            if origins is not None and origin not in origins:
                continue
            plan = plan_packet(dp, dst, e.port, origin=origin, proto=proto)
            if e.address is None and not node_ips:
                plan = type(plan)(plan.packet, tuple(set(plan.assumed_local) | {dst}), plan.notes)
            traces.append(EntryTrace(e, origin, origin.value, trace_packet(dp, plan)))
            if origin is Origin.EXTERNAL and source_ranges and e.kind != "NodePort":
                inside = host_in(source_ranges[0])
                if inside is not None and inside != plan.packet.src:
                    plan = plan_packet(dp, dst, e.port, origin=origin, proto=proto, src=inside)
                    traces.append(EntryTrace(e, origin, f"external from {inside} (in {source_ranges[0]})", trace_packet(dp, plan)))
    return traces


def traced_shares(traces: list[EntryTrace], warnings: list[str]) -> tuple[EntryTrace | None, dict[str, Fraction]]:
    """Each endpoint's share of new connections from a pod to the first ClusterIP (the traced, exact
    figure); a warning when they are unequal."""
    shares: dict[str, Fraction] = {}
    ref = next((t for t in traces if t.entry.kind == "ClusterIP" and t.origin is Origin.POD), None)
    if ref is not None:
        for o in ref.trace.outcomes:
            if o.dnat:
                shares[o.dnat] = shares.get(o.dnat, Fraction(0)) + o.probability
        ps = [p for p in shares.values() if p > 0]
        if len(ps) > 1 and (max(ps) - min(ps)) / max(ps) > Fraction(1, 100):
            detail = ", ".join(f"{d} {float(p):.1%}" for d, p in sorted(shares.items(), key=lambda x: -x[1]))
            warnings.append(f"unequal shares from a pod to {ref.entry.address}:{ref.entry.port}: {detail} (kube-proxy programs 1/n each)")
    return ref, shares


def host_in(cidr_text: str) -> str | None:
    from kptrace.model.addr import format_addr

    try:
        c = parse_cidr(cidr_text)
    except ValueError:
        return None
    return format_addr(c.version, c.host(1) if not c.is_host else c.network)
