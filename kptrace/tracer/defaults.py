"""Fill in what the user left out of a packet, the way the issue's defaults say, and say what was assumed."""

from __future__ import annotations

from dataclasses import dataclass

from kptrace.errors import InputError, NotFoundError, UsageError
from kptrace.model.addr import format_addr, parse_addr, parse_endpoint
from kptrace.model.dataplane import Dataplane
from kptrace.tracer.engine import Tracer
from kptrace.tracer.kubeproxy import pod_cidr
from kptrace.tracer.packet import (
    DEFAULT_EXTERNAL_SOURCE,
    DEFAULT_EXTERNAL_SOURCE6,
    DEFAULT_SPORT,
    PROTOCOLS,
    Origin,
    Packet,
)
from kptrace.tracer.result import Trace

__all__ = ["PacketPlan", "plan_packet", "resolve_affinity", "trace_packet"]

#: Stand-in node addresses when none is given (TEST-NET-1 / the IPv6 documentation prefix): never real.
ASSUMED_NODE_IP = {4: "192.0.2.10", 6: "2001:db8:ffff::10"}


@dataclass(frozen=True, slots=True)
class PacketPlan:
    packet: Packet
    assumed_local: tuple[str, ...]  # addresses taken as the node's own because no --node-ip was given
    notes: tuple[str, ...]


def plan_packet(dp: Dataplane, dst: str, dport: int, *, src: str | None = None, origin: Origin | None = None,
                proto: str = "tcp", sport: int = DEFAULT_SPORT, in_iface: str | None = None,
                out_iface: str | None = None) -> PacketPlan:
    """The packet to trace. ``--from`` defaults to node when the source is a node IP, else pod; a node
    source is the first node IP; a pod source is an address inside the pod CIDR that kube-proxy's
    masquerade rules reveal; an external source is 203.0.113.1."""
    if proto not in PROTOCOLS:
        raise InputError(f"unknown protocol {proto!r}", hint="use tcp, udp or sctp")
    family = parse_addr(dst)[0]
    rs = dp.ruleset(family)
    if rs is None:
        have = ", ".join(f"IPv{f}" for f in sorted(dp.rulesets)) or "nothing"
        raise NotFoundError(f"no IPv{family} rules to trace {dst} through (the input has {have})",
                            hint=f"pass the node's {'ip6tables-save' if family == 6 else 'iptables-save'} output with another --dump")
    node_ips = dp.node_ips_of(family)
    notes: list[str] = []
    assumed_local: list[str] = []
    if src is not None and parse_addr(src)[0] != family:
        raise InputError(f"--src {src} and --dst {dst} are of different address families")
    if origin is None:
        origin = Origin.NODE if src is not None and src in node_ips else Origin.POD
    if src is None:
        if origin is Origin.NODE:
            if node_ips:
                src = node_ips[0]
            else:
                src = ASSUMED_NODE_IP[family]
                assumed_local.append(src)
                notes.append(f"node source {src} is a stand-in (give --node-ip)")
        elif origin is Origin.EXTERNAL:
            src = DEFAULT_EXTERNAL_SOURCE if family == 4 else DEFAULT_EXTERNAL_SOURCE6
        else:
            cidr = cached_pod_cidr(dp, family)
            if cidr is not None:
                src = format_addr(family, cidr.host(-2))
                notes.append(f"pod source {src} is inside the pod CIDR {cidr} that the masquerade rules reveal")
            else:
                src = "198.18.0.10" if family == 4 else "2001:db8:fffe::10"
                notes.append(f"no rule reveals the pod CIDR: pod source {src} is a stand-in (give --src)")
    elif origin is Origin.NODE and src not in node_ips:
        assumed_local.append(src)
        if node_ips:
            notes.append(f"--src {src} is not among the --node-ip addresses but --from node says it is the node's")
    if not node_ips:
        # With no node addresses, the destination asked for counts as the node's own unless the rules say it is a
        # Service address, or no NodePort has its port (a NodePort to "the node" is what people mean; 8.8.8.8:53 is a
        # pod going out). Either way the trace says it assumed so.
        nodeports = _nodeport_ports(dp, family)
        if parse_addr(dst)[1] not in _service_addresses(dp, family) and (nodeports is None or (proto, dport) in nodeports):
            assumed_local.append(dst)
    return PacketPlan(Packet(src, dst, dport, proto, sport, origin, in_iface, out_iface), tuple(assumed_local), tuple(notes))


def _nodeport_ports(dp: Dataplane, family: int) -> set[tuple[str, int]] | None:
    """(protocol, port) of each NodePort nat KUBE-NODEPORTS matches; None when the rules have no such chain (nftables
    or IPVS mode, a partial dump: nothing to tell by)."""
    key = ("nodeport_ports", family)
    if key not in dp.cache:
        chain = dp.rulesets[family].chain("nat", "KUBE-NODEPORTS")
        found: set[tuple[str, int]] | None = None
        if chain is not None:
            found = set()
            for raw in chain.raw:
                words = raw.text.split()
                proto = words[words.index("-p") + 1] if "-p" in words[:-1] else "tcp"
                for i, w in enumerate(words[:-1]):
                    if w == "--dport" and words[i + 1].isdigit():
                        found.add((proto, int(words[i + 1])))
        dp.cache[key] = found
    return dp.cache[key]


def _service_addresses(dp: Dataplane, family: int) -> set[int]:
    """The destinations nat KUBE-SERVICES matches on (ClusterIPs, external and LB IPs), read once per data plane."""
    key = ("service_addresses", family)
    if key not in dp.cache:
        chain = dp.rulesets[family].chain("nat", "KUBE-SERVICES")
        found = set()
        for raw in chain.raw if chain is not None else ():
            for part in raw.text.split(" -d ")[1:]:
                try:
                    found.add(parse_addr(part.split(None, 1)[0].split("/")[0])[1])
                except ValueError:
                    pass
        dp.cache[key] = found
    return dp.cache[key]


def cached_pod_cidr(dp: Dataplane, family: int):
    key = ("pod_cidr", family)
    if key not in dp.cache:
        cidr = pod_cidr(dp.rulesets[family])
        if cidr is None and dp.nft is not None:
            from kptrace.tracer.nft import pod_cidr_nft

            cidr = pod_cidr_nft(dp.nft, family)
        dp.cache[key] = cidr
    return dp.cache[key]


def tracer_for(dp: Dataplane, family: int, assumed_local: tuple[str, ...] = (), affinity: frozenset[str] = frozenset()) -> Tracer:
    key = (family, assumed_local, affinity)
    cache = dp.cache.setdefault("tracers", {})
    t = cache.get(key)
    if t is None:
        rs = dp.rulesets[family]
        cidr = cached_pod_cidr(dp, family)
        # Pod addresses are never the node's own (hostNetwork pods use node addresses, outside the pod CIDR).
        t = Tracer(rs, dp.node_ips_of(family), assumed_local=assumed_local, affinity=affinity,
                   remote=(cidr,) if cidr is not None else (), routes=dp.routes, interfaces=dp.interfaces,
                   ipvs=dp.ipvs, ipsets=dp.ipsets, nft=dp.nft)
        # Compiled chains do not depend on the assumptions: share them between tracers of one family.
        shared = dp.cache.setdefault(("compiled", family), {})
        t._compiled = shared
        cache[key] = t
    return t


def trace_packet(dp: Dataplane, plan: PacketPlan, *, affinity: frozenset[str] = frozenset()) -> Trace:
    tracer = tracer_for(dp, plan.packet.family, plan.assumed_local, affinity)
    tr = tracer.trace(plan.packet)
    return Trace(tr.packet, tr.outcomes, tuple(tr.notes) + plan.notes)


def resolve_affinity(dp: Dataplane, family: int, endpoint: str) -> frozenset[str]:
    """``--affinity`` names an endpoint (``ip:port`` or its KUBE-SEP chain); returns the ``recent`` list
    names a client pinned to it has an entry in."""
    rs = dp.ruleset(family)
    t = rs.tables.get("nat") if rs else None
    if t is None:
        raise NotFoundError("no nat table to find the affinity endpoint in")
    try:
        parse_endpoint(endpoint)
    except ValueError:
        if not endpoint.startswith("KUBE-SEP-"):
            raise UsageError(f"--affinity {endpoint!r} is neither IP:PORT nor a KUBE-SEP-… chain",
                             hint="give the endpoint a client is pinned to, as IP:PORT or its KUBE-SEP-… chain") from None
    if endpoint.startswith("KUBE-SEP-"):
        if endpoint not in t.chains:
            raise NotFoundError(f"--affinity {endpoint}: no such chain in the input")
        return frozenset({endpoint})
    needle = f"--to-destination {endpoint}"
    names = set()
    for name, chain in t.chains.items():
        if not name.startswith("KUBE-SEP-"):
            continue
        for raw in chain.raw:
            if needle in raw.text and (raw.text.endswith(endpoint) or f"{needle} " in raw.text):
                names.add(name)
                if "--name " in raw.text:
                    names.add(raw.text.split("--name ", 1)[1].split()[0])
    if not names:
        raise NotFoundError(f"--affinity {endpoint}: no endpoint chain DNATs to it",
                            hint="give the endpoint as IP:PORT exactly as the DNAT rule has it, or its KUBE-SEP-… chain")
    return frozenset(names)
