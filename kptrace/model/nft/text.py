"""nft rulesets written back as ``nft -f`` input (kptrace verify loads them in the kernel), and compared as
canonical values (the nft model: kptrace/model/nft/)."""

from __future__ import annotations

from typing import Any

from kptrace.model.addr import is_uint
from kptrace.model.nft.expr import (
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
    NftRule,
    Notrack,
    Numgen,
    Payload,
    Prefix,
    Range,
    SetRef,
    SetUpdate,
    Unknown,
    Value,
    Verdict,
    Vmap,
    Xt,
)
from kptrace.model.nft.objects import NftRuleset

__all__ = [
    "canonical_view", "format_expr", "format_nft", "format_rule", "format_stmt", "quoted_name",
    "unloadable_reason", "UNLOADABLE",
]


# ---------------------------------------------------------------- writer
#
# format_nft writes knftables-style commands (`add table|chain|set|map|element|rule ...`, one a line)
# in an order `nft -f` accepts whatever order the input had: tables, chains, sets and maps, elements
# (a verdict map's elements name chains), then rules.

_SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")
_SAFE_VALUE = _SAFE_NAME | frozenset(":[]")
_STRING_SELECTORS = frozenset({("meta", "iifname"), ("meta", "oifname"), ("meta", "ibrname"), ("meta", "obrname"),
                               ("meta", "iifkind"), ("meta", "oifkind"), ("meta", "sdifname"), ("ct", "helper"),
                               ("meta", "iif"), ("meta", "oif")})
_HEX_SELECTORS = frozenset({("meta", "mark"), ("ct", "mark")})


def quoted_name(name: str) -> str:
    """An nft name as ``nft -f`` reads it: bare when it can be, else in double quotes."""
    if name and name[0].isalpha() and all(c in _SAFE_NAME for c in name):
        return name
    return f'"{name}"'


def _quote(s: str) -> str:
    return f'"{s}"'


def _val(s: str, quote: bool = False, hexa: bool = False) -> str:
    if quote:
        return _quote(s)
    if hexa and is_uint(s) and len(s) > 1:
        return hex(int(s))
    if s and all(c in _SAFE_VALUE for c in s) or (s and "," in s and all(c in _SAFE_VALUE or c == "," for c in s)):
        return s
    return _quote(s)


def _selector_kind(e: Any) -> tuple[bool, bool]:
    """(quote values, write numbers in hex) for values compared with or assigned to ``e``."""
    t = type(e)
    if t is Meta:
        k = ("meta", e.key)
    elif t is Ct:
        k = ("ct", e.key)
    elif t is Binop:
        return _selector_kind(e.left)
    else:
        return False, False
    return k in _STRING_SELECTORS, k in _HEX_SELECTORS


def _key_text(k: Any, quote: bool = False, hexa: bool = False) -> str:
    t = type(k)
    if t is str:
        return _val(k, quote, hexa)
    if t is tuple:
        return " . ".join(_key_text(p, quote, hexa) for p in k)
    if t is Prefix:
        return f"{k.addr}/{k.length}"
    if t is Range:
        return f"{k.lo}-{k.hi}"
    if t is Verdict:
        return format_stmt(k)
    return format_expr(k)


def _elements_text(pairs: Any, is_map: bool, quote: bool = False, hexa: bool = False) -> str:
    if is_map:
        items = [f"{_key_text(k, quote, hexa)} : {_key_text(v)}" for k, v in pairs]
    else:
        items = [_key_text(k, quote, hexa) for k in pairs]
    return "{ " + ", ".join(items) + " }"


def format_expr(e: Any, quote: bool = False, hexa: bool = False) -> str:
    """An expression in nft syntax.

    >>> format_expr(Concat((Payload("ip", "daddr"), Meta("l4proto"), Payload("th", "dport"))))
    'ip daddr . meta l4proto . th dport'
    """
    t = type(e)
    if t is Value:
        return _val(e.text, quote, hexa)
    if t is Payload:
        return f"{e.protocol} {e.field}"
    if t is Meta:
        return f"meta {e.key}"
    if t is Ct:
        return f"ct {e.direction} {e.key}" if e.direction else f"ct {e.key}"
    if t is SetRef:
        return "@" + e.name
    if t is Prefix or t is Range:
        return _key_text(e)
    if t is Concat:
        return " . ".join(format_expr(i) for i in e.items)
    if t is Binop:
        q, h = _selector_kind(e.left)
        return f"{format_expr(e.left)} {e.op} {format_expr(e.right, q, h or e.op in '&|^')}"
    if t is Fib:
        return f"fib {' . '.join(e.flags)} {e.result}"
    if t is Numgen:
        return f"numgen {e.mode} mod {e.mod}" + (f" offset {e.offset}" if e.offset else "")
    if t is Hash:
        out = e.kind + (f" {format_expr(e.expr)}" if e.expr is not None else "") + f" mod {e.mod}"
        if e.seed is not None:
            out += f" seed {hex(e.seed)}"
        return out + (f" offset {e.offset}" if e.offset else "")
    if t is AnonSet:
        return _elements_text(e.elements, False, quote, hexa)
    if t is AnonMap:
        return _elements_text(e.pairs, True, quote, hexa)
    if t is Lookup:
        return f"{format_expr(e.key)} map {format_expr(e.mapping)}"
    if t is str or t is tuple:
        return _key_text(e, quote, hexa)
    raise TypeError(f"not an nft expression: {e!r}")


def _mapping_has_pairs(mapping: Any) -> bool:
    return type(mapping) is AnonMap and any(type(v) is tuple and len(v) == 2 for _, v in mapping.pairs)


def _nat_target(n: Nat) -> str:
    addr = ""
    if n.addr is not None:
        a = format_expr(n.addr)
        if n.port is not None and type(n.addr) is Value and ":" in n.addr.text:
            a = f"[{a}]"
        addr = a
    if n.port is not None:
        addr += f":{format_expr(n.port)}"
    return addr


def format_stmt(s: Any, family: str | None = None) -> str:
    """A statement in nft syntax (loadable with ``nft -f``, except :class:`Xt` and JSON :class:`Unknown`)."""
    t = type(s)
    if t is Match:
        q, h = _selector_kind(s.left)
        left = format_expr(s.left)
        right = format_expr(s.right, q, h)
        if type(s.left) is Binop and s.left.op == "&" and type(s.left.right) is Value and "," in s.left.right.text \
                and s.op == "==":
            return f"{format_expr(s.left.left)} {right} / {s.left.right.text}"
        if s.op == "in" or (s.op == "==" and type(s.left) is not Binop):
            return f"{left} {right}"
        return f"{left} {s.op} {right}"
    if t is Verdict:
        if s.kind in ("jump", "goto"):
            return f"{s.kind} {quoted_name(s.target or '')}"
        if s.kind == "reject" and s.reject_with:
            return f"reject with {s.reject_with}"
        if s.kind == "queue" and s.target:
            return f"queue {s.target}"
        return s.kind
    if t is Vmap:
        return f"{format_expr(s.key)} vmap {format_expr(s.mapping)}"
    if t is Nat:
        out = s.kind
        if s.kind in ("dnat", "snat"):
            if s.family:
                out += f" {s.family}"
            if s.map_key is not None:
                if _mapping_has_pairs(s.addr):
                    out += " addr . port"
                out += f" to {format_expr(s.map_key)} map {format_expr(s.addr)}"
            else:
                out += f" to {_nat_target(s)}"
        elif s.port is not None or s.addr is not None:
            out += f" to {_nat_target(s)}"
        if s.flags:
            out += " " + ",".join(s.flags)
        return out
    if t is Mangle:
        q, h = _selector_kind(s.key)
        return f"{format_expr(s.key)} set {format_expr(s.value, q, h)}"
    if t is SetUpdate:
        timeout = f" timeout {_seconds(s.timeout)}" if s.timeout is not None else ""
        return f"{s.op} @{quoted_name(s.set)} {{ {format_expr(s.key)}{timeout} }}"
    if t is Counter:
        if s.packets is not None:
            return f"counter packets {s.packets} bytes {s.bytes}"
        return "counter"
    if t is Log:
        out = "log"
        if s.prefix is not None:
            out += f' prefix "{s.prefix}"'
        if s.level is not None:
            out += f" level {s.level}"
        for k, v in s.options:
            out += f" {k} {v}"
        return out
    if t is Limit:
        unit = "" if s.unit == "packets" else f" {s.unit}"
        out = f"limit rate {'over ' if s.over else ''}{s.rate}{unit}/{s.per}"
        if s.burst is not None:
            out += f" burst {s.burst} {s.unit if s.unit == 'packets' else 'bytes'}"
        return out
    if t is Notrack:
        return "notrack"
    if t is Xt:
        return f"xt {s.kind} {s.name}"
    if t is Unknown:
        return s.text
    raise TypeError(f"not an nft statement: {s!r}")


def format_rule(exprs: tuple, comment: str | None = None) -> str:
    """A rule's statements (and comment) in nft syntax."""
    out = " ".join(format_stmt(s) for s in exprs)
    if comment is not None:
        out += f' comment "{comment}"'
    return out


def _seconds(v: float) -> str:
    return f"{int(v)}s" if float(v).is_integer() else f"{int(round(v * 1000))}ms"


#: format_nft writes a rule nft cannot load as this comment; the text parser reads it back (with a note).
UNLOADABLE = "# kptrace: not loadable by nft"


def unloadable_reason(rule: NftRule) -> str | None:
    """Why ``nft -f`` would refuse this rule as we can write it, or None."""
    for s in rule.exprs:
        if type(s) is Xt:
            return f"xt {s.kind} {s.name}: nft cannot load an iptables extension it only shows by name"
        if type(s) is Unknown and s.text.startswith("json:"):
            return "a statement read from nft -j that kptrace does not model"
    return None


def format_nft(ruleset: NftRuleset, *, flush: bool = False, stub_missing: bool = False) -> str:
    """The ruleset as ``nft -f`` input (knftables-style commands): text -> model -> text -> model is
    the same model. Rules nft cannot load (``xt`` expressions) are written as comments that say why
    (``# kptrace: not loadable by nft (REASON): add rule ...``), which kptrace's text parser reads back.

    ``flush``: start with ``flush ruleset``. ``stub_missing``: add an empty chain for each jump/goto
    target the input lacks (a fragment), so that nft loads it (the stubs are in the output's model).
    """
    out: list[str] = ["flush ruleset"] if flush else []
    for (family, tname), t in ruleset.tables.items():
        head = f"{family} {quoted_name(tname)}"
        opts = []
        if t.flags:
            opts.append(f"flags {','.join(t.flags)}")
        if t.comment is not None:
            opts.append(f'comment "{t.comment}"')
        out.append(f"add table {head}" + (" { " + " ; ".join(opts) + " ; }" if opts else ""))
        if stub_missing:
            missing = {v.target for c in t.chains.values() for r in c.rules for v in r.exprs
                       if type(v) is Verdict and v.kind in ("jump", "goto") and v.target and v.target not in t.chains}
            missing |= {v.target for s in t.sets.values() if s.is_vmap for _, v in s.elements
                        if type(v) is Verdict and v.kind in ("jump", "goto") and v.target and v.target not in t.chains}
            for name in sorted(missing):
                out.append(f"add chain {head} {quoted_name(name)} {{ comment \"kptrace: not in the input\" ; }}")
        for c in t.chains.values():
            opts = []
            if c.hook is not None:
                dev = f' device "{c.device}"' if c.device else ""
                opts.append(f"type {c.type or 'filter'} hook {c.hook}{dev} priority {c.priority or 0}")
                if c.policy:
                    opts.append(f"policy {c.policy}")
            if c.comment is not None:
                opts.append(f'comment "{c.comment}"')
            out.append(f"add chain {head} {quoted_name(c.name)}" + (" { " + " ; ".join(opts) + " ; }" if opts else ""))
        for s in t.sets.values():
            opts = []
            if s.typeof:
                opts.append(f"typeof {s.typeof}")
            else:
                typ = " . ".join(s.key_type)
                if s.data_type is not None:
                    typ += " : " + " . ".join(s.data_type)
                opts.append(f"type {typ}")
            if s.flags:
                opts.append(f"flags {','.join(s.flags)}")
            if s.timeout is not None:
                opts.append(f"timeout {_seconds(s.timeout)}")
            if s.size is not None:
                opts.append(f"size {s.size}")
            for k, v in s.extra:
                opts.append(f"{k} {v}" if v else k)
            if s.comment is not None:
                opts.append(f'comment "{s.comment}"')
            out.append(f"add {'map' if s.is_map else 'set'} {head} {quoted_name(s.name)} {{ " + " ; ".join(opts) + " ; }")
        for s in t.sets.values():
            elements = s.elements
            if not elements:
                continue
            quote = s.key_type[:1] == ("ifname",)
            hexa = s.key_type[:1] == ("mark",)
            info = s.info
            for i in range(0, len(elements), 500):
                items = []
                for k, v in elements[i:i + 500]:
                    item = _key_text(k, quote, hexa)
                    for name, value in info.get(k, ()):
                        item += f' comment "{value}"' if name == "comment" else f" {name} {value}"
                    if s.is_map:
                        item += f" : {_key_text(v, False, s.data_type == ('mark',))}"
                    items.append(item)
                out.append(f"add element {head} {quoted_name(s.name)} {{ " + ", ".join(items) + " }")
        for c in t.chains.values():
            for r in c.rules:
                line = f"add rule {head} {quoted_name(c.name)} {format_rule(r.exprs, r.comment)}"
                why = unloadable_reason(r)
                out.append(line if why is None else f"{UNLOADABLE} ({why}): {line}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- comparison


def _stmt_view(s: Any) -> Any:
    t = type(s)
    if t is Counter:
        return ("Counter",)
    if t is Unknown:
        return ("Unknown",)
    return _data(s)


def _data(v: Any) -> Any:
    """A value as plain, type-tagged data (NamedTuples compare as tuples: tag them with their type)."""
    t = type(v)
    if t is tuple:
        return tuple(_data(x) for x in v)
    if hasattr(v, "_fields"):
        return (t.__name__,) + tuple(_data(x) for x in v)
    return v


def canonical_view(ruleset: NftRuleset, *, skip_xt_comment: bool = True) -> dict:
    """The ruleset as plain data for comparing two forms of it: tables, chains with their base
    declaration and rules' statements (and comments), sets with their declaration and elements
    (sorted). Left out, because ``nft -j`` (1.0.6) does not carry them or the kernel changes them:
    table and chain comments, the ``dynamic`` set flag, a set's ``size`` and ``typeof``, counter values,
    handles, element extras other than comments, and ``xt match comment`` (which nft's text listing
    prints as nothing). An Unknown statement is compared by kind only.
    """
    out: dict = {}
    for (family, tname), t in ruleset.tables.items():
        chains = {}
        for c in t.chains.values():
            rules = []
            for r in c.rules:
                stmts = tuple(_stmt_view(s) for s in r.exprs
                              if not (skip_xt_comment and type(s) is Xt and s.name == "comment"))
                rules.append((stmts, r.comment))
            chains[c.name] = ((c.type, c.hook, c.priority, c.policy, c.device) if c.hook else None, tuple(rules))
        sets = {}
        for s in t.sets.values():
            comments = s.comments
            elements = sorted((repr(_data(k)), repr(_data(v)), comments.get(k)) for k, v in s.elements)
            sets[s.name] = (s.key_type, s.data_type, tuple(f for f in s.flags if f != "dynamic"), s.timeout, s.comment,
                            tuple(elements))
        out[(family, tname)] = {"chains": chains, "sets": sets}
    return out
