"""What the ipvsadm and ipset readers share: the paste pre-pass and the check that the input is their tool's
output, the lines and the diagnostics of one parse, a bad line's diagnosis by the pyparsing grammar of its
kind, and the cyclic garbage collector paused while a few hundred thousand small values are built.

Each reader reads good lines by hand (``str.split``, a fast path per line kind) and raises :class:`Cut` on a
line it cannot take; :meth:`LineReader.refuse` then asks the grammar where and why it goes wrong.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kptrace.errors import Diagnostic, ParseError
from kptrace.parsers.detect import find_variant_paste, wrong_format
from kptrace.parsers.paste import Paste, clean_paste

__all__ = ["Cut", "LineReader", "cleaned", "diagnose", "paused_gc"]


class Cut(Exception):
    """A line the fast path does not take: the grammar will say why."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic GC paused: a parse builds ~200k small objects with no cycles, which the collector would walk
    again and again while they are built (the 100k-real-server listing: 1.5 s -> 0.9 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def cleaned(text: str, source: str, tool: str, kinds: tuple[str, ...], what: str, hint: str) -> tuple[Paste, str | None]:
    """``text`` through the paste pre-pass (prompts, fences, quote markers, elisions, other commands' output go;
    lines stay where they were), and which of ``kinds`` it is (None: it does not say). Another format's output
    is a :class:`ParseError` at the line that shows it.

    >>> paste, kind = cleaned("$ ipset save\\ncreate S hash:ip\\n", "x", "ipset", ("ipset-save", "ipset-list"), "", "")
    >>> kind, paste.text.splitlines()[1]
    ('ipset-save', 'create S hash:ip')
    """
    paste = clean_paste(text, source).only(tool)
    found = find_variant_paste(paste)
    kind = found[0] if found else None
    if found is not None and kind not in kinds:
        raise ParseError([paste.line_map.restore(wrong_format(paste.text, source, found, what, hint))])
    return paste, kind


_WORD = re.compile(r"\S+")


def diagnose(grammar: Any, line: str, end_message: Callable[[str], str], word: re.Pattern[str] = _WORD) -> tuple[int, int, str]:
    """Where and why the pyparsing ``grammar`` refuses ``line``: (column, length, message); column 0: it
    does not. ``end_message`` says what a ``word`` left over after a whole line's grammar is."""
    import pyparsing as pp

    try:
        grammar.parse_string(line, parse_all=True)
    except pp.ParseBaseException as e:
        loc = e.loc
        m = word.match(line, loc) if loc < len(line) else None
        length = (m.end() - loc) if m else 1
        found = m.group(0) if m else ""
        msg = e.msg
        if msg == "Expected end of text":
            msg = end_message(found)
        elif msg.startswith("Expected"):
            msg = "expected " + msg[len("Expected "):] + (f", found {found!r}" if found else ", found the end of the line")
        return loc + 1, length, msg
    return 0, 0, ""


class LineReader:
    """One parse of a tool's output: its lines, the diagnostics and notes, whether it was cut off.

    A subclass says what its tool is called in messages and how the grammar of a line kind diagnoses it
    (:meth:`diagnosis`)."""

    #: what a line that does not fit, and that the grammar does not place either, is called
    MISFIT = "this line does not fit here"
    #: the hint for an input that ends in the middle of a line
    CUT_HINT = "the output looks cut off (an interrupted copy?); take it again, or pass --lenient to read what is there"
    #: what may be missing when the input does not end with a newline, and the hint
    LAST_LINE = ("this last line may be incomplete", "the tool ends every line; check that the copy is whole")
    #: a last "# ..." line without its newline is no sign of a cut copy
    COMMENTS = False

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self.ends_with_newline = text.endswith("\n")
        self.lines = text.split("\n")
        if self.ends_with_newline:
            self.lines.pop()
        self.diags: list[Diagnostic] = []
        self.notes: list[str] = []
        self.cut = False  # the input ends in the middle of a line

    def problem(self, severity: str, idx: int, message: str, hint: str = "", col: int = 0, length: int = 0) -> None:
        self.diags.append(Diagnostic(severity, message, self.source, idx + 1, col, self.lines[idx], length, hint))

    def diagnosis(self, line: str, kind: str, variant: Any) -> tuple[int, int, str]:
        """(column, length, message) of the grammar of line ``kind`` on ``line``; column 0: it takes it."""
        raise NotImplementedError

    def refuse(self, idx: int, kind: str, variant: Any, hint: str) -> None:
        """A line the fast path did not take: the grammar says where; a cut last line says so."""
        line = self.lines[idx]
        col, length, msg = self.diagnosis(line, kind, variant)
        if not col:
            col, length, msg = 1, max(1, len(line.split()[0]) if line.split() else 1), self.MISFIT
        if idx == len(self.lines) - 1 and not self.ends_with_newline:
            msg = f"the input ends in the middle of a line ({msg})"
            hint = self.CUT_HINT
            self.cut = True
        self.problem("error", idx, msg, hint, col, length)

    def check_last_line(self) -> None:
        """A last line without its newline may be cut: a warning, unless an error there says so already."""
        lines = self.lines
        if not self.ends_with_newline and lines and lines[-1].strip() \
                and not (self.COMMENTS and lines[-1].lstrip().startswith("#")) \
                and not any(d.line == len(lines) and d.severity == "error" for d in self.diags):
            what, hint = self.LAST_LINE
            self.problem("warning", len(lines) - 1, f"the input does not end with a newline: if it was cut off here, {what}",
                         hint)

    def diagnostics(self, paste: Paste) -> tuple[Diagnostic, ...]:
        """The diagnostics at the original text's positions."""
        return tuple(paste.line_map.restore_all(self.diags))
