"""Views of drift reports: a rich table per node, JSON (schema ``kptrace/drift/v1``) and JUnit XML.

Schema ``kptrace/drift/v1``::

    {"schema": "kptrace/drift/v1",
     "cluster_state": str, "kube_proxy": "current"|"MAJOR.MINOR",
     "nodes": [{"node", "sources": [str], "ports_checked": int, "findings": int,
                "ignored": [{"service", "reason"}], "notes": [str]}],
     "findings": [{"kind", "severity": "error|warning", "node", "service": "ns/name:port", "protocol", "family",
                   "endpoint": "ip:port"|null, "entry": "NodePort 30180"|null, "detail",
                   "evidence": [{"location": "file:line", "text"}], "expected_from": str}],
     "services": [{"node", "service", "protocol", "family", "findings": int,
                   "expected": {"endpoints": [str]|null, "local_endpoints": [str]|null},
                   "actual": {"endpoints": [str]|null, "local_endpoints": [str]|null}}],
     "errors": [{"node", "message"}],
     "summary": {"nodes": int, "nodes_failed": int, "findings": int, "by_kind": {kind: int}}}

``expected.endpoints`` is what kube-proxy's cluster-policy chain (KUBE-SVC-…) should list on that node,
``local_endpoints`` its local-policy chain (KUBE-SVL-…, null when the port has no Local policy);
``actual`` is what the node's chains list (null: no such chain). ``"service"`` of a port the API does
not have is ``"? (hash …)"`` when no comment names it.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape as xml_escape

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from kptrace.checks.drift import Finding, NodeReport
from kptrace.render.layout import NOTE, WRAP, Column, Grid, print_grid, terminal_view

__all__ = ["DRIFT_SCHEMA", "drift_json", "drift_junit", "finding_json", "render_drift"]

DRIFT_SCHEMA = "kptrace/drift/v1"
_STYLE = {"error": "red", "warning": "yellow"}


def render_drift(
    console: Console, reports: list[NodeReport], errors: list[tuple[str, str]], *, show_evidence: bool = True
) -> None:
    """Per node a line of totals and its findings, grouped by Service port, with the rules that show each."""
    with terminal_view(console):
        for r in reports:
            _node_summary(console, r)
            if r.findings:
                print_grid(console, _findings(r, show_evidence))
            for i in r.ignored[:5]:
                console.print(f"  [dim]ignored {escape(i.service)}: {escape(i.reason)}[/]", highlight=False)
            if len(r.ignored) > 5:
                console.print(
                    f"  [dim]... and {len(r.ignored) - 5} more Services kube-proxy ignores (see --output json)[/]"
                )
            for n in r.notes:
                console.print(f"  [dim]note: {escape(n)}[/]", highlight=False)
        for node, message in errors:
            console.print(f"[red]✗[/] [bold]{escape(node)}[/]: not checked: {escape(message)}", highlight=False)
        if len(reports) + len(errors) > 1:
            total = sum(len(r.findings) for r in reports)
            clean = sum(1 for r in reports if not r.findings)
            console.print(
                f"{_plural(len(reports), 'node')} checked: {clean} in sync, {len(reports) - clean} with drift "
                f"({_plural(total, 'finding')})" + (f"; {len(errors)} not checked" if errors else "")
            )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _node_summary(console: Console, r: NodeReport) -> None:
    sources = f"[dim]({escape(', '.join(r.sources))})[/]"
    if not r.findings:
        console.print(
            f"[green]✓[/] [bold]{escape(r.node)}[/]: {_plural(len(r.ports), 'Service port')} "
            f"in sync with the API {sources}",
            highlight=False,
        )
        return
    errs = sum(f.severity == "error" for f in r.findings)
    console.print(
        f"[red]✗[/] [bold]{escape(r.node)}[/]: {_plural(len(r.findings), 'finding')} ({_plural(errs, 'error')}, "
        f"{_plural(len(r.findings) - errs, 'warning')}) in {len(r.ports)} Service ports {sources}",
        highlight=False,
    )


def _findings(r: NodeReport, show_evidence: bool) -> Grid:
    grid = Grid([Column("service", WRAP), Column("kind"), Column("endpoint / entry", WRAP), Column("detail", NOTE)])
    last = None
    for f in sorted(r.findings, key=lambda f: (f.service, f.family, f.kind, f.endpoint or f.entry or "")):
        key = (f.service, f.protocol, f.family)
        name = "" if key == last else f"{f.service} ({f.protocol}{', IPv6' if f.family == 6 else ''})"
        if key != last and last is not None:
            grid.add_section()
        last = key
        detail = Text(f.detail)
        if show_evidence and f.evidence:
            for ev in f.evidence[:3]:
                detail.append(f"\n{ev.location}: {_short(ev.text)}", style="dim")
            if len(f.evidence) > 3:
                detail.append(f"\n... and {len(f.evidence) - 3} more rules", style="dim")
        grid.add_row(name, Text(f.kind, style=_STYLE[f.severity]), f.endpoint or f.entry or "", detail)
    return grid


def _short(text: str, width: int = 140) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def finding_json(f: Finding) -> dict[str, Any]:
    """One finding in the drift JSON schema (also inside ``svc -o json``'s expected view)."""
    return {
        "kind": f.kind,
        "severity": f.severity,
        "node": f.node,
        "service": f.service,
        "protocol": f.protocol,
        "family": f.family,
        "endpoint": f.endpoint,
        "entry": f.entry,
        "detail": f.detail,
        "evidence": [{"location": e.location, "text": e.text} for e in f.evidence],
        "expected_from": f.expected_from,
    }


def drift_json(
    reports: list[NodeReport], errors: list[tuple[str, str]], *, cluster_state: str, kube_proxy: str
) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    for r in reports:
        for f in r.findings:
            by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    return {
        "schema": DRIFT_SCHEMA,
        "cluster_state": cluster_state,
        "kube_proxy": kube_proxy,
        "nodes": [
            {
                "node": r.node,
                "sources": r.sources,
                "ports_checked": len(r.ports),
                "findings": len(r.findings),
                "ignored": [{"service": i.service, "reason": i.reason} for i in r.ignored],
                "notes": r.notes,
            }
            for r in reports
        ],
        "findings": [finding_json(f) for r in reports for f in r.findings],
        "services": [
            {
                "node": r.node,
                "service": p.service,
                "protocol": p.protocol,
                "family": p.family,
                "findings": p.findings,
                "expected": {"endpoints": _l(p.expected), "local_endpoints": _l(p.expected_local)},
                "actual": {"endpoints": _l(p.actual), "local_endpoints": _l(p.actual_local)},
            }
            for r in reports
            for p in r.ports
        ],
        "errors": [{"node": n, "message": m} for n, m in errors],
        "summary": {
            "nodes": len(reports) + len(errors),
            "nodes_failed": len(errors),
            "findings": sum(by_kind.values()),
            "by_kind": dict(sorted(by_kind.items())),
        },
    }


def _l(x) -> list[str] | None:
    return None if x is None else list(x)


def drift_junit(reports: list[NodeReport], errors: list[tuple[str, str]]) -> str:
    """One <testsuite> per node, one <testcase> per node x Service port; a port with findings fails
    with every finding in the failure text; a node that could not be read is an <error>."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    suites = []
    total = failures = errs = 0
    for r in reports:
        cases = []
        by_port: dict[tuple[str, str, int], list[Finding]] = {}
        for f in r.findings:
            by_port.setdefault((f.service, f.protocol, f.family), []).append(f)
        seen = set()
        names = [(p.service, p.protocol, p.family) for p in r.ports] + list(by_port)
        n_fail = 0
        for key in names:
            if key in seen:
                continue
            seen.add(key)
            service, proto, fam = key
            name = f"{service} {proto}/IPv{fam}"
            fs = by_port.get(key, [])
            attrs = f'classname="{xml_escape(_class(r.node))}" name="{_attr(name)}"'
            if fs:
                n_fail += 1
                kinds = ", ".join(dict.fromkeys(f.kind for f in fs))
                body = "\n\n".join(_finding_text(f) for f in fs)
                cases.append(
                    f'    <testcase {attrs}>\n      <failure message="{_attr(kinds)}" type="{_attr(fs[0].kind)}">'
                    f"{xml_escape(body)}</failure>\n    </testcase>"
                )
            else:
                cases.append(f"    <testcase {attrs}/>")
        total += len(cases)
        failures += n_fail
        suites.append(
            f'  <testsuite name="kptrace drift {_attr(r.node)}" tests="{len(cases)}" failures="{n_fail}" errors="0">\n'
            + "\n".join(cases)
            + "\n  </testsuite>"
        )
    for node, message in errors:
        total += 1
        errs += 1
        suites.append(
            f'  <testsuite name="kptrace drift {_attr(node)}" tests="1" failures="0" errors="1">\n'
            f'    <testcase classname="{xml_escape(_class(node))}" name="read the node\'s data plane">\n'
            f'      <error message="{_attr(message)}">{xml_escape(message)}</error>\n    </testcase>\n  </testsuite>'
        )
    out.append(f'<testsuites name="kptrace drift" tests="{total}" failures="{failures}" errors="{errs}">')
    out.extend(suites)
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def _class(node: str) -> str:
    return "kptrace.drift." + node


def _attr(text: str) -> str:
    return xml_escape(text, {'"': "&quot;", "\n": "&#10;"})


def _finding_text(f: Finding) -> str:
    lines = [f"[{f.kind}] {f.detail}"]
    if f.endpoint or f.entry:
        lines.append(f"  {'endpoint' if f.endpoint else 'entry'}: {f.endpoint or f.entry}")
    lines.extend(f"  {e.location}: {e.text}" for e in f.evidence)
    if f.expected_from:
        lines.append(f"  expected from {f.expected_from}")
    return "\n".join(lines)
