"""``kptrace diff`` output: a table grouped by Service, JSON with a stable schema, and JUnit XML."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from rich.console import Console
from rich.markup import escape

from kptrace.checks.diff import MODE_PROBES, Behaviour, Change, DiffReport
from kptrace.render.layout import NOTE, WRAP, Column, Grid, print_grid, terminal_view

__all__ = ["DIFF_SCHEMA", "diff_json", "diff_junit", "render_diff"]

DIFF_SCHEMA = "kptrace/diff/v1"


def render_diff(console: Console, results: list[tuple[str, DiffReport]], reference: str | None = None) -> None:
    """Per comparison, one line of totals and a table of the changes grouped by Service; the causes' long
    explanations are numbered under the table, each said once."""
    with terminal_view(console):
        if reference:
            console.print(f"[bold]reference node[/] {escape(reference)} (the one the others agree with most)")
        for label, r in results:
            _summary(console, label, r)
            if r.changes:
                grid, notes = _changes(r)
                print_grid(console, grid)
                for note, number in notes.items():
                    console.print(f"  [{number}] {escape(note)}", highlight=False)
            for n in r.notes:
                console.print(f"[dim]note: {escape(n)}[/]", highlight=False)


def _summary(console: Console, label: str, r: DiffReport) -> None:
    head = f"{label}: " if label else ""
    sides = f"({escape(', '.join(r.before))} -> {escape(', '.join(r.after))})"
    if not r.changes:
        same = f" and {r.identical} Service ports with identical rules" if r.identical else ""
        console.print(
            f"[green]✓[/] {escape(head)}no behaviour changed in {r.compared} entry point x origin pairs{same} {sides}",
            highlight=False,
        )
        return
    services = {c.service for c in r.changes if not c.probe.special}
    probes = {c.probe.special for c in r.changes if c.probe.special}
    where = ", ".join(
        x
        for x in (
            f"{len(services)} Service port{'s' * (len(services) != 1)}" if services else "",
            f"{len(probes)} known proxy-mode difference{'s' * (len(probes) != 1)}" if probes else "",
        )
        if x
    )
    same = f"{r.identical} Service ports with identical rules, " if r.identical else ""
    console.print(
        f"[bold red]✗[/] {escape(head)}{len(r.changes)} change{'s' * (len(r.changes) != 1)} ({where}); "
        f"{same}{r.unchanged} of {r.compared} entry point x origin pairs unchanged {sides}",
        highlight=False,
    )


def _changes(r: DiffReport) -> tuple[Grid, dict[str, int]]:
    """The changes as rows, and the explanations their causes refer to ([n] -> text)."""
    grid = Grid(
        [
            Column("service", WRAP),
            Column("entry point", WRAP),
            Column("from", WRAP),
            Column("before", WRAP),
            Column("after", WRAP),
            Column("cause", NOTE),
        ]
    )
    last: object = object()
    notes: dict[str, int] = {}
    for c in sorted(
        r.changes, key=lambda c: (c.service or "~", c.probe.family, c.probe.address or "", c.probe.port, c.probe.origin)
    ):
        name = c.service or ("(" + MODE_PROBES[c.probe.special][0] + ")" if c.probe.special else "?")
        shown = name if name != last else ""
        last = name
        origin = c.probe.origin + (f" ({c.probe.source_class})" if c.probe.source_class else "")
        rules = ", ".join(
            x for x in (c.before_rule and f"before {c.before_rule}", c.after_rule and f"after {c.after_rule}") if x
        )
        note = (c.explanation + (" " if c.explanation and rules else "") + (f"({rules})" if rules else "")).strip()
        mark = f" [{notes.setdefault(note, len(notes) + 1)}]" if note else ""
        grid.add_row(
            shown, f"{c.probe.protocol} {c.probe.dst}", origin, c.before.summary(), c.after.summary(), c.cause + mark
        )
    return grid, notes


def _behaviour(b: Behaviour) -> dict[str, Any]:
    return {
        "outcomes": [
            {
                "verdict": o.verdict,
                "endpoint": o.endpoint,
                "masquerade": o.masquerade,
                "probability": float(o.probability),
                "share": f"{o.probability.numerator}/{o.probability.denominator}",
                "rule": o.rule,
            }
            for o in sorted(b.outcomes, key=lambda o: (-o.probability, o.verdict, o.endpoint or ""))
        ],
        "assumed": b.assumed,
    }


def _change(c: Change, label: str) -> dict[str, Any]:
    p = c.probe
    out = {
        "service": c.service,
        "dst": p.dst if p.address else None,
        "node_port": p.port if p.address is None else None,
        "protocol": p.protocol,
        "family": p.family,
        "origin": p.origin,
        "source": p.source,
        "returning_to": p.returning,
        "probe": p.special or None,
        "before": _behaviour(c.before),
        "after": _behaviour(c.after),
        "cause": {
            "summary": c.cause,
            "before_rule": c.before_rule or None,
            "after_rule": c.after_rule or None,
            "explanation": c.explanation or None,
        },
    }
    if label:
        out["nodes"] = label
    return out


def diff_json(results: list[tuple[str, DiffReport]], reference: str | None = None) -> dict[str, Any]:
    return {
        "schema": DIFF_SCHEMA,
        "reference": reference,
        "comparisons": [
            {
                "label": label or None,
                "before": r.before,
                "after": r.after,
                "compared": r.compared,
                "traced": r.traced,
                "identical_ports": r.identical,
                "unchanged": r.unchanged,
                "changes": len(r.changes),
                "notes": r.notes,
            }
            for label, r in results
        ],
        "changes": [_change(c, label) for label, r in results for c in r.changes],
        "unchanged": sum(r.unchanged for _, r in results),
    }


def diff_junit(results: list[tuple[str, DiffReport]]) -> str:
    cases = []
    failures = 0
    total = 0
    for label, r in results:
        for c in r.changes:
            total += 1
            failures += 1
            name = f"{c.service or '?'} {c.probe.protocol} {c.probe.dst} from {c.probe.origin}"
            msg = f"{c.before.summary()} -> {c.after.summary()}: {c.cause}"
            cases.append(
                f"  <testcase classname={quoteattr(label or 'diff')} name={quoteattr(name)}>"
                f"<failure message={quoteattr(msg)}/></testcase>"
            )
        ok = r.compared - len(r.changes)
        total += ok
        if ok:
            cases.append(
                f"  <testcase classname={quoteattr(label or 'diff')} name={quoteattr(f'{ok} unchanged entry points')}/>"
            )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name="kptrace diff" tests="{len(cases)}" failures="{failures}">\n'
        + "\n".join(cases)
        + "\n</testsuite>\n"
    )
