"""Which table each chain of a listing is in, when no command line says: read from the chains listed
together (built-in chains, the chains kube-proxy, docker, flannel and kind put in each table, targets that
work in one table only). The table chosen, and why, is a note."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kptrace.model.rules import BUILTIN_CHAINS, TABLES
from kptrace.parsers.listing.structure import Block, rule_fields

if TYPE_CHECKING:
    from kptrace.parsers.listing.translate import Listing

__all__ = ["assign_tables"]

_BUILTIN_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_BUILTIN_TABLES = {c: frozenset(t for t in TABLES if c in BUILTIN_CHAINS[t]) for c in _BUILTIN_ORDER}
_TABLE_PREFERENCE = ("filter", "nat", "mangle", "raw", "security")  # filter: what `iptables -L` lists without -t
_SPEC_TARGET = re.compile(r" -[jg] (\S+)")


def assign_tables(lst: Listing) -> None:
    """Each chain's table: said by a command line, or read from the chains listed together.

    The chains are cut into runs, each of one table: a run ends at a command line, at a chain listed
    twice, at a built-in chain after a user chain or out of the built-in order (a second table's
    listing starts), and where the chains' possible tables no longer meet. :func:`_decide` picks each
    run's table.
    """
    g = lst.g
    all_tables = frozenset(TABLES)
    runs: list[list[Block]] = []
    run: list[Block] = []
    names: set[str] = set()
    cands = all_tables
    last_builtin = -1
    has_user = False

    for b in lst.blocks:
        if b.command is not None:
            mine = frozenset({b.command.table or "filter"})
        else:
            mine = _BUILTIN_TABLES.get(b.name, all_tables)
            b.known = g.tables_of_chain(b.name)
            if b.known is not None:
                mine = mine & b.known
        builtin = _BUILTIN_ORDER.index(b.name) if b.name in _BUILTIN_ORDER else -1
        if run and (b.command is not run[-1].command or b.name in names or not (cands & mine)
                    or (builtin >= 0 and (has_user or builtin <= last_builtin))):
            runs.append(run)
            run, names, cands, last_builtin, has_user = [], set(), all_tables, -1, False
        run.append(b)
        names.add(b.name)
        cands = cands & mine
        if builtin >= 0:
            last_builtin = builtin
        else:
            has_user = True
    if run:
        runs.append(run)
    for run in runs:
        _decide(lst, run)


def _decide(lst: Listing, run: list[Block]) -> None:
    """The table of one run of chains listed together (see :func:`assign_tables`), and a note saying
    why when no command line said it."""
    g = lst.g
    cmd = run[0].command
    if cmd is not None:
        for b in run:
            b.table = cmd.table or "filter"
        return
    cands = frozenset(TABLES)
    reasons: list[str] = []

    def narrow(tables: frozenset[str] | None, reason: str) -> None:
        """Keep only ``tables`` of the candidates when that leaves some and drops some; ``reason`` says why,
        its ``{either}`` the tables in words (worked out only then: most calls narrow nothing)."""
        nonlocal cands
        if tables is not None and len(cands) > 1 and cands & tables and not cands <= tables:
            cands = cands & tables
            reasons.append(reason.replace("{either}", _either(tables)))

    builtins = [b.name for b in run if b.name in _BUILTIN_ORDER]
    leading = tuple(b.name for b in run[:len(builtins)])
    if builtins and leading == tuple(builtins):
        # A whole table's listing starts with its built-in chains, in order: nat's four are not mangle's five.
        exact = frozenset(t for t in TABLES if leading == tuple(c for c in _BUILTIN_ORDER if c in BUILTIN_CHAINS[t]))
        if exact:
            narrow(exact, f"its built-in chains {', '.join(leading)} are those of {{either}}")
    for name in builtins:
        tables = frozenset(t for t in TABLES if name in BUILTIN_CHAINS[t])
        narrow(tables, f"built-in chain {name} is in {{either}}")
    for b in run:
        if len(cands) == 1:
            break
        narrow(b.known, f"kube-proxy keeps {b.name} in {{either}}" if b.name.startswith("KUBE-") else f"{b.name} is in {{either}}")
    for b in run:
        if len(cands) == 1:
            break
        for i in b.rules:
            name = _target_of(lst, b, i)
            if name in g.target_tables:
                narrow(g.target_tables[name], f"its rules use {name}, which works in {{either}} only")
            elif name:
                narrow(g.tables_of_chain(name), f"it jumps to {name}, which is in {{either}}")
            if len(cands) == 1:
                break
    table = next(t for t in _TABLE_PREFERENCE if t in cands)
    if len(cands) > 1:
        reasons.append(f"it could also be {_either(cands - {table})}" + (" (filter is what `iptables -L` lists without -t)"
                                                                          if table == "filter" else ""))
    first = run[0].line + 1
    last = max([run[-1].line] + run[-1].rules) + 1
    names = ", ".join(b.name for b in run[:3]) + (f" and {len(run) - 3} more" if len(run) > 3 else "")
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    lst.notes.append(f"{lst.source} {where} ({names}): no table given; read as {table}: {'; '.join(reasons) or 'nothing says otherwise'}")
    for b in run:
        b.table = table


def _either(tables) -> str:
    tables = set(tables)
    ordered = [t for t in TABLES if t in tables]
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _target_of(lst: Listing, b: Block, i: int) -> str:
    line = lst.lines[i]
    if b.kind == "S":
        m = _SPEC_TARGET.search(line)
        return m.group(1) if m else ""
    layout = b.layout
    if layout is None:
        return ""
    got = rule_fields(line.rstrip(), layout)
    return got[0][layout.target] if got else ""
