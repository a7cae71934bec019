"""Matches as the kernel evaluates them: one compiler per match module, in a registry keyed by name.

A compiled check is ``check(st, ctx) -> result`` where the result is

* ``True`` / ``False`` -- decided;
* a :class:`Coin` ``(p, 1 - p)`` -- a random choice: matches with probability ``p`` (``statistic``);
* :class:`Assumed` -- kptrace cannot know (node addresses not given, ipset contents, a module it does
  not model); the value is the assumption, and the reason travels with the outcome.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, NamedTuple

from kptrace.model.addr import Cidr, parse_addr, parse_cidr
from kptrace.model.rules import Match, Option, Rule
from kptrace.tracer.packet import PROTOCOLS

__all__ = ["Assumed", "Check", "Coin", "Fork", "MATCHERS", "compile_base", "compile_match", "kernel_probability"]


@dataclass(frozen=True, slots=True)
class Assumed:
    value: bool
    reason: str


class Fork(NamedTuple):
    """A ``numgen random mod n`` in nft rule ``key``: the walk splits into ``n`` states, values offset..offset+n-1.
    (Here, beside :class:`Coin`, so that the engine does not import the nft compiler for iptables traces.)"""

    key: int
    n: int
    offset: int


class Coin(NamedTuple):
    """A random match: taken with probability ``p``, not taken with ``q = 1 - p`` (both exact, 0 < p < 1),
    also as integer numerators and denominators, which the tracer multiplies without normalising."""

    p: Fraction
    q: Fraction
    pn: int
    pd: int
    qn: int
    qd: int

    @classmethod
    def of(cls, p: Fraction) -> "Coin":
        q = 1 - p
        return cls(p, q, p.numerator, p.denominator, q.numerator, q.denominator)


def _coin(p: Fraction) -> Check:
    # Decided once here, so the tracer's inner loop never does Fraction arithmetic for a constant.
    if p <= 0:
        return lambda st, ctx: False
    if p >= 1:
        return lambda st, ctx: True
    coin = Coin.of(p)
    return lambda st, ctx: coin


# (st, ctx): the engine's packet state and walk context; Any because the engine imports this module, not the reverse
Check = Callable[[Any, Any], "bool | Coin | Fraction | Assumed"]
_TRUE: Check = lambda st, ctx: True  # noqa: E731


def kernel_probability(text: str) -> Fraction:
    """The exact probability the kernel applies for ``--probability text``.

    iptables stores ``lround(p * 2^31)`` and the kernel matches when a 31-bit random number is below
    it, so ``0.3333333333`` is really 715827883 / 2^31.

    >>> kernel_probability("0.5000000000")
    Fraction(1, 2)
    >>> float(kernel_probability("0.3333333333"))
    0.33333333348855376
    """
    x = float(text) * 2147483648.0
    return Fraction(int(math.floor(x + 0.5)), 1 << 31)


def _negate(check: Check, negated: bool) -> Check:
    if not negated:
        return check

    def neg(st, ctx):
        r = check(st, ctx)
        if r is True or r is False:
            return not r
        if isinstance(r, Coin):
            return Coin(r.q, r.p, r.qn, r.qd, r.pn, r.pd)
        return Assumed(not r.value, r.reason)

    return neg


def _ports(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            out.append((int(a) if a else 0, int(b) if b else 65535))
        elif "-" in part:  # multiport accepts a-b in some versions' output
            a, b = part.split("-", 1)
            out.append((int(a), int(b)))
        else:
            p = int(part)
            out.append((p, p))
    return out


def _port_check(field: str, text: str) -> Check:
    ranges = _ports(text)
    if len(ranges) == 1:
        lo, hi = ranges[0]
        if field == "dport":
            return lambda st, ctx: lo <= st.dport <= hi
        return lambda st, ctx: lo <= st.sport <= hi
    if field == "dport":
        return lambda st, ctx: any(lo <= st.dport <= hi for lo, hi in ranges)
    if field == "sport":
        return lambda st, ctx: any(lo <= st.sport <= hi for lo, hi in ranges)
    return lambda st, ctx: any(lo <= st.dport <= hi or lo <= st.sport <= hi for lo, hi in ranges)


def _mark_check(value: str, attr: str) -> Check:
    v, _, m = value.partition("/")
    val = int(v, 0)
    mask = int(m, 0) if m else 0xFFFFFFFF
    if attr == "mark":
        return lambda st, ctx: (st.mark & mask) == val
    return lambda st, ctx: (st.ctmark & mask) == val


def _iface_check(pattern: str, which: str) -> Check:
    prefix = pattern[:-1] if pattern.endswith("+") else None

    def check(st, ctx):
        name = st.iif if which == "in" else st.oif
        if name is None:
            flag = "--in-iface" if which == "in" else "the egress interface"
            return Assumed(False, f"{'input' if which == 'in' else 'output'} interface unknown: assumed not {pattern} ({flag})")
        return name.startswith(prefix) if prefix is not None else name == pattern

    return check


# ---------------------------------------------------------------- base (-s -d -p -i -o -f)

def compile_base(rule: Rule, family: int) -> list[Check]:
    return list(_compile_base_cached(rule.base, family))


@functools.lru_cache(maxsize=65536)
def _compile_base_cached(base: tuple[Option, ...], family: int) -> tuple[Check, ...]:
    checks: list[Check] = []
    for o in base:
        if o.name in ("-s", "-d"):
            cidr = _cidr(o.value, family)
            if o.name == "-s":
                c: Check = (lambda cidr: lambda st, ctx: (st.src & cidr.mask) == cidr.network)(cidr)
            else:
                c = (lambda cidr: lambda st, ctx: (st.dst & cidr.mask) == cidr.network)(cidr)
            checks.append(_negate(c, o.negated))
        elif o.name == "-p":
            p = o.value.lower()
            if p in ("all", "0"):
                c = _TRUE
            else:
                num = int(p) if p.isdigit() else PROTOCOLS.get(p, -1)
                c = (lambda num: lambda st, ctx: st.proto_num == num)(num)
            checks.append(_negate(c, o.negated))
        elif o.name in ("-i", "-o"):
            checks.append(_negate(_iface_check(o.value, "in" if o.name == "-i" else "out"), o.negated))
        elif o.name == "-f":
            checks.append(_negate(lambda st, ctx: False, o.negated))  # the first packet is never a later fragment
    return tuple(checks)


def _cidr(text: str, family: int) -> Cidr:
    cidr = parse_cidr(text)
    if cidr.version != family:
        raise ValueError(f"IPv{cidr.version} address {text} in an IPv{family} ruleset")
    return cidr


# ---------------------------------------------------------------- match modules

def _proto_ports(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    for o in m.options:
        if o.name in ("--dport", "--sport"):
            checks.append(_negate(_port_check(o.name[2:], o.value), o.negated))
        elif o.name == "--syn":
            checks.append(_negate(lambda st, ctx: st.proto_num == 6, o.negated))
        elif o.name == "--tcp-flags" and len(o.args) == 2:
            flag_bits = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128, "ALL": 255, "NONE": 0}
            mask = sum(flag_bits.get(f, 0) for f in o.args[0].split(","))
            comp = sum(flag_bits.get(f, 0) for f in o.args[1].split(","))
            # The first packet of a NEW TCP connection is a SYN.
            checks.append(_negate(lambda st, ctx, mask=mask, comp=comp: (2 & mask) == comp, o.negated))  # type: ignore[misc]  # defaults bind loop values
        else:
            checks.append(_unknown_option(m, o))
    # A protocol match only ever matches its own protocol.
    num = PROTOCOLS.get(m.module)
    if num is not None:
        checks.insert(0, lambda st, ctx: st.proto_num == num)
    return checks


def _multiport(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    for o in m.options:
        field = {"--dports": "dport", "--sports": "sport", "--ports": "any"}.get(o.name)
        checks.append(_negate(_port_check(field, o.value), o.negated) if field else _unknown_option(m, o))
    return checks


_ADDRTYPES = {"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
              "PROHIBIT", "THROW", "NAT", "XRESOLVE"}


def _addrtype(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    limit = m.get("--limit-iface-in") or m.get("--limit-iface-out")
    for o in m.options:
        if o.name not in ("--src-type", "--dst-type"):
            continue
        types = set(o.value.upper().split(","))
        attr = "src" if o.name == "--src-type" else "dst"

        def check(st, ctx, types=types, attr=attr):
            addr = st.src if attr == "src" else st.dst
            local = ctx.is_local(addr)
            multicast = ctx.is_multicast(addr)
            kind = "LOCAL" if local is True or (isinstance(local, Assumed) and local.value) else (
                "MULTICAST" if multicast else "UNICAST")
            result = kind in types
            if isinstance(local, Assumed):
                return Assumed(result, local.reason)
            if limit is not None:
                return Assumed(result, "addrtype --limit-iface-in/out: the interface's own addresses are not modelled")
            return result

        checks.append(_negate(check, o.negated))
    return checks


def _statistic(m: Match, family: int) -> list[Check]:
    mode = o.value if (o := m.get("--mode")) else "random"
    if mode == "random":
        o = m.get("--probability")
        p = kernel_probability(o.value) if o else Fraction(1)
        if o is not None and o.negated:
            p = 1 - p
        return [_coin(p)]
    if mode == "nth":
        o = m.get("--every")
        every = int(o.value) if o else 1
        p = Fraction(1, every)
        if o is not None and o.negated:
            p = 1 - p
        # One connection in every n: over many connections this is exactly a 1/n share.
        return [_coin(p)]
    return [lambda st, ctx: Assumed(False, f"statistic mode {mode} not modelled")]


def _mark(m: Match, family: int) -> list[Check]:
    o = m.get("--mark")
    return [_negate(_mark_check(o.value, "mark" if m.module == "mark" else "ctmark"), o.negated)] if o else []


def _conntrack(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    for o in m.options:
        if o.name in ("--ctstate", "--state"):
            states = set(o.value.upper().split(","))
            checks.append(_negate(lambda st, ctx, states=states: bool(states & st.ctstates()), o.negated))  # type: ignore[misc]  # defaults bind loop values
        elif o.name in ("--ctorigdst", "--ctorigsrc", "--ctreplsrc", "--ctrepldst"):
            cidr = _cidr(o.value, family)
            field = o.name[2:]
            checks.append(_negate(lambda st, ctx, cidr=cidr, field=field: cidr.contains(st.ct_tuple(field)), o.negated))  # type: ignore[misc]  # defaults bind loop values
        elif o.name in ("--ctorigdstport", "--ctorigsrcport", "--ctreplsrcport", "--ctrepldstport"):
            lo, _, hi = o.value.partition(":")
            lo_i, hi_i = int(lo), int(hi or lo)
            field = o.name[2:]
            checks.append(_negate(lambda st, ctx, lo=lo_i, hi=hi_i, field=field: lo <= st.ct_tuple(field) <= hi, o.negated))  # type: ignore[misc]  # defaults bind loop values
        elif o.name == "--ctproto":
            p = o.value.lower()
            num = int(p) if p.isdigit() else PROTOCOLS.get(p, -1)
            checks.append(_negate(lambda st, ctx, num=num: st.proto_num == num, o.negated))  # type: ignore[misc]  # defaults bind loop values
        elif o.name == "--ctdir":
            checks.append(_negate(lambda st, ctx, d=o.value.upper(): d == "ORIGINAL", o.negated))  # type: ignore[misc]  # defaults bind loop values
        elif o.name == "--ctstatus":
            statuses = set(o.value.upper().split(","))
            # A NEW connection's first packet: not yet CONFIRMED, no reply seen, not ASSURED.
            checks.append(_negate(lambda st, ctx, s=statuses: "NONE" in s, o.negated))  # type: ignore[misc]  # defaults bind loop values
        else:
            checks.append(_unknown_option(m, o))
    return checks


def _recent(m: Match, family: int) -> list[Check]:
    name = o.value if (o := m.get("--name")) else "DEFAULT"
    if (set_option := m.get("--set")) is not None:
        def set_(st, ctx):
            st.recent_set(name)
            return True
        return [_negate(set_, set_option.negated)]
    negated = any(o.negated for o in m.options if o.name in ("--rcheck", "--update", "--remove"))
    remove = m.get("--remove") is not None

    def check(st, ctx):
        hit = name in st.recent
        if hit and remove:
            st.recent_remove(name)
        return hit

    return [_negate(check, negated)]


def _set(m: Match, family: int) -> list[Check]:
    o = m.get("--match-set")
    set_name = o.args[0] if o and o.args else "?"
    flags = o.args[1] if o and len(o.args) > 1 else ""

    def check(st, ctx):
        return ctx.ipset_lookup(set_name, flags, st)

    return [_negate(check, bool(o and o.negated))]


def _always(m: Match, family: int) -> list[Check]:
    return []


def _iprange(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    for o in m.options:
        lo, _, hi = o.value.partition("-")
        lo_i, hi_i = parse_addr(lo)[1], parse_addr(hi or lo)[1]
        attr = "src" if o.name == "--src-range" else "dst"
        checks.append(_negate(lambda st, ctx, lo=lo_i, hi=hi_i, a=attr: lo <= (st.src if a == "src" else st.dst) <= hi, o.negated))  # type: ignore[misc]  # defaults bind loop values
    return checks


def _assume(value: bool, why: str) -> Callable[[Match, int], list[Check]]:
    def compile_(m: Match, family: int) -> list[Check]:
        negated = any(o.negated for o in m.options)
        reason = f"-m {m.module}: {why}"
        return [lambda st, ctx: Assumed(value != negated, reason)]
    return compile_


def _unknown_option(m: Match, o: Option) -> Check:
    return lambda st, ctx: Assumed(False, f"-m {m.module} {o.name}: not modelled, assumed not to match")


def _physdev(m: Match, family: int) -> list[Check]:
    checks: list[Check] = []
    for o in m.options:
        checks.append(lambda st, ctx, o=o: Assumed(o.negated, f"-m physdev {o.name}: bridge ports not modelled, assumed not bridged"))  # type: ignore[misc]  # defaults bind loop values
    return checks


def _rpfilter(m: Match, family: int) -> list[Check]:
    invert = m.get("--invert") is not None
    return [lambda st, ctx: Assumed(not invert, "-m rpfilter: assumed the source passes the reverse-path check")]


#: Match module -> compiler. A new module is one function here and a table in grammars/iptables.toml.
MATCHERS: dict[str, Callable[[Match, int], list[Check]]] = {
    "tcp": _proto_ports,
    "udp": _proto_ports,
    "sctp": _proto_ports,
    "udplite": _proto_ports,
    "dccp": _proto_ports,
    "icmp": lambda m, f: [lambda st, ctx: st.proto_num == 1],
    "icmp6": lambda m, f: [lambda st, ctx: st.proto_num == 58],
    "ipv6-icmp": lambda m, f: [lambda st, ctx: st.proto_num == 58],
    "multiport": _multiport,
    "addrtype": _addrtype,
    "statistic": _statistic,
    "mark": _mark,
    "connmark": _mark,
    "conntrack": _conntrack,
    "state": _conntrack,
    "comment": _always,
    "nfacct": _always,
    "recent": _recent,
    "set": _set,
    "iprange": _iprange,
    "physdev": _physdev,
    "rpfilter": _rpfilter,
    "pkttype": _assume(True, "assumed a unicast packet"),
    "limit": _assume(True, "rate limit assumed not exceeded"),
    "hashlimit": _assume(True, "rate limit assumed not exceeded"),
    "connlimit": _assume(False, "connection limit assumed not reached"),
    "owner": _assume(False, "socket owner not modelled, assumed not to match"),
    "socket": _assume(False, "sockets not modelled, assumed no matching socket"),
    "mac": _assume(False, "MAC addresses not modelled, assumed not to match"),
    "ipvs": _assume(False, "IPVS connections not modelled here, assumed not an IPVS packet"),
}


def compile_match(m: Match, family: int) -> list[Check]:
    """The checks for one match. Matches repeat across a dump (every endpoint chain's ``-m tcp``, the
    same ten ``--probability`` values in 10,000 Service chains), and checks hold no per-rule state, so
    they are compiled once per distinct match (cached), not once per rule."""
    if m.module in ("comment", "nfacct"):
        return []
    return list(_compile_match_cached(m, family))


@functools.lru_cache(maxsize=8192)
def _compile_match_cached(m: Match, family: int) -> tuple[Check, ...]:
    compiler = MATCHERS.get(m.module)
    if compiler is None:
        return tuple(_assume(False, "match module not modelled, assumed not to match")(m, family))
    return tuple(compiler(m, family))
