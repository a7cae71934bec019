"""The load: one pass over the input's lines. Blocks (listing form) and commands (knftables form) build
tables, chains and sets; rule and element lines are filed under their chain or set, not read
(:mod:`.entries` reads them on first use).

Speed: a 10k-Service ruleset has ~350,000 lines, and the load reads each once, at about 1 us a line. The
fast paths below take ~99% of a big input's lines, in two loops (a listing's tables and chains, knftables
commands) that keep their state in locals and return at the first line they do not take;
:meth:`Loader.statement` (the slow path, through :mod:`.blocks`, :mod:`.commands` and :mod:`.properties`) reads
that line, and :meth:`Loader.run` picks the loop for where the reading is then. So a call is paid per slow
line, never per fast line or per chain.
"""

from __future__ import annotations

import re
from typing import Any

from kptrace.model.nft import NftChain, NftRuleset
from kptrace.parsers.nft.atoms import HANDLE, strip_comment
from kptrace.parsers.nft.blocks import BlockReader
from kptrace.parsers.nft.commands import CommandReader
from kptrace.parsers.nft.lines import (
    CHAIN_PROPS,
    ELISION,
    HINT_FULL,
    POSITIONAL,
    PROMPT,
    PROMPT_ALONE,
    UNLOADABLE_RULE,
    VERBS,
    brace_depth,
    starts_statement,
)
from kptrace.parsers.nft.state import CHAIN, OBJECT, SET, TABLE

__all__ = ["Loader"]


class Loader(BlockReader, CommandReader):
    """Reads one input into an :class:`NftRuleset` (:meth:`run`)."""

    # -- the main loop and its fast paths

    def run(self) -> NftRuleset:
        n = len(self.lines)
        i = 0
        while i < n:
            stack = self.stack
            kind = stack[-1][0] if stack else None
            if kind is CHAIN or kind is TABLE:
                i = self.listing_lines(i)
            elif kind is None:
                i = self.command_lines(i)
            else:  # inside a set or an object block
                i = self.statement(i)
                if self.stop_if_no_nft(i):
                    break
        self.finish()
        return self.rs

    def listing_lines(self, i: int) -> int:
        """A listing's table or chain block from line ``i``: a chain's header line (``chain NAME {``, maybe with
        ``# handle N``) opens it, its rule lines are filed (``~i``), its ``}`` closes it; returns after the first
        line none of these takes (a property, a set, the table's ``}``, a line to read in full)."""
        lines = self.lines
        n = len(lines)
        chain_props = CHAIN_PROPS
        elision = ELISION
        top = self.stack[-1]
        entries = top[1]._entries if top[0] is CHAIN else None  # the open chain's, or None between chains
        while i < n:
            line = lines[i]
            s = line.strip()
            if not s:
                i += 1
                continue
            if entries is not None:
                c0 = s[0]
                if c0 != "}" and c0 != "#" and c0 != '"' and ";" not in s and not s.startswith(chain_props) and \
                        ("{" not in s or s.count("{") == s.count("}")) and s not in elision:
                    entries.append(~i)
                    i += 1
                    continue
                if s != "}":
                    return self.statement(i)
                self.close_block(i, line.find("}") + 1)
                i += 1
                if not self.stack or self.stack[-1][0] is not TABLE:  # a chain pasted without its table ends
                    return i
                entries = None
                continue
            if s[:6] == "chain " and '"' not in s and s.count("{") == 1:
                head, _, after = s.partition("{")
                after = after.strip()
                name = head[6:].strip()
                handle = HANDLE.match(after) if after else None
                if name and " " not in name and (not after or handle):
                    c = self.get_chain(self.stack[-1][1], name, i + 1, declared=True)
                    if handle:
                        c.handle = int(handle.group(1))
                    self.stack.append((CHAIN, c, i + 1, line.find("c") + 1))
                    entries = c._entries
                    i += 1
                    continue
            return self.statement(i)
        return i

    def command_lines(self, i: int) -> int:
        """knftables commands at the top level from line ``i``: ``add rule``, ``add element`` and ``add chain``
        lines of a known table and chain or set are filed; returns after the first other line. Long on purpose:
        the loop over a big input's lines keeps its three fast paths inline, as a call a line would add ~2% to
        the load (measured on a loop of this shape: 16 ms per 370k lines; the classic 10k-Service knft input has
        374k lines and loads in 0.70 s)."""
        lines = self.lines
        n = len(lines)
        positional = POSITIONAL
        families = self.g.families
        last_key: tuple = ()  # the (family, table) of the last line, and that table's chains and sets
        last_chains: dict = {}
        last_sets: dict = {}
        rule_prefix = ""  # "add rule FAMILY TABLE " of the last rule line, whose table is last_key's
        while i < n:
            line = lines[i]
            if line[:4] != "add ":
                if not line or line[0] == "#" and not line.startswith(("# kptrace", "# Warning")):
                    i += 1  # blank lines and comments between commands (kube-proxy's "# ns/svc" headers)
                    continue
                i = self.statement(i)
                return n if self.stop_if_no_nft(i) else i
            kind = line[4:8]
            if rule_prefix and line.startswith(rule_prefix):
                # "add rule ip kube-proxy " again (almost every rule line): find the chain name without
                # splitting the line, whose rule text is cut out only when the rule is read
                k = len(rule_prefix)
                sp = line.find(" ", k)
                c = last_chains.get(line[k:sp]) if sp > 0 else None
                if c is not None and not line.startswith(positional, sp + 1) and \
                        ("{" not in line or line.count("{") == line.count("}")) and sp + 1 < len(line):
                    c._entries.append(i)
                    i += 1
                    continue
            if kind == "rule":
                parts = line.split(" ", 5)
                if len(parts) == 6:
                    key = (parts[2], parts[3])
                    if key != last_key:
                        last_key, last_chains, last_sets = self.table_of(key)
                        rule_prefix = ""
                    rest = parts[5]
                    c = last_chains.get(parts[4])
                    if c is not None and rest and not rest.startswith(positional) and \
                            ("{" not in rest or rest.count("{") == rest.count("}")):
                        c._entries.append(i)
                        rule_prefix = f"add rule {parts[2]} {parts[3]} "
                        i += 1
                        continue
            elif kind == "chai" and "{" not in line and "#" not in line:
                parts = line.split()
                if len(parts) == 5 and parts[1] == "chain" and parts[2] in families and parts[4][0] != '"':
                    key = (parts[2], parts[3])
                    if key != last_key:
                        last_key, last_chains, last_sets = self.table_of(key)
                        rule_prefix = ""
                    if last_key:
                        name = parts[4]
                        c = last_chains.get(name)
                        if c is None:
                            t = self.rs.tables[key]
                            last_chains[name] = NftChain(name, t.name, t.family, source=self.source, line=i + 1,
                                                         reader=self.reader)
                        elif not c.declared:
                            c.declared = True
                            c.line = i + 1
                        i += 1
                        continue
            elif kind == "elem":
                parts = line.split(" ", 5)
                if len(parts) == 6:
                    key = (parts[2], parts[3])
                    if key != last_key:
                        last_key, last_chains, last_sets = self.table_of(key)
                        rule_prefix = ""
                    s_ = last_sets.get(parts[4])
                    rest = parts[5]
                    if s_ is not None and rest[:1] == "{" and rest.rstrip()[-1:] == "}" and rest.count("{") == 1:
                        s_._chunks.append(("add", i + 1, (len(line) - len(rest) + 1, rest)))
                        s_._elements = None
                        i += 1
                        continue
            return self.statement(i)
        return i

    def table_of(self, key: tuple[str, str]) -> tuple[tuple, dict, dict]:
        """``(key, chains, sets)`` of the table ``key`` (family, name), or ``((), {}, {})`` if there is none yet."""
        t = self.rs.tables.get(key)
        return (key, t.chains, t.sets) if t is not None else ((), {}, {})

    def stop_if_no_nft(self, i: int) -> bool:
        """Most lines up to line ``i`` were no nft statements: say so, and stop reading."""
        if self.bad_lines > 20 and self.bad_lines * 2 > i:
            self.diag("error", "most lines so far are no nftables statements: stopped reading", i, 0, 0,
                      "expected the output of `nft list ruleset` (or `nft -j list ruleset`); is this another "
                      "command's output?")
            return True
        return False

    # -- one statement (the slow path)

    def gather(self, i: int, text: str) -> tuple[str, int]:
        """``text`` (from line ``i``) with the following lines while its braces are open or it ends with
        a backslash; returns the text and the last line index used."""
        j = i
        depth = brace_depth(text)
        if depth <= 0 and not text.endswith("\\"):
            return text, i
        parts = [text]
        lines = self.lines
        n = len(lines)
        while (depth > 0 or parts[-1].endswith("\\")) and j + 1 < n:
            nxt = lines[j + 1]
            if starts_statement(nxt):
                break  # an unclosed "{" does not swallow the commands after it: reported where it is
            j += 1
            if parts[-1].endswith("\\"):
                parts[-1] = parts[-1][:-1] + " " + nxt.strip()
            else:
                parts.append(nxt)
            depth += brace_depth(nxt)
        return "\n".join(parts), j

    def gather_elements(self, i: int, s: str, col: int) -> tuple[str | None, int]:
        """A set block's ``elements = { ... }`` over its lines. A line ``}`` indented less than the
        ``elements`` line closes the set, not the list: lines were elided or cut (said, and read as
        far as they go). None: not this shape (left to pieces())."""
        lines = self.lines
        depth = brace_depth(s)
        parts = [s]
        j = i
        indent = col - 1
        while depth > 0 and j + 1 < len(lines):
            nxt = lines[j + 1]
            st = nxt.strip()
            if starts_statement(nxt) or (st == "}" and len(nxt) - len(nxt.lstrip()) < indent):
                self.diag("warning", "the element list is not closed: lines elided or cut here?", j + 2,
                          len(nxt) - len(nxt.lstrip()) + 1, len(st), HINT_FULL)
                self.note(f"{self.source}: an element list is incomplete (line {i + 1})")
                parts.append("}")
                return "\n".join(parts), j
            parts.append(nxt)
            depth += brace_depth(nxt)
            j += 1
        text = "\n".join(parts)
        if depth != 0 or not text.endswith("}"):
            return None, i
        return text, j

    def statement(self, i: int) -> int:
        """Read the statement(s) starting at line ``i``; returns the next line index."""
        line = self.lines[i]
        s = line.strip()
        if not s:
            return i + 1
        if s[0] == "#" or s.startswith("//"):
            self.comment_line(i, s)
            return i + 1
        if s in ELISION or (s.endswith("...") and len(s.split()) <= 2 and not s.startswith(("add", "table"))):
            self.diag("warning", "lines elided here ('...'): the input is incomplete", i + 1, line.find(s[0]) + 1,
                      len(s), HINT_FULL)
            self.note(f"{self.source}: lines are elided (line {i + 1}): what is not shown is not traced")
            return i + 1
        if PROMPT.match(s) or PROMPT_ALONE.match(s):
            self.diag("note", "a shell prompt line, skipped", i + 1, line.find(s[0]) + 1, len(s),
                      "pass the command's output only (`nft list ruleset > ruleset.nft` on the node)")
            self.note(f"{self.source}: shell prompt lines skipped")
            return i + 1
        col = line.find(s[0]) + 1
        if not self.stack and s.split(None, 1)[0] in VERBS:
            text, last = self.gather(i, s)
            body, _ = strip_comment(text) if "#" in text else (text, None)
            self.command(i, col, body.strip())
            return last + 1
        if self.stack and self.stack[-1][0] is SET and s.startswith("elements"):
            # a wrapped element list (10,000 lines for a big map): gathered by line, not by character
            elements, last = self.gather_elements(i, s, col)
            if elements is not None:
                self.set_prop(i + 1, col, elements)
                return last + 1
        return self.pieces(i, col, s) + 1

    def comment_line(self, i: int, s: str) -> None:
        m = UNLOADABLE_RULE.match(s)
        if m and not self.stack:
            self.note(f"{self.source}: rules nft cannot load, written as comments by kptrace, are read")
            self.command(i, s.find(m.group(2)) + 1, m.group(2))
            return
        m = re.match(r"#\s*Warning:\s*table\s+(\S+)\s+(\S+)\s+is managed by iptables-nft", s)
        if m:
            self.note(f"table {m.group(1)} {m.group(2)} is managed by iptables-nft: matches nft cannot show are "
                      "`xt` expressions (kept, marked assumed); its iptables-save output is the faithful form")
        elif PROMPT.match(s):
            self.diag("note", "a shell prompt line, skipped", i + 1, 1, len(s),
                      "pass the command's output only (`nft list ruleset > ruleset.nft` on the node)")
            self.note(f"{self.source}: shell prompt lines skipped")

    # -- the end

    def finish(self) -> None:
        if self.stack:
            last_line = len(self.lines)
            while last_line > 1 and not self.lines[last_line - 1].strip():
                last_line -= 1
            cut_mid_line = not self.text.endswith("\n")
            inner = self.stack[-1]
            if cut_mid_line and inner[0] is CHAIN and inner[1]._entries:
                e = inner[1]._entries[-1]
                if self.reader.entry(e)[0] == last_line:
                    inner[1]._entries.pop()
                    inner[1]._changed()
                    self.diag("warning", "the last line is cut off: it is not read", last_line, 1,
                              len(self.lines[last_line - 1]), HINT_FULL)
            opened = ", ".join(f"{k} {self.block_name(k, o)} (line {ln})" for k, o, ln, c in self.stack
                               if c or k is not TABLE)
            for kind, obj, ln, c in reversed(self.stack):
                if kind is TABLE and c == 0:
                    continue  # a placeholder table: there was no "{" to close
                self.diag("error", f"{kind} {self.block_name(kind, obj)} is not closed: the input ends inside it",
                          ln, c, len(kind), "the listing looks cut off; " + HINT_FULL +
                          ", or pass --lenient to read what is complete")
            self.note(f"{self.source}: the input ends inside {opened}: read what is complete")
        for t in self.rs.tables.values():
            for s in t.sets.values():
                if not s.declared and s._chunks:
                    self.diag("warning", f"elements for set {s.name}, which this input does not add", s.line, 0, 0,
                              f"nft -f needs `add set|map {t.family} {t.name} {s.name} {{ type ...; }}` first; "
                              "its type is unknown")
                if s.data_type == ("?",):
                    s.data_type = ("verdict",) if any("goto" in str(p) or "jump" in str(p) or "drop" in str(p)
                                                      for _, _, p in s._chunks) else None
            for c in t.chains.values():
                if not c.declared and not t.placeholder:
                    self.diag("warning", f"rules for chain {c.name}, which this input does not add", c.line, 0, 0,
                              f"nft -f needs `add chain {t.family} {t.name} {c.name}` first; kptrace creates it")

    @staticmethod
    def block_name(kind: str, obj: Any) -> str:
        if kind is TABLE:
            return f"{obj.family} {obj.name}"
        if kind is OBJECT:
            return obj[1]
        return obj.name

