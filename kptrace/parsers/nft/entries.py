"""What a chain's rules and a set's elements are read from when they are first used: the loader files
each rule line under its chain and each element list under its set, not read (:mod:`.loader`); an
:class:`EntryReader` reads them later, on the model's request (``NftChain.rule_at``, ``NftSet.elements``),
and reports their problems against the input's lines.

A chain's rule entries are one of: an int ``i >= 0`` (line ``i`` is ``add rule FAMILY TABLE CHAIN text``),
an int ``~i`` (line ``i`` is a rule line of a listing) or a tuple ``(line, text, column, handle)``
(anything else: a rule joined from several lines, one of several rules on a line, an inserted rule).
Ints keep the load to about a microsecond a line.
"""

from __future__ import annotations

from typing import Any

from kptrace.errors import Diagnostic
from kptrace.model.nft import Counter, NftChain, NftRule, NftSet, Unknown
from kptrace.parsers.nft.atoms import strip_comment
from kptrace.parsers.nft.elements import read_elements
from kptrace.parsers.nft.grammar import NftGrammar
from kptrace.parsers.nft.lines import INTERNAL
from kptrace.parsers.nft.shapes import read_statements

__all__ = ["EntryReader"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)


class EntryReader:
    """What the lazily read parts of a ruleset need later: the input's lines and where to report."""

    __slots__ = ("lines", "source", "diagnostics", "g", "_seen")

    def __init__(self, lines: list[str], source: str, diagnostics: list, g: NftGrammar) -> None:
        self.lines = lines
        self.source = source
        self.diagnostics = diagnostics
        self.g = g
        self._seen: set = set()

    def entry(self, entry: Any) -> tuple[int, str, int, int | None]:
        """(line, text, column of text, handle) of a rule entry (the three forms above)."""
        if type(entry) is int:
            if entry >= 0:  # a knftables "add rule FAMILY TABLE CHAIN text" line
                line = self.lines[entry]
                text = line.split(" ", 5)[5]
                text, handle = strip_comment(text) if "#" in text else (text, None)
                return entry + 1, text.rstrip(), len(line) - len(line.split(" ", 5)[5]) + 1, handle
            i = ~entry  # a rule line of a listing
            line = self.lines[i]
            text = line.strip()
            col = line.find(text[:1]) + 1 if text else 1
            handle = None
            if "#" in text:
                text, handle = strip_comment(text)
            return i + 1, text, col, handle
        return entry

    def text(self, entry: Any) -> tuple[int, str]:
        line, text, _, _ = self.entry(entry)
        return line, text

    def handle(self, entry: Any) -> int | None:
        return self.entry(entry)[3]

    def report(self, severity: str, message: str, line: int, col: int, length: int, hint: str = "") -> None:
        key = (line, col, message)
        if key in self._seen:  # a rule parsed again reports once
            return
        self._seen.add(key)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.diagnostics.append(Diagnostic(severity, message, self.source, line, col, text, length, hint))

    def parse(self, chain: NftChain, number: int, entry: Any) -> NftRule:
        line, text, col, handle = self.entry(entry)
        try:
            stmts, comment, problems = read_statements(text, chain.family)
        except Exception as e:  # a bug in kptrace: keep the rule (as Unknown) and say so, never a traceback
            stmts, comment = [_new(Unknown, (text, f"internal error: {e!r}"))], None
            problems = [(1, len(text), "error", f"{INTERNAL}: {type(e).__name__}: {e}", "please report this input")]
        for pcol, length, sev, msg, hint in problems:
            if "\n" in text:  # a rule joined from several lines: find the line of the spot
                before = text[:pcol - 1]
                nl = before.count("\n")
                self.report(sev, msg, line + nl, pcol - (before.rfind("\n") + 1), length, hint)
            else:
                self.report(sev, msg, line, col + pcol - 1, length, hint)
        counters = None
        for s in stmts:
            if type(s) is Counter and s.packets is not None:
                counters = (s.packets, s.bytes)
                break
        return _new(NftRule, (chain.family, chain.table, chain.name, number, tuple(stmts), text, self.source, line,
                              handle, counters, comment))

    def elements(self, nset: NftSet, line: int, payload: Any, op: str = "add") -> list:
        col = 1
        if type(payload) is tuple:  # (column, text)
            col, payload = payload
        try:
            out, problems = read_elements(payload, nset.family)
        except Exception as e:  # a bug in kptrace: say so, never a traceback
            out, problems = [], [(1, 1, "error", f"{INTERNAL}: {type(e).__name__}: {e}", "please report this input")]
        for pcol, length, sev, msg, hint in problems:
            before = payload[:pcol - 1]
            nl = before.count("\n")
            at = (col + pcol - 1) if not nl else pcol - (before.rfind("\n") + 1)
            self.report(sev, msg, line + nl, at, length, hint)
        is_map = nset.is_map
        if op == "add" and any((v is None) == is_map for _, v, _ in out):
            self.report("error", f"{'map' if is_map else 'set'} {nset.name}: elements "
                        + ("without a value (KEY : VALUE)" if is_map else "with a value (a set has keys only)"),
                        line, col, 1, "the elements that do not fit are skipped")
            out = [e for e in out if (e[1] is None) != is_map]
        return out

