"""Parse ``nft -j list ruleset`` (libnftables-json(5)) into the same model as the text forms.

Shape::

    {"nftables": [{"metainfo": {...}}, {"table": {"family", "name", "handle"}},
                  {"chain": {"family", "table", "name", "handle", ["type", "hook", "prio", "policy", "dev"]}},
                  {"set"|"map": {"family", "table", "name", "type", ["map"], ["flags"], ["timeout"], ["elem"]}},
                  {"rule": {"family", "table", "chain", "handle", ["comment"], "expr": [STATEMENT, ...]}}, ...]}

Also the command form that ``nft -j -f`` takes (``{"add": {"rule": {...}}}``, ``flush``, ``delete``).
JSON comes through the standard library; a rule's statements are converted on first use (as with
text: converting every rule of a 10k-Service ruleset up front costs more than ``json.loads``).
Statements kptrace does not model are kept as :class:`Unknown` with their JSON (``json:{...}``).

Spellings are made canonical as in the text parser (numbers in decimal, ``{"&": [...]}`` as
:class:`Binop`, a default ``reject`` as ``reject_with`` None, the ``in`` operator for bit tests), so that
``parse_nft_json(j)`` and ``parse_nft_text(t)`` of one ruleset give equal models
(:func:`kptrace.model.nft.canonical_view`).
"""

from __future__ import annotations

import gc
import json
import re
from typing import Any

from kptrace.model.addr import is_uint
from kptrace.errors import Diagnostic, ParseError
from kptrace.model.nft import (
    PROTOCOL_SELECTORS, selector_name, AnonMap, AnonSet, Binop, Concat, Counter, Ct, Fib, Hash, Limit, Log, Lookup, Mangle, Match, Meta, Nat,
    NftChain, NftRule, NftRuleset, NftSet, NftTable, Notrack, Numgen, Payload, SetRef, SetUpdate,
    Unknown, Value, Verdict, Vmap, Xt, format_rule,
)
from kptrace.parsers.nft_text import NftGrammar, canonical_atom, element_order, nft_grammar

__all__ = ["parse_nft_json"]

_new = tuple.__new__
_HINT = "run `nft -j list ruleset > ruleset.json` on the node and pass the whole file"
_PROMPT = re.compile(r"^\s*(?:[\w.-]+@[\w.-]+(?::\S*)?\s*)?[$#]")
_BINOPS = {"&", "|", "^", "<<", ">>"}
_VERDICT_KEYS = ("accept", "drop", "continue", "return", "jump", "goto", "reject", "queue")


class _Bad(Exception):
    pass


def _atom(v: Any) -> Any:
    """A JSON scalar as a canonical atom (str, Prefix or Range)."""
    if isinstance(v, bool):
        return "exists" if v else "missing"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, str):
        return canonical_atom(v) if v else v
    if isinstance(v, list):
        return ",".join(sorted(str(_atom(x)) for x in v))
    if isinstance(v, dict):
        if "prefix" in v:
            p = v["prefix"]
            a = canonical_atom(f"{_str(p['addr'])}/{p['len']}")
            return a
        if "range" in v:
            lo, hi = v["range"]
            return canonical_atom(f"{_str(_atom(lo))}-{_str(_atom(hi))}")
    raise _Bad(f"not a value: {json.dumps(v)[:80]}")


def _str(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _name(v: Any, what: str) -> str:
    """A field that must be a string (a name, a key, a keyword)."""
    if not isinstance(v, str) or not v:
        raise _Bad(f"{what} must be a non-empty string, not {json.dumps(v)[:40]}")
    return v


def _names(v: Any, what: str) -> tuple[str, ...]:
    """A field that is a string or a list of strings."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise _Bad(f"{what} must be a string or a list of strings, not {json.dumps(v)[:40]}")
    return tuple(items)


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{what} must be a number, not {json.dumps(v)[:40]}")
    return v


class _Converter:
    """JSON statements and expressions -> model values."""

    def __init__(self, g: NftGrammar) -> None:
        self.g = g

    def expr(self, v: Any, left: Any = None) -> Any:
        if not isinstance(v, dict):
            if isinstance(v, str) and v.startswith("@"):
                return _new(SetRef, (v[1:],))
            a = _atom(v)
            if type(a) is str and is_uint(a) and selector_name(left) in PROTOCOL_SELECTORS:
                a = self.g.protocol_names.get(a, a)
            return _new(Value, (a,)) if type(a) is str else a
        if len(v) != 1:
            raise _Bad(f"an expression object has one key: {json.dumps(v)[:80]}")
        (k, b), = v.items()
        if k == "payload":
            if "protocol" not in b:
                raise _Bad("raw payload expressions are not modelled")
            return _new(Payload, (_name(b["protocol"], "payload protocol"), _name(b["field"], "payload field")))
        if k == "meta":
            return _new(Meta, (_name(b["key"], "meta key"),))
        if k == "ct":
            key = _name(b["key"], "ct key")
            direction = _name(b["dir"], "ct dir") if "dir" in b else None
            if direction and b.get("family") and key in ("saddr", "daddr"):
                key = f"{b['family']} {key}"
            return _new(Ct, (key, direction))
        if k == "fib":
            return _new(Fib, (_names(b.get("flags", []), "fib flags"), _name(b["result"], "fib result")))
        if k == "numgen":
            return _new(Numgen, (_name(b["mode"], "numgen mode"), _int(b["mod"], "numgen mod"),
                                 _int(b.get("offset", 0), "numgen offset")))
        if k in ("jhash", "symhash"):
            inner = self.expr(b["expr"]) if "expr" in b else None
            seed = _int(b["seed"], "seed") if "seed" in b else None
            return _new(Hash, (k, inner, _int(b["mod"], "mod"), seed, _int(b.get("offset", 0), "offset")))
        if k == "concat":
            return _new(Concat, (tuple(self.expr(x, left) for x in b),))
        if k in _BINOPS:
            lhs, rhs = b
            left_e = self.expr(lhs)
            return _new(Binop, (k, left_e, self.expr(rhs, left_e)))
        if k in ("prefix", "range"):
            return _atom(v)
        if k == "set":
            items = b if isinstance(b, list) else [b]
            pairs = [self.element(x, left) for x in items]
            if any(val is not None for _, val, _ in pairs):
                return _new(AnonMap, (tuple(sorted(((key, val) for key, val, _ in pairs), key=lambda p: element_order(p[0]))),))
            return _new(AnonSet, (tuple(sorted((key for key, _, _ in pairs), key=element_order)),))
        if k == "map":
            return _new(Lookup, (self.expr(b["key"]), self.expr(b["data"])))
        if k == "elem":
            return self.expr(b["val"], left)
        raise _Bad(f"the {k!r} expression is not modelled")

    def key(self, v: Any, left: Any = None) -> Any:
        """An element key or value: str, Prefix, Range or tuple (concatenation)."""
        if isinstance(v, dict):
            if "concat" in v:
                return tuple(self.key(x) for x in v["concat"])
            if "elem" in v:
                return self.key(v["elem"]["val"], left)
        a = _atom(v)
        if type(a) is str and is_uint(a) and selector_name(left) in PROTOCOL_SELECTORS:
            a = self.g.protocol_names.get(a, a)
        return a

    def element(self, x: Any, left: Any = None) -> tuple[Any, Any, list]:
        """``elem`` item -> (key, value or None, extras)."""
        extras: list = []
        value = None
        if isinstance(x, list) and len(x) == 2:
            kx, vx = x
            value = self.verdict(vx) if isinstance(vx, dict) and any(k in vx for k in _VERDICT_KEYS) else self.data(vx)
        else:
            kx = x
        if isinstance(kx, dict) and "elem" in kx:
            e = kx["elem"]
            for name in ("timeout", "expires", "comment"):
                if name in e:
                    extras.append((name, str(e[name]) if name == "comment" else f"{e[name]}s"))
            kx = e["val"]
        return self.key(kx, left), value, extras

    def data(self, v: Any) -> tuple:
        k = self.key(v)
        return k if type(k) is tuple else (k,)

    def verdict(self, v: dict) -> Verdict:
        (k, b), = v.items()
        if k in ("jump", "goto"):
            return _new(Verdict, (k, _name(b["target"], "jump target"), None))
        return _new(Verdict, (k, None, None))

    def statement(self, st: Any, family: str) -> Any:
        if not isinstance(st, dict) or len(st) != 1:
            raise _Bad("a statement is an object with one key")
        (k, b), = st.items()
        if k == "match":
            left = self.expr(b["left"])
            op = b.get("op", "==")
            right = self.expr(b["right"], left)
            if type(right) is AnonSet and len(right.elements) == 1 and type(right.elements[0]) is not tuple:
                e = right.elements[0]
                right = _new(Value, (e,)) if type(e) is str else e
            return _new(Match, (left, op, right))
        if k in _VERDICT_KEYS:
            if k in ("jump", "goto"):
                return _new(Verdict, (k, _name(b["target"], "jump target"), None))
            if k == "reject":
                how = None
                if b:
                    typ = b.get("type")
                    how = "tcp reset" if typ == "tcp reset" else f"{typ} {b.get('expr', 'port-unreachable')}"
                    if how == self.g.reject_default.get(family):
                        how = None
                return _new(Verdict, ("reject", None, how))
            if k == "queue":
                opts = " ".join(f"{x} {y}" for x, y in (b or {}).items()) or None
                return _new(Verdict, ("queue", opts, None))
            return _new(Verdict, (k, None, None))
        if k == "vmap":
            return _new(Vmap, (self.expr(b["key"]), self.expr(b["data"])))
        if k == "mangle":
            key = self.expr(b["key"])
            return _new(Mangle, (key, self.expr(b["value"], key)))
        if k in ("dnat", "snat", "masquerade", "redirect"):
            b = b or {}
            flags = list(_names(b.get("flags", []), "nat flags"))
            type_flags = b.get("type_flags", [])
            if "prefix" in (type_flags if isinstance(type_flags, list) else [type_flags]):
                flags.insert(0, "prefix")
            order = self.g.nat_flags
            flags.sort(key=lambda f: order.index(f) if f in order else len(order))
            nat_family = b.get("family")
            if nat_family is None and family in ("ip", "ip6"):
                nat_family = family
            addr = port = map_key = None
            if "addr" in b:
                a = b["addr"]
                if isinstance(a, dict) and "map" in a:
                    map_key = self.expr(a["map"]["key"])
                    addr = self.expr(a["map"]["data"])
                else:
                    addr = self.expr(a)
            if "port" in b:
                port = self.expr(b["port"])
            return _new(Nat, (k, nat_family if k in ("dnat", "snat") else None, addr, port, tuple(flags), map_key))
        if k == "set":
            op = b["op"]
            elem = b["elem"]
            timeout = None
            if isinstance(elem, dict) and "elem" in elem:
                timeout = elem["elem"].get("timeout")
                elem = elem["elem"]["val"]
            return _new(SetUpdate, (_name(op, "set op"), _name(b["set"], "set name").lstrip("@"), self.expr(elem),
                                    timeout))
        if k == "counter":
            if isinstance(b, dict):
                return _new(Counter, (_int(b.get("packets", 0), "packets") if "packets" in b else None,
                                      _int(b.get("bytes", 0), "bytes") if "bytes" in b else None))
            if b is None:
                return _new(Counter, (None, None))
            raise _Bad("named counters are not modelled")
        if k == "log":
            b = b or {}
            options = tuple((x, ",".join(y) if isinstance(y, list) else str(y)) for x, y in b.items()
                            if x not in ("prefix", "level"))
            prefix = _name(b["prefix"], "log prefix") if b.get("prefix") else None
            level = _name(b["level"], "log level") if "level" in b else None
            return _new(Log, (prefix, level, options))
        if k == "limit":
            unit = b.get("rate_unit", "packets")
            burst = b.get("burst")
            default = self.g.limit_default_burst.get("packets" if unit == "packets" else "bytes")
            if burst == default:
                burst = None
            return _new(Limit, (_int(b["rate"], "rate"), _name(b.get("per", "second"), "per"), burst,
                                _name(unit, "rate unit"), bool(b.get("inv", False))))
        if k == "notrack":
            return _new(Notrack, ("notrack",))
        if k == "xt":
            return _new(Xt, (_name(b.get("type", "match"), "xt type"), _name(b.get("name", "?"), "xt name")))
        raise _Bad(f"the {k!r} statement is not modelled")

    def rule(self, exprs: list, family: str) -> tuple[list, list[str]]:
        out = []
        problems = []
        for st in exprs:
            try:
                out.append(self.statement(st, family))
            except (_Bad, KeyError, TypeError, ValueError, AttributeError) as e:
                msg = str(e) if isinstance(e, _Bad) else f"cannot read {json.dumps(st)[:120]}"
                problems.append(msg)
                out.append(_new(Unknown, ("json:" + json.dumps(st, sort_keys=True), msg)))
        return out, problems


class _JsonReader:
    """Converts rules and elements on first use."""

    __slots__ = ("conv", "source", "diagnostics", "_seen")

    def __init__(self, conv: _Converter, source: str, diagnostics: list) -> None:
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
            except (_Bad, KeyError, TypeError, ValueError) as e:
                self.diagnostics.append(Diagnostic("warning", f"set {nset.name}: cannot read element {json.dumps(x)[:80]} ({e})",
                                                   self.source, 0, 0, "", 0, "the element is skipped"))
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
        return _parse(text, source, lenient)
    finally:
        if gc_was_on:
            gc.enable()


def _parse(text: str, source: str, lenient: bool) -> NftRuleset:
    rs = NftRuleset(sources=[source])
    diags = rs.diagnostics
    body, skipped = _strip_prompts(text.lstrip("\ufeff"), source, diags, rs.notes)
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        lines = body.split("\n")
        bad = lines[e.lineno - 1] if 0 < e.lineno <= len(lines) else ""
        cut = not body.rstrip().endswith("}")
        hint = ("the JSON ends early: cut off? " if cut else "") + _HINT
        d = Diagnostic("error", f"not valid JSON: {e.msg}", source, e.lineno + skipped, e.colno, bad, 1, hint)
        if not lenient:
            raise ParseError([*diags, d]) from None
        diags.append(d)
        items = _complete_items(body)
        rs.notes.append(f"{source}: not valid JSON (line {e.lineno + skipped}); "
                        + (f"read the {len(items)} complete items before that" if items else "nothing read"))
        doc = {"nftables": items}
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        d = Diagnostic("error", 'not an nft -j document: expected {"nftables": [...]}', source, 1 + skipped, 1,
                       body.split("\n", 1)[0][:200], 1, _HINT)
        if lenient:
            diags.append(d)
            return rs
        raise ParseError([*diags, d])
    g = nft_grammar()
    conv = _Converter(g)
    reader = _JsonReader(conv, source, diags)

    def table(family: str, name: str) -> NftTable:
        t = rs.tables.get((family, name))
        if t is None:
            t = NftTable(family, name, source=source)
            rs.tables[(family, name)] = t
        return t

    def add(kind: str, b: dict, index: int, verb: str = "add") -> None:
        if not isinstance(b, dict):
            raise _Bad(f"the {kind} is not an object")
        family = _name(b.get("family", g.default_family), "family")
        if family not in g.families:
            raise _Bad(f"unknown family {family!r}")
        for k in ("name", "table", "chain", "hook", "policy", "comment", "type" if kind == "chain" else ""):
            if k in b and k:
                _name(b[k], k) if k != "comment" else _str(b[k])
        for k in ("handle", "size", "timeout"):
            if k in b:
                _int(b[k], k)
        if kind == "table":
            t = table(family, b["name"])
            t.handle = b.get("handle")
            if "comment" in b:
                t.comment = b["comment"]
            if "flags" in b:
                f = b["flags"]
                t.flags = tuple([f] if isinstance(f, str) else f)
            return
        t = table(family, b["table"])
        if kind == "chain":
            c = t.chains.get(b["name"])
            if c is None:
                c = NftChain(b["name"], t.name, family, source=source, line=0, reader=reader)
                t.chains[b["name"]] = c
            c.handle = b.get("handle")
            if "hook" in b:
                c.type = b.get("type", "filter")
                c.hook = b["hook"]
                prio = b.get("prio", 0)
                if isinstance(prio, str):
                    prio = g.priority(family, prio) or 0
                c.priority = _int(prio, "prio")
                c.policy = b.get("policy", "accept")
                dev = b.get("dev")
                c.device = ",".join(dev) if isinstance(dev, list) else dev
            if "comment" in b:
                c.comment = b["comment"]
            return
        if kind in ("set", "map"):
            s = t.sets.get(b["name"])
            if s is None:
                s = NftSet(b["name"], t.name, family, source=source, line=0, reader=reader)
                t.sets[b["name"]] = s
            s.key_type = _names(b.get("type", []), "set type")
            if kind == "map":
                s.data_type = _names(b.get("map", "verdict"), "map type")
            s.flags = tuple(sorted(_names(b.get("flags", []), "set flags")))
            s.timeout = b.get("timeout")
            s.size = b.get("size")
            s.comment = b.get("comment")
            s.handle = b.get("handle")
            s.extra = tuple((k, str(b[k])) for k in ("policy", "gc-interval") if k in b)
            if "elem" in b:
                if not isinstance(b["elem"], list):
                    raise _Bad("elem must be a list")
                s._chunks.append(("add", 0, b["elem"]))
                s._changed()
            return
        if kind == "element":
            s = t.sets.get(b["name"])
            if s is None:
                s = NftSet(b["name"], t.name, family, source=source, line=0, reader=reader, declared=False)
                t.sets[b["name"]] = s
            elem = b.get("elem", [])
            if not isinstance(elem, list):
                elem = [elem]
            s._chunks.append(("delete" if verb in ("delete", "destroy") else "add", 0, elem))
            s._changed()
            return
        if kind == "rule":
            c = t.chains.get(b["chain"])
            if c is None:
                c = NftChain(b["chain"], t.name, family, source=source, line=0, reader=reader, declared=False)
                t.chains[b["chain"]] = c
            if not isinstance(b.get("expr", []), list):
                raise _Bad("a rule's expr must be a list")
            if verb == "insert":
                c._entries.insert(0, b)
            else:
                c._entries.append(b)
            c._changed()
            return
        t.objects.append((kind, b.get("name", ""), [json.dumps(b)], 0))
        rs.notes.append(f"{family} {t.name}: {kind} {b.get('name', '')} is kept but not modelled")

    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict) or len(item) != 1:
                raise _Bad("each item of nftables[] is an object with one key")
            (k, b), = item.items()
            if k == "metainfo":
                continue
            if k in ("add", "create", "insert", "replace"):
                (kind, body), = b.items()
                add(kind, body, index, k)
            elif k in ("flush", "delete", "destroy"):
                (kind, body), = b.items()
                if kind == "ruleset":
                    rs.tables.clear()
                    continue
                family = body.get("family", g.default_family)
                if kind == "table":
                    if k == "flush":
                        for c in table(family, body["name"]).chains.values():
                            c._entries.clear()
                            c._changed()
                    else:
                        rs.tables.pop((family, body["name"]), None)
                    continue
                t = rs.tables.get((family, body.get("table", "")))
                if t is None:
                    continue
                if kind == "chain":
                    if k == "flush":
                        c = t.chains.get(body.get("name"))
                        if c is not None:
                            c._entries.clear()
                            c._changed()
                    else:
                        t.chains.pop(body.get("name"), None)
                elif kind in ("set", "map"):
                    if k == "flush":
                        s = t.sets.get(body.get("name"))
                        if s is not None:
                            s._chunks.append(("flush", 0, []))
                            s._changed()
                    else:
                        t.sets.pop(body.get("name"), None)
                elif kind == "element":
                    add("element", body, index, k)
                elif kind == "rule":
                    c = t.chains.get(body.get("chain"))
                    if c is not None:
                        c._entries[:] = [e for e in c._entries if e.get("handle") != body.get("handle")]
                        c._changed()
            elif k in ("table", "chain", "set", "map", "element", "rule", "flowtable", "counter", "quota", "ct helper",
                       "limit", "ct timeout", "ct expectation", "secmark", "synproxy"):
                add(k, b, index)
            else:
                raise _Bad(f"unknown item {k!r}")
        except (_Bad, KeyError, TypeError, ValueError, AttributeError) as e:
            msg = str(e) if isinstance(e, _Bad) else f"missing or malformed field {e}"
            diags.append(Diagnostic("warning" if lenient else "error", f"nftables[{index}]: {msg}", source, 0, 0,
                                    json.dumps(item)[:200], 0, "the item is skipped; " + _HINT))
    if not rs.tables and not any(d.severity == "error" for d in diags):
        diags.append(Diagnostic("error", "no nftables table in this JSON", source, 1, 0, "", 0,
                                "the node has no nftables ruleset, or this is another command's output; " + _HINT))
    if not lenient and any(d.severity == "error" for d in diags):
        raise ParseError(diags)
    return rs
