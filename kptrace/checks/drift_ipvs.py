"""Drift in IPVS mode: what kube-proxy's IPVS proxier should program (one virtual service per cluster IP,
external IP, load-balancer IP and node address x port, its real servers the selected endpoints with
weight 1, and the ipset entries its iptables rules match on) against the node's ``ipvsadm`` and
``ipset`` output (``pkg/proxy/ipvs/proxier.go``: syncService, syncEndpoint; ``ipset.go``).

Endpoint choice is the shared :mod:`kptrace.checks.selection`: the cluster-IP service gets the
cluster-policy endpoints (local ones with internalTrafficPolicy Local), the external ones (NodePort,
external IP, LB IP) the local endpoints with externalTrafficPolicy Local, else the cluster ones; with
no local endpoint, the cluster ones (kube-proxy ~1.21+; ``--kube-proxy-version 1.20`` expects none). A real
server kube-proxy removed stays with weight 0 while its connections drain: not drift; an endpoint the
API says is ready with weight 0 is (``zero-weight-endpoint``).
"""

from __future__ import annotations

from kptrace.checks.expected import ExpectedPort
from kptrace.checks.programmed import Evidence
from kptrace.model.ipvs import RealServer, VirtualService

__all__ = ["check_family_ipvs"]


def _ev(x) -> Evidence:
    return Evidence(str(x.location), x.text.strip() if x.text else "")


def _rs_addr(rs: RealServer) -> str:
    return rs.endpoint


def check_family_ipvs(fam: int, expected: list[ExpectedPort], ipvs, ipsets, node_ips: tuple[str, ...], add_finding,
                      port_report, stale, note) -> None:
    """Compare every expected Service port with the virtual services; report virtual services nothing expects."""
    claimed: set[tuple] = set()
    prefix = "KUBE-6-" if fam == 6 else "KUBE-"
    for e in expected:
        proto = e.protocol.upper()
        found = []  # (entry text, kind, vs, expected endpoints)
        want_internal = e.selection.local if e.policy.internal_local else e.selection.cluster
        want_external = e.selection.cluster
        if e.policy.external_local and e.policy.externally_accessible:
            want_external = e.selection.local
            if not want_external and e.profile.ipvs_local_fallback:
                want_external = e.selection.cluster  # no local endpoint: the IPVS proxier falls back to the cluster ones
        entries = [("ClusterIP", e.cluster_ip, e.port.port, want_internal)]
        entries += [("ExternalIP", ip, e.port.port, want_external) for ip in e.external_ips]
        entries += [("LoadBalancerIP", ip, e.port.port, want_external) for ip in e.lb_ips]
        if e.node_port:
            entries += [("NodePort", ip, e.node_port, want_external) for ip in node_ips]
        for kind, addr, port, want in entries:
            vs = ipvs.virtual(proto, addr, port)
            entry = f"{kind} {addr}:{port}" if ":" not in addr else f"{kind} [{addr}]:{port}"
            if vs is None:
                if kind == "NodePort" and any(v.port == port and v.protocol == proto for v in ipvs):
                    continue  # the node port on another of the node's addresses: kube-proxy binds the ones it sees
                add_finding(e, "missing-service" if kind == "ClusterIP" else "missing-entry-point",
                            f"no IPVS virtual service {proto} {addr}:{port} for {e.spn}" if kind == "ClusterIP" else
                            f"no IPVS virtual service for {entry}", entry=None if kind == "ClusterIP" else entry)
                continue
            claimed.add(vs.key)
            found.append((entry, kind, vs, want or ()))
        for entry, _kind, vs, want in found:
            _compare_real_servers(e, entry, vs, want, add_finding)
        cluster_vs = next((vs for _entry, kind, vs, _ in found if kind == "ClusterIP"), None)
        if cluster_vs is not None:
            have = vs_persistent = cluster_vs.persistent
            if (have is None) != (e.affinity_timeout is None) or (have and e.affinity_timeout and have != e.affinity_timeout):
                add_finding(e, "affinity-mismatch",
                            f"session affinity is {f'ClientIP, {e.affinity_timeout} s' if e.affinity_timeout else 'None'} in the API; "
                            f"the virtual service is {'persistent ' + str(vs_persistent) + ' s' if vs_persistent else 'not persistent'}",
                            evidence=[_ev(cluster_vs)])
        if ipsets is not None:
            _check_ipsets(e, ipsets, prefix, node_ips, add_finding, note)
        port_report(e, tuple(sorted(x.address for x in want_internal or ())), tuple(
            sorted(_rs_addr(r) for r in cluster_vs.real_servers if r.weight is None or r.weight > 0)) if cluster_vs else None)
    for vs in ipvs:
        if vs.key in claimed or (vs.family or 4) != fam or vs.protocol == "FWM":
            continue
        if any(vs.address == ip for ip in node_ips):
            continue  # a NodePort on a node address: matched to its Service by port above, or stale below
        stale(vs, [_ev(vs)])


def _compare_real_servers(e: ExpectedPort, entry: str, vs: VirtualService, want, add_finding) -> None:
    want_addrs = {x.address: x for x in want}
    live = {_rs_addr(r): r for r in vs.real_servers if r.weight is None or r.weight > 0}
    zero = {_rs_addr(r): r for r in vs.real_servers if r.weight == 0}
    for addr, ep in want_addrs.items():
        if addr in live:
            continue
        if addr in zero and ep.ready:
            add_finding(e, "zero-weight-endpoint", f"{addr} is ready in the API but has weight 0 in {vs.endpoint}: it takes no new "
                        f"connections", endpoint=addr, evidence=[_ev(zero[addr])])
            continue
        if addr in zero:
            continue  # serving while terminating, and drained by weight 0: what kube-proxy does
        same_ip = next((a for a in live if a.rsplit(":", 1)[0] == addr.rsplit(":", 1)[0]), None)
        if same_ip is not None and same_ip not in want_addrs:
            add_finding(e, "wrong-port", f"{addr} in the API, but {vs.endpoint} sends to {same_ip}", endpoint=addr,
                        evidence=[_ev(live[same_ip])])
            continue
        add_finding(e, "missing-endpoint", f"{addr} should be a real server of {entry} ({vs.endpoint}); it is not",
                    endpoint=addr, evidence=[_ev(vs)])
    for addr, rs in live.items():
        if addr in want_addrs or any(addr.rsplit(":", 1)[0] == w.rsplit(":", 1)[0] for w in want_addrs if w not in live):
            continue
        add_finding(e, "stale-endpoint", f"{vs.endpoint} ({entry}) sends to {addr} (weight {rs.weight}), which kube-proxy would "
                    f"not use for this node", endpoint=addr, evidence=[_ev(rs)])


def _check_ipsets(e: ExpectedPort, ipsets, prefix: str, node_ips, add_finding, note) -> None:
    """The entries kube-proxy's IPVS proxier adds for the port (pkg/proxy/ipvs/proxier.go, syncProxyRules)."""
    proto = e.protocol
    want: list[tuple[str, str]] = [(prefix + "CLUSTER-IP", f"{e.cluster_ip},{proto}:{e.port.port}")]
    local_ext = e.policy.external_local and e.policy.externally_accessible
    for ip in e.external_ips:
        want.append((prefix + ("EXTERNAL-IP-LOCAL" if local_ext else "EXTERNAL-IP"), f"{ip},{proto}:{e.port.port}"))
    for ip in e.lb_ips:
        want.append((prefix + "LOAD-BALANCER", f"{ip},{proto}:{e.port.port}"))
        if local_ext:
            want.append((prefix + "LOAD-BALANCER-LOCAL", f"{ip},{proto}:{e.port.port}"))
        if e.source_ranges:
            want.append((prefix + "LOAD-BALANCER-FW", f"{ip},{proto}:{e.port.port}"))
            want.extend((prefix + "LOAD-BALANCER-SOURCE-CIDR", f"{ip},{proto}:{e.port.port},{r}") for r in e.source_ranges)
    if e.node_port and node_ips:  # no node address of this family: no NodePort virtual service, nothing to compare
        if proto == "sctp":
            want.extend((prefix + ("NODE-PORT-LOCAL-SCTP-HASH" if local_ext else "NODE-PORT-SCTP-HASH"), f"{ip},{proto}:{e.node_port}")
                        for ip in node_ips)
        else:
            want.append((prefix + f"NODE-PORT-{proto.upper()}", str(e.node_port)))
            if local_ext:
                want.append((prefix + f"NODE-PORT-LOCAL-{proto.upper()}", str(e.node_port)))
    if e.health_check_node_port and node_ips:
        want.append((prefix + "HEALTH-CHECK-NODE-PORT", str(e.health_check_node_port)))
    for ep in e.selection.all_reachable:
        if ep.local:
            want.append((prefix + "LOOP-BACK", f"{ep.ip},{proto}:{ep.port},{ep.ip}"))
    for name, member in want:
        s = ipsets.get(name)
        if s is None:
            # kube-proxy creates all its sets at start: a set not there at all is a partial input or another version
            note(f"ipset {name} is not in the ipset input: its entries (such as {member} for {e.spn}) are not checked")
        elif member not in s and not s.truncated:
            add_finding(e, "missing-ipset-entry", f"ipset {name} has no entry {member}: the iptables rules that match on it "
                        f"skip this Service's traffic", entry=f"{name} {member}", evidence=[Evidence(str(s.location), s.text.strip())])
