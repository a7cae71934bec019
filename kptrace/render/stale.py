"""``kptrace conntrack`` output: stale entries grouped by Service, JSON with the documented schema."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kptrace.checks.stale import StaleReport, delete_command

__all__ = ["STALE_SCHEMA", "render_stale", "stale_json"]

STALE_SCHEMA = "kptrace/conntrack/v1"


def render_stale(console: Console, r: StaleReport, source: str) -> None:
    if not r.stale:
        console.print(f"[green]✓[/] no stale entries: {r.entries} read from {escape(source)}, {r.service_entries} to Service "
                      "entry points of this node, all going where the rules lead now", highlight=False)
    else:
        black = sum(s.blackholed for s in r.stale)
        console.print(f"[bold red]✗[/] {len(r.stale)} stale entr{'ies' if len(r.stale) != 1 else 'y'} ({black} blackholed) of "
                      f"{r.service_entries} to Service entry points ({r.entries} read from {escape(source)})", highlight=False)
        t = Table(show_edge=False, header_style="bold")
        for col in ("service", "entry point", "still sent to", "proto", "entries", "what it means"):
            t.add_column(col, overflow="fold")
        groups: dict[tuple, list] = {}
        for s in r.stale:
            groups.setdefault((s.service or "", s.dst, s.endpoint, s.entry.protocol), []).append(s)
        for (svc, dst, ep, proto), items in sorted(groups.items()):
            black = sum(x.blackholed for x in items)
            meaning = (f"{black} blackholed" if black else "") + (", " if black and black < len(items) else "") + \
                (f"{len(items) - black} old connection{'s' * (len(items) - black != 1)} kept" if len(items) > black else "")
            t.add_row(escape(svc or "? (no Service now)"), escape(dst), escape(ep), proto, str(len(items)), escape(meaning))
        console.print(t)
        console.print("[bold]Why[/]")
        seen = set()
        for s in r.stale:
            if s.reason not in seen:
                seen.add(s.reason)
                console.print(f"  {escape(s.reason)}", highlight=False)
        console.print("[bold]To clear them[/] (run on the node; kptrace changes nothing):")
        for cmd in dict.fromkeys(delete_command(s) for s in r.stale):
            console.print(f"  {escape(cmd)}", highlight=False, soft_wrap=True)
    for n in r.notes:
        console.print(f"[dim]note: {escape(n)}[/]", highlight=False)


def stale_json(r: StaleReport, source: str) -> dict[str, Any]:
    return {
        "schema": STALE_SCHEMA,
        "source": source,
        "entries": r.entries,
        "service_entries": r.service_entries,
        "stale": [{"protocol": s.entry.protocol, "family": s.entry.family, "src": s.entry.orig_src, "sport": s.entry.orig_sport,
                   "dst": s.entry.orig_dst, "dport": s.entry.orig_dport, "endpoint": s.endpoint, "service": s.service,
                   "state": s.entry.state, "timeout": s.entry.timeout, "flags": list(s.entry.flags), "blackholed": s.blackholed,
                   "reason": s.reason, "now": list(s.now), "line": s.entry.line or None, "command": delete_command(s)}
                  for s in r.stale],
        "by_service": r.by_service(),
        "notes": r.notes,
    }
