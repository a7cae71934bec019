"""Parse ``nft -j list ruleset`` (libnftables-json(5)) into the same model as the text forms.

Shape::

    {"nftables": [{"metainfo": {...}}, {"table": {"family", "name", "handle"}},
                  {"chain": {"family", "table", "name", "handle", ["type", "hook", "prio", "policy", "dev"]}},
                  {"set"|"map": {"family", "table", "name", "type", ["map"], ["flags"], ["timeout"], ["elem"]}},
                  {"rule": {"family", "table", "chain", "handle", ["comment"], "expr": [STATEMENT, ...]}}, ...]}

Also the command form that ``nft -j -f`` takes (``{"add": {"rule": {...}}}``, ``flush``, ``delete``).
JSON comes through the standard library; a rule's statements are converted on first use (as with
text: converting every rule of a 10k-Service ruleset up front costs more than ``json.loads``), by
:mod:`.json_statements`. Statements kptrace does not model are kept as :class:`Unknown` with their JSON
(``json:{...}``).

``parse_nft_json(j)`` and ``parse_nft_text(t)`` of one ruleset give equal models
(:func:`kptrace.model.nft.canonical_view`).
"""

from __future__ import annotations

import gc
import json
import re
from typing import Any

from kptrace.errors import Diagnostic, ParseError
from kptrace.model.nft import Counter, NftChain, NftRule, NftRuleset, NftSet, NftTable, format_rule
from kptrace.parsers.nft.grammar import nft_grammar
from kptrace.parsers.nft.json_statements import BadJson, Converter, need_int, need_name, need_names

__all__ = ["parse_nft_json"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)
_HINT = "run `nft -j list ruleset > ruleset.json` on the node and pass the whole file"
_PROMPT = re.compile(r"^\s*(?:[\w.-]+@[\w.-]+(?::\S*)?\s*)?[$#]")
# the items of nftables[] that declare an object (or name one in the command form)
_OBJECTS = ("table", "chain", "set", "map", "element", "rule", "flowtable", "counter", "quota", "ct helper", "limit",
            "ct timeout", "ct expectation", "secmark", "synproxy")


class _JsonReader:
    """Converts rules and elements on first use."""

    __slots__ = ("conv", "source", "diagnostics", "_seen")

    def __init__(self, conv: Converter, source: str, diagnostics: list) -> None:
        self.conv = conv
        self.source = source
        self.diagnostics = diagnostics
        self._seen: set = set()

    def handle(self, entry: dict) -> int | None:
        return entry.get("handle")

    def text(self, entry: dict) -> tuple[int, str]:
        exprs, comment = self._stmts(entry)
        return 0, format_rule(tuple(exprs), comment)

    def _stmts(self, entry: dict, number: int | None = None) -> tuple[list, str | None]:
        exprs, problems = self.conv.rule(entry.get("expr", []), entry.get("family", "ip"))
        handle = entry.get("handle")
        where = f"handle {handle}" if handle is not None else f"rule {number}" if number else "a rule"
        for p in problems:
            key = (entry.get("chain"), handle, number, p)
            if key not in self._seen:
                self._seen.add(key)
                self.diagnostics.append(Diagnostic(
                    "warning", f"chain {entry.get('chain')}, {where}: {p}", self.source, 0, 0,
                    json.dumps(entry.get("expr", []))[:300], 0,
                    "kept as written; a decision that rests on it is marked assumed"))
        return exprs, entry.get("comment")

    def parse(self, chain: NftChain, number: int, entry: dict) -> NftRule:
        exprs, comment = self._stmts(entry, number)
        counters = None
        for s in exprs:
            if type(s) is Counter and s.packets is not None:
                counters = (s.packets, s.bytes)
                break
        t = tuple(exprs)
        return _new(NftRule, (chain.family, chain.table, chain.name, number, t, format_rule(t, comment), self.source, 0,
                              entry.get("handle"), counters, comment))

    def elements(self, nset: NftSet, line: int, payload: list, op: str = "add") -> list:
        out = []
        conv = self.conv
        for x in payload:
            try:
                out.append(conv.element(x))
            except (BadJson, KeyError, TypeError, ValueError) as e:
                self.diagnostics.append(Diagnostic(
                    "warning", f"set {nset.name}: cannot read element {json.dumps(x)[:80]} ({e})", self.source, 0, 0,
                    "", 0, "the element is skipped"))
        return out


def _strip_prompts(text: str, source: str, diags: list, notes: list) -> tuple[str, int]:
    """Drop shell prompt lines (``$ sudo nft -j list ruleset``) and other non-JSON lines around the
    JSON document; returns the JSON text and the number of lines dropped before it."""
    lines = text.split("\n")
    start = 0
    while start < len(lines) and not lines[start].lstrip().startswith(("{", "[")):
        if lines[start].strip():
            if _PROMPT.match(lines[start]):
                diags.append(Diagnostic("note", "a shell prompt line, skipped", source, start + 1, 1, lines[start],
                                        len(lines[start].strip()), "pass the command's output only"))
                notes.append(f"{source}: shell prompt lines skipped")
            else:
                diags.append(Diagnostic("warning", "not JSON: skipped", source, start + 1, 1, lines[start],
                                        len(lines[start].strip()), _HINT))
        start += 1
    end = len(lines)
    while end > start and (not lines[end - 1].strip() or _PROMPT.match(lines[end - 1])):
        if lines[end - 1].strip():
            diags.append(Diagnostic("note", "a shell prompt line, skipped", source, end, 1, lines[end - 1],
                                    len(lines[end - 1].strip()), "pass the command's output only"))
        end -= 1
    return "\n".join(lines[start:end]), start


_ITEMS_START = re.compile(r'\s*\{\s*"nftables"\s*:\s*\[')


def _complete_items(body: str) -> list:
    """The items of a cut-off ``{"nftables": [...`` document that are complete."""
    m = _ITEMS_START.match(body)
    if m is None:
        return []
    dec = json.JSONDecoder()
    pos = m.end()
    items = []
    n = len(body)
    while pos < n:
        while pos < n and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or body[pos] == "]":
            break
        try:
            item, pos = dec.raw_decode(body, pos)
        except json.JSONDecodeError:
            break
        items.append(item)
    return items


def parse_nft_json(text: str, source: str, *, lenient: bool = False) -> NftRuleset:
    """Read ``nft -j list ruleset`` output (or the JSON command form). Rules are converted on first use.

    Raises :class:`ParseError` for input that is not JSON or not an nftables document (where it
    breaks, with the line quoted and a hint), unless ``lenient`` (then what could be read is kept).

    >>> rs = parse_nft_json('{"nftables": [{"table": {"family": "ip", "name": "t"}}, '
    ...     '{"chain": {"family": "ip", "table": "t", "name": "c"}}, {"rule": {"family": "ip", "table": "t", '
    ...     '"chain": "c", "expr": [{"drop": null}]}}]}', "x.json")
    >>> rs.chain("ip", "t", "c").rule_at(0).exprs
    (Verdict(kind='drop', target=None, reject_with=None),)
    """
    # json.loads of a 10k-Service ruleset makes millions of objects and no cycles; the cyclic GC's
    # collections during it and the load cost ~40% of the time (measured on 2,000 Services: 1.0 -> 0.6 s).
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _JsonLoader(source, lenient).run(text)
    finally:
        if gc_was_on:
            gc.enable()



class _JsonLoader:
    """One pass over the items of ``nftables[]``: tables, chains and sets are built, rules and elements filed
    (read on first use by :class:`_JsonReader`). An item that cannot be read is reported and skipped."""

    def __init__(self, source: str, lenient: bool) -> None:
        self.source = source
        self.lenient = lenient
        self.rs = NftRuleset(sources=[source])
        self.diags = self.rs.diagnostics
        self.g = nft_grammar()
        self.reader = _JsonReader(Converter(self.g), source, self.diags)

    def run(self, text: str) -> NftRuleset:
        items = self.items(text)
        if items is None:
            return self.rs
        for index, item in enumerate(items):
            try:
                self.item(item)
            except (BadJson, KeyError, TypeError, ValueError, AttributeError) as e:
                msg = str(e) if isinstance(e, BadJson) else f"missing or malformed field {e}"
                self.diags.append(Diagnostic("warning" if self.lenient else "error", f"nftables[{index}]: {msg}",
                                             self.source, 0, 0, json.dumps(item)[:200], 0,
                                             "the item is skipped; " + _HINT))
        if not self.rs.tables and not any(d.severity == "error" for d in self.diags):
            self.diags.append(Diagnostic(
                "error", "no nftables table in this JSON", self.source, 1, 0, "", 0,
                "the node has no nftables ruleset, or this is another command's output; " + _HINT))
        if not self.lenient and any(d.severity == "error" for d in self.diags):
            raise ParseError(self.diags)
        return self.rs

    def items(self, text: str) -> list | None:
        """The items of ``{"nftables": [...]}``; with ``lenient``, those complete before where the JSON
        breaks, and None (said) when it is no nft document. Raises :class:`ParseError` otherwise."""
        rs, diags, source = self.rs, self.diags, self.source
        body, skipped = _strip_prompts(text.lstrip("\ufeff"), source, diags, rs.notes)
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as e:
            lines = body.split("\n")
            bad = lines[e.lineno - 1] if 0 < e.lineno <= len(lines) else ""
            cut = not body.rstrip().endswith("}")
            hint = ("the JSON ends early: cut off? " if cut else "") + _HINT
            d = Diagnostic("error", f"not valid JSON: {e.msg}", source, e.lineno + skipped, e.colno, bad, 1, hint)
            if not self.lenient:
                raise ParseError([*diags, d]) from None
            diags.append(d)
            complete = _complete_items(body)
            rs.notes.append(f"{source}: not valid JSON (line {e.lineno + skipped}); "
                            + (f"read the {len(complete)} complete items before that" if complete else "nothing read"))
            doc = {"nftables": complete}
        items = doc.get("nftables") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            d = Diagnostic("error", 'not an nft -j document: expected {"nftables": [...]}', source, 1 + skipped, 1,
                           body.split("\n", 1)[0][:200], 1, _HINT)
            if self.lenient:
                diags.append(d)
                return None
            raise ParseError([*diags, d])
        return items

    def item(self, item: Any) -> None:
        if not isinstance(item, dict) or len(item) != 1:
            raise BadJson("each item of nftables[] is an object with one key")
        (k, b), = item.items()
        if k == "metainfo":
            return
        if k in ("add", "create", "insert", "replace"):
            (kind, body), = b.items()
            self.add(kind, body, k)
        elif k in ("flush", "delete", "destroy"):
            (kind, body), = b.items()
            self.remove(k, kind, body)
        elif k in _OBJECTS:
            self.add(k, b)
        else:
            raise BadJson(f"unknown item {k!r}")

    def table(self, family: str, name: str) -> NftTable:
        t = self.rs.tables.get((family, name))
        if t is None:
            t = NftTable(family, name, source=self.source)
            self.rs.tables[(family, name)] = t
        return t

    # -- add: an object as listed, or an add/create/insert/replace command

    def add(self, kind: str, b: dict, verb: str = "add") -> None:
        if not isinstance(b, dict):
            raise BadJson(f"the {kind} is not an object")
        g = self.g
        family = need_name(b.get("family", g.default_family), "family")
        if family not in g.families:
            raise BadJson(f"unknown family {family!r}")
        for k in ("name", "table", "chain", "hook", "policy", "type" if kind == "chain" else ""):
            if k in b and k:
                need_name(b[k], k)
        for k in ("handle", "size", "timeout"):
            if k in b:
                need_int(b[k], k)
        if kind == "table":
            self.add_table(family, b)
        elif kind == "chain":
            self.add_chain(self.table(family, b["table"]), b)
        elif kind in ("set", "map"):
            self.add_set(self.table(family, b["table"]), kind, b)
        elif kind == "element":
            self.add_elements(self.table(family, b["table"]), b, verb)
        elif kind == "rule":
            self.add_rule(self.table(family, b["table"]), b, verb)
        else:
            t = self.table(family, b["table"])
            t.objects.append((kind, b.get("name", ""), [json.dumps(b)], 0))
            self.rs.notes.append(f"{family} {t.name}: {kind} {b.get('name', '')} is kept but not modelled")

    def add_table(self, family: str, b: dict) -> None:
        t = self.table(family, b["name"])
        t.handle = b.get("handle")
        if "comment" in b:
            t.comment = b["comment"]
        if "flags" in b:
            f = b["flags"]
            t.flags = tuple([f] if isinstance(f, str) else f)

    def add_chain(self, t: NftTable, b: dict) -> None:
        c = t.chains.get(b["name"])
        if c is None:
            c = NftChain(b["name"], t.name, t.family, source=self.source, line=0, reader=self.reader)
            t.chains[b["name"]] = c
        c.handle = b.get("handle")
        if "hook" in b:
            c.type = b.get("type", "filter")
            c.hook = b["hook"]
            prio = b.get("prio", 0)
            if isinstance(prio, str):
                prio = self.g.priority(t.family, prio) or 0
            c.priority = need_int(prio, "prio")
            c.policy = b.get("policy", "accept")
            dev = b.get("dev")
            c.device = ",".join(dev) if isinstance(dev, list) else dev
        if "comment" in b:
            c.comment = b["comment"]

    def add_set(self, t: NftTable, kind: str, b: dict) -> None:
        s = t.sets.get(b["name"])
        if s is None:
            s = NftSet(b["name"], t.name, t.family, source=self.source, line=0, reader=self.reader)
            t.sets[b["name"]] = s
        s.key_type = need_names(b.get("type", []), "set type")
        if kind == "map":
            s.data_type = need_names(b.get("map", "verdict"), "map type")
        s.flags = tuple(sorted(need_names(b.get("flags", []), "set flags")))
        s.timeout = b.get("timeout")
        s.size = b.get("size")
        s.comment = b.get("comment")
        s.handle = b.get("handle")
        s.extra = tuple((k, str(b[k])) for k in ("policy", "gc-interval") if k in b)
        if "elem" in b:
            if not isinstance(b["elem"], list):
                raise BadJson("elem must be a list")
            s._chunks.append(("add", 0, b["elem"]))
            s._changed()

    def add_elements(self, t: NftTable, b: dict, verb: str) -> None:
        s = t.sets.get(b["name"])
        if s is None:
            s = NftSet(b["name"], t.name, t.family, source=self.source, line=0, reader=self.reader, declared=False)
            t.sets[b["name"]] = s
        elem = b.get("elem", [])
        if not isinstance(elem, list):
            elem = [elem]
        s._chunks.append(("delete" if verb in ("delete", "destroy") else "add", 0, elem))
        s._changed()

    def add_rule(self, t: NftTable, b: dict, verb: str) -> None:
        c = t.chains.get(b["chain"])
        if c is None:
            c = NftChain(b["chain"], t.name, t.family, source=self.source, line=0, reader=self.reader, declared=False)
            t.chains[b["chain"]] = c
        if not isinstance(b.get("expr", []), list):
            raise BadJson("a rule's expr must be a list")
        if verb == "insert":
            c._entries.insert(0, b)
        else:
            c._entries.append(b)
        c._changed()

    # -- remove: a flush, delete or destroy command

    def remove(self, verb: str, kind: str, body: dict) -> None:
        if kind == "ruleset":
            self.rs.tables.clear()
            return
        family = body.get("family", self.g.default_family)
        if kind == "table":
            if verb == "flush":
                for chain in self.table(family, body["name"]).chains.values():
                    chain._entries.clear()
                    chain._changed()
            else:
                self.rs.tables.pop((family, body["name"]), None)
            return
        t = self.rs.tables.get((family, body.get("table", "")))
        if t is None:
            return
        if kind == "element":
            self.add("element", body, verb)
        elif kind == "chain":
            if verb != "flush":
                t.chains.pop(body.get("name", ""), None)
            elif (c := t.chains.get(body.get("name", ""))) is not None:
                c._entries.clear()
                c._changed()
        elif kind in ("set", "map"):
            if verb != "flush":
                t.sets.pop(body.get("name", ""), None)
            elif (s := t.sets.get(body.get("name", ""))) is not None:
                s._chunks.append(("flush", 0, []))
                s._changed()
        elif kind == "rule" and (c := t.chains.get(body.get("chain", ""))) is not None:
            c._entries[:] = [e for e in c._entries if e.get("handle") != body.get("handle")]
            c._changed()
