"""Tables and trees that never cut what matters, for a terminal of any width and for pipes.

Three kinds of column (:data:`KEY`, :data:`WRAP`, :data:`NOTE`): a key column (probability, verdict, an
address, a count) always keeps its full width; a wrap column breaks its text between words and never inside
one, so an address in it stays whole; a note column (why, rule, cause) wraps like that while it has room
and otherwise moves under its row, as ``why: ...``. With no width limit (a pipe, a file, ``-o wide``) every
row is one line, however long. A pipe gets plain text: no box drawing, no ANSI codes, still aligned.

The console says which: ``console.is_terminal`` (box drawing and colour or plain text) and
``console.soft_wrap`` (no width limit: nothing wraps). :func:`terminal_view` sets ``soft_wrap`` for pipes
while a renderer prints, and ``-o wide`` sets it on the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.panel import Panel
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "KEY",
    "NOTE",
    "WRAP",
    "Column",
    "Grid",
    "heading",
    "print_grid",
    "print_panel",
    "print_tree",
    "terminal_view",
]

KEY: Literal["key"] = "key"
WRAP: Literal["wrap"] = "wrap"
NOTE: Literal["note"] = "note"

_GAP = 2  # spaces between columns
_NOTE_MIN = 24  # a note column narrower than this reads worse than the same words under the row
_UNDER_INDENT = 4


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    kind: Literal["key", "wrap", "note"] = KEY
    justify: Literal["left", "right"] = "left"


class Grid:
    """Rows of cells under column headers; a cell is plain text (never markup) or a styled :class:`Text`.

    >>> g = Grid([Column("endpoint"), Column("why", NOTE)])
    >>> g.add_row("10.244.1.3:8080", "sent out of the node")
    >>> from io import StringIO
    >>> c = Console(file=StringIO(), width=30)
    >>> print_grid(c, g)
    >>> print(c.file.getvalue(), end="")
    endpoint         why
    10.244.1.3:8080  sent out of the node
    """

    __slots__ = ("_section", "columns", "rows", "title")

    def __init__(self, columns: Sequence[Column], *, title: str = "") -> None:
        self.columns = tuple(columns)
        self.title = title
        self.rows: list[tuple[tuple[Text, ...], bool]] = []  # (cells, a section starts here)
        self._section = False

    def add_row(self, *cells: str | Text) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(
            (tuple(c if isinstance(c, Text) else Text(c) for c in cells), self._section and bool(self.rows))
        )
        self._section = False

    def add_section(self) -> None:
        self._section = True


@contextmanager
def terminal_view(console: Console) -> Iterator[Console]:
    """While a view prints: output that is not a terminal is never wrapped (a pipe or a file takes any width)."""
    before = console.soft_wrap
    console.soft_wrap = before or not console.is_terminal
    try:
        yield console
    finally:
        console.soft_wrap = before


def _lines(cell: Text, joined: bool) -> list[Text]:
    lines = list(cell.split("\n")) if cell.plain else [Text()]
    if joined and len(lines) > 1:
        return [Text("; ").join(lines)]
    return lines


def _longest_word(cell: Text) -> int:
    return max((cell_len(w) for w in cell.plain.split()), default=0)


def _fill(budget: int, lows: list[int], highs: list[int]) -> list[int]:
    """Widths between each low and high summing to at most ``budget``: the widest shrink first."""
    level_lo, level_hi = 0, max(highs, default=0)
    while level_lo < level_hi:  # the highest common cap that fits
        mid = (level_lo + level_hi + 1) // 2
        if sum(max(lo, min(hi, mid)) for lo, hi in zip(lows, highs)) <= budget:
            level_lo = mid
        else:
            level_hi = mid - 1
    return [max(lo, min(hi, level_lo)) for lo, hi in zip(lows, highs)]


def _widths(grid: Grid, cells: list[list[list[Text]]], limit: int | None) -> tuple[list[int], list[int]]:
    """Each column's width, and which columns go under the row (indexes)."""
    cols = grid.columns
    natural = [
        max([cell_len(grid.columns[i].header)] + [cell_len(line.plain) for row in cells for line in row[i]])
        for i in range(len(cols))
    ]
    if limit is None or sum(natural) + _GAP * (len(cols) - 1) <= limit:
        return natural, []
    words = [
        max([_longest_word(Text(c.header))] + [_longest_word(line) for row in cells for line in row[i]])
        for i, c in enumerate(cols)
    ]
    lows = [natural[i] if c.kind == KEY else words[i] for i, c in enumerate(cols)]
    lows = [max(lo, min(natural[i], _NOTE_MIN)) if c.kind == NOTE else lo for i, (c, lo) in enumerate(zip(cols, lows))]
    # Notes give up their room first: they move under the row unless every wrap column (what the row is
    # about: a Service, an entry point) fits whole beside them.
    fixed = [natural[i] if c.kind != NOTE else lows[i] for i, c in enumerate(cols)]
    under = [i for i, c in enumerate(cols) if c.kind == NOTE] if sum(fixed) + _GAP * (len(cols) - 1) > limit else []
    inline = [i for i in range(len(cols)) if i not in under]
    budget = limit - _GAP * (len(inline) - 1) - sum(natural[i] for i in inline if cols[i].kind == KEY)
    shrink = [i for i in inline if cols[i].kind == (WRAP if under else NOTE)]
    budget -= sum(natural[i] for i in inline if cols[i].kind == WRAP) if not under else 0
    widths = list(natural)
    for i, w in zip(shrink, _fill(budget, [lows[i] for i in shrink], [natural[i] for i in shrink])):
        widths[i] = w
    return widths, under


def _wrap(console: Console, line: Text, width: int) -> list[Text]:
    if cell_len(line.plain) <= width:
        return [line]
    return list(line.wrap(console, width, overflow="fold"))


def _pad(t: Text, width: int, justify: str) -> Text:
    gap = " " * max(0, width - cell_len(t.plain))
    return Text.assemble(gap, t) if justify == "right" else Text.assemble(t, gap)


def print_grid(console: Console, grid: Grid) -> None:
    """Print ``grid`` within the console's width (none when ``console.soft_wrap``); see the module's docstring."""
    plain = not console.is_terminal
    limit = None if console.soft_wrap or plain else console.width
    cells = [[_lines(c, limit is None) for c in row] for row, _ in grid.rows]
    widths, under = _widths(grid, cells, limit)
    inline = [i for i in range(len(grid.columns)) if i not in under]
    if grid.title:
        console.print(Text(grid.title, style="bold"), soft_wrap=True, highlight=False)

    def emit(columns: list[list[Text]]) -> None:
        for n in range(max(len(c) for c in columns)):
            line = Text(" " * _GAP).join(
                _pad(columns[k][n] if n < len(columns[k]) else Text(), widths[i], grid.columns[i].justify)
                for k, i in enumerate(inline)
            )
            line.rstrip()
            console.print(line, soft_wrap=True, highlight=False)

    header = [[Text(grid.columns[i].header, style="bold")] for i in inline]
    if limit is not None:
        header = [_wrap(console, h[0], widths[i]) for h, i in zip(header, inline)]
    emit(header)
    total = min(sum(widths[i] for i in inline) + _GAP * (len(inline) - 1), console.width)
    if not plain:
        console.print(Text("─" * total, style="dim"), soft_wrap=True)
    for (row, section), lines in zip(grid.rows, cells):
        if section and not plain:
            console.print(Text("─" * total, style="dim"), soft_wrap=True)
        columns = []
        for i in inline:
            if limit is None:
                columns.append(lines[i])
            else:
                columns.append([w for line in lines[i] for w in _wrap(console, line, widths[i])])
        emit(columns)
        for i in under:
            if not row[i].plain:
                continue
            label = Text.assemble(" " * _UNDER_INDENT, (grid.columns[i].header + ": ", "dim"))
            pad = cell_len(label.plain)
            for n, line in enumerate(lines[i]):
                for k, piece in enumerate(_wrap(console, line, max(console.width - pad, _longest_word(line)))):
                    piece.rstrip()
                    console.print(
                        Text.assemble(label if n == k == 0 else " " * pad, piece), soft_wrap=True, highlight=False
                    )


def print_tree(console: Console, tree: Tree) -> None:
    """A tree with guide lines on a terminal (each line whole with ``-o wide``); indented plain text elsewhere."""
    if console.is_terminal and not console.soft_wrap:
        console.print(tree)  # rich's own: wraps each label under its guides
        return
    guides = ("├── ", "└── ", "│   ", "    ") if console.is_terminal else ("    ",) * 4

    def walk(node: Tree, lead: str, branch: str, below: str) -> None:
        """``branch``: this node's guide; ``below``: what its children's guides hang from."""
        label = node.label if isinstance(node.label, Text) else Text.from_markup(str(node.label))
        console.print(Text.assemble((lead + branch, "dim"), label), soft_wrap=True, highlight=False)
        for n, child in enumerate(node.children):
            last = n == len(node.children) - 1
            walk(child, lead + below, guides[1] if last else guides[0], guides[3] if last else guides[2])

    walk(tree, "", "", "")


def print_panel(console: Console, content: Text) -> None:
    """A boxed heading on a terminal; the plain line elsewhere (and with ``-o wide``, where a box would crop it)."""
    if console.is_terminal and not console.soft_wrap:
        console.print(Panel(content, expand=False))
    else:
        console.print(content, soft_wrap=True, highlight=False)


def heading(console: Console, title: str) -> None:
    """A rule across the terminal with ``title`` (plain text) in it; ``== title ==`` elsewhere."""
    if console.is_terminal and not console.soft_wrap:
        console.rule(Text(title))
    else:
        console.print(Text(f"== {title} =="), soft_wrap=True, highlight=False)
