"""JSON statements and expressions (libnftables-json(5)) -> the model's values, spelt as the text readers
spell them (numbers in decimal, ``{"&": [...]}`` as :class:`Binop`, a default ``reject`` as ``reject_with``
None, the ``in`` operator for bit tests), so that the JSON and text forms of one ruleset give equal models.

A new statement is one method of :class:`Converter` and a row of :data:`STATEMENTS`; a new expression a
branch of :meth:`Converter.expr`.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from kptrace.model.addr import is_uint
from kptrace.model.nft import (
    PROTOCOL_SELECTORS,
    AnonMap,
    AnonSet,
    Binop,
    Concat,
    Counter,
    Ct,
    Fib,
    Hash,
    Limit,
    Log,
    Lookup,
    Mangle,
    Match,
    Meta,
    Nat,
    Notrack,
    Numgen,
    Payload,
    SetRef,
    SetUpdate,
    Unknown,
    Value,
    Verdict,
    Vmap,
    Xt,
    selector_name,
)
from kptrace.parsers.nft.atoms import canonical_atom, element_order, pair_order
from kptrace.parsers.nft.grammar import NftGrammar

__all__ = ["BadJson", "Converter", "STATEMENTS", "need_int", "need_name", "need_names"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)
_BINOPS = {"&", "|", "^", "<<", ">>"}
_VERDICT_KEYS = ("accept", "drop", "continue", "return", "jump", "goto", "reject", "queue")


class BadJson(Exception):
    """A JSON statement, expression or item kptrace cannot read (the message says why)."""


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
            a = canonical_atom(f"{_text(p['addr'])}/{p['len']}")
            return a
        if "range" in v:
            lo, hi = v["range"]
            return canonical_atom(f"{_text(_atom(lo))}-{_text(_atom(hi))}")
    raise BadJson(f"not a value: {json.dumps(v)[:80]}")


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def need_name(v: Any, what: str) -> str:
    """A field that must be a string (a name, a key, a keyword)."""
    if not isinstance(v, str) or not v:
        raise BadJson(f"{what} must be a non-empty string, not {json.dumps(v)[:40]}")
    return v


def need_names(v: Any, what: str) -> tuple[str, ...]:
    """A field that is a string or a list of strings."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise BadJson(f"{what} must be a string or a list of strings, not {json.dumps(v)[:40]}")
    return tuple(items)


def need_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadJson(f"{what} must be a number, not {json.dumps(v)[:40]}")
    return v



class Converter:
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
            raise BadJson(f"an expression object has one key: {json.dumps(v)[:80]}")
        (k, b), = v.items()
        if k == "payload":
            if "protocol" not in b:
                raise BadJson("raw payload expressions are not modelled")
            return _new(Payload, (need_name(b["protocol"], "payload protocol"), need_name(b["field"], "payload field")))
        if k == "meta":
            return _new(Meta, (need_name(b["key"], "meta key"),))
        if k == "ct":
            key = need_name(b["key"], "ct key")
            direction = need_name(b["dir"], "ct dir") if "dir" in b else None
            if direction and b.get("family") and key in ("saddr", "daddr"):
                key = f"{b['family']} {key}"
            return _new(Ct, (key, direction))
        if k == "fib":
            return _new(Fib, (need_names(b.get("flags", []), "fib flags"), need_name(b["result"], "fib result")))
        if k == "numgen":
            return _new(Numgen, (need_name(b["mode"], "numgen mode"), need_int(b["mod"], "numgen mod"),
                                 need_int(b.get("offset", 0), "numgen offset")))
        if k in ("jhash", "symhash"):
            inner = self.expr(b["expr"]) if "expr" in b else None
            seed = need_int(b["seed"], "seed") if "seed" in b else None
            return _new(Hash, (k, inner, need_int(b["mod"], "mod"), seed, need_int(b.get("offset", 0), "offset")))
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
                return _new(AnonMap, (tuple(sorted(((key, val) for key, val, _ in pairs), key=pair_order)),))
            return _new(AnonSet, (tuple(sorted((key for key, _, _ in pairs), key=element_order)),))
        if k == "map":
            return _new(Lookup, (self.expr(b["key"]), self.expr(b["data"])))
        if k == "elem":
            return self.expr(b["val"], left)
        raise BadJson(f"the {k!r} expression is not modelled")

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
            return _new(Verdict, (k, need_name(b["target"], "jump target"), None))
        return _new(Verdict, (k, None, None))


    # -- statements: one method each, (key, body, rule family) -> value; STATEMENTS below maps key -> method

    def rule(self, exprs: list, family: str) -> tuple[list, list[str]]:
        """A rule's ``expr`` list -> statements, and a message for each that cannot be read (kept as
        :class:`Unknown` with its JSON)."""
        out = []
        problems = []
        for st in exprs:
            try:
                if not isinstance(st, dict) or len(st) != 1:
                    raise BadJson("a statement is an object with one key")
                (k, b), = st.items()
                read = STATEMENTS.get(k)
                if read is None:
                    raise BadJson(f"the {k!r} statement is not modelled")
                out.append(read(self, k, b, family))
            except (BadJson, KeyError, TypeError, ValueError, AttributeError) as e:
                msg = str(e) if isinstance(e, BadJson) else f"cannot read {json.dumps(st)[:120]}"
                problems.append(msg)
                out.append(_new(Unknown, ("json:" + json.dumps(st, sort_keys=True), msg)))
        return out, problems

    def match(self, k: str, b: Any, family: str) -> Match:
        left = self.expr(b["left"])
        op = b.get("op", "==")
        right = self.expr(b["right"], left)
        if type(right) is AnonSet and len(right.elements) == 1 and type(right.elements[0]) is not tuple:
            e = right.elements[0]
            right = _new(Value, (e,)) if type(e) is str else e
        return _new(Match, (left, op, right))

    def verdict_statement(self, k: str, b: Any, family: str) -> Verdict:
        if k in ("jump", "goto"):
            return _new(Verdict, (k, need_name(b["target"], "jump target"), None))
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

    def vmap(self, k: str, b: Any, family: str) -> Vmap:
        return _new(Vmap, (self.expr(b["key"]), self.expr(b["data"])))

    def mangle(self, k: str, b: Any, family: str) -> Mangle:
        key = self.expr(b["key"])
        return _new(Mangle, (key, self.expr(b["value"], key)))

    def nat(self, k: str, b: Any, family: str) -> Nat:
        b = b or {}
        flags = list(need_names(b.get("flags", []), "nat flags"))
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

    def set_update(self, k: str, b: Any, family: str) -> SetUpdate:
        op = b["op"]
        elem = b["elem"]
        timeout = None
        if isinstance(elem, dict) and "elem" in elem:
            timeout = elem["elem"].get("timeout")
            elem = elem["elem"]["val"]
        return _new(SetUpdate, (need_name(op, "set op"), need_name(b["set"], "set name").lstrip("@"), self.expr(elem),
                                timeout))

    def counter(self, k: str, b: Any, family: str) -> Counter:
        if isinstance(b, dict):
            return _new(Counter, (need_int(b.get("packets", 0), "packets") if "packets" in b else None,
                                  need_int(b.get("bytes", 0), "bytes") if "bytes" in b else None))
        if b is None:
            return _new(Counter, (None, None))
        raise BadJson("named counters are not modelled")

    def log(self, k: str, b: Any, family: str) -> Log:
        b = b or {}
        options = tuple((x, ",".join(y) if isinstance(y, list) else str(y)) for x, y in b.items()
                        if x not in ("prefix", "level"))
        prefix = need_name(b["prefix"], "log prefix") if b.get("prefix") else None
        level = need_name(b["level"], "log level") if "level" in b else None
        return _new(Log, (prefix, level, options))

    def limit(self, k: str, b: Any, family: str) -> Limit:
        unit = b.get("rate_unit", "packets")
        burst = b.get("burst")
        default = self.g.limit_default_burst.get("packets" if unit == "packets" else "bytes")
        if burst == default:
            burst = None
        return _new(Limit, (need_int(b["rate"], "rate"), need_name(b.get("per", "second"), "per"), burst,
                            need_name(unit, "rate unit"), bool(b.get("inv", False))))

    def notrack(self, k: str, b: Any, family: str) -> Notrack:
        return _new(Notrack, ("notrack",))

    def xt(self, k: str, b: Any, family: str) -> Xt:
        return _new(Xt, (need_name(b.get("type", "match"), "xt type"), need_name(b.get("name", "?"), "xt name")))


#: statement key -> the :class:`Converter` method that reads its body
STATEMENTS: dict[str, Callable[[Converter, str, Any, str], Any]] = {
    "match": Converter.match,
    **{k: Converter.verdict_statement for k in _VERDICT_KEYS},
    "vmap": Converter.vmap,
    "mangle": Converter.mangle,
    **{k: Converter.nat for k in ("dnat", "snat", "masquerade", "redirect")},
    "set": Converter.set_update,
    "counter": Converter.counter,
    "log": Converter.log,
    "limit": Converter.limit,
    "notrack": Converter.notrack,
    "xt": Converter.xt,
}
