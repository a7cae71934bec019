"""``kptrace verify``: replay a dump in real netfilter and compare every packet with kptrace's prediction.

iptables dumps load with iptables-nft-restore and are traced with ``xtables-monitor --trace``; an nftables
ruleset (all its tables: kube-proxy's, a CNI's, the iptables-nft ones when ``nft list ruleset`` holds them)
loads with ``nft -f`` (written back from the model by ``format_nft``), together with any iptables-save of the
same node, and the whole node is traced with ``nft monitor trace``. The kernel names rules by handle; the
handles it gave (``nft -j list ruleset``) map each to the model's rule number.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable

from kptrace.checks.verify import VerifyResult, compare, connections_needed
from kptrace.lab.netns import Lab
from kptrace.model.dataplane import Dataplane
from kptrace.model.nft import SetUpdate, format_nft, quoted_name, unloadable_reason
from kptrace.parsers.grammar import iptables_grammar
from kptrace.render.iptables_save import format_ruleset
from kptrace.tracer.defaults import PacketPlan, trace_packet
from kptrace.tracer.packet import Origin

__all__ = ["VerifyPacket", "normalised", "normalised_nft", "packets_for_all_services", "run_verify"]


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
    jumps written out, comments quoted, and chains the rules jump to but the input lacks declared empty.
    (A family that only nft tables hold has no iptables tables, and none here.)"""
    return {fam: format_ruleset(rs, extra_chains=_missing_chains(dp, fam)) for fam, rs in sorted(dp.rulesets.items())
            if rs.tables or dp.nft is None}


def normalised_nft(dp: Dataplane) -> str | None:
    """What the lab loads with ``nft -f`` (before the iptables-restore texts): every nft table, in the order the
    input lists them (the kernel's order of creation, which decides between base chains of one priority),
    chains the rules jump to but the input lacks as empty stubs, and rules nft cannot load (``xt``
    expressions) as comments that say so."""
    return None if dp.nft is None else format_nft(dp.nft, stub_missing=True)


def _omitted(dp: Dataplane) -> dict[tuple[str, str, int], str]:
    """The nft rules the lab cannot load (format_nft writes them as comments): (table, chain, number) -> location."""
    if dp.nft is None:
        return {}
    return {(f"{r.family} {r.table}", r.chain, r.number): r.location for r in dp.nft.iter_rules() if unloadable_reason(r) is not None}


def _loaded_numbers(dp: Dataplane) -> dict[tuple[str, str], list[int]]:
    """``("FAMILY TABLE", chain) -> [model rule numbers]`` of the nft rules the kernel holds, in order."""
    tables = dp.nft.tables.values() if dp.nft is not None else ()
    return {(f"{t.family} {t.name}", c.name): [r.number for r in c.rules if unloadable_reason(r) is None]
            for t in tables for c in t.chains.values()}


def _nft_rule_index(dp: Dataplane, family: int, handles: dict[tuple[str, str], list[int]]):
    """The kernel's (table, chain, handle) -> the model's table name and rule number. An iptables table that
    an iptables-save gave (``nat``) is ``ip nat`` in the kernel; an nft table keeps its "FAMILY NAME"."""
    numbers = _loaded_numbers(dp)
    fam = "ip" if family == 4 else "ip6"
    iptables = dp.rulesets[family].tables if family in dp.rulesets else {}

    def model_table(kernel_table: str) -> str:
        kfam, _, name = kernel_table.partition(" ")
        if dp.nft is not None and dp.nft.table(kfam, name) is None and kfam == fam and name in iptables:
            return name
        return kernel_table

    def lookup(table: str, chain: str, handle):
        kernel_table = table if " " in table else f"{fam} {table}"
        order = handles.get((kernel_table, chain), [])
        if handle not in order:
            return handle
        i = order.index(handle)
        if " " not in table:  # iptables-nft: one kernel rule per iptables rule, in order
            return i + 1
        loaded = numbers.get((table, chain), [])
        return loaded[i] if i < len(loaded) else handle

    return model_table, lookup


def _dynamic_sets(dp: Dataplane) -> tuple[tuple[str, str, str], ...]:
    """(family, table, set) of the nft sets rules update from the packet path (session affinity)."""
    if dp.nft is None:
        return ()
    return tuple(sorted({(r.family, quoted_name(r.table), quoted_name(s.set)) for r in dp.nft.iter_rules() for s in r.exprs
                         if type(s) is SetUpdate}))


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
               progress: Callable[[str], None] | None = None, restore: dict[int, str] | None = None) -> list[VerifyResult]:
    """Each packet traced by kptrace and sent through real netfilter loaded with the dump (``restore``: these
    iptables-restore texts instead of :func:`normalised`'s, e.g. the node's own dump as it was: the kernel then
    reads the text too, not only kptrace's model of it)."""
    packets = list(packets)
    restore = normalised(dp) if restore is None else restore
    nft = normalised_nft(dp)
    text = "\n".join(restore.values())
    nfacct = set(re.findall(r"--nfacct-name\s+(\S+)", text))
    node_ips = {fam: list(dp.node_ips_of(fam)) for fam in dp.rulesets}
    omitted = _omitted(dp)
    results: list[VerifyResult] = []
    with Lab(restore, node_ips, nfacct, nft=nft, dynamic_sets=_dynamic_sets(dp)) as lab:
        rule_lists: dict[tuple[int, str, str], list[str]] = {}
        handles = lab.kernel_handles() if nft is not None else {}

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
            lookup = index_of(packet.family)
            if nft is not None and dp.nft is not None:
                fam = "ip" if packet.family == 4 else "ip6"
                tables |= {f"{t.family} {t.name}" for t in dp.nft.tables.values() if t.family in (fam, "inet")}
                model_table, lookup = _nft_rule_index(dp, packet.family, handles)
                obs.path = [(model_table(t), c, r) for t, c, r in obs.path]
            egress = next(iter(node_ips.get(packet.family) or ()), None)  # the lab node's eth0 address
            results.append(compare(vp.label, trace, obs, lookup, confidence=confidence, tables=tables,
                                   egress=egress, omitted=omitted))
    return results
