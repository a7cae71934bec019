"""What an nft rule's expressions read, and set elements compared with a packet's values (tracer/nft.py)."""

from __future__ import annotations

import functools
import ipaddress

from kptrace.model.addr import parse_addr
from kptrace.model.nft import (
    Binop,
    Concat,
    Fib,
    Mangle,
    Match,
    Meta,
    Nat,
    Numgen,
    Payload,
    Prefix,
    Range,
    SetRef,
    Value,
    Vmap,
)

__all__ = ["as_number", "contains", "numgens", "reads_dst", "replayable", "taints"]

_DST_FIELDS = frozenset({"daddr", "dport"})
_PLAIN_FIELDS = frozenset({"saddr", "daddr", "sport", "dport"})
_PLAIN_META = frozenset({"l4proto", "nfproto", "iifname", "oifname"})


def reads_dst(e) -> bool:
    """Whether expression ``e`` reads the packet's destination address or port."""
    t = type(e)
    if t is Payload:
        return e.field in _DST_FIELDS
    if t is Fib:
        return "daddr" in e.flags
    if t is Concat:
        return any(reads_dst(i) for i in e.items)
    if t is Binop:
        return reads_dst(e.left) or reads_dst(e.right)
    return False


def replayable(e) -> bool:
    """Whether ``e`` reads only what a walk of FORWARD or POSTROUTING leaves as it was (addresses, ports,
    protocol, interfaces), and nothing with side effects: then it can be evaluated again for another state."""
    t = type(e)
    if t is Payload:
        return e.field in _PLAIN_FIELDS
    if t is Meta:
        return e.key in _PLAIN_META
    if t is Value:
        return True
    if t is Concat:
        return all(replayable(i) for i in e.items)
    if t is Binop:
        return replayable(e.left) and type(e.right) is Value
    return False


def taints(exprs) -> bool:
    """Whether a rule reads the destination in a way :meth:`NftCompiler.replay` cannot check: anything but a
    plain match, a verdict map's key, and masquerade (whose address replay() compares)."""
    for e in exprs:
        t = type(e)
        if t is Match:
            if reads_dst(e.left) and (not replayable(e.left) or (type(e.right) is SetRef
                                                                   and e.right.name.startswith("affinity-"))):
                return True
        elif t is Vmap:
            if reads_dst(e.key) and not replayable(e.key):
                return True
        elif t is Nat:
            if e.kind != "masquerade":
                return True
        elif t is Mangle:
            if reads_dst(e.value):
                return True
    return False


def numgens(e) -> list[Numgen]:
    """The numgen expressions inside a statement (a vmap's or a nat map's key)."""
    t = type(e)
    if t is Numgen:
        return [e]
    if t is Vmap:
        return numgens(e.key)
    if t is Nat:
        return numgens(e.map_key) if e.map_key is not None else []
    if t is Concat:
        return [n for i in e.items for n in numgens(i)]
    return []


def as_number(text: str):
    try:
        return int(text, 0)
    except ValueError:
        return int(ipaddress.ip_address(text))


@functools.lru_cache(maxsize=65536)
def prefix_network(p: Prefix) -> tuple[int, int, int] | None:
    """(version, network as an int, mask) of a prefix, parsed once (a trace tests the same few prefixes
    thousands of times: ``ipaddress`` per test was 9% of a classic-layout trace)."""
    try:
        version, addr = parse_addr(p.addr)
    except ValueError:
        return None
    bits = 32 if version == 4 else 128
    if not 0 <= p.length <= bits:
        return None
    mask = ((1 << bits) - 1) ^ ((1 << (bits - p.length)) - 1)
    return version, addr & mask, mask


@functools.lru_cache(maxsize=65536)
def value_address(value: str) -> tuple[int, int] | None:
    try:
        return parse_addr(value)
    except (ValueError, TypeError):
        return None


def contains(el, value) -> bool:
    """Whether a set element (a value, a Prefix, a Range, or a concatenation of those) holds ``value``."""
    if isinstance(el, tuple) and type(el) not in (Prefix, Range, Value):
        if not isinstance(value, tuple) or len(value) != len(el):
            return False
        return all(contains(a, b) for a, b in zip(el, value))
    t = type(el)
    if t is Value:
        el = el.text
        t = str
    if t is str:
        return el == value
    if t is Prefix:
        net = prefix_network(el)
        if net is None:
            return False
        addr = value_address(value)
        return addr is not None and addr[0] == net[0] and (addr[1] & net[2]) == net[1]
    if t is Range:
        try:
            return as_number(el.lo) <= as_number(value) <= as_number(el.hi)
        except ValueError:
            return False
    return False
