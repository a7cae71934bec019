"""Validate dumps: tables, chains, rules and Services found, and every problem with file:line:col, the
line quoted and a caret. --strict also fails on anything kptrace does not understand."""

from __future__ import annotations

import typer

from kptrace.cli.common import MaxSizeOpt, NodeIpOpt, OutputFormat, OutputOpt, parse_size, stdout_console
from kptrace.errors import EXIT_FINDINGS, EXIT_INPUT


def parse(
    files: list[str] = typer.Argument(..., help="iptables-save / ip6tables-save output (- for stdin).", show_default=False),
    strict: bool = typer.Option(False, "--strict", help=f"Exit {EXIT_FINDINGS} on warnings too (unknown options, undeclared "
                                "chains, jumps to missing chains)."),
    node_ips: list[str] = NodeIpOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    from kptrace.load import load_dumps
    from kptrace.tracer.inventory import inventory

    dp = load_dumps(files, node_ips=node_ips, lenient=True, full=True, max_bytes=parse_size(max_size))
    inv = inventory(dp)
    errors = [d for d in dp.diagnostics if d.severity == "error"]
    warnings = [d for d in dp.diagnostics if d.severity == "warning"]
    if output is OutputFormat.json:
        from kptrace.render.json_out import PARSE_SCHEMA, diagnostic_json, dumps

        typer.echo(dumps({"schema": PARSE_SCHEMA, **inv, "notes": dp.notes,
                          "problems": [diagnostic_json(d) for d in dp.diagnostics]}))
    else:
        from kptrace.cli.common import stderr_console
        from kptrace.render.text import render_diagnostics, render_inventory

        console = stdout_console()
        render_inventory(console, inv)
        for n in dp.notes:
            console.print(f"[dim]note: {n}[/]", soft_wrap=True)
        if dp.diagnostics:
            console.print(f"[bold]{len(errors)} error{'s' * (len(errors) != 1)}, {len(warnings)} warning{'s' * (len(warnings) != 1)}[/]"
                          " (on stderr)")
            render_diagnostics(stderr_console(), dp.diagnostics, limit=50)
        else:
            console.print("[green]no problems[/]")
    if errors:
        raise typer.Exit(EXIT_INPUT)
    if strict and warnings:
        raise typer.Exit(EXIT_FINDINGS)
