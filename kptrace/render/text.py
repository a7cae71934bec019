"""Rich terminal views: a table of outcomes, each path as a tree, and the Service view."""

from __future__ import annotations

from fractions import Fraction

from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from kptrace.errors import Diagnostic, format_diagnostic
from kptrace.render.layout import NOTE, WRAP, Column, Grid, heading, print_grid, print_panel, print_tree, terminal_view
from kptrace.tracer.kubeproxy import masquerade_reason
from kptrace.tracer.result import Outcome, Step, Trace, nice_fraction
from kptrace.tracer.service_view import ServiceView

__all__ = [
    "render_diagnostics",
    "render_inventory",
    "render_service",
    "render_trace",
    "render_verify",
    "share_text",
    "shared_suffix",
]

_VERDICT_STYLE = {"ACCEPT": "green", "DROP": "bold red", "REJECT": "bold red", "INCOMPLETE": "yellow"}


def share_text(p: Fraction | None) -> str:
    if p is None:
        return "—"
    nice = nice_fraction(p)
    pct = f"{float(p):.2%}" if p not in (0, 1) else ("100%" if p == 1 else "0%")
    return pct if nice in ("1", "0") or "." in nice else f"{nice} ({pct})"


def _rule_text(s: Step) -> str:
    text = s.text
    prefix = f"-A {s.chain} "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _interesting(s: Step) -> bool:
    # An empty built-in chain's ACCEPT policy says nothing; everything else is part of the story.
    return not (s.rule is None and s.note == "policy ACCEPT")


def _add_steps(tree: Tree, steps: tuple[Step, ...], *, full: bool, after_hook: str | None = None) -> None:
    """``steps`` under ``tree``, one node per hook; ``after_hook``: the hook the previous (elided) step was in."""
    hook_node: Tree | None = None
    current: str | None = None
    for s in steps:
        if not full and not _interesting(s):
            continue
        if s.hook != current or hook_node is None:
            current = s.hook
            hook_node = tree.add(f"[bold]{s.hook}[/]" + (" (continued)" if s.hook == after_hook else ""))
        after_hook = None
        hook_node.add(_step_line(s))


def _step_line(s: Step) -> Text:
    where = f"{s.table}/{s.chain}" + (f" #{s.rule}" if s.rule else " policy")
    line = Text()
    line.append(where, style="cyan")
    line.append("  ")
    line.append(_rule_text(s) if s.rule else s.note)
    if s.probability is not None:
        line.append(f"  [random: taken with {share_text(s.probability)}]", style="magenta")
    if s.note and s.rule:
        line.append(f"  → {s.note}", style="yellow")
    if s.synthetic:
        line.append("  (assumed: kube-proxy's standard jump)", style="dim")
    elif s.line:
        line.append(f"  {s.location}", style="dim")
    return line


def _common_prefix(a: tuple[Step, ...], b: tuple[Step, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def shared_suffix(paths: list[tuple[Step, ...]], prefixes: list[int], *, full: bool = False) -> int:
    """How many final steps every path has in common and can be printed once, after all of them.

    Steps are equal only when everything about them is (chain, rule, its text, what it did): a rule that
    names the endpoint, or a NAT step whose result does, differs between endpoints and stays with each.
    ``prefixes[i]``: how many first steps of path ``i`` are already printed as "same as #1"; the suffix
    never reaches into them (nor into what #1 prints for the others to refer to). 0 when the shared steps
    would show nothing (empty ACCEPT policies only) or there is one path.
    """
    if len(paths) < 2:
        return 0
    k = 0
    shortest = min(len(p) - c for p, c in zip(paths, prefixes))
    shortest = min(shortest, len(paths[0]) - max(prefixes[1:], default=0))
    while k < shortest and all(p[-1 - k] == paths[0][-1 - k] for p in paths[1:]):
        k += 1
    if not any(full or _interesting(s) for s in paths[0][len(paths[0]) - k :]):
        return 0
    return k


def _outcome_title(i: int, o: Outcome) -> str:
    title = f"[bold]#{i}[/] {share_text(o.probability)} {o.verdict}" + (f" → {escape(o.dnat)}" if o.dnat else "")
    if o.path_count > 1:
        title += f" [dim]({o.path_count} paths; the most likely shown)[/]"
    return title


def _print_paths(console: Console, outcomes: tuple[Outcome, ...], *, full: bool) -> None:
    """Each outcome's rule path as a tree. What the paths share is printed once: the steps every outcome
    takes before #1's branch point (as "same as #1 up to ...", unless ``full``) and the steps they all take
    at the end (FORWARD and POSTROUTING are usually the same for every endpoint), after the last tree."""
    paths = [o.path for o in outcomes]
    prefixes = [0] + [0 if full else _common_prefix(p, paths[0]) for p in paths[1:]]
    k = 0 if full else shared_suffix(paths, prefixes)
    for i, (o, path, common) in enumerate(zip(outcomes, paths, prefixes), 1):
        tree = Tree(_outcome_title(i, o))
        after = None
        if common:
            last = path[common - 1]
            tree.add(
                Text(
                    f"… same as #1 up to {last.table}/{last.chain}" + (f" #{last.rule}" if last.rule else ""),
                    style="dim",
                )
            )
            after = last.hook
        _add_steps(tree, path[common : len(path) - k], full=full, after_hook=after)
        if k:
            tree.add(Text("… then the steps every outcome shares (below)", style="dim"))
        print_tree(console, tree)
    if k:
        before = {p[len(p) - k - 1].hook for p in paths if len(p) > k}
        tree = Tree(f"[bold]then, for every outcome above[/] (#1-#{len(outcomes)})")
        _add_steps(
            tree, paths[0][len(paths[0]) - k :], full=full, after_hook=before.pop() if len(before) == 1 else None
        )
        print_tree(console, tree)


def _outcome_grid(t: Trace) -> Grid:
    grid = Grid(
        [
            Column("#", justify="right"),
            Column("probability", justify="right"),
            Column("verdict"),
            Column("destination"),
            Column("source"),
            Column("mark"),
            Column("why", NOTE),
        ]
    )
    for i, o in enumerate(t.outcomes, 1):
        verdict = Text(o.verdict, style=_VERDICT_STYLE.get(o.verdict, ""))
        if o.assumed:
            verdict.append(" (assumed)", style="yellow")
        dst = o.dnat and f"{o.dnat} (DNAT)" or o.dst
        src = (
            (f"{o.snat} (MASQUERADE)" if o.snat not in (None, "MASQUERADE") else "MASQUERADE")
            if o.masquerade
            else (f"{o.snat} (SNAT)" if o.snat else o.src)
        )
        grid.add_row(str(i), share_text(o.probability), verdict, dst, src, f"{o.mark:#x}", o.reason)
    return grid


def _print_assumptions(console: Console, outcomes, *, limit: int | None = None) -> None:
    assumptions: list[str] = []
    for o in outcomes:
        for a in o.assumptions:
            if a not in assumptions:
                assumptions.append(a)
    if assumptions:
        console.print("[yellow bold]Assumed[/] (decisions kptrace could not make from the input):")
        for a in assumptions[:limit]:
            console.print(f"  [yellow]•[/] {escape(a)}")
        if limit is not None and len(assumptions) > limit:
            console.print(f"  ... and {len(assumptions) - limit} more (see --output json)")


def render_trace(console: Console, t: Trace, *, full_path: bool = False, show_paths: bool = True) -> None:
    """The outcomes of one packet as a table (addresses always whole), then each outcome's rule path."""
    with terminal_view(console):
        console.print(f"[bold]Packet[/] {escape(str(t.packet))}")
        print_grid(console, _outcome_grid(t))
        if show_paths:
            _print_paths(console, t.outcomes, full=full_path)
        _print_assumptions(console, t.outcomes)
        for n in t.notes:
            console.print(f"[dim]note: {escape(n)}[/]")


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _entry_address(e) -> str:
    return _hostport(e.address, e.port) if e.address else f"<node>:{e.port}"


def render_service(
    console: Console, v: ServiceView, *, show_paths: bool = False, drift=None, counters=None, stale=None
) -> None:
    """Everything the node's rules say about one Service port: entry points, endpoints, where connections go.

    ``drift``: a :class:`kptrace.checks.drift.NodeReport` for the view's Service ports (svc --node-name);
    ``counters``: observed counters against the predicted shares; ``stale``: the view's stale conntrack
    entries (a list of :class:`kptrace.checks.stale.Stale`), when a table was given.
    """
    with terminal_view(console):
        _service_head(console, v)
        _entry_points(console, v)
        _endpoints(console, v, drift, counters)
        if v.traces:
            print_grid(console, _flows_grid(v))
        if show_paths:
            for et in v.traces:
                heading(console, f"{et.entry.kind} {_entry_address(et.entry)} from {et.label}")
                render_trace(console, et.trace)
        if counters is not None:
            _counters(console, counters)
        if stale is not None:
            _stale(console, stale)
        if drift is not None:
            _drift(console, v, drift)
        if v.warnings:
            console.print("[bold yellow]Warnings[/]")
            for w in v.warnings:
                console.print(f"  [yellow]![/] {escape(w)}")
        _print_assumptions(console, [o for et in v.traces for o in et.trace.outcomes], limit=12)
        for n in v.notes:
            console.print(f"[dim]note: {escape(n)}[/]")


def _service_head(console: Console, v: ServiceView) -> None:
    head = Text()
    head.append(v.name, style="bold")
    head.append(f"  {v.protocol}, IPv{v.family}  ")
    head.append(", ".join(v.chains) or "no nat chains", style="cyan")
    print_panel(console, head)
    policy = f"internal {v.internal_policy}" + (f", external {v.external_policy}" if v.external_policy else "")
    affinity = f"ClientIP, timeout {v.affinity_timeout}s" if v.affinity_timeout else "none"
    console.print(f"[bold]Traffic policy[/] {policy}    [bold]Session affinity[/] {affinity}")
    if v.source_ranges:
        console.print(f"[bold]LoadBalancer source ranges[/] {', '.join(v.source_ranges)}")


def _entry_points(console: Console, v: ServiceView) -> None:
    if not v.entry_points:
        console.print("[bold]Entry points[/] none in this input (no KUBE-SERVICES / KUBE-NODEPORTS rule leads here)")
        return
    grid = Grid([Column("kind"), Column("address"), Column("leads to"), Column("rule", NOTE)], title="Entry points")
    for e in v.entry_points:
        grid.add_row(
            e.kind,
            _entry_address(e),
            Text(e.via, style="red" if e.via in ("REJECT", "DROP") else ""),
            Text(e.location, style="dim"),
        )
    print_grid(console, grid)


def _endpoints(console: Console, v: ServiceView, drift, counters) -> None:
    port = (
        next((p for p in drift.ports if p.hash == v.hash and p.family == v.family), None) if drift is not None else None
    )
    expected: set[str] = set()
    if port is not None:
        expected = set(port.expected or ()) | set(port.expected_local or ())
    if not v.endpoints and not expected:
        return
    cols = [Column("endpoint"), Column("share (pod → ClusterIP)"), Column("chain"), Column("local")]
    if counters is not None:
        cols.insert(2, Column("observed" + (" (since)" if counters.since else " (counters)")))
    if drift is not None:
        cols.append(Column(f"expected (API, as {drift.node})", NOTE))
    grid = Grid(cols, title="Endpoints")
    by_addr = {c.address: c for c in counters.endpoints} if counters is not None else {}
    for e in v.endpoints:
        row: list[str | Text] = [e.address, share_text(e.probability), e.chain, "yes" if e.local else ""]
        if counters is not None:
            c = by_addr.get(e.address)
            row.insert(
                2,
                "?"
                if c is None or c.connections is None
                else f"{c.connections} ({c.observed:.1%})"
                if c.observed is not None
                else str(c.connections),
            )
        if drift is not None:
            row.append(
                Text("✓ expected", style="green")
                if e.address in expected
                else Text(
                    "✗ not expected" if port is not None and port.expected is not None else "✗ Service not in the API",
                    style="red",
                )
            )
        grid.add_row(*row)
    for addr in sorted(expected - {e.address for e in v.endpoints}):
        grid.add_row(
            addr,
            "",
            *([""] if counters is not None else []),
            "",
            "",
            Text("✗ expected, missing on the node", style="red"),
        )
    print_grid(console, grid)


def _masquerade_text(o: Outcome) -> str:
    if not (o.masquerade or o.snat):
        return "no"
    step, why = masquerade_reason(o)
    where = f"{step.chain} #{step.rule}" if isinstance(step, Step) and step.rule else ""
    return f"yes: {why}" + (f" ({where})" if where else "")


def _flows_grid(v: ServiceView) -> Grid:
    grid = Grid(
        [
            Column("entry", WRAP),
            Column("from"),
            Column("probability", justify="right"),
            Column("outcome"),
            Column("masquerade (why)", NOTE),
        ],
        title="Where connections go, by entry point and origin",
    )
    for et in v.traces:
        entry = f"{et.entry.kind} {_entry_address(et.entry)}"
        for n, o in enumerate(et.trace.outcomes):
            outcome = Text(o.dnat or o.verdict, style=_VERDICT_STYLE.get(o.verdict, "") if not o.dnat else "")
            if o.dnat and o.verdict != "ACCEPT":
                outcome.append(f" {o.verdict}", style="red")
            if o.assumed:
                outcome.append(" (assumed)", style="yellow")
            grid.add_row(
                entry if n == 0 else "",
                et.label if n == 0 else "",
                share_text(o.probability),
                outcome,
                _masquerade_text(o),
            )
        grid.add_section()
    return grid


def _counters(console: Console, counters) -> None:
    style = "bold red" if counters.skewed else "green" if counters.p_value is not None else "yellow"
    what = "counter growth since " + escape(counters.since) if counters.since else "DNAT rule packet counters"
    console.print(f"[{style}]Observed vs predicted[/] ({what}): {escape(counters.verdict)}", highlight=False)
    for n in counters.notes:
        console.print(f"  [dim]{escape(n)}[/]", highlight=False)


def _stale(console: Console, stale) -> None:
    if not stale:
        console.print("[green]✓[/] no stale conntrack entries", highlight=False)
        return
    groups: dict[tuple, list] = {}
    for s_ in stale:
        groups.setdefault((s_.entry.protocol, s_.endpoint), []).append(s_)
    for (proto, ep), items in sorted(groups.items()):
        black = sum(x.blackholed for x in items)
        console.print(
            f"[bold red]Stale conntrack[/] {len(items)} stale {proto.upper()} entr{'ies' if len(items) != 1 else 'y'} "
            f"-> {escape(ep)}" + (f" ({black} blackholed)" if black else " (old connections)"),
            highlight=False,
        )


def _drift(console: Console, v: ServiceView, drift) -> None:
    found = [f for f in drift.findings if f.hash == v.hash and f.family == v.family]
    if not found:
        console.print(f"[green]✓[/] in sync with the API as node {escape(drift.node)}", highlight=False)
        return
    console.print(f"[bold red]Drift[/] against the API as node {escape(drift.node)}:")
    for f in found:
        what = f" {f.endpoint or f.entry}" if (f.endpoint or f.entry) else ""
        console.print(f"  [red]✗[/] {f.kind}{escape(what)}: {escape(f.detail)}", highlight=False)


def render_diagnostics(console: Console, diagnostics: list[Diagnostic], *, limit: int = 20) -> None:
    shown = diagnostics[:limit]
    for d in shown:
        style = "red" if d.severity == "error" else "yellow"
        console.print(
            Text(format_diagnostic(d), style=style if d.severity == "error" else ""), highlight=False, soft_wrap=True
        )
    if len(diagnostics) > limit:
        console.print(f"... and {len(diagnostics) - limit} more")


def render_inventory(console: Console, inv: dict) -> None:
    """``kptrace parse``'s summary of what the input holds: tables, chains, rules, Services, per family and format."""
    with terminal_view(console):
        _inventory_families(console, inv)
        _inventory_nft(console, inv.get("nft"))
        _inventory_ipvs(console, inv)


def _inventory_families(console: Console, inv: dict) -> None:
    for fam in inv["families"]:
        console.print(f"[bold]IPv{fam['family']}[/] from {', '.join(fam['sources'])}: {fam['layout']}")
        t = Grid([Column("table"), Column("chains", justify="right"), Column("rules", justify="right")])
        for name, c in fam["tables"].items():
            t.add_row(name, str(c["chains"]), str(c["rules"]))
        t.add_row(Text("total", style="bold"), str(fam["chains"]), str(fam["rules"]))
        print_grid(console, t)
        names = [n[:-1] if n.endswith(":") else n for n in fam["service_names"]]  # "ns/name:" is an unnamed port's
        shown = ", ".join(names[:8]) + (f", ... and {len(names) - 8} more" if len(names) > 8 else "")
        chains, rejects = fam["endpoint_chains"], fam["no_endpoint_rejects"]
        console.print(
            f"Service ports: {fam['service_ports']} with endpoints ({chains} endpoint chain{'s' * (chains != 1)})"
            + (f", {rejects} REJECT rule{'s' * (rejects != 1)} for Services without endpoints" if rejects else "")
        )
        if names:
            console.print(f"  named in comments: {shown}")


def _inventory_nft(console: Console, nft: dict | None) -> None:
    if nft:
        console.print(
            f"[bold]nftables[/] from {escape(', '.join(nft['sources']))}"
            + (f": {nft['layout']}" if nft["layout"] else ""),
            highlight=False,
        )
        t = Grid(
            [
                Column(col, justify="left" if col == "table" else "right")
                for col in ("table", "chains", "base", "rules", "sets", "maps", "elements")
            ]
        )
        for x in nft["tables"]:
            t.add_row(
                f"{x['family']} {x['name']}",
                str(x["chains"]),
                str(x["base_chains"]),
                str(x["rules"]),
                str(x["sets"]),
                str(x["maps"]),
                str(x["elements"]),
            )
        print_grid(console, t)
        for hook, chains in nft["hooks"].items():
            console.print(
                f"  {hook}: "
                + ", ".join(
                    escape(
                        f"{c['table']}/{c['chain']} ({c['priority']}"
                        + (f", policy {c['policy']}" if c["policy"] != "accept" else "")
                        + ")"
                    )
                    for c in chains
                ),
                highlight=False,
            )
        if nft["layout"]:
            names = nft["service_names"]
            shown = ", ".join(names[:8]) + (f", ... and {len(names) - 8} more" if len(names) > 8 else "")
            console.print(
                f"Service ports: {nft['service_ports']} ({nft['with_endpoints']} with endpoints)"
                + (f": {shown}" if names else ""),
                highlight=False,
            )


def _inventory_ipvs(console: Console, inv: dict) -> None:
    ipvs = inv.get("ipvs")
    if ipvs:
        console.print(
            f"[bold]IPVS[/] from {escape(ipvs['source'])} ({ipvs['variant']}): "
            f"{ipvs['virtual_services']} virtual services, "
            f"{ipvs['real_servers']} real servers ({ipvs['weight_zero']} with weight 0), "
            f"{ipvs['without_real_servers']} virtual services without real servers; schedulers "
            f"{', '.join(ipvs['schedulers']) or '?'}" + (" [yellow](truncated)[/]" if ipvs["truncated"] else ""),
            highlight=False,
        )
    sets = inv.get("ipsets")
    if sets:
        console.print(
            f"[bold]ipsets[/] from {escape(sets['source'])}: {len(sets['sets'])} set{'s' * (len(sets['sets']) != 1)}, "
            f"{sum(x['members'] for x in sets['sets'].values())} members",
            highlight=False,
        )
        for name, x in sets["sets"].items():
            console.print(
                f"  {name} ({x['type']}): {x['members']} members"
                + (" [yellow](truncated)[/]" if x["truncated"] else ""),
                highlight=False,
            )


def render_verify(console: Console, results) -> None:
    """``kptrace verify``: per packet, kptrace's predicted shares against what the kernel did."""
    with terminal_view(console):
        for r in results:
            _verify_result(console, r)
        agree = sum(r.status == "agree" for r in results)
        disagree = sum(r.status == "disagree" for r in results)
        unverifiable = sum(r.status == "unverifiable" for r in results)
        console.print(
            f"[bold]{agree} agree, {disagree} disagree, {unverifiable} unverifiable[/] "
            f"(binomial bounds at {results[0].confidence if results else 0.999:.4%} confidence)"
        )


def _verify_result(console: Console, r) -> None:
    style = {"agree": "green", "disagree": "bold red", "unverifiable": "yellow"}[r.status]
    console.print(Text.assemble(("● ", style), (r.label, "bold"), ("  " + r.status, style)))
    if r.checks:
        t = Grid(
            [
                Column("outcome", WRAP),
                Column("kptrace predicts", justify="right"),
                Column("kernel", justify="right"),
                Column("accepted", justify="right"),
                Column(""),
            ]
        )
        for c in r.checks:
            what = (c.dst or c.verdict) + (
                " (source rewritten)" if c.snat else " (source rewritten or not)" if c.snat is None else ""
            )
            if c.verdict != "ACCEPT" and c.dst:
                what = f"{c.verdict} {what}"
            seen = f"{c.observed}/{c.n} = {c.observed / c.n:.1%}" if c.n else "—"
            t.add_row(
                what,
                share_text(c.predicted) if c.predicted is not None else "not predicted",
                seen,
                f"{c.low}..{c.high}",
                Text("ok" if c.ok else "✗", style="green" if c.ok else "bold red"),
            )
        print_grid(console, t)
    if r.path_ok is not None:
        verdict = "[green]one of the predicted paths[/]" if r.path_ok else "[bold red]not predicted[/]"
        console.print(f"  rule path of one probe: {verdict} ({len(r.kernel_path)} rules and policies)")
        if not r.path_ok:
            for table, chain, x in r.kernel_path:
                console.print(f"    kernel: {table}/{chain} {'#' + str(x) if isinstance(x, int) else escape(str(x))}")
    for p in r.problems:
        console.print(f"  [red]✗[/] {escape(p)}")
    for n in r.notes:
        console.print(f"  [dim]{escape(n)}[/]")
