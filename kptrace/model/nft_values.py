"""Typed values in nftables rules and set elements, checked as ``nft -f`` checks them: an address is one
of the selector's family with a prefix in range, a port is 0-65535 (or a service name), a mark is 32-bit,
``numgen``/``jhash`` modulus is at least 1. A rule nft would refuse is an input error with its
``file:line:col`` and a caret, never a silently wrong answer.

The parsers keep values as written (canonical spelling only); the checks are here, as data per selector
type, and run where a rule is first read: on every rule by ``kptrace parse`` (``check_ruleset``), and on
the rules a trace reaches by the tracer (``rule_problems``): parsing all ~350k rules of a 10k-Service
node costs ~6 s, several times the whole load.

>>> [p[0] for p in value_problems("ipv4_addr", "10.0.0.300")]
['10.0.0.300 is not an IPv4 address']
>>> value_problems("inet_service", "80")
[]
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

from kptrace.errors import Diagnostic
from kptrace.model.addr import is_uint, parse_addr
from kptrace.model.nft import (
    AnonMap,
    AnonSet,
    Binop,
    Concat,
    Ct,
    Lookup,
    Mangle,
    Match,
    Meta,
    Nat,
    NftRule,
    NftRuleset,
    NftSet,
    Numgen,
    Payload,
    Prefix,
    Range,
    Value,
    Vmap,
)

__all__ = ["check_ruleset", "rule_has_problems", "rule_problems", "value_problems"]

#: selector -> value type (nft's datatypes: ipv4_addr, ipv6_addr, inet_service, mark, inet_proto, ...)
_PAYLOAD_TYPES = {("ip", "saddr"): "ipv4_addr", ("ip", "daddr"): "ipv4_addr", ("ip6", "saddr"): "ipv6_addr",
                  ("ip6", "daddr"): "ipv6_addr"}
_PORT_PROTOCOLS = frozenset({"th", "tcp", "udp", "udplite", "sctp", "dccp"})
_META_TYPES = {"mark": "mark", "l4proto": "inet_proto", "nfproto": "nf_proto", "priority": None}
_CT_TYPES = {"mark": "mark"}

_LIMITS = {"mark": 0xFFFFFFFF, "inet_service": 0xFFFF, "inet_proto": 0xFF}
_HINTS = {
    "ipv4_addr": "an IPv4 address (four numbers 0-255), optionally /0-32",
    "ipv6_addr": "an IPv6 address, optionally /0-128",
    "inet_service": "a port: 0-65535 or a service name (http)",
    "mark": "a 32-bit mark: 0-4294967295 or 0x0-0xffffffff",
    "inet_proto": "a protocol: tcp, udp, sctp, ... or 0-255",
}


def _selector_type(e: Any) -> str | None:
    t = type(e)
    if t is Payload:
        if e.field in ("sport", "dport") and e.protocol in _PORT_PROTOCOLS:
            return "inet_service"
        return _PAYLOAD_TYPES.get((e.protocol, e.field))
    if t is Meta:
        return _META_TYPES.get(e.key)
    if t is Ct:
        return _CT_TYPES.get(e.key)
    if t is Binop and e.op in ("&", "|", "^"):
        return _selector_type(e.left)
    return None


def value_problems(vtype: str | None, value: Any) -> list[tuple[str, str]]:
    """``(message, the bad text)`` for each part of ``value`` not of type ``vtype``."""
    if vtype is None:
        return []
    t = type(value)
    if t is Value:
        value = value.text
        t = str
    if t is Prefix:
        bits = 32 if vtype == "ipv4_addr" else 128 if vtype == "ipv6_addr" else None
        out = value_problems(vtype, value.addr)
        if bits is None:
            out.append((f"a prefix is not a {vtype} value", f"{value.addr}/{value.length}"))
        elif not 0 <= value.length <= bits:
            family = "IPv4" if bits == 32 else "IPv6"
            out.append((f"prefix length /{value.length} is out of range for {family} (0-{bits})", f"/{value.length}"))
        return out
    if t is Range:
        return value_problems(vtype, value.lo) + value_problems(vtype, value.hi)
    if t in (AnonSet,):
        return [p for el in value.elements for p in value_problems(vtype, el)]
    if t is not str:
        return []
    return list(_scalar_problems(vtype, value))


@functools.lru_cache(maxsize=65536)
def _scalar_problems(vtype: str, text: str) -> tuple[tuple[str, str], ...]:
    """One value's problems (cached: a 10k-Service trace checks the same few thousand values)."""
    if vtype in ("ipv4_addr", "ipv6_addr"):
        want = 4 if vtype == "ipv4_addr" else 6
        try:
            version, _ = parse_addr(text)
        except ValueError:
            version = 0
        if version != want:
            return ((f"{text} is not an IPv{want} address", text),)
    elif vtype in _LIMITS:
        if is_uint(text) or text[:2].lower() == "0x":
            try:
                n = int(text, 0) if not is_uint(text) else int(text)
            except ValueError:
                return ((f"{text} is not a number", text),)
            if n > _LIMITS[vtype]:
                what = {"inet_service": "port", "mark": "mark", "inet_proto": "protocol number"}[vtype]
                return ((f"{what} {text} is out of range (0-{_LIMITS[vtype]})", text),)
        elif vtype == "mark" or not (text.replace("-", "").replace("_", "").isalnum()):
            return ((f"{text} is not a {vtype} value", text),)
    return ()


def _key_types(s: NftSet) -> tuple:
    return tuple(s.key_type)


def _matches(e: Any) -> Iterator[tuple[str | None, Any]]:
    """(type, value) pairs a statement carries."""
    t = type(e)
    if t is Match:
        left, right = e.left, e.right
        if type(left) is Concat and type(right) in (AnonSet,):
            types = [_selector_type(x) for x in left.items]
            for el in right.elements:
                if isinstance(el, tuple) and len(el) == len(types):
                    yield from zip(types, el)
            return
        yield _selector_type(left), right
        if type(left) is Binop and type(left.right) is Value and _selector_type(left) == "mark":
            yield "mark", left.right
    elif t is Mangle:
        vt = _selector_type(e.key)
        if vt == "mark":
            v = e.value
            if type(v) is Binop:
                yield "mark", v.right
            elif type(v) is Value:
                yield "mark", v
    elif t is Nat and type(e.addr) is Value:
        yield ("ipv6_addr" if e.family == "ip6" else "ipv4_addr" if e.family == "ip" else None), e.addr
        if type(e.port) in (Value, Range):
            yield "inet_service", e.port
    elif t is Nat and type(e.addr) is AnonMap:
        for _k, v in e.addr.pairs:
            if isinstance(v, tuple) and len(v) == 2:
                yield ("ipv6_addr" if e.family == "ip6" else "ipv4_addr"), v[0]
                yield "inet_service", v[1]
    elif t is Vmap and type(e.mapping) is AnonMap:
        kt = _selector_type(e.key)
        for k, _v in e.mapping.pairs:
            yield kt, k


def _numgens(e: Any) -> Iterator[Numgen]:
    t = type(e)
    if t is Numgen:
        yield e
    elif t in (Vmap, Lookup):
        yield from _numgens(e.key)
    elif t is Nat:
        yield from _numgens(e.map_key)
    elif t is Mangle:
        yield from _numgens(e.value)


def _find(text: str, bad: str) -> tuple[int, int]:
    """1-based column and length of ``bad`` in ``text`` as a whole token (a mark kept in decimal is found in
    the hex it was written in); (0, 0) when it is not there."""
    forms = [re.escape(bad)]
    if is_uint(bad):
        forms.append("0x0*" + format(int(bad), "x"))
    for f in forms:
        before = "" if bad.startswith("/") else r"(?<![\w.])"
        m = re.search(before + f + r"(?![\w.])", text, re.IGNORECASE)
        if m:
            return m.start() + 1, m.end() - m.start()
    return 0, 0


def rule_has_problems(rule: NftRule) -> bool:
    """Whether any value of the rule is bad (no positions: the cheap test a trace makes on every rule it reads)."""
    for e in rule.exprs:
        for vtype, value in _matches(e):
            if vtype is not None and value_problems(vtype, value):
                return True
        for ng in _numgens(e):
            if ng.mod < 1:
                return True
    return False


def rule_problems(rule: NftRule, line_text: str | None = None) -> list[Diagnostic]:
    """Errors for the values in one rule that nft would refuse, with the column of each."""
    out: list[Diagnostic] = []
    text = line_text if line_text is not None else rule.text
    for e in rule.exprs:
        for vtype, value in _matches(e):
            for message, bad in value_problems(vtype, value):
                col, length = _find(text, bad) if bad else (0, 0)
                written = text[col - 1:col - 1 + length] if col else bad
                if written != bad:  # say it as written: 0x1ffffffff, not its decimal
                    message = message.replace(f" {bad} ", f" {written} ")
                out.append(Diagnostic("error", message, rule.source, rule.line, col, text if rule.line else rule.text,
                                      length, _HINTS.get(vtype or "", "")))
        for ng in _numgens(e):
            if ng.mod < 1:
                col = text.find("mod") + 1
                out.append(Diagnostic("error", f"numgen modulus {ng.mod} must be at least 1", rule.source, rule.line,
                                      col, text, 3 if col else 0, "numgen random mod N picks 0..N-1"))
    return out


def element_problems(s: NftSet) -> list[Diagnostic]:
    types = _key_types(s)
    out: list[Diagnostic] = []
    if not types:
        return out
    lines = None
    for key, _ in s.elements:
        parts = key if isinstance(key, tuple) else (key,)
        if len(parts) != len(types):
            continue
        for vt, part in zip(types, parts):
            for message, _bad in value_problems(vt, part):
                if lines is None:
                    lines = s.element_lines() if s.line else {}
                out.append(Diagnostic("error", f"element of {s.name}: {message}", s.source, lines.get(key, s.line), 0,
                                      "", 0, _HINTS.get(vt, "")))
    return out


def check_ruleset(nft: NftRuleset, line_of=None) -> list[Diagnostic]:
    """Every rule's and set element's values (``kptrace parse``)."""
    out: list[Diagnostic] = []
    for t in nft.tables.values():
        for s in t.sets.values():
            out.extend(element_problems(s))
        for c in t.chains.values():
            lines = getattr(c._reader, "lines", None)
            for r in c.rules:
                text = lines[r.line - 1] if lines and 0 < r.line <= len(lines) else None
                out.extend(rule_problems(r, text))
            c._changed()
    return out


# ------------------------------------------------------------------ at load, over the text
#
# Parsing every rule of a 10k-Service ruleset to check its values costs several times the whole load, so
# the load looks over the text for the values that are wrong whatever their place (an IPv4 address with an
# octet over 255 or a prefix over /32, a port over 65535 after dport/sport or in `to ADDR:PORT`, a mark
# wider than 32 bits): one C-speed regex search over the input finds none in a valid ruleset. Each hit's
# rule or element is then parsed and checked exactly, so only what nft refuses is refused.

_NUM_BAD = r"(?:25[6-9]|2[6-9]\d|[3-9]\d\d|\d{4,})"
_PORT_BAD = r"(?:6553[6-9]|655[4-9]\d|65[6-9]\d\d|6[6-9]\d{3}|[7-9]\d{4}|\d{6,})"
#: each starts with a literal, so the search jumps from one candidate to the next (~0.35 s for 25 MB)
_SUSPICIOUS = (
    # an octet over 255: after a dot, or the first one (before a dot)
    re.compile(r"\.(?:(?<=[^\d.]25[6-9]\.|[^\d.]2[6-9]\d\.|[^\d.][3-9]\d\d\.|\d\d\d\d\.)\d|" + _NUM_BAD + r"\b)"),
    # ip saddr 10.0.0.0/33
    re.compile(r"addr (?:!= )?(?:\{ )?\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/(?:3[3-9]|[4-9]\d|\d{3,})\b"),
    re.compile(r"port (?:!= )?" + _PORT_BAD + r"\b"),  # tcp dport 99999
    re.compile(r":" + _PORT_BAD + r"\b"),  # dnat to 10.0.0.1:70000
    re.compile(r"0x0*[1-9a-fA-F][0-9a-fA-F]{8,}\b"),  # a mark over 32 bits
    re.compile(r"mark (?:set |== |!= )?(?:0x[0-9a-fA-F]*[g-zG-Z]|[1-9]\d*[a-zA-Z]|0[a-wyzA-WYZ])"),  # mark set 0xZZ
)
#: inputs up to this size are scanned at load (~0.06 s); larger ones (a 10k-Service node: 25 MB, ~0.9 s) are
#: checked where a trace reaches a rule, and in full by `kptrace parse`
SCAN_LIMIT = 4 << 20


def suspicious_lines(text: str) -> list[int]:
    """1-based numbers of the lines whose text holds a value that is wrong wherever it stands."""
    starts = sorted({m.start() for p in _SUSPICIOUS for m in p.finditer(text)})
    out: list[int] = []
    for at in starts:
        line = text.count("\n", 0, at) + 1
        if not out or out[-1] != line:
            out.append(line)
    return out


def check_lines(nft: NftRuleset, source: str, lines: list[int]) -> list[Diagnostic]:
    """The exact check of the rules and set elements written on ``lines`` of ``source``."""
    wanted = set(lines)
    out: list[Diagnostic] = []
    for t in nft.tables.values():
        for s in t.sets.values():
            if s.source == source and any(line in wanted for _op, line, _p in s._chunks) or (
                    s.source == source and s._chunks and _spans(s, wanted)):
                out.extend(element_problems(s))
        for c in t.chains.values():
            if c.source != source:
                continue
            reader = c._reader
            lines_of = getattr(reader, "lines", None)
            for i in range(len(c)):
                line, _text = reader.text(c._entries[i])
                if line in wanted:
                    r = c.rule_at(i)
                    text = lines_of[r.line - 1] if lines_of and 0 < r.line <= len(lines_of) else None
                    out.extend(rule_problems(r, text))
    return out


def _spans(s: NftSet, wanted: set[int]) -> bool:
    """Whether an element list written over several lines covers one of ``wanted``."""
    for _op, line, payload in s._chunks:
        text = payload[1] if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[1], str) else ""
        if any(line <= w <= line + text.count("\n") for w in wanted):
            return True
    return False
