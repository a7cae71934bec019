"""The loader's state, shared by its parts: the input's lines, the ruleset being built, the stack of open
blocks (listing form), and the two ways to speak: :meth:`LoadState.diag` (a diagnostic at ``file:line:col``)
and :meth:`LoadState.note` (one line in the ruleset's notes).

The loader is one object whose methods live in one module per part, each part a class on this one::

    class                                  module         what it reads
    LoadState                              state.py       (the state, diagnostics, get_table/chain/set)
    PropertyReader(LoadState)              properties.py  chain, set and table properties
    BlockReader(PropertyReader)            blocks.py      a listing's blocks and the pieces of a line
    CommandReader(PropertyReader)          commands.py    knftables commands
    Loader(BlockReader, CommandReader)     loader.py      the pass over the lines, its fast paths, the end
"""

from __future__ import annotations

from typing import Any

from kptrace.errors import Diagnostic
from kptrace.model.nft import NftChain, NftRuleset, NftSet, NftTable
from kptrace.parsers.nft.entries import EntryReader
from kptrace.parsers.nft.grammar import nft_grammar

__all__ = ["CHAIN", "OBJECT", "SET", "TABLE", "LoadState"]

# The kinds of open blocks on the stack (compared with `is`).
TABLE, CHAIN, SET, OBJECT = "table", "chain", "set", "object"


class LoadState:
    """The ruleset being built from one input, and where the reading is."""

    def __init__(self, text: str, source: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.text = text
        self.lines = text.split("\n")
        self.source = source
        self.g = nft_grammar()
        self.rs = NftRuleset(sources=[source])
        self.diags = self.rs.diagnostics
        self.reader = EntryReader(self.lines, source, self.diags, self.g)
        self.stack: list[tuple[str, Any, int, int]] = []  # (kind, object, line, col) of open blocks
        self.fragment_table: NftTable | None = None
        self.fragment_count = 0
        self.bad_lines = 0  # lines that are no nft statement: many near the start means this is no nft input
        self.notes: dict[str, None] = {}

    # -- where we are: the innermost open table, or the open chain or set (asked only inside one)

    @property
    def table(self) -> NftTable:
        for kind, obj, _, _ in reversed(self.stack):
            if kind is TABLE:
                return obj
        raise LookupError("no table block is open")

    @property
    def chain(self) -> NftChain:
        kind, obj, _, _ = self.stack[-1]
        if kind is not CHAIN:
            raise LookupError("no chain block is open")
        return obj

    @property
    def set(self) -> NftSet:
        kind, obj, _, _ = self.stack[-1]
        if kind is not SET:
            raise LookupError("no set block is open")
        return obj

    # -- reporting

    def diag(self, severity: str, message: str, line: int, col: int = 0, length: int = 0, hint: str = "") -> None:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.diags.append(Diagnostic(severity, message, self.source, line, col, text, length, hint))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes[text] = None
            self.rs.notes.append(text)

    # -- objects

    def get_table(self, family: str, name: str, line: int, *, declared: bool = True) -> NftTable:
        key = (family, name)
        t = self.rs.tables.get(key)
        if t is None:
            t = NftTable(family, name, source=self.source, line=line)
            self.rs.tables[key] = t
            if not declared:
                self.diag("warning", f"table {family} {name} is used before it is added", line, 0, 0,
                          f"nft -f needs `add table {family} {name}` first; kptrace creates it")
        return t

    def get_chain(self, t: NftTable, name: str, line: int, *, declared: bool) -> NftChain:
        c = t.chains.get(name)
        if c is None:
            c = NftChain(name, t.name, t.family, source=self.source, line=line, declared=declared, reader=self.reader)
            t.chains[name] = c
        elif declared and not c.declared:
            c.declared = True
            c.line = line
        return c

    def get_set(self, t: NftTable, name: str, line: int, *, declared: bool, is_map: bool = False) -> NftSet:
        s = t.sets.get(name)
        if s is None:
            s = NftSet(name, t.name, t.family, source=self.source, line=line, declared=declared, reader=self.reader,
                       data_type=("?",) if is_map and not declared else None)
            t.sets[name] = s
        elif declared and not s.declared:
            s.declared = True
            s.line = line
        return s

