"""Rules read by shape: :func:`read_statements`, the entry point for one rule's statements.

kube-proxy writes tens of thousands of rules that differ only in addresses and chain names
(`ip saddr 10.0.1.5 jump mark-for-masquerade`, `meta l4proto tcp dnat to 10.0.1.5:8080`, `numgen random
mod 10 vmap { 0 : goto endpoint-..., ... }`, 1.37's `dnat ip addr . port to numgen random mod 10 map { 0 :
10.0.1.5 . 8080, ... }`); reading them (a trace reads a Service's ~22, a full parse all) is most of
a rule's cost. A rule's *shape* is its text with each IPv4 address token replaced by a stand-in address
and each jump/goto target by a stand-in name (one stand-in per distinct value, numbered in order). The
reader treats every IPv4 address token alike (canonical_atom leaves it as it is) and takes a target
as it is, so a shape is read once, by the reader, into a builder (:func:`_builder`) that makes any
rule of that shape from its values: the same statements, with anonymous sets and maps sorted again
(their order follows the values). Read in full instead: rules with quotes, groups `( a | b )`, value
lists at the top level (`ip daddr 10.0.0.1,10.0.0.2`, joined into one value), `queue` (options
joined), any stand-in already in the text, and shapes whose reading has problems (each rule gets its
own diagnostics). tests/test_nft_shapes.py checks both ways agree on every nft text fixture, both
benchmark layouts and edge cases.
A shape's first rule is read in full; its second makes the builder (~10 rules' worth); the rest use it.
Speed (CPU time, one rule's statements): a Service chain's `ip daddr A tcp dport 80 ip saddr != CIDR jump
mark-for-masquerade` 35 -> 11 us, `dnat to A:PORT` 15 -> 7 us, 1.37's DNAT map of 10 endpoints 73 -> 30 us;
every rule of benchmarks/gen_nft.py's 10k Services (chain.rules of each chain): classic layout, 222,023
rules, 9.6 -> 6.2 s (with the cyclic GC paused: 4.8 -> 2.7 s); 1.37 layout, 12,022 rules, 1.67 -> 0.58 s.
"""

from __future__ import annotations

import re
from typing import Any

from kptrace.model.nft import AnonMap, AnonSet
from kptrace.parsers.nft.atoms import element_order, pair_order, tokens
from kptrace.parsers.nft.statements import read_tokens

__all__ = ["read_statements", "shape_cache"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)


def read_statements(text: str, family: str = "ip") -> tuple[list, str | None, list]:
    """The statements and comment of one rule, and problems as ``(column, severity, message, hint)``.

    >>> stmts, comment, problems = read_statements('ct state new jump firewall-check comment "x"')
    >>> stmts[0]
    Match(left=Ct(key='state', direction=None), op='in', right=Value(text='new'))
    >>> stmts[1], comment, problems
    (Verdict(kind='jump', target='firewall-check', reject_with=None), 'x', [])
    """
    if '"' not in text and "(" not in text and "255.255.255." not in text and "\x00" not in text:
        shaped = _by_shape(text, family)
        if shaped is not None:
            return shaped
    return read_tokens(text, tokens(text), family)



_SEP = r"\s{},;()"  # what ends a token (atoms.tokens)
# A jump/goto target: the token after `jump `/`goto ` (those words a token of their own). The words come
# first and the look-behind after them, so that the regex engine skips to a "j" or a "g" (~4x faster).
_NAME_SLOT = re.compile(rf"(jump |goto )(?<![^{_SEP}].....)([^{_SEP}]+)")
# An IPv4 address token, or the address of a `to ADDR:PORT` token. The reader takes any such token as it
# is (canonical_atom), whatever its digits, so these need not be valid addresses; a digit first, as above.
_ADDR_SLOT = re.compile(rf"([0-9](?<![^{_SEP}][0-9])[0-9]{{0,2}}\.[0-9]{{1,3}}\.[0-9]{{1,3}}\.[0-9]{{1,3}})"
                        rf"(?=[{_SEP}]|$|:[0-9]+(?:[{_SEP}]|$))")
_SET_BODY = re.compile(r"\{[^{}]*\}")
_SHAPE_ADDR = "255.255.255.%d"  # stand-ins: addresses the reader takes as any other
_SHAPE_NAME = "\x00%d"
_SHAPE_MAX = 4096  # shapes kept (kube-proxy's rulesets have a few dozen)
shape_cache: dict[tuple[str, str], Any] = {}  # (family, shape) -> False (seen once) | builder | _IN_FULL
_IN_FULL = "read in full"


def _by_shape(text: str, family: str) -> tuple[list, str | None, list] | None:
    """A rule's statements, comment and (no) problems from its shape's builder; None: read it in full."""
    if "," in text and "," in _SET_BODY.sub("", text):
        return None  # a value list at the top level is joined into one value
    values: list[str] = []
    index: dict[str, int] = {}
    pieces: list[str] = []
    names = _NAME_SLOT.split(text) if "jump " in text or "goto " in text else (text,)
    for j, part in enumerate(names):
        if j % 3 == 1:  # "jump " or "goto "
            pieces.append(part)
            continue
        if j % 3 == 2:  # its target
            k = index.get(part)
            if k is None:
                k = index[part] = len(values)
                values.append(part)
            pieces.append(_SHAPE_NAME % k)
            continue
        addrs = _ADDR_SLOT.split(part)
        pieces.append(addrs[0])
        for q in range(1, len(addrs), 2):
            value = addrs[q]
            if addrs[q + 1][:1] == ":":  # ADDR:PORT is read as an address only after `to` (nat_target)
                before = addrs[q - 1]
                if not before.endswith("to ") or len(before) > 3 and before[-4] not in " \t\n{},;()":
                    pieces.append(value)
                    pieces.append(addrs[q + 1])
                    continue
            k = index.get(value)
            if k is None:
                k = index[value] = len(values)
                values.append(value)
            pieces.append(_SHAPE_ADDR % k)
            pieces.append(addrs[q + 1])
    if not values or len(values) > 255:
        return None  # nothing stood in for (the reader is as fast), or too many
    key = (family, "".join(pieces))
    build: Any = shape_cache.get(key)
    if build is None:  # a shape seen for the first time: the rule is read in full (a builder costs ~10 rules)
        if len(shape_cache) < _SHAPE_MAX:
            shape_cache[key] = False
        return None
    if build is False:  # seen before: now it pays to make its builder
        build = None
        toks = tokens(key[1])
        if "queue" not in toks:
            stmts, comment, problems = read_tokens(key[1], toks, family)
            if not problems:
                build = _builder(stmts, comment, len(values))
        build = shape_cache[key] = build or _IN_FULL
    if build is _IN_FULL:  # this shape reads with problems: each rule of it is read in full, for its own
        return None
    return build(values)


def _builder(stmts: list, comment: str | None, count: int):
    """A function ``values -> (statements, comment, [])`` that makes the statements of a shape with its
    stand-ins replaced by the values (one Python expression, compiled once per shape: a rule of a known
    shape then costs one call, not a walk over its statements)."""
    stand = {_SHAPE_ADDR % k: k for k in range(count)}
    stand.update({_SHAPE_NAME % k: k for k in range(count)})
    consts: dict[str, Any] = {"_new": _new, "_eo": element_order, "_po": pair_order}

    def const(x: Any) -> str:
        name = f"c{len(consts)}"
        consts[name] = x
        return name

    def code(x: Any) -> str | None:  # None: x holds no stand-in (used as it is)
        t = type(x)
        if t is str:
            k = stand.get(x)
            return None if k is None else f"v[{k}]"
        if not isinstance(x, tuple):
            return None
        items = [code(i) for i in x]
        if all(i is None for i in items):
            return None
        inner = "(" + "".join(f"{c if c is not None else const(i)}, " for c, i in zip(items, x)) + ")"
        if t is tuple:
            return inner
        if t is AnonSet:
            return f"_new({const(AnonSet)}, (tuple(sorted({items[0]}, key=_eo)),))"
        if isinstance(x, AnonMap):
            if all(code(k) is None for k, _ in x.pairs):  # its order is its keys', which stand for nothing
                return f"_new({const(AnonMap)}, ({items[0]},))"
            return f"_new({const(AnonMap)}, (tuple(sorted({items[0]}, key=_po)),))"
        return f"_new({const(t)}, {inner})"

    body = ", ".join(code(x) or const(x) for x in stmts)
    comment_code = code(comment) if comment is not None else None
    src = f"lambda v: ([{body}], {comment_code or const(comment)}, [])"
    return eval(src, consts)  # noqa: S307 - kptrace's own expression text, built above from parsed values

