"""Trace one packet: every outcome with its exact probability, NAT rewrites, verdict and rule path.

Defaults: --from is node when the source is a node IP, else pod. Without --src, a node source is the
first --node-ip, a pod source an address inside the pod CIDR that kube-proxy's masquerade rules reveal
(! -s CIDR -j KUBE-MARK-MASQ), an external source 203.0.113.1. The source port is 43210.
"""

from __future__ import annotations

import typer

from kptrace.cli.common import (
    LenientOpt,
    MaxSizeOpt,
    OutputFormat,
    OutputOpt,
    ProtoOpt,
    parse_dst,
    stdout_console,
    warn_diagnostics,
)
from kptrace.cli.options import SOURCE_OPTIONS, GraphOpt, NodeSource, node_source_options
from kptrace.errors import EXIT_FINDINGS
from kptrace.tracer.packet import Origin


@node_source_options
def packet(
    dst: str = typer.Option(..., "--dst", help="Destination IP:PORT ([IPv6]:PORT).", show_default=False),
    source: NodeSource = SOURCE_OPTIONS,
    src: str = typer.Option(None, "--src", help="Source address (default: see above).", show_default=False),
    sport: int = typer.Option(43210, "--sport", min=1, max=65535, help="Source port."),
    proto: str = ProtoOpt,
    origin: Origin = typer.Option(None, "--from", help="pod, node or external (default: see above).", show_default=False),
    affinity: str = typer.Option(None, "--affinity", help="Trace a client pinned to this endpoint (IP:PORT or KUBE-SEP-…) by session affinity.",
                                 show_default=False),
    in_iface: str = typer.Option(None, "--in-iface", help="Interface the packet arrives on (decides -i matches).", show_default=False),
    out_iface: str = typer.Option(None, "--out-iface", help="Interface the node routes it out of (decides -o matches).", show_default=False),
    full_path: bool = typer.Option(False, "--full-path", help="Show every chain visited, even empty ones (the graph too)."),
    graph: str = GraphOpt,
    strict: bool = typer.Option(False, "--strict", help=f"Exit {EXIT_FINDINGS} when an outcome rests on an assumption."),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    from kptrace.model.addr import format_addr
    from kptrace.tracer.defaults import plan_packet, resolve_affinity, trace_packet

    fam, addr, port = parse_dst(dst)
    if src is not None:
        try:
            from kptrace.model.addr import parse_addr

            parse_addr(src)
        except ValueError:
            raise typer.BadParameter(f"{src!r} is not an IP address", param_hint="--src") from None
    if graph:
        from kptrace.cli.options import check_picture_tools

        check_picture_tools(graph, output)
    dp = source.load(lenient=lenient, max_size=max_size)
    warn_diagnostics(dp.diagnostics)
    plan = plan_packet(dp, format_addr(fam, addr), port, src=src, origin=origin, proto=proto.lower(), sport=sport, in_iface=in_iface,
                       out_iface=out_iface)
    pinned = resolve_affinity(dp, fam, affinity) if affinity else frozenset()
    trace = trace_packet(dp, plan, affinity=pinned)
    if graph:
        from kptrace.cli.options import write_pictures
        from kptrace.render.graph import trace_graph

        write_pictures(trace_graph(trace, full=full_path), graph, None, lambda svg, dot: "")
    if graph in ("-", "dot:-", "mmd:-"):
        pass  # stdout holds the graph
    elif output is OutputFormat.json:
        from kptrace.render.json_out import dumps as to_json
        from kptrace.render.json_out import trace_json

        typer.echo(to_json(trace_json(trace)))
    else:
        from kptrace.render.text import render_trace

        render_trace(stdout_console(), trace, full_path=full_path)
    if strict and trace.assumed:
        raise typer.Exit(EXIT_FINDINGS)
