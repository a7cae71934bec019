"""Capture nodes' data planes into bundles, read-only: iptables-save -c and ip6tables-save -c, ipset,
ipvsadm and nft when present (nft list ruleset, as text and -j JSON, when kube-proxy runs in nftables
mode or nft holds tables iptables-save cannot show), the node's addresses and routes, and metadata with
kube-proxy's mode (from its --config or --proxy-mode, else from the tables); collected through the
Kubernetes API, also the cluster's Services, EndpointSlices and Nodes (cluster.json). Each node goes to
OUTPUT/<node>/, written atomically; every command reads one with --bundle OUTPUT/<node>. A node collected
without what its mode needs (nftables mode, but nft missing or refused) is reported and exits 6.
Sources: --local (this machine) or --ssh [user@]host[:port] (repeatable; ~/.ssh/config honoured)."""

from __future__ import annotations

import os
import sys

import typer

from kptrace.cli.common import stderr_console, stdout_console
from kptrace.errors import EXIT_ENVIRONMENT, EXIT_PARTIAL
from kptrace.sources.runners import runner_targets


def collect(
    output: str = typer.Option(..., "-o", "--output", help="Directory for the bundles (one subdirectory per node).", show_default=False),
    local: bool = typer.Option(False, "--local", help="Collect this machine (root or sudo -n)."),
    ssh: list[str] = typer.Option([], "--ssh", help="[user@]host[:port] to collect over SSH (repeatable).", show_default=False),
    nodes: list[str] = typer.Option([], "--node", help="A node to collect through the Kubernetes API: exec in its kube-proxy pod (repeatable).",
                                    show_default=False),
    all_nodes: bool = typer.Option(False, "--all-nodes", help="Every node of the cluster, through the Kubernetes API."),
    kubeconfig: str = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default $KUBECONFIG or ~/.kube/config).",
                                   show_default=False),
    context: str = typer.Option(None, "--context", help="Kubeconfig context.", show_default=False),
    selector: str = typer.Option("k8s-app=kube-proxy", "--kube-proxy-selector", help="Labels of the kube-proxy pods."),
    node: str = typer.Option(None, "--node-name", help="With --local: the name to record (default: the hostname).", show_default=False),
    parallel: int = typer.Option(16, "--parallel", min=1, max=256, help="Nodes collected at once."),
    ssh_config: str = typer.Option(None, "--ssh-config", help="SSH config file (default ~/.ssh/config).", show_default=False),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Accept and remember unknown host keys (never changed ones)."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.5, help="Seconds to wait for a node to answer."),
) -> None:
    if sum(map(bool, (local, ssh, nodes or all_nodes))) != 1:
        raise typer.BadParameter("say where the rules are: --local, --ssh HOST, or --node NAME / --all-nodes", param_hint="--local")
    from kptrace.sources.bundle import collect_many

    targets = runner_targets(local=local, ssh=ssh, nodes=nodes, all_nodes=all_nodes, name=node if local else None,
                             kubeconfig=kubeconfig, context=context, selector=selector, ssh_config=ssh_config,
                             accept_new_host_key=accept_new_host_key, timeout=timeout)
    names = [n for n, _ in targets]
    if len(set(names)) != len(names):
        raise typer.BadParameter("two targets have the same node name", param_hint="--ssh")
    os.makedirs(output, exist_ok=True)
    err = stderr_console()
    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    if interactive and len(targets) > 1:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=err, transient=True) as bar:
            task = bar.add_task("", total=len(targets))
            results = collect_many(targets, output, parallel=parallel,
                                   progress=lambda r: bar.update(task, advance=1, description=f"{r.name} ({r.mode or 'failed'})"))
    else:
        results = collect_many(targets, output, parallel=parallel)
    if (nodes or all_nodes) and any(r.error is None for r in results):
        _add_cluster_state(results, kubeconfig, context)
    out = stdout_console()
    ok = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    incomplete = [r for r in ok if r.incomplete]
    from rich.markup import escape

    for r in ok:
        mark = "[yellow]![/]" if r.incomplete else "[green]✓[/]"
        out.print(f"{mark} {escape(r.name)} -> {escape(r.path or '')}  [dim]{r.mode} mode (from {escape(r.mode_from)})[/]", highlight=False)
        for note in r.notes:
            err.print(f"  {r.name}: {note}", highlight=False, soft_wrap=True, markup=False)
    for r in failed:
        err.print(f"✗ {r.error}", highlight=False, soft_wrap=True, markup=False)
    out.print(f"{len(ok)} of {len(results)} nodes collected into {output}"
              + (f" ({len(incomplete)} without what their mode needs: see above)" if incomplete else ""))
    if failed:
        raise typer.Exit(EXIT_PARTIAL if ok else EXIT_ENVIRONMENT)
    if incomplete:
        raise typer.Exit(EXIT_PARTIAL)


def _add_cluster_state(results, kubeconfig, context) -> None:
    """Collected through the API: each bundle also gets the cluster's Services, EndpointSlices and Nodes
    (``cluster.json``), which name the Services IPVS mode leaves nameless and let drift run offline."""
    import json

    from kptrace.errors import KptraceError
    from kptrace.sources.kube import fetch_cluster_state

    try:
        text = json.dumps(fetch_cluster_state(kubeconfig, context))
    except KptraceError as e:
        stderr_console().print(f"note: the cluster state was not saved with the bundles: {e.message}", highlight=False, markup=False)
        return
    for r in results:
        if r.error is None and r.path:
            with open(os.path.join(r.path, "cluster.json"), "w") as f:
                f.write(text)
