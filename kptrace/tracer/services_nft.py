"""``kptrace svc`` in nftables mode: a Service port's view (entry points, endpoints with their traced
shares, policies, affinity, source ranges, warnings) from kube-proxy's nft table.

What kube-proxy programmed is read once by :func:`kptrace.model.programmed_nft.read_nft` (the same
values drift compares); the traces are the one engine's, as in iptables mode. Services are found by the
names nftables mode writes into every chain (``service-HASH-ns/name/proto/port``) and by the map
elements' addresses, so ``ns/name``, ``ns/name:port``, ``IP[:port]`` and a chain name all work.
"""

from __future__ import annotations

from kptrace.errors import InputError, UsageError
from kptrace.model.addr import is_uint, parse_endpoint
from kptrace.model.dataplane import Dataplane
from kptrace.model.programmed import ProgrammedPort
from kptrace.model.programmed_nft import nft_chain_service, read_nft
from kptrace.tracer.packet import Origin
from kptrace.tracer.service_view import Endpoint, EntryPoint, ServiceView, trace_entries, traced_shares

__all__ = ["has_nft_services", "nft_service_views"]


def has_nft_services(dp: Dataplane) -> bool:
    return dp.nft is not None and any(name == "kube-proxy" for _, name in dp.nft.tables)


def _ports(dp: Dataplane, names: set[tuple[str, str]] | None = None) -> list[ProgrammedPort]:
    """The Service ports kube-proxy's tables program (``names``: just those; reading all of a 10k-Service
    node's costs ~1.7 s, one ~0.3 s)."""
    key = ("nft-programmed", frozenset(names) if names is not None else None)
    cached = dp.cache.get(key)
    if cached is None:
        ports: dict = {}
        if dp.nft is not None:
            read_nft(dp.nft, ports, {}, names=names)
        cached = dp.cache[key] = [p for _, p in sorted(ports.items(), key=lambda kv: (kv[0][0], kv[1].spn or ""))]
    return cached


def _candidates(dp: Dataplane, query: str) -> set[tuple[str, str]]:
    """(ns/name:port, protocol) of the ports ``query`` may mean, found from chain names and map elements
    without reading any rule."""
    out: set[tuple[str, str]] = set()
    tables = [t for (_f, n), t in dp.nft.tables.items() if n == "kube-proxy"] if dp.nft is not None else []
    info = nft_chain_service(query)
    if info is not None:
        return {(info[1], info[2])}
    if "/" in query and not _is_address(query):
        ns_name = query.partition(":")[0]
        needle = f"-{ns_name}/"
        for t in tables:
            for cname in t.chains:
                if needle in cname:
                    i = nft_chain_service(cname)
                    if i is not None and (i[1] == ns_name or i[1].startswith(ns_name + ":")):
                        out.add((i[1], i[2]))
            for mname in ("no-endpoint-services", "no-endpoint-nodeports"):
                s = t.sets.get(mname)
                for key, comment in (s.comments.items() if s is not None else ()):
                    spn = comment.split(" ", 1)[0]
                    if (spn == ns_name or spn.startswith(ns_name + ":")) and isinstance(key, tuple):
                        out.add((spn, key[-2]))
        return out
    try:
        fam, addr, _port = parse_endpoint(query)
    except ValueError:
        return out
    from kptrace.model.addr import format_addr

    text = format_addr(fam, addr)
    for t in tables:
        for mname in ("service-ips", "no-endpoint-services"):
            s = t.sets.get(mname)
            if s is None:
                continue
            comments = s.comments if mname == "no-endpoint-services" else {}
            for key, value in s.elements:
                if isinstance(key, tuple) and key and key[0] == text:
                    i = nft_chain_service(getattr(value, "target", None) or "")
                    if i is not None:
                        out.add((i[1], i[2]))
                    elif comments.get(key):
                        out.add((comments[key].split(" ", 1)[0], key[1]))
    return out


def _is_address(q: str) -> bool:
    try:
        parse_endpoint(q)
        return True
    except ValueError:
        return False


def _matches(p: ProgrammedPort, query: str) -> bool:
    if "/" in query and not query.startswith(("service-", "local-", "external-", "endpoint-", "firewall-")):
        ns_name, _, port = query.partition(":")
        if ns_name.count("/") != 1:
            raise InputError(f"{query!r} is not NAMESPACE/NAME[:PORT]")
        spn = p.spn or ""
        if spn != ns_name and not spn.startswith(ns_name + ":"):
            return False
        if not port:
            return True
        return spn == f"{ns_name}:{port}" or (is_uint(port) and any(e.port == int(port) for e in p.entries + p.verdicts
                                                                     if e.kind != "NodePort"))
    info = nft_chain_service(query)
    if info is not None:
        return p.spn == info[1] and p.protocol == info[2]
    try:
        fam, addr, eport = parse_endpoint(query)
    except ValueError:
        raise UsageError(f"{query!r} is not a Service name, address or chain",
                         hint="give NAMESPACE/NAME[:PORT], a ClusterIP[:PORT], or a service-…/endpoint-… chain") from None
    from kptrace.model.addr import format_addr

    text = format_addr(fam, addr)
    return p.family == fam and any(e.address == text and (eport is None or e.port == eport) for e in p.entries + p.verdicts)


def nft_service_views(dp: Dataplane, query: str | None, *, origins: tuple[Origin, ...] | None = None) -> list[ServiceView]:
    """Views of the Service ports kube-proxy's nft tables hold that match ``query`` (all of them when None)."""
    if not has_nft_services(dp):
        return []
    query = query.strip() if query is not None else None
    if query is None:
        return [_view(dp, p, origins) for p in _ports(dp)]
    names = _candidates(dp, query)
    if not names:
        _matches(ProgrammedPort(0, ""), query)  # a malformed query is an error, not "no rules"
        return []
    return [_view(dp, p, origins) for p in _ports(dp, names) if _matches(p, query)]


def _entry(e, proto: str) -> EntryPoint:
    return EntryPoint(e.kind, e.address, e.port, e.protocol or proto, e.target, e.evidence.location, e.evidence.text)


_KIND_ORDER = {"ClusterIP": 0, "ExternalIP": 1, "LoadBalancerIP": 2, "ExternalIP/LoadBalancerIP": 3, "NodePort": 4}
_CHAIN_ORDER = {"service": 0, "local": 1, "external": 2, "firewall": 3}


def _view(dp: Dataplane, p: ProgrammedPort, origins: tuple[Origin, ...] | None) -> ServiceView:
    """Entry points and chains in a fixed order (ClusterIP first; service-, local-, external-, firewall-):
    the three forms of a ruleset list map elements and chains in different orders."""
    proto = p.protocol or "tcp"
    warnings: list[str] = []
    notes: list[str] = []
    entries: list[EntryPoint] = []
    seen: set = set()
    for e in sorted(p.entries, key=lambda e: (_KIND_ORDER.get(e.kind, 9), e.address or "", e.port)):
        key = (e.kind, e.address, e.port)
        if key not in seen:
            seen.add(key)
            entries.append(_entry(e, proto))
    for v in sorted(p.verdicts, key=lambda e: (_KIND_ORDER.get(e.kind, 9), e.address or "", e.port)):
        if v.target not in ("DROP", "REJECT"):
            continue
        # kube-proxy drops when the Service has endpoints but none for this traffic, rejects when it has none
        what = "no local endpoints on this node" if v.target == "DROP" else "no endpoints"
        warnings.append(f"{v.kind} {v.address or '*'}:{v.port}: {v.target} — the Service has {what} ({v.evidence.location})")
        key = (v.kind, v.address, v.port)
        if key not in seen:  # an entry the maps already lead somewhere is traced once
            seen.add(key)
            entries.append(_entry(v, proto))

    cluster = p.cluster or []
    local = p.local or []
    dests: dict[str, list[str]] = {}
    for x in cluster:
        dests.setdefault(x.address, []).append(x.chain)
    for dest, chains in dests.items():
        if len(chains) > 1:
            warnings.append(f"endpoint {dest} is listed {len(chains)} times in {p.cluster_name}: it gets {len(chains)} shares")
    for x in cluster + local:
        if x.address == "?":
            warnings.append(f"{x.evidence.location} sends connections to {x.chain}, which is not in this input")

    source_ranges = [r for r, _ in p.source_ranges]
    traces = trace_entries(dp, p.family, entries, proto, source_ranges, origins, warnings, notes)
    ref, shares = traced_shares(traces, warnings)
    if ref is None and cluster and not any(e.kind == "ClusterIP" for e in entries):
        notes.append(f"no map element leads to {p.cluster_name} (service-ips is not in the input): the shares are the chain's own")
    local_dests = {x.address for x in local}
    endpoints: list[Endpoint] = []
    listed: set[str] = set()
    for x in cluster:
        if x.address in listed:
            continue
        listed.add(x.address)
        share = shares.get(x.address) if ref is not None else _own_share(cluster, x.address)
        endpoints.append(Endpoint(x.address, x.chain, share, x.address in local_dests))
    for x in local:
        if x.address not in listed:
            listed.add(x.address)
            endpoints.append(Endpoint(x.address, x.chain, shares.get(x.address) if ref is not None else None, True))

    internal = "Local" if any(e.kind == "ClusterIP" and e.via.startswith("local-") for e in entries) or any(
        v.kind == "ClusterIP" and v.target == "DROP" for v in p.verdicts) else "Cluster"
    external = p.external_policy[0] if p.external_policy and any(e.kind not in ("ClusterIP", "HealthCheckNodePort") for e in entries) else None
    return ServiceView(
        name=p.spn or f"? ({', '.join(p.chains)})", protocol=proto, hash=p.hash, family=p.family,
        chains=tuple(sorted(p.chains, key=lambda c: _CHAIN_ORDER.get(c.split("-", 1)[0], 9))),
        entry_points=tuple(entries), endpoints=tuple(endpoints), source_ranges=tuple(source_ranges),
        internal_policy=internal, external_policy=external,
        affinity_timeout=p.affinity[0] if p.affinity else None, traces=tuple(traces),
        warnings=tuple(dict.fromkeys(warnings)), notes=tuple(notes),
    )


def _own_share(eps, address: str):
    from fractions import Fraction

    total = sum((x.share for x in eps if x.address == address and x.share is not None), 0.0)
    return Fraction(total).limit_denominator(1 << 20) if total else None
