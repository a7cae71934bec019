"""What behaves differently, for which Service, from where: two snapshots of a node, two nodes, or the same
node in two proxy modes (iptables, IPVS, nftables), compared by behaviour (verdict, endpoints and their
shares, masquerade), never by text.

Each side is a dump, a bundle directory, or several dumps of one node (--before/--after, repeatable:
iptables-save + nft + ipvsadm + ipset). --nodes DIR compares every node bundle in DIR with the majority.
Exit 0: no behaviour changed; 1: changes found.
"""

from __future__ import annotations

import os
from typing import Any

import typer

from kptrace.cli.common import (
    LenientOpt,
    MaxSizeOpt,
    NodeIpOpt,
    OutputFormat,
    OutputOpt,
    parse_size,
    stderr_console,
    stdout_console,
)
from kptrace.cli.options import GraphOpt, HtmlOpt
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
    graph: str = GraphOpt,
    html: str = HtmlOpt,
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    from kptrace.checks.diff import diff_dataplanes

    if graph or html:
        from kptrace.cli.options import check_picture_tools

        check_picture_tools(graph, output)
    pictures = (graph, html)
    if nodes:
        if sides or before or after:
            raise typer.BadParameter("--nodes compares the bundles in one directory: give no other sides", param_hint="--nodes")
        return _nodes(nodes, src, full, node_ips, lenient, max_size, output, junit, pictures)
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
    progress = _progress() if output is not OutputFormat.json else None
    report = diff_dataplanes(bdp, adp, sources=tuple(src), full=full, progress=progress)
    if progress is not None:
        progress(-1, -1)
    _emit([("", report)], output, junit, pictures=pictures, sides={"": (bdp, adp)})
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


def _nodes(directory, src, full, node_ips, lenient, max_size, output, junit, pictures=(None, None)) -> None:
    """Every node bundle in DIRECTORY against the majority: nodes are grouped by behaviour (a node is in a
    group when it has no change against the group's first node), the largest group is the reference, and
    every node outside it is compared with that group's first node. An unreadable bundle is reported; the
    others are still compared."""
    from kptrace.checks.diff import diff_dataplanes
    from kptrace.errors import KptraceError
    from kptrace.load import load_bundle

    if not os.path.isdir(directory):
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="--nodes")
    names = sorted(d for d in os.listdir(directory) if os.path.isfile(os.path.join(directory, d, "meta.json")))
    if len(names) < 2:
        raise typer.BadParameter(f"{directory} holds {len(names)} node bundle(s) (directories with meta.json): --nodes "
                                 "needs two or more", param_hint="--nodes")
    err = stderr_console()
    loaded, failed = {}, []
    groups: list[list[str]] = []  # nodes that behave alike, the first one compared with the others
    reports: dict[str, object] = {}
    show = _progress_bar(len(names)) if output is not OutputFormat.json else None
    for i, n in enumerate(names):
        try:
            loaded[n] = load_bundle(os.path.join(directory, n), lenient=lenient)
        except KptraceError as e:
            failed.append((n, e.message if hasattr(e, "message") else str(e)))
            if show:
                show(i + 1, n)
            continue
        for g in groups:
            r = diff_dataplanes(loaded[g[0]], loaded[n], sources=tuple(src), full=full)
            if not r.changes:
                g.append(n)
                reports[n] = r
                break
        else:
            groups.append([n])
        if show:
            show(i + 1, n)
    if show:
        show(-1, "")
    for n, why in failed:
        err.print(f"{n}: not compared: {why}", highlight=False, markup=False)
    if len(loaded) < 2:
        raise typer.Exit(3)
    groups.sort(key=lambda g: (-len(g), g[0]))
    ref = groups[0][0]
    results: list[tuple[str, Any]] = []  # (label, DiffReport)
    for g in groups[1:]:
        for n in g:
            reports[n] = diff_dataplanes(loaded[ref], loaded[n], sources=tuple(src), full=full)
    for n in names:
        if n in loaded and n != ref:
            results.append((f"{ref} -> {n}", reports[n]))
    _emit(results, output, junit, reference=ref, pictures=pictures,
          sides={f"{ref} -> {n}": (loaded[ref], loaded[n]) for n in names if n in loaded and n != ref})
    if failed or any(r.changes for _, r in results):
        raise typer.Exit(EXIT_FINDINGS)


def _progress_bar(total: int):
    """A progress bar on stderr (a terminal only) while 50 bundles are read and compared."""
    console = stderr_console()
    if not console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("comparing nodes"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   console=console, transient=True)
    task = bar.add_task("", total=total)
    bar.start()

    def show(done: int, name: str) -> None:
        if done < 0:
            bar.stop()
            return
        bar.update(task, completed=done, description=name)

    return show


def _emit(results, output, junit, reference: str | None = None, pictures=(None, None), sides=None) -> None:
    graph, html = pictures
    if graph or html:
        _pictures(results, graph, html, reference, sides or {})
    if graph in ("-", "dot:-", "mmd:-"):
        pass  # stdout holds the graph
    elif output is OutputFormat.json:
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


def _pictures(results, graph, html, reference, sides) -> None:
    """The changed entry points traced again on both sides, drawn as one graph (--graph) and put with the
    tables in the HTML report (--html)."""
    from kptrace.checks.diff import probe_trace
    from kptrace.cli.options import write_pictures
    from kptrace.render.graph import change_graph

    changes: list[tuple] = []
    for label, rep in results:
        bdp, adp = sides[label]
        for c in rep.changes[: max(0, 12 - len(changes))]:  # change_graph draws twelve; the rest is counted
            title = f"{label + ': ' if label else ''}{c.service or '?'} {c.probe.dst}"
            changes.append((title, c.probe, *(probe_trace(dp, c.probe) if _has_rules(dp, c.probe.family) else None
                                              for dp in (bdp, adp))))
    total = sum(len(r.changes) for _, r in results)
    changes.extend((("", None, None, None),) * (total - len(changes)))  # counted, not drawn

    def report(svg, dot):
        from kptrace.render.html import diff_html

        return diff_html(results, reference=reference, svg=svg, dot=dot)

    write_pictures(change_graph(changes), graph, html, report)


def _has_rules(dp, family: int) -> bool:
    return family in dp.rulesets or dp.nft is not None or dp.ipvs is not None
