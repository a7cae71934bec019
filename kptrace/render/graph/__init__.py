"""Pictures of a data plane: a trace, a Service, a behaviour change, or a node's hooks, as a graph.

Building is a pure function from the tracer's values to a small :class:`Graph` value (nodes, edges,
attributes); writers turn that value into text. DOT and Mermaid are written here by hand: they are tiny
text formats (a node or an edge a line), and a library for them would be a dependency for forty lines.
SVG and PNG come from Graphviz's ``dot``, run in exactly one place (:func:`render_image`); when ``dot`` is
not installed, that is an :class:`~kptrace.errors.EnvironmentProblem` (exit 5) that says so.

What a Service graph shows, left to right: the entry points (ClusterIP, NodePort, LoadBalancer and external
IPs) -> kube-proxy's chains, sets and maps the packet passes (iptables, IPVS or nftables; each node with
the file:line of the rule taken there) -> the endpoints with their exact shares. A random choice's edge
carries the share it gives; DROP and REJECT end in red nodes; a masqueraded branch's last edge is orange
and dashed. After the DNAT only what changes the outcome is drawn (masquerade, drop, reject): FORWARD and
POSTROUTING are the same for every endpoint. Past ``top`` endpoints, the rest are one "N more" node
with their total share.

The package: :mod:`.model` holds the graph value, :mod:`.build` makes it from traces, Service views, diff
changes and a node's hooks, :mod:`.write` writes it (DOT, Mermaid, text; SVG/PNG through ``dot``).

>>> g = Graph("t", (Node("a", "entry", ("ClusterIP", "10.0.0.1:80")), Node("b", "endpoint", ("10.1.0.1:80",))),
...           (Edge("a", "b", "pod"),))
>>> print(to_dot(g).splitlines()[5])
  "a" [label="ClusterIP\\n10.0.0.1:80", shape=cds, fillcolor="#dbeafe"];
>>> print(to_mermaid(g).splitlines()[3])
  n0 -->|"pod"| n1
"""

from __future__ import annotations

from kptrace.render.graph.build import change_graph, node_graph, owner_of, service_graph, trace_graph
from kptrace.render.graph.model import TOP, Edge, Graph, Node, share_label
from kptrace.render.graph.write import graph_format, render_image, require_dot, to_dot, to_mermaid, to_text, write_graph

__all__ = [
    "TOP",
    "Edge",
    "Graph",
    "Node",
    "change_graph",
    "graph_format",
    "node_graph",
    "owner_of",
    "render_image",
    "require_dot",
    "service_graph",
    "share_label",
    "to_dot",
    "to_mermaid",
    "to_text",
    "trace_graph",
    "write_graph",
]
