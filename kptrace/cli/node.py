"""A node's netfilter hooks: at each (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING), the base chains the
kernel runs in priority order across every table (iptables' and iptables-nft's, kube-proxy's nftables
table, a CNI's, a firewall's), and the chains each one jumps to, by owner (kube-proxy, CNI, firewall).

Without --graph, the same as text. With --graph FILE the picture (.dot, .mmd, .svg or .png): one box per
hook, what a mixed iptables-nft + nftables node needs to see in one place.
"""

from __future__ import annotations

from kptrace.cli.common import LenientOpt, MaxSizeOpt, stdout_console, warn_diagnostics
from kptrace.cli.options import SOURCE_OPTIONS, GraphOpt, NodeSource, node_source_options


@node_source_options
def node(
    source: NodeSource = SOURCE_OPTIONS,
    graph: str = GraphOpt,
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
) -> None:
    from kptrace.render.graph import node_graph, to_text
    from kptrace.tracer.hooks import base_chains

    if graph:
        from kptrace.cli.options import check_picture_tools

        check_picture_tools(graph)
    dp = source.load(lenient=lenient, max_size=max_size)
    warn_diagnostics(dp.diagnostics)
    hooks = base_chains(dp)
    g = node_graph(hooks)
    if graph:
        from kptrace.cli.options import write_pictures

        write_pictures(g, graph, None, lambda svg, dot: "")
        return
    if not hooks:
        stdout_console().print("no base chains in the input", highlight=False, markup=False)
        return
    stdout_console().print(to_text(g), end="", highlight=False, markup=False, soft_wrap=True)
