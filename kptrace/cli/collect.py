"""Capture a node's data plane into a bundle directory, read-only: iptables-save -c and ip6tables-save -c,
ipset, ipvsadm and nft when present, the node's addresses and routes, and metadata. Written atomically;
every command reads it with --bundle DIR. (This version collects the machine it runs on: --local.)"""

from __future__ import annotations

import typer

from kptrace.cli.common import stderr_console, stdout_console


def collect(
    local: bool = typer.Option(False, "--local", help="Collect this machine (root or sudo -n)."),
    output: str = typer.Option(..., "-o", "--output", help="The bundle directory to write (must not exist).", show_default=False),
    node: str = typer.Option(None, "--node-name", help="Name to record (default: the hostname).", show_default=False),
) -> None:
    if not local:
        raise typer.BadParameter("say where the rules are: --local (SSH and the Kubernetes API come in a later version)",
                                 param_hint="--local")
    from kptrace.sources.bundle import LocalRunner, collect as take, write_bundle

    bundle = take(LocalRunner(), node)
    path = write_bundle(bundle, output)
    console = stdout_console()
    meta = bundle.meta
    console.print(f"[bold]{meta['node']}[/] -> {path}")
    console.print(f"  kube-proxy mode {meta['kube_proxy_mode']}, iptables {meta['iptables'] or '?'} ({meta['iptables_backend']}),"
                  f" kernel {meta['kernel'] or '?'}")
    console.print(f"  addresses {', '.join(bundle.node_ips) or 'none'}")
    console.print(f"  files {', '.join(sorted(bundle.files))}")
    for note in bundle.notes:
        stderr_console().print(f"[dim]note: {note}[/]", highlight=False)
