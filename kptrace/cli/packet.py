"""Trace one packet: every outcome with its exact probability, NAT rewrites, verdict and rule path.

Defaults: --from is node when the source is a node IP, else pod. Without --src, a node source is the
first --node-ip, a pod source an address inside the pod CIDR that kube-proxy's masquerade rules reveal
(! -s CIDR -j KUBE-MARK-MASQ), an external source 203.0.113.1. The source port is 43210.
"""

from __future__ import annotations

import typer

from kptrace.cli.common import (BundleOpt, DumpOpt, IpsetOpt, IpvsOpt, LenientOpt, LocalOpt, MaxSizeOpt, NodeIpOpt, OutputFormat, OutputOpt, ProtoOpt,
                                ContextOpt, KubeconfigOpt, NodeOpt, SshConfigOpt, SshOpt, load_input, parse_dst, stdout_console,
                                warn_diagnostics)
from kptrace.errors import EXIT_FINDINGS
from kptrace.tracer.packet import Origin


def packet(
    dst: str = typer.Option(..., "--dst", help="Destination IP:PORT ([IPv6]:PORT).", show_default=False),
    dumps: list[str] = DumpOpt,
    ipvs: str = IpvsOpt,
    ipset: str = IpsetOpt,
    bundle: str = BundleOpt,
    local: bool = LocalOpt,
    ssh: str = SshOpt,
    ssh_config: str = SshConfigOpt,
    node: str = NodeOpt,
    kubeconfig: str = KubeconfigOpt,
    context: str = ContextOpt,
    src: str = typer.Option(None, "--src", help="Source address (default: see above).", show_default=False),
    sport: int = typer.Option(43210, "--sport", min=1, max=65535, help="Source port."),
    proto: str = ProtoOpt,
    origin: Origin = typer.Option(None, "--from", help="pod, node or external (default: see above).", show_default=False),
    node_ips: list[str] = NodeIpOpt,
    affinity: str = typer.Option(None, "--affinity", help="Trace a client pinned to this endpoint (IP:PORT or KUBE-SEP-…) by session affinity.",
                                 show_default=False),
    in_iface: str = typer.Option(None, "--in-iface", help="Interface the packet arrives on (decides -i matches).", show_default=False),
    out_iface: str = typer.Option(None, "--out-iface", help="Interface the node routes it out of (decides -o matches).", show_default=False),
    full_path: bool = typer.Option(False, "--full-path", help="Show every chain visited, even empty ones."),
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
    dp = load_input(dumps, bundle, local, node_ips, lenient=lenient, max_size=max_size, ssh=ssh, ssh_config=ssh_config,
                    node=node, kubeconfig=kubeconfig, context=context, ipvs=ipvs, ipset=ipset)
    warn_diagnostics(dp.diagnostics)
    plan = plan_packet(dp, format_addr(fam, addr), port, src=src, origin=origin, proto=proto.lower(), sport=sport, in_iface=in_iface,
                       out_iface=out_iface)
    pinned = resolve_affinity(dp, fam, affinity) if affinity else frozenset()
    trace = trace_packet(dp, plan, affinity=pinned)
    if output is OutputFormat.json:
        from kptrace.render.json_out import dumps as to_json, trace_json

        typer.echo(to_json(trace_json(trace)))
    else:
        from kptrace.render.text import render_trace

        render_trace(stdout_console(), trace, full_path=full_path)
    if strict and trace.assumed:
        raise typer.Exit(EXIT_FINDINGS)
