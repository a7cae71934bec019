"""The listing form's blocks (``nft list ruleset``): ``table ... {``, ``chain ... {``, ``set|map ... {`` and
objects kept as written, opened and closed on the loader's stack; a line cut into pieces at ``;`` and
braces, each piece filed where the innermost block says (a rule under its chain, a property read by
:mod:`.properties`). Chains or rules pasted without their table go into a placeholder table, said in a note.
"""

from __future__ import annotations

import re

from kptrace.model.nft import NftTable
from kptrace.parsers.nft.atoms import HANDLE, tokens, unquote
from kptrace.parsers.nft.lines import (
    BLOCK_HEADS,
    CHAIN_PROP_WORDS,
    ELISION,
    FAMILY_GUESS_V6,
    HINT_FULL,
    starts_statement,
)
from kptrace.parsers.nft.properties import PropertyReader
from kptrace.parsers.nft.state import CHAIN, OBJECT, SET, TABLE

__all__ = ["BlockReader"]


class BlockReader(PropertyReader):
    """Reads the blocks of a listing."""

    def pieces(self, i: int, col: int, text: str) -> int:
        """Split ``text`` (line ``i`` from column ``col``) at top-level ``;``, block openings and closings,
        and read each piece; a piece whose braces are still open at the end of the line takes the next
        lines (a wrapped element list, a rule with a multi-line set). Returns the last line index used."""
        start = 0
        depth = 0
        inq = False
        j = 0
        last = i
        heads = BLOCK_HEADS | self.g.object_kinds
        while True:
            n = len(text)
            while j < n:
                ch = text[j]
                if ch == '"':
                    inq = not inq
                elif inq:
                    pass
                elif ch == "#":
                    nl = text.find("\n", j)
                    end = n if nl < 0 else nl
                    piece = text[start:j]
                    handle = HANDLE.match(text, j)
                    if piece.strip():
                        self.piece(i, col, text, start, piece, handle=int(handle.group(1)) if handle else None)
                    elif handle and self.stack and hasattr(self.stack[-1][1], "handle"):
                        self.stack[-1][1].handle = int(handle.group(1))  # "chain x { # handle 3"
                    start = j = end
                    continue
                elif ch == "{":
                    k = self.stack[-1][0] if self.stack else None
                    head = text[start:j].strip()
                    if k in (None, TABLE) and head and depth == 0 and head.split()[0] in heads:
                        self.open_block(i, col, text, start, head)
                        start = j + 1
                    else:
                        depth += 1
                elif ch == "}":
                    if depth > 0:
                        depth -= 1
                    else:
                        piece = text[start:j]
                        if piece.strip():
                            self.piece(i, col, text, start, piece)
                        nl = text.rfind("\n", 0, j)
                        self.close_block(i + text.count("\n", 0, j), (col + j) if nl < 0 else j - nl)
                        start = j + 1
                elif (ch == ";" or ch == "\n") and depth == 0:
                    piece = text[start:j]
                    if piece.strip():
                        self.piece(i, col, text, start, piece)
                    start = j + 1
                j += 1
            if (depth > 0 or inq) and last + 1 < len(self.lines) and not starts_statement(self.lines[last + 1]):
                last += 1
                text += "\n" + self.lines[last]
                inq = False if inq else inq
                continue
            break
        piece = text[start:]
        if piece.strip():
            self.piece(i, col, text, start, piece)
        return last

    def piece(self, i: int, col: int, text: str, start: int, piece: str, handle: int | None = None) -> None:
        line = i + 1 + text.count("\n", 0, start)
        lead = len(piece) - len(piece.lstrip())
        pcol = (col + start + lead) if line == i + 1 else (start - text.rfind("\n", 0, start) + lead)
        p = piece.strip()
        kind = self.stack[-1][0] if self.stack else None
        if kind is CHAIN:
            self.chain_piece(line, pcol, p, handle)
        elif kind is SET:
            self.set_prop(line, pcol, p)
        elif kind is TABLE:
            self.table_prop(line, pcol, p)
        elif kind is OBJECT:
            obj = self.stack[-1][1]
            obj[2].append(p)
        else:
            self.top_piece(line, pcol, p, handle)

    def open_block(self, i: int, col: int, text: str, start: int, head: str) -> None:
        line = i + 1 + text.count("\n", 0, start)
        toks = tokens(head)
        word = toks[0]
        kind = self.stack[-1][0] if self.stack else None
        if word == "table":
            if kind is not None:
                self.diag("error", "a table inside a block", line, col, len(head), "is a '}' missing before it?")
            family, name = (toks[1], toks[2]) if len(toks) >= 3 and toks[1] in self.g.families else \
                (self.g.default_family, toks[1] if len(toks) > 1 else "")
            if not name or len(toks) > 3:
                self.bad_declaration("header", head + " {", line, col)
                if not name:
                    name = "?"
            t = self.get_table(family, unquote(name), line)
            self.stack.append((TABLE, t, line, col))
            return
        name = unquote(toks[1]) if len(toks) > 1 else ""
        if not name:
            self.bad_declaration("header", head + " {", line, col)
            name = "?"
        if kind is None:
            t = self.placeholder(line, col, head, chain=name if word == "chain" else None)
            self.stack.append((TABLE, t, line, 0))
        t = self.table
        if word == "chain":
            c = self.get_chain(t, name, line, declared=True)
            self.stack.append((CHAIN, c, line, col))
        elif word in ("set", "map"):
            s = self.get_set(t, name, line, declared=True)
            if word == "map" and s.data_type is None:
                s.data_type = ("?",)
            self.stack.append((SET, s, line, col))
        else:
            obj: tuple[str, str, list[str], int] = (word, name, [], line)
            t.objects.append(obj)
            self.note(f"{t.family} {t.name}: {word} {name} is kept but not modelled")
            self.stack.append((OBJECT, obj, line, col))

    def close_block(self, i: int, col: int) -> None:
        if not self.stack:
            self.diag("error", "'}' closes no block", i + 1, col, 1, "is a '{' missing, or the input's start cut off?")
            return
        kind, obj, _, _ = self.stack.pop()
        if self.stack and self.stack[-1][0] is TABLE and self.stack[-1][3] == 0 and kind is not TABLE:
            # the end of a chain pasted without its table: leave its placeholder table too
            self.stack.pop()

    def placeholder(self, line: int, col: int, head: str, chain: str | None) -> NftTable:
        """The made-up table for chains or rules pasted without their table (one per pasted listing:
        a chain name seen again starts another, as when two nodes' chains are pasted one after the other)."""
        t = self.fragment_table
        if t is None or (chain is not None and chain in t.chains and len(t.chains[chain])):
            self.fragment_count += 1
            v6 = FAMILY_GUESS_V6.search(self.text) and not re.search(r"\bip (?:saddr|daddr)\b", self.text)
            family = "ip6" if v6 else "ip"
            name = "fragment" if self.fragment_count == 1 else f"fragment-{self.fragment_count}"
            t = self.get_table(family, name, line)
            t.placeholder = True
            self.fragment_table = t
            what = f"chain {chain}" if chain else "rules"
            again = f" (chain {chain} appears again: another listing pasted after the first?)" \
                if self.fragment_count > 1 else ""
            self.diag("warning", f"{what} without a table: read into placeholder table {family} {name}{again}",
                      line, col, len(head), HINT_FULL + " (or `nft list table FAMILY NAME`)")
            self.note(f"{self.source}: {what if chain is None else 'chains'} pasted without their table are read into "
                      f"placeholder table {family} {name}{again}; their base chains, hooks and policies are unknown")
        return t

    def chain_piece(self, line: int, col: int, p: str, handle: int | None) -> None:
        c = self.chain
        word = p.split(None, 1)[0]
        if word in CHAIN_PROP_WORDS:
            self.chain_prop(c, line, col, p)
            return
        if p in ELISION:
            self.diag("warning", "rules elided here ('...'): the chain is incomplete", line, col, len(p), HINT_FULL)
            self.note(f"{self.source}: rules are elided (line {line}): what is not shown is not traced")
            return
        c._entries.append((line, p, col, handle))
        c._changed()

    def top_piece(self, line: int, col: int, p: str, handle: int | None) -> None:
        toks = p.split()
        w = toks[0]
        if w in ("define", "include", "redefine", "undefine"):
            self.diag("warning", f"`{w}` is not supported: the line is skipped", line, col, len(w),
                      "pass the ruleset as nft prints it (`nft list ruleset`), where variables are expanded")
            return
        if w in self.g.selector_starts or w in self.g.verdicts or w in self.g.nat_kinds or w == "counter":
            t = self.placeholder(line, col, p, chain=None)
            c = self.get_chain(t, "fragment", line, declared=False)
            c._entries.append((line, p, col, handle))
            c._changed()
            self.note(f"{self.source}: rules pasted without their chain are read into chain {t.family} {t.name} "
                      "fragment")
            return
        if w == "}":
            self.close_block(line - 1, col)
            return
        self.diag("error", f"not an nft statement: {w!r}", line, col, len(w),
                  "expected `table ...`, `add ...` (knftables) or the output of `nft list ruleset`")
        self.bad_lines += 1

