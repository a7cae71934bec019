"""Building graphs: a pure function from the tracer's values (a trace, Service views, diff changes, a node's
hooks) to a :class:`~kptrace.render.graph.model.Graph`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from kptrace.render.graph.model import TOP, Edge, Graph, Node, share_label
from kptrace.tracer.result import Outcome, Step, Trace

__all__ = ["change_graph", "node_graph", "owner_of", "service_graph", "trace_graph"]


class _Builder:
    """Collects nodes and edges; later facts about a node or an edge merge into the first."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.nodes: dict[str, dict] = {}
        self.edges: dict[tuple[str, str, str], dict] = {}
        self.groups: list[str] = []

    def node(
        self,
        node_id: str,
        kind: str,
        label: Sequence[str],
        location: str = "",
        share: Fraction | None = None,
        group: str = "",
        owner: str = "",
        change: str = "",
    ) -> str:
        if node_id not in self.nodes:
            self.nodes[node_id] = {
                "kind": kind,
                "label": tuple(x for x in label if x),
                "location": location,
                "share": share,
                "group": group,
                "owner": owner,
                "changes": {change},
            }
            if group and group not in self.groups:
                self.groups.append(group)
        else:
            self.nodes[node_id]["changes"].add(change)
        return node_id

    def edge(
        self,
        src: str,
        dst: str,
        label: str = "",
        share: Fraction | None = None,
        mark: str = "",
        change: str = "",
        trace: int = 0,
    ) -> None:
        e = self.edges.setdefault((src, dst, mark), {"labels": [], "shares": {}, "changes": set()})
        if label and label not in e["labels"]:
            e["labels"].append(label)
        if share is not None:
            e["shares"][trace] = e["shares"].get(trace, Fraction(0)) + share
        e["changes"].add(change)

    def build(self) -> Graph:
        nodes = []
        for nid, n in self.nodes.items():
            label = n["label"] + (
                (share_label(n["share"]),) if n["share"] is not None and n["kind"] in ("endpoint", "summary") else ()
            )
            nodes.append(
                Node(
                    nid, n["kind"], label, n["location"], n["share"], _one_change(n["changes"]), n["group"], n["owner"]
                )
            )
        # A share is drawn on an edge where a trace splits (its source has two or more ways on in that trace):
        # elsewhere it only repeats the share of the edge before it.
        ways: dict[tuple[str, int], int] = {}
        for (src, _dst, mark), e in self.edges.items():
            for t in e["shares"]:
                if mark != "lookup":
                    ways[(src, t)] = ways.get((src, t), 0) + 1
        edges = []
        for (src, dst, mark), e in self.edges.items():
            split = {v for t, v in e["shares"].items() if ways.get((src, t), 0) > 1}
            shares = sorted(split) if split and any(v < 1 for v in split) else []
            share = shares[0] if len(shares) == 1 else None
            words = list(e["labels"])
            if shares:
                words.append(" / ".join(share_label(s) for s in shares))
            edges.append(Edge(src, dst, ", ".join(words), share, mark, _one_change(e["changes"])))
        return Graph(self.title, tuple(nodes), tuple(edges), tuple(self.groups))


def _one_change(changes: set[str]) -> str:
    return "" if len(changes) != 1 else next(iter(changes))


def _kube_proxy_step(s: Step) -> bool:
    return s.chain.startswith("KUBE-") or s.table.endswith(" kube-proxy") or s.table == "ipvs"


def _parts(s: Step) -> list[str]:
    return [p.strip().lower() for p in s.note.split(";")] if s.note else []


def _rewrites_destination(s: Step) -> bool:
    return s.table == "ipvs" or any(p.startswith(("dnat", "redirect")) for p in _parts(s))


def _masquerades(s: Step) -> bool:
    return any(p.startswith(("masquerade", "snat")) for p in _parts(s))


def _base(location: str) -> str:
    """``file:line`` without the directories: the label stays short; the tooltip has the whole path."""
    return os.path.basename(location)


def _where(s: Step) -> str:
    """A step's place for a label: ``file:line``, or ``file rule #N`` where the input has no lines (``nft -j``)."""
    if s.line or not s.rule:
        return _base(s.location)
    return f"{_base(s.source)} rule #{s.rule}"


def _chain_node(b: _Builder, s: Step, change: str) -> str:
    if s.table == "ipvs":
        return b.node(f"ipvs/{s.chain}", "ipvs", (f"IPVS {s.chain}", _where(s)), s.location, change=change)
    return b.node(f"{s.table}/{s.chain}", "chain", (f"{s.table}/{s.chain}", _where(s)), s.location, change=change)


_NFT_LOOKUP = re.compile(r"(\bv?map\s+)?@([\w.-]+)")
_IPSET_LOOKUP = re.compile(r"--match-set\s+(\S+)")


def _lookups(s: Step) -> list[tuple[str, str, str]]:
    """(node id, kind, label) of each set or map a rule looks up."""
    out = []
    if " " in s.table:  # nftables: "@name", "vmap @name"
        for m in _NFT_LOOKUP.finditer(s.text):
            kind = "map" if m.group(1) else "set"
            out.append((f"{s.table}/@{m.group(2)}", kind, f"{kind} @{m.group(2)}"))
    else:
        for m in _IPSET_LOOKUP.finditer(s.text):
            out.append((f"ipset/{m.group(1)}", "set", f"ipset {m.group(1)}"))
    return out


def _end_node(b: _Builder, o: Outcome, shares: dict[str, Fraction], change: str) -> str:
    last = o.path[-1] if o.path else None
    if o.verdict in ("DROP", "REJECT"):
        where = (
            f"{last.table}/{last.chain}" + (f" #{last.rule}" if last.rule else " policy") if last is not None else ""
        )
        loc = last.location if last is not None else ""
        return b.node(
            f"{o.verdict.lower()}:{where}:{loc}", o.verdict.lower(), (o.verdict, where, _base(loc)), loc, change=change
        )
    if o.verdict == "INCOMPLETE":
        return b.node(f"incomplete:{o.reason}", "incomplete", ("INCOMPLETE", _short(o.reason)), change=change)
    if o.dnat:
        return b.node(f"endpoint:{o.dnat}", "endpoint", (o.dnat,), share=shares.get(o.dnat), change=change)
    return b.node(f"accept:{o.dst}", "accept", (f"{o.verdict} {o.dst}", _short(o.reason)), change=change)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _add_outcome(
    b: _Builder,
    start: str,
    first_label: str,
    o: Outcome,
    shares: dict[str, Fraction],
    hidden: set[str],
    summary: str | None,
    *,
    full: bool,
    change: str = "",
    trace: int = 0,
    split: int = 0,
) -> None:
    """One outcome's paths from ``start``: the chains it passes, then its end (endpoint, verdict, or summary).
    An endpoint summarised away is drawn up to ``split``, the step where its trace's outcomes part."""
    for br in o.branches[:1] if not full else o.branches:
        path = br.path
        dnat_at = next((i for i, s in enumerate(path) if _rewrites_destination(s)), None)
        current, visited = start, {start}
        label = first_label
        last: Step | None = None
        share = o.probability if not full else br.probability
        to_summary = o.dnat is not None and o.dnat in hidden and summary is not None
        for i, s in enumerate(path):
            if (dnat_at is not None and i > dnat_at and not full) or (to_summary and i > split):
                break
            if s.rule is None and s.note == "policy ACCEPT":
                continue  # an empty chain's policy says nothing
            if not full and not _kube_proxy_step(s) and s.probability is None:
                continue
            nid = _chain_node(b, s, change)
            if nid != current:
                if nid in visited:
                    current = nid  # back in a chain that jumped (to KUBE-MARK-MASQ, a set of rules) and returned
                else:
                    if last is not None:
                        label = s.hook if s.hook != last.hook else (f"#{last.rule}" if last.rule else "")
                    b.edge(current, nid, label, share, change=change, trace=trace)
                    visited.add(nid)
                    current = nid
            for lid, kind, text in _lookups(s):
                b.node(lid, kind, (text, _where(s)), s.location, change=change)
                if kind == "map" and s.note.startswith(("goto ", "jump ")) and "vmap" in s.text:
                    b.edge(current, lid, f"#{s.rule}" if s.rule else "", share, change=change, trace=trace)
                    visited.add(lid)
                    current = lid  # a verdict map decides where the packet goes: it is on the path
                else:
                    b.edge(current, lid, mark="lookup", change=change, trace=trace)
            last = s
        if to_summary:
            assert summary is not None
            b.edge(
                current,
                summary,
                f"#{last.rule}" if last is not None and last.rule else "",
                share,
                change=change,
                trace=trace,
            )
            continue
        end = _end_node(b, o, shares, change)
        masq = next((s for s in path if _masquerades(s)), None) if (o.masquerade or o.snat) else None
        words = f"#{last.rule}" if last is not None and last.rule and last.probability is not None else ""
        if masq is not None:
            where = f"{masq.chain}" + (f" #{masq.rule}" if masq.rule else "")
            b.edge(
                current,
                end,
                ", ".join(x for x in (words, f"masquerade ({where}, {_base(masq.location)})") if x),
                share,
                mark="masquerade",
                change=change,
                trace=trace,
            )
        else:
            b.edge(current, end, words, share, change=change, trace=trace)


def _top(shares: dict[str, Fraction], top: int) -> set[str]:
    """The endpoints beyond the ``top`` largest shares (ties by address), when there are more than ``top``."""
    if len(shares) <= top:
        return set()
    ranked = sorted(shares, key=lambda a: (-shares[a], a))
    return set(ranked[top:])


def _add_trace(
    b: _Builder,
    start: str,
    origin: str,
    t: Trace,
    shares: dict[str, Fraction],
    hidden: set[str],
    summary_id: str,
    *,
    full: bool,
    change: str = "",
    trace: int = 0,
) -> None:
    summary = None
    if hidden and any(o.dnat in hidden for o in t.outcomes):
        more = sum((shares.get(a, Fraction(0)) for a in hidden), Fraction(0))
        summary = b.node(summary_id, "summary", (f"{len(hidden)} more endpoints",), share=more, change=change)
    split = 0  # the first step where the outcomes' paths differ
    paths = [o.path for o in t.outcomes]
    if len(paths) > 1:
        while all(split < len(p) for p in paths) and all(p[split] == paths[0][split] for p in paths[1:]):
            split += 1
    for o in t.outcomes:
        _add_outcome(b, start, origin, o, shares, hidden, summary, full=full, change=change, trace=trace, split=split)


def _outcome_shares(t: Trace) -> dict[str, Fraction]:
    shares: dict[str, Fraction] = {}
    for o in t.outcomes:
        if o.dnat:
            shares[o.dnat] = shares.get(o.dnat, Fraction(0)) + o.probability
    return shares


def trace_graph(t: Trace, *, top: int = TOP, full: bool = False) -> Graph:
    """One packet's outcomes: the packet -> the chains it passes -> each end, with its probability.

    ``full``: every chain of every path, not only kube-proxy's up to the DNAT.
    """
    b = _Builder(str(t.packet))
    p = t.packet
    start = b.node("packet", "entry", (f"{p.proto} {_hostport(p.dst, p.dport)}", f"from {p.origin.value} {p.src}"))
    shares = _outcome_shares(t)
    hidden = _top(shares, top)
    _add_trace(b, start, "", t, shares, hidden, "more", full=full)
    return b.build()


def _hostport(address: str | None, port: int) -> str:
    if address is None:
        return f"<node>:{port}"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_graph(views: Iterable, *, top: int = TOP, full: bool = False) -> Graph:
    """Service ports (:class:`~kptrace.tracer.service_view.ServiceView`) as one graph: every entry point traced
    from each origin -> chains, sets, maps, IPVS virtual services -> endpoints with their shares (from a pod
    to the ClusterIP, as ``svc`` prints them)."""
    views = list(views)
    b = _Builder(", ".join(dict.fromkeys(v.name for v in views)))
    for vi, v in enumerate(views):
        shares = {e.address: e.probability for e in v.endpoints if e.probability is not None}
        if not shares:
            first = next((et for et in v.traces if any(o.dnat for o in et.trace.outcomes)), None)
            shares = _outcome_shares(first.trace) if first is not None else {}
        hidden = _top(shares, top)
        for e in v.entry_points:
            b.node(
                _entry_id(v, e),
                "entry",
                (f"{e.kind} {_hostport(e.address, e.port)}/{e.protocol}", _base(e.location)),
                e.location,
            )
            if e.via in ("REJECT", "DROP") and not any(et.entry == e for et in v.traces):
                end = b.node(f"{e.via.lower()}:{e.location}", e.via.lower(), (e.via, _base(e.location)), e.location)
                b.edge(_entry_id(v, e), end)
        for ti, et in enumerate(v.traces):
            _add_trace(b, _entry_id(v, et.entry), et.label, et.trace, shares, hidden, f"more:{vi}", full=full, trace=ti)
    return b.build()


def _entry_id(v, e) -> str:
    return f"entry:{v.family}:{e.kind}:{e.address}:{e.port}:{e.protocol}"


def change_graph(
    changes: Sequence[tuple[str, Any, Trace | None, Trace | None]], *, top: int = TOP, limit: int = 12  # Any: a checks.diff Probe
) -> Graph:
    """Behaviour changes (diff) as one graph: per changed entry point and origin, the paths before and after.
    An edge or node only before is red and dashed ("before"), only after green and bold ("after"); what both
    sides share is drawn once, plain. ``changes`` is (title, probe, trace before, trace after); past ``limit``
    changes, one node counts the rest."""
    b = _Builder("changes")
    for i, (title, probe, before, after) in enumerate(changes[:limit]):
        start = b.node(
            f"probe:{i}", "entry", (title, f"from {probe.origin}" + (f" {probe.source_class}" if probe.source_class else ""))
        )
        for side, t in (("before", before), ("after", after)):
            if t is None:
                end = b.node(f"norules:{side}", "incomplete", (f"no rules {side}",), change=side)
                b.edge(start, end, change=side)
                continue
            shares = _outcome_shares(t)
            _add_trace(
                b,
                start,
                "",
                t,
                shares,
                _top(shares, top),
                f"more:{i}:{side}",
                full=False,
                change=side,
                trace=0 if side == "before" else 1,
            )
    if len(changes) > limit:
        b.node("more-changes", "summary", (f"{len(changes) - limit} more changes (see the text report)",))
    return b.build()


# ------------------------------------------------------------------ node graphs

_OWNERS = (  # (owner, chain or table name prefixes): who put a chain there
    ("kube-proxy", ("KUBE-", "kube-proxy")),
    (
        "cni",
        (
            "cali-",
            "CILIUM",
            "cilium",
            "FLANNEL",
            "flannel",
            "CNI-",
            "cni-",
            "WEAVE",
            "weave",
            "ANTREA",
            "antrea",
            "KUBE-ROUTER",
            "kube-router",
            "OVN",
            "ovn",
            "KIND-",
            "kindnet",
            "ip-masq",
            "IP-MASQ",
        ),
    ),
    (
        "firewall",
        (
            "firewalld",
            "ufw",
            "f2b-",
            "fail2ban",
            "INPUT_",
            "FORWARD_",
            "OUTPUT_",
            "PREROUTING_",
            "POSTROUTING_",
            "IN_",
            "FWD_",
            "filter_",
            "nat_",
            "mangle_",
            "raw_",
            "LIBVIRT_",
            "DOCKER",
            "DOCKER-",
            "docker",
            "inet filter",
            "ip filter",
        ),
    ),
)


def owner_of(name: str) -> str:
    """Who a chain or table belongs to, by its name: kube-proxy, cni, firewall, or other.

    >>> owner_of("KUBE-SERVICES"), owner_of("cali-PREROUTING"), owner_of("ufw-before-input"), owner_of("mychain")
    ('kube-proxy', 'cni', 'firewall', 'other')
    """
    for owner, prefixes in _OWNERS:
        if name.startswith(prefixes):
            return owner
    return "other"


_FLOW = (("PREROUTING", "INPUT"), ("PREROUTING", "FORWARD"), ("FORWARD", "POSTROUTING"), ("OUTPUT", "POSTROUTING"))


def node_graph(hooks: Sequence[tuple[int, str, Sequence[dict]]]) -> Graph:
    """A node's hooks, each a box of its base chains in the order the kernel runs them (priority across
    iptables tables, iptables-nft and nft tables), with the chains each one jumps to, coloured by owner.

    ``hooks``: (family, hook, base chains); a base chain is a dict with table, chain, priority, policy, rules,
    location and jumps (the chains its rules jump or go to).
    """
    b = _Builder("hooks")
    firsts: dict[tuple[int, str], str] = {}
    lasts: dict[tuple[int, str], str] = {}
    for fam, hook, chains in hooks:
        group = f"IPv{fam} {hook}"
        start = b.node(f"hook:{fam}:{hook}", "hook", (hook,), group=group)
        firsts[(fam, hook)] = start
        prev = start
        for c in chains:
            table = c["table"]
            owner = (
                "other" if table.endswith("(iptables)") else owner_of(table.split(" ", 1)[-1])
            )  # iptables' are shared
            rules = c.get("rules")
            label = (
                f"{table} {c['chain']}",
                f"priority {c['priority']}, policy {c['policy']}"
                + (f", {rules} rule{'s' if rules != 1 else ''}" if rules is not None else ""),
                _base(c.get("location", "")),
            )
            nid = b.node(
                f"base:{fam}:{hook}:{table}:{c['chain']}",
                "base",
                label,
                c.get("location", ""),
                group=group,
                owner=owner,
            )
            b.edge(prev, nid, mark="then")
            prev = nid
            for j in c.get("jumps", ()):
                jid = b.node(
                    f"jump:{fam}:{hook}:{table}:{j}",
                    "chain",
                    (j,),
                    group=group,
                    owner=owner if owner != "other" else owner_of(j),
                )  # an nft table's chains are its owner's
                b.edge(nid, jid, mark="lookup")
        lasts[(fam, hook)] = prev
    fams = sorted({f for f, _, _ in hooks})
    for fam in fams:
        for a, z in _FLOW:
            if (fam, a) in lasts and (fam, z) in firsts:
                b.edge(lasts[(fam, a)], firsts[(fam, z)], mark="flow")
    return b.build()

