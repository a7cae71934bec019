"""Drift: does a node's data plane agree with the Kubernetes API?

:func:`check_node` compares what kube-proxy should program on the node (:mod:`kptrace.checks.expected`)
with what its rules hold (:mod:`kptrace.checks.programmed`) and returns findings, each with a stable
kind, the Service port, the endpoint or entry point where there is one, and the rules as evidence.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from kptrace.checks.expected import ExpectedPort, Ignored, expected_ports
from kptrace.checks.programmed import ChainEndpoint, Entry, Evidence, Programmed, ProgrammedPort, programmed
from kptrace.checks.selection import CURRENT, Profile
from kptrace.model.cluster import ClusterState
from kptrace.model.dataplane import Dataplane

__all__ = ["KINDS", "SEVERITY", "Finding", "NodeReport", "PortReport", "check_node"]

#: Every finding kind, with its severity. The names are stable: CI filters on them.
SEVERITY: dict[str, str] = {
    "missing-service": "error",
    "stale-service": "error",
    "missing-endpoint": "error",
    "stale-endpoint": "error",
    "wrong-port": "error",
    "missing-entry-point": "error",
    "stale-entry-point": "error",
    "policy-mismatch": "error",
    "reject-rule-mismatch": "error",
    "unequal-probability": "warning",
    "affinity-mismatch": "warning",
    # IPVS mode
    "zero-weight-endpoint": "error",
    "missing-ipset-entry": "error",
    # the node's conntrack table (when collected): connections still going where the rules no longer lead
    "stale-conntrack": "error",
}
KINDS = tuple(SEVERITY)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    node: str
    service: str  # ns/name:port as kube-proxy names it
    protocol: str
    family: int
    detail: str
    endpoint: str | None = None
    entry: str | None = None  # "NodePort 30180", "ExternalIP 10.0.0.1:80", "SourceRange 1.2.3.0/24", ...
    evidence: tuple[Evidence, ...] = ()
    expected_from: str = ""  # where the API object came from
    hash: str = ""  # kube-proxy's chain hash of the Service port

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]


@dataclass(frozen=True, slots=True)
class PortReport:
    service: str
    protocol: str
    family: int
    expected: tuple[str, ...] | None  # endpoints (cluster-policy chain); None: the API has no such port
    expected_local: tuple[str, ...] | None
    actual: tuple[str, ...] | None  # endpoints in KUBE-SVC-…; None: the node has no rules for it
    actual_local: tuple[str, ...] | None
    findings: int = 0
    hash: str = ""


@dataclass(slots=True)
class NodeReport:
    node: str
    sources: list[str]
    ports: list[PortReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _entry_text(kind: str, address: str | None, port: int) -> str:
    if address is None:
        return f"{kind} {port}"
    return f"{kind} [{address}]:{port}" if ":" in address else f"{kind} {address}:{port}"


def check_node(dp: Dataplane, state: ClusterState, node: str, *, profile: Profile = CURRENT,
               node_labels: dict[str, str] | None = None, only: set[str] | None = None) -> NodeReport:
    """Compare one node's rules with the cluster state, for every address family the dump holds.
    ``only``: check just the Service ports with these chain hashes (``kptrace svc``'s expected column)."""
    # Everything built here is kept until the report is made: the cyclic GC frees nothing and its passes
    # over a 10k-Service node's objects cost ~1/3 of the check (benchmarks/run.py,
    # the "kptrace drift, 10k Services" row).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _check_node(dp, state, node, profile, node_labels, only)
    finally:
        if enabled:
            gc.enable()


def _check_node(dp, state, node, profile, node_labels, only) -> NodeReport:
    report = NodeReport(node, list(dp.sources))
    if state.node(node) is None:
        report.notes.append(f"the cluster state has no Node {node!r}: no endpoint counts as local and the node's zone is unknown")
    if dp.ipvs is not None:
        _check_ipvs(report, dp, state, node, profile, node_labels, only)
        return report
    prog = programmed(dp, only=only)
    for fam in sorted(dp.rulesets):
        expected, ignored = expected_ports(state, node, fam, profile=profile, node_labels=node_labels)
        if only is not None:
            expected = [e for e in expected if e.hash in only]
        else:
            report.ignored.extend(i for i in ignored if all(i.service != x.service for x in report.ignored)
                                  and not i.reason.startswith("no IPv"))
        _check_family(report, fam, expected, prog, only)
    return report


def _check_ipvs(report: NodeReport, dp: Dataplane, state: ClusterState, node: str, profile: Profile, node_labels, only) -> None:
    from kptrace.checks.drift_ipvs import check_family_ipvs

    assert dp.ipvs is not None  # check_node comes here for IPVS-mode data planes only
    n = state.node(node)
    # the Node's own addresses; a bundle's also hold kube-ipvs0's virtual-service addresses, which are not the node's
    vips = {vs.address for vs in dp.ipvs if vs.address}
    node_ips = (n.ips if n is not None and n.ips else ()) or tuple(a for a in dp.node_ips if a not in vips)
    if not node_ips:
        report.notes.append("the node's addresses are unknown (give --node-ip, or a Node in the cluster state): NodePort "
                            "virtual services are not checked")
    report.notes.append("IPVS mode: virtual services and real servers from " + dp.ipvs.source
                        + (f", ipsets from {dp.ipsets.source}" if dp.ipsets is not None else "; no ipset input: ipset entries not checked"))
    families = sorted({vs.family or 4 for vs in dp.ipvs} | set(dp.rulesets))
    for fam in families:
        expected, ignored = expected_ports(state, node, fam, profile=profile, node_labels=node_labels)
        if only is not None:
            expected = [e for e in expected if e.hash in only]
        else:
            report.ignored.extend(i for i in ignored if all(i.service != x.service for x in report.ignored)
                                  and not i.reason.startswith("no IPv"))
        counts: dict[str, int] = {}

        def add(e: ExpectedPort, kind: str, detail: str, *, endpoint=None, entry=None, evidence=()) -> None:
            report.findings.append(Finding(kind, node, e.spn, e.protocol, fam, detail, endpoint, entry, tuple(evidence),
                                           e.service.location, e.hash))
            counts[e.hash] = counts.get(e.hash, 0) + 1

        def port(e: ExpectedPort, want, have) -> None:
            report.ports.append(PortReport(e.spn, e.protocol, fam, want, None, have, None, counts.get(e.hash, 0), e.hash))

        def stale(vs, evidence) -> None:
            if only is not None:
                return
            name = f"? ({vs.protocol} {vs.endpoint})"
            eps = ", ".join(r.endpoint for r in vs.real_servers) or "no real servers"
            report.findings.append(Finding("stale-service", node, name, vs.protocol.lower(), fam,
                                           f"IPVS virtual service {vs.protocol} {vs.endpoint} ({eps}) belongs to no Service port in the API",
                                           evidence=tuple(evidence)))
            report.ports.append(PortReport(name, vs.protocol.lower(), fam, None, None,
                                           tuple(r.endpoint for r in vs.real_servers), None, 1))

        def note(text: str) -> None:
            if not any(n.split(":")[0] == text.split(":")[0] for n in report.notes):  # once per set
                report.notes.append(text)

        check_family_ipvs(fam, expected, dp.ipvs, dp.ipsets, tuple(a for a in node_ips if (":" in a) == (fam == 6)), add, port, stale,
                          note)


def _check_family(report: NodeReport, fam: int, expected: list[ExpectedPort], prog: Programmed, only: set[str] | None) -> None:
    by_hash = {e.hash: e for e in expected}
    # Filter verdicts without a comment are matched by destination address and port.
    unnamed: dict[tuple[str | None, int], list[Entry]] = {}
    hc_by_spn: dict[str, list[Entry]] = {}
    for v in prog.unnamed_verdicts.get(fam, ()):
        unnamed.setdefault((v.address, v.port), []).append(v)
        if v.kind == "HealthCheckNodePort" and v.comment:
            hc_by_spn.setdefault(v.comment.split(" ", 1)[0], []).append(v)
    claimed: set[int] = set()
    for e in expected:
        actual = prog.ports.get((fam, e.hash))
        extra = []
        for key in _verdict_keys(e):
            for v in unnamed.get(key, ()):
                if v.kind == "HealthCheckNodePort" or (v.protocol or "tcp") == e.protocol:
                    if v.kind != "HealthCheckNodePort" or key == (None, e.health_check_node_port):
                        extra.append(v)
                        claimed.add(id(v))
        for v in hc_by_spn.get(e.spn, ()):  # the health-check rule names its port; its -p is always tcp
            if v not in extra:
                extra.append(v)
                claimed.add(id(v))
        if extra:
            actual = actual or ProgrammedPort(fam, e.hash, e.spn, e.protocol)
            actual.verdicts.extend(x for x in extra if x not in actual.verdicts)
        if actual is not None:
            actual = actual.live()
            report.notes.extend(n for n in actual.notes if n not in report.notes)
        _compare(report, e, actual)
    for (f, h), p in prog.ports.items():
        if f != fam or h in by_hash or (only is not None and h not in only):
            continue
        if not p.entries and not p.verdicts:
            if p.chains:
                report.notes.append(f"{', '.join(p.chains)}: no entry rule leads there (left from an earlier sync); not compared")
            continue
        ev = tuple(x.evidence for x in (p.entries + p.verdicts)[:3]) or tuple(x.evidence for x in (p.cluster or p.local or [])[:1])
        eps = sorted({x.address for x in (p.cluster or []) + (p.local or [])})
        report.findings.append(Finding(
            "stale-service", report.node, p.name, p.protocol or "?", fam,
            f"the node has rules for {p.name} ({', '.join(p.chains) or 'filter rules'}) but the API has no such Service port"
            + (f"; they send traffic to {', '.join(eps)}" if eps else ""), evidence=ev, hash=h))
        report.ports.append(PortReport(p.name, p.protocol or "?", fam, None, None, _addrs(p.cluster), _addrs(p.local), 1, h))
    for v in prog.unnamed_verdicts.get(fam, ()) if only is None else ():
        if id(v) not in claimed and v.target in ("REJECT", "DROP"):
            report.findings.append(Finding(
                "stale-service", report.node, f"? ({_entry_text(v.kind, v.address, v.port)})", v.protocol or "?", fam,
                f"the node {v.target}s {_entry_text(v.kind, v.address, v.port)} but no Service in the API has that address and port",
                evidence=(v.evidence,)))


def _verdict_keys(e: ExpectedPort):
    yield (e.cluster_ip, e.port.port)
    for ip in e.external_ips + e.lb_ips:
        yield (ip, e.port.port)
    if e.node_port:
        yield (None, e.node_port)
    if e.health_check_node_port:
        yield (None, e.health_check_node_port)


def _addrs(eps: list[ChainEndpoint] | None) -> tuple[str, ...] | None:
    return None if eps is None else tuple(sorted(x.address for x in eps))


def _compare(report: NodeReport, e: ExpectedPort, a: ProgrammedPort | None) -> None:
    node, fam = report.node, e.family
    start = len(report.findings)

    def add(kind: str, detail: str, *, endpoint: str | None = None, entry: str | None = None, evidence=()) -> None:
        report.findings.append(Finding(kind, node, e.spn, e.protocol, fam, detail, endpoint, entry, tuple(evidence),
                                       e.service.location, e.hash))

    exp_cluster = e.cluster_chain_endpoints
    exp_local = e.local_chain_endpoints
    report_port = lambda: PortReport(  # noqa: E731
        e.spn, e.protocol, fam, tuple(x.address for x in exp_cluster or ()), tuple(x.address for x in exp_local or ())
        if e.policy.uses_local_endpoints else None, _addrs(a.cluster) if a else None, _addrs(a.local) if a else None,
        len(report.findings) - start, e.hash)

    if a is None or (not a.entries and not a.verdicts and a.cluster is None and a.local is None):
        what = (f"{len(e.selection.all_reachable)} endpoint(s)" if e.has_endpoints else "no endpoints: a REJECT rule")
        add("missing-service", f"the API has {e.spn} ({e.protocol.upper()} {e.cluster_ip}:{e.port.port}, {what}) "
                               f"but the node has no rules for it")
        report.ports.append(report_port())
        return

    node_has_endpoints = bool(a.entries) or bool(a.cluster) or bool(a.local)
    _compare_verdicts(e, a, add)
    if e.has_endpoints and node_has_endpoints:
        _compare_entries(e, a, add)
    _compare_health_check(e, a, add)
    if not _compare_policy(e, a, add):
        _compare_endpoints(e, exp_cluster, a.cluster, a.cluster_name, add, local=False)
        if e.policy.uses_local_endpoints or a.local is not None:
            _compare_endpoints(e, exp_local, a.local, a.local_name, add, local=True)
    for name, eps in ((a.cluster_name, a.cluster), (a.local_name, a.local)):
        _check_shares(name, eps, add)
    if node_has_endpoints and (a.cluster or a.local):
        _compare_affinity(e, a, add)
    report.ports.append(report_port())


def _compare_verdicts(e: ExpectedPort, a: ProgrammedPort, add) -> None:
    """REJECT / DROP rules: what the API's endpoints say vs what the node does."""
    want_verdicts = _expected_verdicts(e)
    have_verdicts = {(_kind_of(e, v.address), v.address, v.port, v.target) for v in a.verdicts if v.target in ("REJECT", "DROP")}
    if want_verdicts == have_verdicts:
        return
    missing = sorted(want_verdicts - have_verdicts, key=str)
    extra = sorted(have_verdicts - want_verdicts, key=str)
    why = ("the API has no usable endpoints" if not e.has_endpoints else
           "the API has endpoints but none on this node" if want_verdicts else "the API has usable endpoints")
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"{t} for {_entry_text(k, ad, p)}" for k, ad, p, t in missing))
    if extra:
        parts.append("unexpected " + ", ".join(f"{t} for {_entry_text(k, ad, p)}" for k, ad, p, t in extra))
    add("reject-rule-mismatch", f"{why}: " + "; ".join(parts),
        evidence=[v.evidence for v in a.verdicts if v.target in ("REJECT", "DROP")][:4])


def _compare_health_check(e: ExpectedPort, a: ProgrammedPort, add) -> None:
    """The health-check node port: its ACCEPT rule is there whatever the endpoints."""
    want_hc = {e.health_check_node_port} - {0}
    have_hc = {v.port for v in a.verdicts if v.kind == "HealthCheckNodePort"}
    for p in sorted(want_hc - have_hc):
        if have_hc:
            add("wrong-port", f"health-check node port is {p} in the API, {', '.join(map(str, sorted(have_hc)))} on the node",
                entry=f"HealthCheckNodePort {p}", evidence=[v.evidence for v in a.verdicts if v.kind == "HealthCheckNodePort"])
        else:
            add("missing-entry-point", f"no ACCEPT rule for the health-check node port {p}", entry=f"HealthCheckNodePort {p}")
    if not want_hc - have_hc:
        for p in sorted(have_hc - want_hc):
            add("stale-entry-point", f"the node accepts health checks on {p}; the API has no health-check node port for it",
                entry=f"HealthCheckNodePort {p}", evidence=[v.evidence for v in a.verdicts if v.port == p])


def _compare_policy(e: ExpectedPort, a: ProgrammedPort, add) -> bool:
    """Internal and external traffic policy; True when either differs (the endpoints are then not compared)."""
    internal = [x for x in a.entries if _kind_of(e, x.address) == "ClusterIP" and x.kind == "ClusterIP"]
    policy_mismatch = False
    if internal and e.has_internal_endpoints:
        node_local = internal[0].target.startswith(("KUBE-SVL-", "local-"))
        if node_local != e.policy.internal_local:
            policy_mismatch = True
            add("policy-mismatch", f"internalTrafficPolicy is {'Local' if e.policy.internal_local else 'Cluster'} in the API, "
                                   f"but the node sends cluster-IP traffic to {internal[0].target} "
                                   f"({'local endpoints only' if node_local else 'endpoints cluster-wide'})",
                evidence=[internal[0].evidence])
    if e.policy.externally_accessible and e.has_endpoints and a.external_policy is not None:
        want = "Local" if e.policy.external_local else "Cluster"
        if a.external_policy[0] != want:
            policy_mismatch = True
            add("policy-mismatch", f"externalTrafficPolicy is {want} in the API, but the node's external chain implements "
                                   f"{a.external_policy[0]}", evidence=[a.external_policy[1]])
    return policy_mismatch


def _compare_affinity(e: ExpectedPort, a: ProgrammedPort, add) -> None:
    have_timeout = a.affinity[0] if a.affinity else None
    want_timeout = e.affinity_timeout
    if (have_timeout is None) != (want_timeout is None) or (have_timeout and want_timeout and have_timeout != want_timeout):
        add("affinity-mismatch",
            f"session affinity is {f'ClientIP, {want_timeout} s' if want_timeout else 'None'} in the API, "
            f"{'ClientIP, ' + str(have_timeout) + ' s' if have_timeout else ('ClientIP' if have_timeout == 0 else 'none')}"
            " on the node",
            evidence=[a.affinity[1]] if a.affinity else [])


def _kind_of(e: ExpectedPort, address: str | None) -> str:
    if address is None:
        return "NodePort"
    if address == e.cluster_ip:
        return "ClusterIP"
    if address in e.external_ips:
        return "ExternalIP"
    if address in e.lb_ips:
        return "LoadBalancerIP"
    return "ExternalIP/LoadBalancerIP"


def _expected_verdicts(e: ExpectedPort) -> set[tuple[str, str | None, int, str]]:
    """The filter REJECT/DROP rules kube-proxy writes for the port (proxier.go, "has no (local) endpoints")."""
    out: set[tuple[str, str | None, int, str]] = set()
    if not e.has_internal_endpoints:
        out.add(("ClusterIP", e.cluster_ip, e.port.port, "REJECT" if not e.has_endpoints else "DROP"))
    if not e.has_external_endpoints and (not e.has_endpoints or e.profile.external_drop_rules):
        verdict = "REJECT" if not e.has_endpoints else "DROP"
        for ip in e.external_ips:
            out.add(("ExternalIP", ip, e.port.port, verdict))
        for ip in e.lb_ips:
            out.add(("LoadBalancerIP", ip, e.port.port, verdict))
        if e.node_port:
            out.add(("NodePort", None, e.node_port, verdict))
    return out


def _compare_entries(e: ExpectedPort, a: ProgrammedPort, add) -> None:
    want: dict[tuple[str, str | None], int] = {}
    if e.has_internal_endpoints:
        want[("ClusterIP", e.cluster_ip)] = e.port.port
    for ip in e.external_ips:
        want[("ExternalIP", ip)] = e.port.port
    for ip in e.lb_ips:
        want[("LoadBalancerIP", ip)] = e.port.port
    have: dict[tuple[str, str | None], list[Entry]] = {}
    for x in a.entries:
        have.setdefault((_kind_of(e, x.address) if x.kind != "NodePort" else "NodePort", x.address), []).append(x)
    # NodePorts: any address; compared by number
    want_np = {e.node_port} - {0}
    have_np = {x.port for x in have.pop(("NodePort", None), [])}
    np_ev = [x.evidence for x in a.entries if x.kind == "NodePort"]
    if want_np != have_np:
        if want_np and have_np:
            add("wrong-port", f"NodePort is {e.node_port} in the API, {', '.join(map(str, sorted(have_np)))} on the node",
                entry=f"NodePort {e.node_port}", evidence=np_ev)
        elif want_np:
            add("missing-entry-point", f"the node has no rule for NodePort {e.node_port}", entry=f"NodePort {e.node_port}")
        else:
            for p in sorted(have_np):
                add("stale-entry-point", f"the node forwards NodePort {p}; the API's Service has no NodePort",
                    entry=f"NodePort {p}", evidence=np_ev)
    if not e.has_internal_endpoints:
        # the node still jumps where kube-proxy would DROP: reported once, as reject-rule-mismatch
        have.pop(("ClusterIP", e.cluster_ip), None)
    for (kind, addr), port in sorted(want.items(), key=str):
        got = have.pop((kind, addr), None)
        if got is None:
            add("missing-entry-point", f"the node has no rule for {_entry_text(kind, addr, port)}", entry=_entry_text(kind, addr, port))
        elif all(x.port != port for x in got):
            add("wrong-port", f"{kind} {addr} is port {port} in the API, {', '.join(str(x.port) for x in got)} on the node",
                entry=_entry_text(kind, addr, port), evidence=[x.evidence for x in got])
    for (kind, addr), got in sorted(have.items(), key=str):
        for x in got:
            add("stale-entry-point", f"the node forwards {_entry_text(kind, addr, x.port)} to {x.target}; the API's Service has no such address",
                entry=_entry_text(kind, addr, x.port), evidence=[x.evidence])
    # LoadBalancerSourceRanges: the KUBE-FW chain's -s rules (the LB IPs themselves appear there too
    # when a node address falls in a range)
    want_r = {r for r in e.source_ranges} if e.lb_ips else set()
    have_r = {}
    for cidr, ev in a.source_ranges:
        if cidr.split("/")[0] not in e.lb_ips:
            have_r[cidr] = ev
    fw = next((c for c in a.jumps if c.startswith("firewall-")), "KUBE-FW-" + e.hash)
    norm = _network_of
    want_n = {norm(r): r for r in want_r}
    have_n = {norm(r): ev for r, ev in have_r.items()}
    for r in sorted(set(want_n) - set(have_n)):
        add("missing-entry-point", f"loadBalancerSourceRanges has {r}; the node's {fw} does not accept it",
            entry=f"SourceRange {r}")
    for r in sorted(set(have_n) - set(want_n)):
        add("stale-entry-point", f"the node's {fw} accepts {r}; it is not in loadBalancerSourceRanges",
            entry=f"SourceRange {r}", evidence=[have_n[r]])


def _network_of(cidr: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        return cidr


def _compare_endpoints(e: ExpectedPort, want_eps, have_eps: list[ChainEndpoint] | None, chain: str, add, *, local: bool) -> None:
    want = {x.address: x for x in want_eps or ()}
    have: dict[str, list[ChainEndpoint]] = {}
    for x in have_eps or ():
        have.setdefault(x.address, []).append(x)
    missing = [w for w in want if w not in have]
    stale = [h for h in have if h not in want]
    which = "local-policy chain" if local else "cluster-policy chain"
    ip_of = lambda s: s.rsplit(":", 1)[0]  # noqa: E731
    for w in missing:
        same_ip = next((h for h in stale if ip_of(h) == ip_of(w)), None)
        if same_ip is not None:
            stale.remove(same_ip)
            add("wrong-port", f"{w} in the API, but the node's {which} {chain} sends to {same_ip}",
                endpoint=w, evidence=[x.evidence for x in have[same_ip]])
            continue
        ep = want[w]
        state = "ready" if ep.ready else "serving while terminating"
        add("missing-endpoint", f"{w} ({state}{', on this node' if ep.local else ''}) should be in the {which} {chain}; "
                                f"the node does not send to it", endpoint=w)
    for h in stale:
        add("stale-endpoint", f"the node's {which} {chain} sends to {h}, which kube-proxy would not use for this node "
                              f"(not a usable endpoint of the Service in the API{', or not local' if local else ''})",
            endpoint=h, evidence=[x.evidence for x in have[h]])


def _check_shares(chain: str, eps: list[ChainEndpoint] | None, add) -> None:
    if not eps or len(eps) < 2 or any(x.share is None for x in eps):
        return
    shares: dict[str, float] = {}
    for x in eps:
        shares[x.address] = shares.get(x.address, 0.0) + (x.share or 0.0)  # never None here (checked above)
    n = len(shares)
    # kube-proxy prints 1/(n-i) with 10 decimals and the kernel quantises to 2^-31: a few 1e-9 off 1/n
    if all(abs(s - 1 / n) < 1e-6 for s in shares.values()):
        return
    detail = ", ".join(f"{a} {float(s):.1%}" for a, s in sorted(shares.items(), key=lambda kv: -kv[1]))
    add("unequal-probability", f"{chain} does not split new connections equally (1/{n} = {1 / n:.1%} each): {detail}",
        evidence=[x.evidence for x in eps])


def select_findings(report: NodeReport, ignore: list[str] | tuple[str, ...]) -> None:
    """Drop findings and ports of ignored namespaces / Services (``--ignore``: ``ns``, ``ns/name``,
    ``ns/name:port``, shell globs)."""
    if not ignore:
        return
    from fnmatch import fnmatchcase

    def ignored(service: str) -> bool:
        ns_name = service.split(":", 1)[0]
        ns = ns_name.split("/", 1)[0]
        return any(fnmatchcase(service, p) or fnmatchcase(ns_name, p) or fnmatchcase(ns, p) for p in ignore)

    report.findings = [f for f in report.findings if not ignored(f.service)]
    report.ports = [p for p in report.ports if not ignored(p.service)]
