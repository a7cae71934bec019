"""``kptrace conntrack`` output: stale entries grouped by Service, JSON with the documented schema."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from kptrace.checks.stale import StaleReport, delete_command
from kptrace.render.layout import NOTE, WRAP, Column, Grid, print_grid, terminal_view

__all__ = ["STALE_SCHEMA", "render_stale", "stale_json"]

STALE_SCHEMA = "kptrace/conntrack/v1"


def render_stale(console: Console, r: StaleReport, source: str) -> None:
    """The stale entries grouped by Service, entry point and endpoint; why each is stale; the commands that
    clear them."""
    with terminal_view(console):
        if not r.stale:
            console.print(
                f"[green]✓[/] no stale entries: {r.entries} read from {escape(source)}, {r.service_entries} to Service "
                "entry points of this node, all going where the rules lead now",
                highlight=False,
            )
        else:
            black = sum(s.blackholed for s in r.stale)
            console.print(
                f"[bold red]✗[/] {len(r.stale)} stale entr{'ies' if len(r.stale) != 1 else 'y'} ({black} blackholed) "
                f"of {r.service_entries} to Service entry points ({r.entries} read from {escape(source)})",
                highlight=False,
            )
            print_grid(console, _groups(r))
            console.print("[bold]Why[/]")
            for reason in dict.fromkeys(s.reason for s in r.stale):
                console.print(f"  {escape(reason)}", highlight=False)
            console.print("[bold]To clear them[/] (run on the node; kptrace changes nothing):")
            for cmd in dict.fromkeys(delete_command(s) for s in r.stale):
                console.print(f"  {escape(cmd)}", highlight=False, soft_wrap=True)
        for n in r.notes:
            console.print(f"[dim]note: {escape(n)}[/]", highlight=False)


def _groups(r: StaleReport) -> Grid:
    grid = Grid(
        [
            Column("service", WRAP),
            Column("entry point"),
            Column("still sent to"),
            Column("proto"),
            Column("entries", justify="right"),
            Column("what it means", NOTE),
        ]
    )
    groups: dict[tuple, list] = {}
    for s in r.stale:
        groups.setdefault((s.service or "", s.dst, s.endpoint, s.entry.protocol), []).append(s)
    for (svc, dst, ep, proto), items in sorted(groups.items()):
        black = sum(x.blackholed for x in items)
        kept = len(items) - black
        meaning = ", ".join(
            x
            for x in (
                f"{black} blackholed" if black else "",
                f"{kept} old connection{'s' * (kept != 1)} kept" if kept else "",
            )
            if x
        )
        grid.add_row(svc or "? (no Service now)", dst, ep, proto, str(len(items)), meaning)
    return grid


def stale_json(r: StaleReport, source: str) -> dict[str, Any]:
    return {
        "schema": STALE_SCHEMA,
        "source": source,
        "entries": r.entries,
        "service_entries": r.service_entries,
        "stale": [
            {
                "protocol": s.entry.protocol,
                "family": s.entry.family,
                "src": s.entry.orig_src,
                "sport": s.entry.orig_sport,
                "dst": s.entry.orig_dst,
                "dport": s.entry.orig_dport,
                "endpoint": s.endpoint,
                "service": s.service,
                "state": s.entry.state,
                "timeout": s.entry.timeout,
                "flags": list(s.entry.flags),
                "blackholed": s.blackholed,
                "reason": s.reason,
                "now": list(s.now),
                "line": s.entry.line or None,
                "command": delete_command(s),
            }
            for s in r.stale
        ],
        "by_service": r.by_service(),
        "notes": r.notes,
    }
