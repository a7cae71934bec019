"""The graph value: nodes, edges and their attributes, which the builders make and the writers read."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from kptrace.tracer.result import nice_fraction

__all__ = ["TOP", "Edge", "Graph", "Node", "share_label"]

#: endpoints drawn one by one; the rest become one "N more endpoints" node
TOP = 12


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    kind: str  # a key of write._NODE_STYLE: entry, chain, set, map, ipvs, endpoint, summary, drop, reject, accept, incomplete, hook, base
    label: tuple[str, ...]  # lines
    location: str = ""  # file:line
    share: Fraction | None = None
    change: str = ""  # diff: "before" (only before), "after" (only after), "" (both or not a diff)
    group: str = ""  # a box of nodes drawn together (node graphs: the hook)
    owner: str = ""  # node graphs: kube-proxy, cni, firewall, other


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    share: Fraction | None = None
    mark: str = ""  # "" | "masquerade" | "lookup" | "then"
    change: str = ""  # diff: "before" (only before), "after" (only after), ""


@dataclass(frozen=True, slots=True)
class Graph:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    groups: tuple[str, ...] = ()  # the groups' order

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)



def share_label(p: Fraction | None) -> str:
    """A share as the picture prints it: ``1/3``, or a percentage when no small fraction is that close."""
    if p is None:
        return ""
    nice = nice_fraction(p)
    return nice if "." not in nice else f"{float(p):.2%}"
