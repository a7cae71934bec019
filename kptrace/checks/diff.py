"""What behaves differently between two data planes of a node (two snapshots, two nodes, two proxy modes),
for each Service entry point and origin: compared by what the one tracer says happens, not by the text.

Each side's entry points come from what its kube-proxy programmed (iptables chains, nftables maps, IPVS
virtual services); the union of both sides is traced on both, from each origin that reaches it (a pod, the
node, outside the cluster; outside from inside a LoadBalancer's source range too). A behaviour is the set of
outcomes with their probabilities: verdict, endpoint (after DNAT) and whether the source is masqueraded.
Equal behaviour written differently (hashes, rule order, ``0.3333333333`` vs ``0.33333333349``, chains vs
maps, iptables vs nftables vs IPVS) is not a change.

Speed: tracing every entry point of two 10k-Service nodes from every origin takes minutes. Two texts of
one mode (two snapshots) are compared line by line first (``checks/textdelta.py``): only the ports whose own
chains or map elements differ are traced. Otherwise, ports whose
programmed facts (entry points, endpoints with shares, policies, affinity, source ranges, "no endpoints"
verdicts) are equal on both sides are not traced when the rest of the two rulesets (everything but the
per-Service chains and map elements) is the same as well (``shortcut``); then a sample of them is traced
anyway, and any disagreement there turns the shortcut off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, NamedTuple

from kptrace.model.dataplane import Dataplane
from kptrace.model.programmed import ProgrammedPort

__all__ = ["Behaviour", "Change", "DiffReport", "Probe", "accepted_endpoints", "diff_dataplanes", "entry_points"]

#: probabilities closer than this are equal: iptables quantises --probability to 2^-31, nft's numgen is exact
_EPSILON = Fraction(1, 10**6)


class Probe(NamedTuple):
    """An entry point and an origin to compare: where the packet goes in, and from where."""

    family: int
    protocol: str
    address: str | None  # None: a NodePort (on each side's own node address)
    port: int
    origin: str  # pod | node | external
    source: str | None = None  # a pinned source (inside a LoadBalancer source range), else the origin's default
    special: str = ""  # a probe of a known difference between proxy modes (MODE_PROBES), not a Service entry point
    #: a returning client of a Service with session affinity: the endpoint (ip:port) an earlier connection of this
    #: client went to, so that it is in that endpoint's affinity list; None: a new client
    returning: str | None = None

    @property
    def source_class(self) -> str:
        """The client, in words, where it is not the origin's usual one: a pinned source, a returning client."""
        words = [self.source] if self.source else []
        if self.returning:
            words.append(f"returning client of {self.returning}")
        return ", ".join(words)

    @property
    def dst(self) -> str:
        a = self.address or "<node>"
        return f"[{a}]:{self.port}" if self.family == 6 and self.address else f"{a}:{self.port}"


class Outcome(NamedTuple):
    verdict: str
    endpoint: str | None  # after DNAT, None when not DNATed
    masquerade: bool
    probability: Fraction
    rule: str  # where it was decided: the DNAT rule, else the verdict's rule (file:line)


@dataclass(frozen=True, slots=True)
class Behaviour:
    outcomes: tuple[Outcome, ...]
    assumed: bool = False

    def key(self) -> tuple:
        return tuple(sorted((o.verdict, o.endpoint or "", o.masquerade) for o in self.outcomes))

    def same_as(self, other: "Behaviour") -> bool:
        if self.key() != other.key():
            return False
        mine = {(o.verdict, o.endpoint, o.masquerade): o.probability for o in self.outcomes}
        return all(abs(mine[(o.verdict, o.endpoint, o.masquerade)] - o.probability) < _EPSILON for o in other.outcomes)

    def summary(self) -> str:
        accepted = [o for o in self.outcomes if o.verdict == "ACCEPT" and o.endpoint]
        if len(accepted) > 4 and len(accepted) == len(self.outcomes) and len({(o.probability, o.masquerade) for o in accepted}) == 1:
            o = accepted[0]  # many endpoints, one share each: said in a few words (the cause names what changed)
            return f"{len(accepted)} endpoints, {_share(o.probability)} each{' masq' if o.masquerade else ''}"
        parts = []
        for o in sorted(self.outcomes, key=lambda o: (-o.probability, o.verdict, o.endpoint or "")):
            what = o.endpoint if o.verdict == "ACCEPT" and o.endpoint else (o.verdict if not o.endpoint else f"{o.verdict} {o.endpoint}")
            if o.verdict == "ACCEPT" and not o.endpoint:
                what = "ACCEPT (no DNAT)"
            share = "" if o.probability == 1 else f" {_share(o.probability)}"
            parts.append(f"{what}{share}{' masq' if o.masquerade else ''}")
        return ", ".join(parts) or "nothing"


def _share(p: Fraction) -> str:
    approx = p.limit_denominator(1000)
    if abs(approx - p) < _EPSILON:
        return f"{approx.numerator}/{approx.denominator}"
    return f"{float(p):.1%}"


@dataclass(frozen=True, slots=True)
class Change:
    service: str | None
    probe: Probe
    before: Behaviour
    after: Behaviour
    cause: str  # one line: what differs
    before_rule: str  # the rule that decides it on each side (file:line)
    after_rule: str
    explanation: str = ""  # why, when it is a known difference between proxy modes


@dataclass(slots=True)
class DiffReport:
    before: list[str]
    after: list[str]
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    compared: int = 0  # entry point x origin pairs
    traced: int = 0  # of them, traced on both sides (the rest: equal programmed facts, see the module doc)
    identical: int = 0  # Service ports whose rules and map elements are the same text on both sides: not traced
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ what proxy modes do differently

#: Probes of what kube-proxy's modes are known to do differently (proxier.go of each mode), each with the
#: one line said when it behaves differently between two sides of different modes.
MODE_PROBES = {
    "unused-port": ("a ClusterIP on a port its Service does not have",
                    "nftables mode rejects traffic to a ClusterIP's other ports (cluster-ips-check); iptables and IPVS "
                    "modes let it through without DNAT"),
    "unallocated": ("an unallocated address in the Service CIDR",
                    "nftables mode drops traffic to unallocated addresses of the Service CIDR (cluster-ips-check); "
                    "iptables and IPVS modes route it on"),
    "localhost-nodeport": ("a NodePort on 127.0.0.1 from the node",
                           "iptables mode serves NodePorts on localhost (route_localnet); nftables and IPVS modes do not"),
    "nodeport-other-address": ("a NodePort on another address of the node",
                               "nftables mode serves NodePorts only on the addresses of its nodeport-ips set (--nodeport-"
                               "addresses, 'primary' by default); iptables mode on every local address"),
}


def service_cidr(dp: Dataplane, family: int) -> str | None:
    """The Service CIDR nftables mode writes into cluster-ips-check (``ip daddr 172.30.0.0/16 drop``)."""
    if dp.nft is None:
        return None
    c = dp.nft.chain("ip" if family == 4 else "ip6", "kube-proxy", "cluster-ips-check")
    for _line, text in (c.texts() if c is not None else ()):
        words = text.replace("{", " ").replace("}", " ").split()
        for i, w in enumerate(words[:-1]):
            if w == "daddr" and "/" in words[i + 1] and "drop" in words:
                return words[i + 1]
    return None


def _mode_probes(sides: list[tuple[Dataplane, dict]], keys: list[tuple]) -> list[Probe]:
    import ipaddress

    out: list[Probe] = []
    for fam in sorted({k[0] for k in keys}):
        cluster = [k for k in keys if k[0] == fam and k[2] is not None]
        used = {(k[1], k[2], k[3]) for k in keys}
        if cluster:
            _f, proto, addr, port = cluster[0]
            other = next(p for p in range(port + 1, port + 1000) if (proto, addr, p) not in used)
            out.append(Probe(fam, proto, addr, other, "pod", special="unused-port"))
        cidr = next((c for dp, _ in sides for c in [service_cidr(dp, fam)] if c), None)
        if cidr is not None:
            taken = {k[2] for k in keys if k[2] is not None}
            net = ipaddress.ip_network(cidr, strict=False)
            free = next((str(a) for a in _some_hosts(net) if str(a) not in taken), None)
            if free is not None:
                out.append(Probe(fam, "tcp", free, 80, "pod", special="unallocated"))
        nodeports = [k for k in keys if k[0] == fam and k[2] is None]
        if nodeports and fam == 4:
            _f, proto, _a, port = nodeports[0]
            out.append(Probe(fam, proto, "127.0.0.1", port, "node", special="localhost-nodeport"))
        addresses = list(dict.fromkeys(a for dp, _ in sides for a in dp.node_ips_of(fam)))
        if nodeports and len(addresses) > 1:  # the node's second address (given with --node-ip, or a bundle's)
            _f, proto, _a, port = nodeports[0]
            out.append(Probe(fam, proto, addresses[1], port, "external", special="nodeport-other-address"))
    return out


def _some_hosts(net):
    """Addresses from the top of a network (Service IPs are handed out from the bottom)."""
    top = int(net.broadcast_address) - 1
    for i in range(64):
        if top - i > int(net.network_address):
            yield type(net.network_address)(top - i)


# ------------------------------------------------------------------ entry points

class EntryInfo(NamedTuple):
    service: str | None
    kind: str
    source_ranges: tuple[str, ...]
    port_key: tuple[int, str] | None = None  # the ProgrammedPort's key


def entry_points(dp: Dataplane, only: set[str] | None = None, names: set[tuple[str, str]] | None = None
                 ) -> tuple[dict[tuple, EntryInfo], dict[tuple[int, str], ProgrammedPort]]:
    """(family, protocol, address or None, port) -> what it is; and the programmed ports (empty in IPVS mode)."""
    out: dict[tuple, EntryInfo] = {}
    ports: dict[tuple[int, str], ProgrammedPort] = {}
    if dp.ipvs is not None and len(dp.ipvs):
        node_ips = set(dp.node_ips)
        for vs in dp.ipvs:
            if vs.address is None or vs.port is None:
                continue
            fam = vs.family or 4
            addr = None if vs.address in node_ips else vs.address
            out.setdefault((fam, vs.protocol.lower(), addr, vs.port),
                           EntryInfo(None, "NodePort" if addr is None else "VirtualService", ()))
        return out, ports
    from kptrace.checks.programmed import programmed

    prog = programmed(dp, only=only, names=names if dp.mode == "nftables" else None)
    ports = prog.ports if only is None else {k: p for k, p in prog.ports.items() if k[1] in only}
    for (fam, h), p in ports.items():
        ranges = tuple(r for r, _ in p.source_ranges)
        for e in p.entries + p.verdicts:
            if e.kind == "HealthCheckNodePort" or e.port is None:
                continue
            proto = (e.protocol or p.protocol or "tcp").lower()
            key = (fam, proto, e.address, e.port)
            if key not in out or out[key].service is None:
                out[key] = EntryInfo(p.spn, e.kind, ranges, (fam, h))
    return out, ports


def _signature(p: ProgrammedPort | None) -> tuple | None:
    """A port's programmed facts, spelled the same in every mode and layout."""
    if p is None:
        return None

    def eps(lst):
        if lst is None:
            return None
        shares: dict[str, float] = {}
        for x in lst:
            shares[x.address] = shares.get(x.address, 0.0) + (x.share if x.share is not None else float("nan"))
        return tuple(sorted((a, round(s, 6)) for a, s in shares.items()))

    return (
        tuple(sorted(((e.address or ""), e.port, (e.protocol or "").lower(), "entry") for e in p.entries if e.kind != "HealthCheckNodePort")),
        tuple(sorted(((e.address or ""), e.port, (e.protocol or "").lower(), e.target) for e in p.verdicts)),
        eps(p.cluster), eps(p.local), tuple(sorted(r for r, _ in p.source_ranges)),
        p.affinity[0] if p.affinity else None, p.external_policy[0] if p.external_policy else None,
        any((x.target or "").startswith(("KUBE-SVL-", "local-")) for x in p.entries if x.kind == "ClusterIP"),
    )


# ------------------------------------------------------------------ tracing

def probe_trace(dp: Dataplane, probe: Probe):
    """The trace of ``probe`` on ``dp`` (a NodePort on the node's first address, or a stand-in one): what
    :func:`behaviour` reads, and what ``diff --graph`` draws."""
    from kptrace.tracer.defaults import ASSUMED_NODE_IP, plan_packet, trace_packet
    from kptrace.tracer.packet import Origin

    node_ips = dp.node_ips_of(probe.family)
    dst = probe.address or (node_ips[0] if node_ips else ASSUMED_NODE_IP[probe.family])
    plan = plan_packet(dp, dst, probe.port, origin=Origin(probe.origin), proto=probe.protocol, src=probe.source)
    if probe.address is None and not node_ips:
        plan = type(plan)(plan.packet, tuple(set(plan.assumed_local) | {dst}), plan.notes)
    return trace_packet(dp, plan, affinity=probe_affinity(dp, probe, plan))


def probe_affinity(dp: Dataplane, probe: Probe, plan=None) -> frozenset[str]:
    """The affinity lists a returning client of ``probe.returning`` is in: those a new client's connection to that
    endpoint adds it to (on this side; none when this side does not send new clients there, or has no affinity)."""
    if not probe.returning:
        return frozenset()
    from kptrace.tracer.defaults import trace_packet

    if plan is None:
        return frozenset()
    # Each endpoint's returning client asks the same new client's trace: made once per plan (dp.cache).
    cache = dp.cache.setdefault("new-client-recent", {})
    got = cache.get(plan)
    if got is None:
        got = cache[plan] = tuple((o.dnat, o.recent) for o in trace_packet(dp, plan).outcomes)
    return frozenset(n for dnat, recent in got if dnat == probe.returning for n in recent)


def _entry_point(dp: Dataplane, probe: Probe) -> str | None:
    """The NodePort ``probe`` is sent to, as an outcome's DNAT would name it (None: a ClusterIP's or the like)."""
    from kptrace.tracer.defaults import ASSUMED_NODE_IP

    if probe.address is not None:
        return None
    node_ips = dp.node_ips_of(probe.family)
    return f"{node_ips[0] if node_ips else ASSUMED_NODE_IP[probe.family]}:{probe.port}"


def accepted_endpoints(dp: Dataplane, probe: Probe) -> tuple[str, ...]:
    """The endpoints :func:`behaviour`'s accepted outcomes go to, sorted: what the stale conntrack check asks of
    each entry point, without the rest of the behaviour."""
    here = _entry_point(dp, probe)
    return tuple(sorted({o.dnat for o in probe_trace(dp, probe).outcomes if o.verdict == "ACCEPT" and o.dnat and o.dnat != here}))


def behaviour(dp: Dataplane, probe: Probe) -> Behaviour:
    here = _entry_point(dp, probe)
    trace = probe_trace(dp, probe)
    merged: dict[tuple, list] = {}
    assumed = False
    for o in trace.outcomes:
        assumed = assumed or o.assumed
        endpoint = o.dnat
        if endpoint == here:  # a NodePort's own address: not DNATed on
            endpoint = None
        key = (o.verdict, endpoint, bool(o.masquerade or o.snat))
        # the rule that decided: the random choice of the endpoint, else the DNAT, else the verdict's rule
        step = (next((s for s in o.path if s.probability is not None), None)
                or next((s for s in o.path if "dnat" in s.note.lower()), None) or (o.path[-1] if o.path else None))
        rule = step.location if step is not None else ""
        if key in merged:
            merged[key][0] += o.probability
        else:
            merged[key] = [o.probability, rule]
    return Behaviour(tuple(Outcome(v, e, m, p, r) for (v, e, m), (p, r) in merged.items()), assumed)


def _returning(k: tuple, kind: str, *sides) -> list[Probe]:
    """Where a Service port has session affinity on either side: a returning client of each endpoint a new client
    can reach on either side, from the entry point's first origin (its own source class: the endpoint it keeps,
    or loses when the endpoint or the affinity went away)."""
    fam, proto, addr, port = k
    endpoints: set[str] = set()
    for _dp, info, ports in sides:
        p = ports.get(info.port_key) if info is not None and info.port_key is not None else None
        if p is None or p.affinity is None:
            continue
        for chains in (p.cluster, p.local):
            endpoints.update(c.address for c in chains or () if c.address and c.address != "?")
    origin = _origins(kind)[0] if addr is not None else "external"
    return [Probe(fam, proto, addr, port, origin, returning=e) for e in sorted(endpoints)]


def _origins(kind: str) -> tuple[str, ...]:
    return ("pod", "node") if kind == "ClusterIP" else ("pod", "node", "external")


def _cause(a: Behaviour, b: Behaviour) -> tuple[str, str, str]:
    ka = {(o.verdict, o.endpoint, o.masquerade): o for o in a.outcomes}
    kb = {(o.verdict, o.endpoint, o.masquerade): o for o in b.outcomes}
    gone = [k for k in ka if k not in kb]
    new = [k for k in kb if k not in ka]
    words = []
    ea = {o.endpoint for o in a.outcomes if o.endpoint}
    eb = {o.endpoint for o in b.outcomes if o.endpoint}
    if ea != eb:
        if ea - eb:
            words.append("no longer sent to " + ", ".join(sorted(ea - eb)))
        if eb - ea:
            words.append("now sent to " + ", ".join(sorted(eb - ea)))
    va = {o.verdict for o in a.outcomes}
    vb = {o.verdict for o in b.outcomes}
    if va != vb:
        words.append(f"verdict {'/'.join(sorted(va))} -> {'/'.join(sorted(vb))}")
    ma = {o.masquerade for o in a.outcomes}
    mb = {o.masquerade for o in b.outcomes}
    if ma != mb and not words:
        words.append("masquerade " + ("on" if True in mb and True not in ma else "off" if True in ma and True not in mb else "changed"))
    if not words:
        words.append("shares changed")
    rule_a = (ka[gone[0]].rule if gone else next(iter(ka.values())).rule) if ka else ""
    rule_b = (kb[new[0]].rule if new else next(iter(kb.values())).rule) if kb else ""
    return "; ".join(words), rule_a, rule_b


def _rest_signature(dp: Dataplane) -> tuple:
    """Everything but the per-Service chains and map elements, as text: equal on both sides means the
    Services' paths around their own chains are the same."""
    from kptrace.model.kube import SERVICE_CHAIN_PREFIXES

    parts: list[tuple] = []
    for fam, rs in sorted(dp.rulesets.items()):
        for tname, t in sorted(rs.tables.items()):
            for cname, c in sorted(t.chains.items()):
                if cname.startswith(SERVICE_CHAIN_PREFIXES) or cname.startswith("KUBE-SEP-"):
                    continue
                texts = [text for _, text in c.texts()] if hasattr(c, "texts") else [r.text for r in c.raw]
                if cname in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"):
                    texts = [x for x in texts if "KUBE-SVC-" not in x and "KUBE-EXT-" not in x and "KUBE-FW-" not in x
                             and "KUBE-SVL-" not in x and "KUBE-XLB-" not in x and "--comment" not in x]
                parts.append((fam, tname, cname, c.policy, tuple(texts)))
    if dp.nft is not None:
        for (family, name), nt in sorted(dp.nft.tables.items()):
            for cname, nc in sorted(nt.chains.items()):
                if cname.startswith(("service-", "local-", "external-", "endpoint-", "firewall-")):
                    continue
                parts.append((family, name, cname, nc.hook, nc.priority, nc.policy, tuple(text for _, text in nc.texts())))
            for sname, s in sorted(nt.sets.items()):
                if sname in ("service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports",
                             "firewall-ips", "cluster-ips", "hairpin-connections") or sname.startswith("affinity-"):
                    continue
                parts.append((family, name, sname, tuple(map(repr, s.elements))))
    return (dp.mode, tuple(parts))


def _key_probes(keys: list[tuple], side_b: tuple, side_a: tuple, shortcut: bool,
                sources: tuple[str | None, ...]) -> list[tuple[Probe, str | None, bool]]:
    """The probes of each entry point: every origin that reaches it, a client in each of its source ranges, each
    ``--src``, and a returning client of each endpoint where it has affinity; each with the Service's name and
    whether the shortcut may skip it (equal programmed facts on both sides)."""
    from kptrace.tracer.service_view import host_in

    before, eb, pb, sig_b = side_b
    after, ea, pa, sig_a = side_a
    probes: list[tuple[Probe, str | None, bool]] = []
    for k in keys:
        fam, proto, addr, port = k
        infos = [x for x in (eb.get(k), ea.get(k)) if x is not None]
        info = infos[0]  # k is a key of one side at least
        name = next((x.service for x in infos if x.service), None)
        kinds = {x.kind for x in infos}
        kind = "ClusterIP" if kinds == {"ClusterIP"} else next(iter(kinds - {"ClusterIP"}), info.kind)
        same = shortcut and k in eb and k in ea and sig_b.get(k) is not None and sig_b.get(k) == sig_a.get(k)
        for origin in _origins(kind):
            probes.append((Probe(fam, proto, addr, port, origin), name, same))
        ranges = {r for x in infos for r in x.source_ranges}
        for r in sorted(ranges):
            host = host_in(r)
            if host is not None and addr is not None and (":" in host) == (fam == 6):
                probes.append((Probe(fam, proto, addr, port, "external", host), name, same))
        for src in sources:
            if src is not None and (":" in src) == (fam == 6):
                probes.append((Probe(fam, proto, addr, port, "external", src), name, False))
        probes.extend((p, name, same) for p in _returning(k, kind, (before, eb.get(k), pb), (after, ea.get(k), pa)))
    return probes


def diff_dataplanes(before: Dataplane, after: Dataplane, *, sources: tuple[str | None, ...] = (), full: bool = False,
                    sample: int = 64, progress: Callable[[int, int], None] | None = None) -> DiffReport:
    """Every entry point x origin of either side, compared by behaviour. ``sources``: pinned sources to try
    besides the origins' defaults (``--src``). ``full``: trace every one, no shortcut."""
    report = DiffReport(list(before.sources), list(after.sources))
    # Two texts of one mode: the ports whose own lines differ are all that can behave differently.
    from kptrace.checks.textdelta import changed_ports, port_count, port_names

    affected = None if full else changed_ports(before, after)
    only = {h for _f, h in affected} if affected is not None else None
    names = port_names(affected) if affected is not None else None
    eb, pb = entry_points(before, only, names)
    ea, pa = entry_points(after, only, names)
    if affected is not None:
        eb = {k: v for k, v in eb.items() if v.port_key in affected}
        ea = {k: v for k, v in ea.items() if v.port_key in affected}
        report.identical = max(port_count(before), port_count(after)) - len(affected)
    families_b = {k[0] for k in eb} | set(before.rulesets)
    families_a = {k[0] for k in ea} | set(after.rulesets)
    keys = sorted(set(eb) | set(ea), key=lambda k: (k[0], k[1], k[2] or "", k[3]))
    # The shortcut: same programmed facts and same surroundings -> same behaviour (a sample is traced anyway).
    shortcut = (affected is None and not full and before.mode == after.mode and before.mode != "ipvs"
                and _rest_signature(before) == _rest_signature(after))
    if not full and not shortcut and affected is None:
        report.notes.append(f"{before.mode} -> {after.mode}: every entry point traced on both sides" if before.mode != after.mode
                            else "every entry point traced on both sides: the rulesets differ outside the Services' own chains")
    sig_b = {k: _signature(pb.get(eb[k].port_key)) for k in keys if k in eb} if shortcut else {}  # type: ignore[arg-type]
    sig_a = {k: _signature(pa.get(ea[k].port_key)) for k in keys if k in ea} if shortcut else {}  # type: ignore[arg-type]

    probes = _key_probes(keys, (before, eb, pb, sig_b), (after, ea, pa, sig_a), shortcut, sources)
    if affected is None:  # with identical surroundings the modes' differences behave alike on both sides
        probes.extend((p, None, False) for p in _mode_probes([(before, eb), (after, ea)], keys))
    # a sample of the shortcut ones is traced too: if any differs, the shortcut is off
    skipped = [i for i, (_, _, same) in enumerate(probes) if same]
    step = max(1, len(skipped) // sample) if skipped else 1
    check = set(skipped[::step][:sample])
    todo = [(i, p) for i, p in enumerate(probes) if not p[2] or i in check]
    done = 0
    total = len(todo)
    results: dict[int, tuple[Behaviour, Behaviour]] = {}
    for i, (probe, _name, same) in todo:
        results[i] = _both(before, after, probe, families_b, families_a)
        done += 1
        if progress is not None and (done % 50 == 0 or done == total):
            progress(done, total)
        if same and not results[i][0].same_as(results[i][1]):
            report.notes.append(f"{probe.dst} from {probe.origin} behaves differently although its programmed facts are "
                                "equal: every entry point traced")
            shortcut = False
            for j, p in enumerate(probes):
                if j not in results and p[2]:
                    todo.append((j, (p[0], p[1], False)))
            total = len(todo)
    report.compared = len(probes)
    report.traced = len(results)
    if affected is not None:
        report.notes.append(f"{report.identical} Service port{'s' * (report.identical != 1)} have the same rules and map "
                            f"elements, line for line, on both sides, and so does everything around them: not traced; "
                            f"{'the one' if len(affected) == 1 else f'the {len(affected)}'} that differ{'s' * (len(affected) == 1)} "
                            "traced (--full traces every one)")
    if report.traced < report.compared:
        report.notes.append(f"{report.compared - report.traced} of {report.compared} entry point x origin pairs have equal "
                            f"programmed facts on both sides and equal surroundings: not traced ({len(check)} such traced "
                            "as a check, all equal); --full traces every one")
    for i, (probe, name, _same) in enumerate(probes):
        if i not in results:
            report.unchanged += 1
            continue
        b, a = results[i]
        if b.same_as(a):
            report.unchanged += 1
            continue
        cause, rb, ra = _cause(b, a)
        why = MODE_PROBES[probe.special][1] if probe.special and before.mode != after.mode else ""
        report.changes.append(Change(name, probe, b, a, cause, rb, ra, why))
    return report


def _both(before: Dataplane, after: Dataplane, probe: Probe, fb: set[int], fa: set[int]) -> tuple[Behaviour, Behaviour]:
    b = behaviour(before, probe) if probe.family in fb else Behaviour((Outcome("NO RULES", None, False, Fraction(1), ""),))
    a = behaviour(after, probe) if probe.family in fa else Behaviour((Outcome("NO RULES", None, False, Fraction(1), ""),))
    return b, a

