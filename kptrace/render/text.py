"""Rich terminal views: a table of outcomes, each path as a tree, and the Service view."""

from __future__ import annotations

from fractions import Fraction

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from kptrace.errors import Diagnostic, format_diagnostic
from kptrace.tracer.kubeproxy import masquerade_reason
from kptrace.tracer.result import Outcome, Step, Trace, nice_fraction
from kptrace.tracer.services import ServiceView

__all__ = ["render_diagnostics", "render_service", "render_trace", "share_text"]

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
    return text[len(prefix):] if text.startswith(prefix) else text


def _interesting(s: Step) -> bool:
    # An empty built-in chain's ACCEPT policy says nothing; everything else is part of the story.
    return not (s.rule is None and s.note == "policy ACCEPT")


def _path_tree(o: Outcome, title: str, *, full: bool, same_as: tuple[Step, ...] = (), same_label: str = "") -> Tree:
    tree = Tree(title)
    hook_node = None
    current_hook = None
    path = o.path
    common = 0
    for a, b in zip(path, same_as):
        if a != b:
            break
        common += 1
    if common:
        last = path[common - 1]
        tree.add(Text(f"… same as {same_label} up to {last.table}/{last.chain}" + (f" #{last.rule}" if last.rule else ""), style="dim"))
        current_hook = last.hook
        hook_node = tree.add(f"[bold]{last.hook}[/] (continued)")
    for s in path[common:]:
        if not full and not _interesting(s):
            continue
        if s.hook != current_hook:
            current_hook = s.hook
            hook_node = tree.add(f"[bold]{s.hook}[/]")
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
        hook_node.add(line)
    return tree


def render_trace(console: Console, t: Trace, *, full_path: bool = False, show_paths: bool = True) -> None:
    console.print(f"[bold]Packet[/] {escape(str(t.packet))}")
    rows = []
    for i, o in enumerate(t.outcomes, 1):
        verdict = Text(o.verdict, style=_VERDICT_STYLE.get(o.verdict, ""))
        if o.assumed:
            verdict.append(" (assumed)", style="yellow")
        dst = o.dnat and f"{o.dnat} (DNAT)" or o.dst
        src = ((f"{o.snat} (MASQUERADE)" if o.snat not in (None, "MASQUERADE") else "MASQUERADE") if o.masquerade
               else (f"{o.snat} (SNAT)" if o.snat else o.src))
        # Text, not markup: an IPv6 endpoint's "[fd00::1]:80" would be read as a markup tag and vanish.
        rows.append((str(i), share_text(o.probability), verdict, Text(dst), Text(src), f"{o.mark:#x}", Text(o.reason)))
    table = Table(show_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("probability", justify="right")
    table.add_column("verdict")
    # The addresses keep their width (the words of "why" wrap instead): at 80 columns they were cut to "10.244.1.3:…".
    for n, name in ((3, "destination"), (4, "source")):
        table.add_column(name, min_width=max((len(r[n].plain.split(" (")[0]) for r in rows), default=0), overflow="fold")
    table.add_column("mark")
    # On a narrow terminal "why" moves under the table, one line an outcome, so that it squeezes nothing.
    narrow = console.width < 6 + 14 + 14 + sum(table.columns[n].min_width + 3 for n in (3, 4)) + 7 + 24
    if not narrow:
        table.add_column("why")
    for row in rows:
        table.add_row(*(row[:-1] if narrow else row))
    console.print(table)
    if narrow:
        for row in rows:
            console.print(Text.assemble(f" #{row[0]} why: ", row[-1]), highlight=False)
    if show_paths:
        for i, o in enumerate(t.outcomes, 1):
            title = f"[bold]#{i}[/] {share_text(o.probability)} {o.verdict}" + (f" → {escape(o.dnat)}" if o.dnat else "")
            if o.path_count > 1:
                title += f" [dim]({o.path_count} paths; the most likely shown)[/]"
            first = t.outcomes[0].path if i > 1 and not full_path else ()
            console.print(_path_tree(o, title, full=full_path, same_as=first, same_label="#1"))
    assumptions = []
    for o in t.outcomes:
        for a in o.assumptions:
            if a not in assumptions:
                assumptions.append(a)
    if assumptions:
        console.print("[yellow bold]Assumed[/] (decisions kptrace could not make from the input):")
        for a in assumptions:
            console.print(f"  [yellow]•[/] {escape(a)}")
    for n in t.notes:
        console.print(f"[dim]note: {escape(n)}[/]")


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def render_service(console: Console, v: ServiceView, *, show_paths: bool = False, drift=None, counters=None, stale=None) -> None:
    """``drift``: a :class:`kptrace.checks.drift.NodeReport` for the view's Service ports (svc --node-name);
    ``stale``: the view's stale conntrack entries (a list of :class:`kptrace.checks.stale.Stale`), when a table was given."""
    head = Text()
    head.append(v.name, style="bold")
    head.append(f"  {v.protocol}, IPv{v.family}  ")
    head.append(", ".join(v.chains) or "no nat chains", style="cyan")
    console.print(Panel(head, expand=False))
    policy = f"internal {v.internal_policy}" + (f", external {v.external_policy}" if v.external_policy else "")
    affinity = f"ClientIP, timeout {v.affinity_timeout}s" if v.affinity_timeout else "none"
    console.print(f"[bold]Traffic policy[/] {policy}    [bold]Session affinity[/] {affinity}")
    if v.source_ranges:
        console.print(f"[bold]LoadBalancer source ranges[/] {', '.join(v.source_ranges)}")

    entries = Table(title="Entry points", title_justify="left", show_edge=False, header_style="bold")
    for col in ("kind", "address", "leads to", "rule"):
        entries.add_column(col, overflow="fold")  # fold, never "…": a cut chain name or file:line is useless
    for e in v.entry_points:
        addr = _hostport(e.address, e.port) if e.address else f"<node>:{e.port}"
        style = "red" if e.via in ("REJECT", "DROP") else ""
        entries.add_row(e.kind, Text(addr), Text(e.via, style=style), Text(e.location, style="dim"))
    if v.entry_points:
        console.print(entries)
    else:
        console.print("[bold]Entry points[/] none in this input (no KUBE-SERVICES / KUBE-NODEPORTS rule leads here)")

    port = next((p for p in drift.ports if p.hash == v.hash and p.family == v.family), None) if drift is not None else None
    expected: set[str] = set()
    if port is not None:
        expected = set(port.expected or ()) | set(port.expected_local or ())
    if v.endpoints or expected:
        eps = Table(title="Endpoints", title_justify="left", show_edge=False, header_style="bold")
        cols = ["endpoint", "share (pod → ClusterIP)", "chain", "local"]
        if drift is not None:
            cols.append(f"expected (API, as {drift.node})")
        by_addr = {c.address: c for c in counters.endpoints} if counters is not None else {}
        if counters is not None:
            cols.insert(2, "observed" + (" (since)" if counters.since else " (counters)"))
        for col in cols:
            eps.add_column(col, overflow="fold")
        for e in v.endpoints:
            row = [Text(e.address), share_text(e.probability), e.chain, "yes" if e.local else ""]
            if counters is not None:
                c = by_addr.get(e.address)
                row.insert(2, "?" if c is None or c.connections is None else
                           f"{c.connections} ({c.observed:.1%})" if c.observed is not None else str(c.connections))
            if drift is not None:
                row.append(Text("✓ expected", style="green") if e.address in expected else
                           Text("✗ not expected" if port is not None and port.expected is not None else "✗ Service not in the API",
                                style="red"))
            eps.add_row(*row)
        for addr in sorted(expected - {e.address for e in v.endpoints}):
            eps.add_row(Text(addr), "", "", "", Text("✗ expected, missing on the node", style="red"))
        console.print(eps)

    flows = Table(title="Where connections go, by entry point and origin", title_justify="left", show_edge=False, header_style="bold")
    for col in ("entry", "from", "probability", "outcome", "masquerade (why)"):
        flows.add_column(col, overflow="fold")
    for et in v.traces:
        e = et.entry
        entry = Text(f"{e.kind} {_hostport(e.address, e.port) if e.address else f'<node>:{e.port}'}")
        first = True
        for o in et.trace.outcomes:
            outcome = Text(o.dnat or o.verdict, style=_VERDICT_STYLE.get(o.verdict, "") if not o.dnat else "")
            if o.dnat and o.verdict != "ACCEPT":
                outcome.append(f" {o.verdict}", style="red")
            if o.assumed:
                outcome.append(" (assumed)", style="yellow")
            masq = "no"
            if o.masquerade or o.snat:
                step, why = masquerade_reason(o)
                where = f"{step.chain} #{step.rule}" if step is not None and step.rule else ""
                masq = f"yes: {why}" + (f" ({where})" if where else "")
            flows.add_row(entry if first else "", et.label if first else "", share_text(o.probability), outcome, Text(masq))
            first = False
        flows.add_section()
    if v.traces:
        console.print(flows)
    if show_paths:
        for et in v.traces:
            where = _hostport(et.entry.address, et.entry.port) if et.entry.address else f"<node>:{et.entry.port}"
            console.rule(escape(f"{et.entry.kind} {where} from {et.label}"))
            render_trace(console, et.trace)
    if counters is not None:
        style = "bold red" if counters.skewed else "green" if counters.p_value is not None else "yellow"
        console.print(f"[{style}]Observed vs predicted[/] ({'counter growth since ' + escape(counters.since) if counters.since else 'DNAT rule packet counters'}): "
                      f"{escape(counters.verdict)}", highlight=False)
        for n in counters.notes:
            console.print(f"  [dim]{escape(n)}[/]", highlight=False)
    if stale is not None:
        if not stale:
            console.print("[green]✓[/] no stale conntrack entries", highlight=False)
        else:
            groups: dict[tuple, list] = {}
            for s_ in stale:
                groups.setdefault((s_.entry.protocol, s_.endpoint), []).append(s_)
            for (proto, ep), items in sorted(groups.items()):
                black = sum(x.blackholed for x in items)
                console.print(f"[bold red]Stale conntrack[/] {len(items)} stale {proto.upper()} entr{'ies' if len(items) != 1 else 'y'} "
                              f"-> {escape(ep)}" + (f" ({black} blackholed)" if black else " (old connections)"), highlight=False)
    if drift is not None:
        found = [f for f in drift.findings if f.hash == v.hash and f.family == v.family]
        if not found:
            console.print(f"[green]✓[/] in sync with the API as node {escape(drift.node)}", highlight=False)
        else:
            console.print(f"[bold red]Drift[/] against the API as node {escape(drift.node)}:")
            for f in found:
                what = f" {f.endpoint or f.entry}" if (f.endpoint or f.entry) else ""
                console.print(f"  [red]✗[/] {f.kind}{escape(what)}: {escape(f.detail)}", highlight=False)
    if v.warnings:
        console.print("[bold yellow]Warnings[/]")
        for w in v.warnings:
            console.print(f"  [yellow]![/] {escape(w)}")
    assumptions = []
    for et in v.traces:
        for o in et.trace.outcomes:
            for a in o.assumptions:
                if a not in assumptions:
                    assumptions.append(a)
    if assumptions:
        console.print("[yellow bold]Assumed[/] (decisions kptrace could not make from the input):")
        for a in assumptions[:12]:
            console.print(f"  [yellow]•[/] {escape(a)}")
        if len(assumptions) > 12:
            console.print(f"  ... and {len(assumptions) - 12} more (see --output json)")
    for n in v.notes:
        console.print(f"[dim]note: {escape(n)}[/]")


def render_diagnostics(console: Console, diagnostics: list[Diagnostic], *, limit: int = 20) -> None:
    shown = diagnostics[:limit]
    for d in shown:
        style = "red" if d.severity == "error" else "yellow"
        console.print(Text(format_diagnostic(d), style=style if d.severity == "error" else ""), highlight=False, soft_wrap=True)
    if len(diagnostics) > limit:
        console.print(f"... and {len(diagnostics) - limit} more")


def render_inventory(console: Console, inv: dict) -> None:
    for fam in inv["families"]:
        console.print(f"[bold]IPv{fam['family']}[/] from {', '.join(fam['sources'])}: {fam['layout']}")
        t = Table(show_edge=False, header_style="bold")
        t.add_column("table")
        t.add_column("chains", justify="right")
        t.add_column("rules", justify="right")
        for name, c in fam["tables"].items():
            t.add_row(name, str(c["chains"]), str(c["rules"]))
        t.add_row("[bold]total[/]", str(fam["chains"]), str(fam["rules"]))
        console.print(t)
        names = fam["service_names"]
        shown = ", ".join(names[:8]) + (f", ... and {len(names) - 8} more" if len(names) > 8 else "")
        console.print(f"Service ports: {fam['service_ports']} with endpoints ({fam['endpoint_chains']} endpoint chains)"
                      + (f", {fam['no_endpoint_rejects']} REJECT rules for Services without endpoints" if fam["no_endpoint_rejects"] else ""))
        if names:
            console.print(f"  named in comments: {shown}")
    nft = inv.get("nft")
    if nft:
        console.print(f"[bold]nftables[/] from {escape(', '.join(nft['sources']))}" + (f": {nft['layout']}" if nft["layout"] else ""),
                      highlight=False)
        t = Table(show_edge=False, header_style="bold")
        for col in ("table", "chains", "base", "rules", "sets", "maps", "elements"):
            t.add_column(col, justify="left" if col == "table" else "right")
        for x in nft["tables"]:
            t.add_row(escape(f"{x['family']} {x['name']}"), str(x["chains"]), str(x["base_chains"]), str(x["rules"]),
                      str(x["sets"]), str(x["maps"]), str(x["elements"]))
        console.print(t)
        for hook, chains in nft["hooks"].items():
            console.print(f"  {hook}: " + ", ".join(escape(f"{c['table']}/{c['chain']} ({c['priority']}"
                                                             + (f", policy {c['policy']}" if c["policy"] != "accept" else "") + ")")
                                                      for c in chains), highlight=False)
        if nft["layout"]:
            names = nft["service_names"]
            shown = ", ".join(names[:8]) + (f", ... and {len(names) - 8} more" if len(names) > 8 else "")
            console.print(f"Service ports: {nft['service_ports']} ({nft['with_endpoints']} with endpoints)"
                          + (f": {shown}" if names else ""), highlight=False)
    ipvs = inv.get("ipvs")
    if ipvs:
        console.print(f"[bold]IPVS[/] from {escape(ipvs['source'])} ({ipvs['variant']}): {ipvs['virtual_services']} virtual services, "
                      f"{ipvs['real_servers']} real servers ({ipvs['weight_zero']} with weight 0), "
                      f"{ipvs['without_real_servers']} virtual services without real servers; schedulers "
                      f"{', '.join(ipvs['schedulers']) or '?'}" + (" [yellow](truncated)[/]" if ipvs["truncated"] else ""), highlight=False)
    sets = inv.get("ipsets")
    if sets:
        console.print(f"[bold]ipsets[/] from {escape(sets['source'])}: {len(sets['sets'])} sets, "
                      f"{sum(x['members'] for x in sets['sets'].values())} members", highlight=False)
        for name, x in sets["sets"].items():
            console.print(f"  {name} ({x['type']}): {x['members']} members" + (" [yellow](truncated)[/]" if x["truncated"] else ""),
                          highlight=False)


def render_verify(console: Console, results) -> None:
    for r in results:
        style = {"agree": "green", "disagree": "bold red", "unverifiable": "yellow"}[r.status]
        console.print(Text.assemble(("● ", style), (r.label, "bold"), ("  " + r.status, style)))
        if r.checks:
            t = Table(show_edge=False, header_style="bold")
            for col in ("outcome", "kptrace predicts", "kernel", "accepted", ""):
                t.add_column(col, justify="right" if col in ("kptrace predicts", "kernel", "accepted") else "left")
            for c in r.checks:
                what = (c.dst or c.verdict) + (" (source rewritten)" if c.snat else " (source rewritten or not)" if c.snat is None else "")
                if c.verdict != "ACCEPT" and c.dst:
                    what = f"{c.verdict} {what}"
                seen = f"{c.observed}/{c.n} = {c.observed / c.n:.1%}" if c.n else "—"
                t.add_row(what, share_text(c.predicted) if c.predicted is not None else "not predicted", seen,
                          f"{c.low}..{c.high}", Text("ok" if c.ok else "✗", style="green" if c.ok else "bold red"))
            console.print(t)
        if r.path_ok is not None:
            console.print(f"  rule path of one probe: {'[green]one of the predicted paths[/]' if r.path_ok else '[bold red]not predicted[/]'}"
                          f" ({len(r.kernel_path)} rules and policies)")
            if not r.path_ok:
                for table, chain, x in r.kernel_path:
                    console.print(f"    kernel: {table}/{chain} {'#' + str(x) if isinstance(x, int) else escape(str(x))}")
        for p in r.problems:
            console.print(f"  [red]✗[/] {escape(p)}")
        for n in r.notes:
            console.print(f"  [dim]{escape(n)}[/]")
    agree = sum(r.status == "agree" for r in results)
    disagree = sum(r.status == "disagree" for r in results)
    unverifiable = sum(r.status == "unverifiable" for r in results)
    console.print(f"[bold]{agree} agree, {disagree} disagree, {unverifiable} unverifiable[/] "
                  f"(binomial bounds at {results[0].confidence if results else 0.999:.4%} confidence)")
