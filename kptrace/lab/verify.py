"""``kptrace verify``: replay a dump in real netfilter and compare every packet with kptrace's prediction."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable

from kptrace.checks.verify import VerifyResult, compare, connections_needed
from kptrace.lab.netns import Lab
from kptrace.model.dataplane import Dataplane
from kptrace.parsers.grammar import iptables_grammar
from kptrace.render.iptables_save import format_ruleset
from kptrace.tracer.defaults import PacketPlan, trace_packet
from kptrace.tracer.packet import Origin

__all__ = ["VerifyPacket", "normalised", "packets_for_all_services", "run_verify"]


@dataclass(frozen=True, slots=True)
class VerifyPacket:
    label: str
    plan: PacketPlan


def _missing_chains(dp: Dataplane, family: int) -> dict[str, set[str]]:
    rs = dp.rulesets[family]
    known = iptables_grammar().targets
    missing: dict[str, set[str]] = {}
    for tname, table in rs.tables.items():
        for chain in table.chains.values():
            for rule in chain.rules:
                t = rule.target
                if t is not None and t.name not in known and t.name not in table.chains:
                    missing.setdefault(tname, set()).add(t.name)
    return missing


def normalised(dp: Dataplane) -> dict[int, str]:
    """What the lab loads for each family: the dump as iptables-restore input, with kptrace's assumed
    jumps written out, comments quoted, and chains the rules jump to but the input lacks declared empty."""
    return {fam: format_ruleset(rs, extra_chains=_missing_chains(dp, fam)) for fam, rs in sorted(dp.rulesets.items())}


def packets_for_all_services(dp: Dataplane) -> list[VerifyPacket]:
    """Every Service entry point of the dump (ClusterIP, NodePort, external IP, LoadBalancer IP) from each
    origin that reaches it; inside an LB's source range too."""
    from kptrace.tracer.services import all_service_views

    out = []
    for view in all_service_views(dp):
        for et in view.traces:
            e = et.entry
            p = et.trace.packet
            label = f"{view.name} {e.kind} {p.dst}:{p.dport} from {et.label}"
            out.append(VerifyPacket(label, PacketPlan(p, (), ())))
    return out


def run_verify(dp: Dataplane, packets: Iterable[VerifyPacket], *, connections: int | None = None, confidence: float = 0.999,
               progress: Callable[[str], None] | None = None) -> list[VerifyResult]:
    packets = list(packets)
    restore = normalised(dp)
    text = "\n".join(restore.values())
    nfacct = set(re.findall(r"--nfacct-name\s+(\S+)", text))
    node_ips = {fam: list(dp.node_ips_of(fam)) for fam in dp.rulesets}
    results: list[VerifyResult] = []
    with Lab(restore, node_ips, nfacct) as lab:
        rule_lists: dict[tuple[int, str, str], list[str]] = {}

        def index_of(family: int):
            def lookup(table: str, chain: str, text: str):
                key = (family, table, chain)
                if key not in rule_lists:
                    tool = "ip6tables-nft" if family == 6 else "iptables-nft"
                    out = subprocess.run(["ip", "netns", "exec", lab.node, tool, "-t", table, "-S", chain],
                                         capture_output=True, text=True).stdout
                    rule_lists[key] = [" ".join(line.split()) for line in out.splitlines() if line.startswith("-A ")]
                norm = " ".join(text.split())
                try:
                    return rule_lists[key].index(norm) + 1
                except ValueError:
                    return text
            return lookup

        for vp in packets:
            # kptrace predicts for the lab's interfaces: in through cl0 (from the client), out through eth0.
            p = vp.plan.packet
            packet = type(p)(p.src, p.dst, p.dport, p.proto, p.sport, p.origin,
                             None if p.origin is Origin.NODE else "cl0", "eth0")
            vp = VerifyPacket(vp.label, PacketPlan(packet, vp.plan.assumed_local, vp.plan.notes))
            trace = trace_packet(dp, vp.plan)
            n = connections or connections_needed(trace)
            if progress:
                progress(vp.label)
            obs = lab.observe(packet.family, packet.src, packet.dst, packet.dport, packet.proto,
                              packet.origin is Origin.NODE, n)
            tables = set(dp.rulesets[packet.family].tables)
            egress = (node_ips.get(packet.family) or [None])[0]  # the lab node's eth0 address
            results.append(compare(vp.label, trace, obs, index_of(packet.family), confidence=confidence, tables=tables,
                                   egress=egress))
    return results
