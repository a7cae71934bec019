"""What behaves differently, for which Service, from where: two snapshots of a node, two nodes, or the same
node in two proxy modes (iptables, IPVS, nftables), compared by behaviour (verdict, endpoints and their
shares, masquerade), never by text.

Each side is a dump, a bundle directory, or several dumps of one node (--before/--after, repeatable:
iptables-save + nft + ipvsadm + ipset). --nodes DIR compares every node bundle in DIR with the majority.
Exit 0: no behaviour changed; 1: changes found.
"""

from __future__ import annotations

import os

import typer

from kptrace.cli.common import LenientOpt, MaxSizeOpt, NodeIpOpt, OutputFormat, OutputOpt, parse_size, stderr_console, stdout_console
from kptrace.errors import EXIT_FINDINGS


def diff(
    sides: list[str] = typer.Argument(None, help="BEFORE AFTER: each a dump file or a bundle directory.", show_default=False),
    before: list[str] = typer.Option([], "--before", help="A dump of the before side (repeatable: iptables-save, nft, ipvsadm, ipset).",
                                     show_default=False),
    after: list[str] = typer.Option([], "--after", help="A dump of the after side (repeatable).", show_default=False),
    nodes: str = typer.Option(None, "--nodes", help="A directory of node bundles (kptrace collect -o DIR): each node "
                              "against the majority.", show_default=False),
    src: list[str] = typer.Option([], "--src", help="Also compare traffic from this source address (repeatable).", show_default=False),
    full: bool = typer.Option(False, "--full", help="Trace every entry point on both sides (no shortcut for ports whose "
                              "programmed facts are equal)."),
    node_ips: list[str] = NodeIpOpt,
    junit: str = typer.Option(None, "--junit", help="Also write a JUnit XML report (one test case per entry point and origin).",
                              show_default=False),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    from kptrace.checks.diff import diff_dataplanes

    if nodes:
        if sides or before or after:
            raise typer.BadParameter("--nodes compares the bundles in one directory: give no other sides", param_hint="--nodes")
        return _nodes(nodes, src, full, node_ips, lenient, max_size, output, junit)
    sides = list(sides or [])
    if (before or after) and sides:
        raise typer.BadParameter("give the sides either as BEFORE AFTER or with --before/--after", param_hint="--before")
    if before or after:
        if not before or not after:
            raise typer.BadParameter("give both --before and --after", param_hint="--before" if not before else "--after")
        b_paths, a_paths = list(before), list(after)
    else:
        if len(sides) != 2:
            raise typer.BadParameter(f"give two sides (BEFORE AFTER), not {len(sides)}", param_hint="SIDES")
        b_paths, a_paths = [sides[0]], [sides[1]]
    bdp = _load(b_paths, node_ips, lenient, max_size)
    adp = _load(a_paths, node_ips, lenient, max_size)
    progress = _progress() if output is OutputFormat.rich else None
    report = diff_dataplanes(bdp, adp, sources=tuple(src), full=full, progress=progress)
    if progress is not None:
        progress(-1, -1)
    _emit([("", report)], output, junit)
    if report.changes:
        raise typer.Exit(EXIT_FINDINGS)


def _load(paths: list[str], node_ips, lenient, max_size):
    from kptrace.load import load_bundle, load_dumps

    if len(paths) == 1 and os.path.isdir(paths[0]):
        return load_bundle(paths[0], node_ips=node_ips, lenient=lenient)
    return load_dumps(paths, node_ips=node_ips, lenient=lenient, max_bytes=parse_size(max_size))


def _progress():
    """A progress line on stderr for long comparisons (only when stderr is a terminal)."""
    console = stderr_console()
    state = {"shown": False}

    def show(done: int, total: int) -> None:
        if not console.is_terminal:
            return
        if done < 0:
            if state["shown"]:
                console.print(" " * 60, end="\r")
            return
        state["shown"] = True
        console.print(f"comparing: {done}/{total} entry points traced", end="\r", highlight=False)

    return show


def _nodes(directory, src, full, node_ips, lenient, max_size, output, junit) -> None:
    from kptrace.checks.diff import diff_dataplanes
    from kptrace.load import load_bundle

    if not os.path.isdir(directory):
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="--nodes")
    names = sorted(d for d in os.listdir(directory) if os.path.isfile(os.path.join(directory, d, "meta.json")))
    if len(names) < 2:
        raise typer.BadParameter(f"{directory} holds {len(names)} node bundle(s): --nodes needs two or more", param_hint="--nodes")
    loaded = {}
    failed = []
    for n in names:
        try:
            loaded[n] = load_bundle(os.path.join(directory, n), lenient=lenient)
        except Exception as e:  # noqa: BLE001 - one unreadable node is reported; the others are still compared
            failed.append((n, str(e)))
    for n, why in failed:
        stderr_console().print(f"{n}: not compared: {why}", highlight=False, markup=False)
    if len(loaded) < 2:
        raise typer.Exit(3)
    # the reference: the node most others agree with (fewest changes against the rest, first by name)
    order = list(loaded)
    reports = {}
    ref = order[0]
    counts = {}
    for n in order[1:]:
        reports[n] = diff_dataplanes(loaded[ref], loaded[n], sources=tuple(src), full=full)
        counts[n] = len(reports[n].changes)
    differing = [n for n in order[1:] if counts[n]]
    if len(differing) > len(order) // 2 and len(order) > 2:
        # the first node is the odd one out: compare against a node that agrees with most
        ref = min(order[1:], key=lambda n: counts[n])
        reports = {n: diff_dataplanes(loaded[ref], loaded[n], sources=tuple(src), full=full) for n in order if n != ref}
    results = [(f"{ref} -> {n}", reports[n]) for n in order if n != ref]
    _emit(results, output, junit, reference=ref)
    if failed or any(r.changes for _, r in results):
        raise typer.Exit(EXIT_FINDINGS)


def _emit(results, output, junit, reference: str | None = None) -> None:
    if output is OutputFormat.json:
        from kptrace.render.diff import diff_json
        from kptrace.render.json_out import dumps

        typer.echo(dumps(diff_json(results, reference)))
    else:
        from kptrace.render.diff import render_diff

        render_diff(stdout_console(), results, reference)
    if junit:
        from kptrace.render.diff import diff_junit

        with open(junit, "w") as f:
            f.write(diff_junit(results))
