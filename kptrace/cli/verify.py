"""Replay the dump in real netfilter (throwaway network namespaces; needs root) and check that the
kernel does what kptrace predicts: the probe's rule path, the set of outcomes, each outcome's share of N
connections within a binomial bound, masquerading, and REJECT/DROP. Exit 0 when the kernel agrees.
An nftables ruleset (with or without an iptables-save of the same node) loads with `nft -f` and is traced
with `nft monitor trace`.

--all-services derives the packets from the dump: every Service entry point (ClusterIP, NodePort,
external IP, LoadBalancer IP) from each origin that reaches it.
"""

from __future__ import annotations

import typer

from kptrace.cli.common import (
    DumpOpt,
    LenientOpt,
    MaxSizeOpt,
    NodeIpOpt,
    OutputFormat,
    OutputOpt,
    parse_dst,
    parse_size,
    require_dumps,
    stderr_console,
    stdout_console,
    warn_diagnostics,
)
from kptrace.errors import EXIT_FINDINGS
from kptrace.tracer.packet import Origin


def verify(
    dumps: list[str] = DumpOpt,
    dst: str = typer.Option(None, "--dst", help="Destination IP:PORT ([IPv6]:PORT).", show_default=False),
    all_services: bool = typer.Option(False, "--all-services", help="Every Service entry point in the dump, from each origin."),
    src: str = typer.Option(None, "--src", help="Source address (default as for `kptrace packet`).", show_default=False),
    proto: str = typer.Option("tcp", "--proto", help="tcp or udp."),
    origin: Origin = typer.Option(None, "--from", help="pod, node or external.", show_default=False),
    node_ips: list[str] = NodeIpOpt,
    connections: int = typer.Option(None, "-n", "--connections", min=1, max=100000,
                                    help="Connections per packet (default: enough for 40 of the least likely outcome, at least 200).",
                                    show_default=False),
    confidence: float = typer.Option(0.999, "--confidence", min=0.5, max=0.999999999,
                                     help="Confidence of the binomial bound on each share (Bonferroni over the outcomes)."),
    show_normalised: bool = typer.Option(False, "--show-normalised", help="Print what would be loaded into the kernel, and stop."),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    require_dumps(dumps)
    from kptrace.lab.verify import VerifyPacket, normalised, normalised_nft, packets_for_all_services, run_verify
    from kptrace.load import load_dumps
    from kptrace.tracer.defaults import ASSUMED_NODE_IP, plan_packet

    ips = list(node_ips)
    dp = load_dumps(dumps, node_ips=ips, lenient=lenient, full=True, max_bytes=parse_size(max_size))
    if not ips and dp.nft_node_ips:
        # nftables mode lists the node's addresses itself (the nodeport-ips sets): the lab node gets them
        ips = [a for f in sorted(dp.rulesets) for a in dp.node_ips_of(f)] or [ASSUMED_NODE_IP[f] for f in sorted(dp.rulesets)]
        dp.node_ips = tuple(ips)
    if not ips:
        # The lab node needs addresses; kptrace predicts for the same ones.
        ips = [ASSUMED_NODE_IP[f] for f in sorted(dp.rulesets)]
        stderr_console().print(f"note: no --node-ip: the lab node's address is {', '.join(ips)} (a stand-in), and kptrace predicts for it")
        dp.node_ips = tuple(ips)  # before any trace: tracers read it when they are made
    warn_diagnostics([d for d in dp.diagnostics if d.severity == "error"])
    if show_normalised:  # in the order the lab loads them: nft -f, then iptables-restore
        for text in [normalised_nft(dp) or "", *normalised(dp).values()]:
            typer.echo(text, nl=False)
        return
    if (dst is None) == (not all_services):
        raise typer.BadParameter("give --dst IP:PORT or --all-services", param_hint="--dst")
    if all_services:
        packets = packets_for_all_services(dp)
    else:
        from kptrace.model.addr import format_addr

        fam, addr, port = parse_dst(dst)
        plan = plan_packet(dp, format_addr(fam, addr), port, src=src, origin=origin, proto=proto.lower())
        packets = [VerifyPacket(f"{plan.packet}", plan)]
    if proto.lower() not in ("tcp", "udp"):
        raise typer.BadParameter("kptrace verify sends tcp or udp", param_hint="--proto")
    console = stdout_console()
    progress = None
    if output is not OutputFormat.json and len(packets) > 1:
        progress = lambda label: stderr_console().print(f"[dim]verifying {label}[/]", highlight=False)  # noqa: E731
    results = run_verify(dp, packets, connections=connections, confidence=confidence, progress=progress)
    if output is OutputFormat.json:
        from kptrace.render.json_out import dumps as to_json
        from kptrace.render.json_out import verify_json

        typer.echo(to_json(verify_json(results)))
    else:
        from kptrace.render.text import render_verify

        render_verify(console, results)
    if any(r.status == "disagree" for r in results):
        raise typer.Exit(EXIT_FINDINGS)
