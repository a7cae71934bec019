"""nft expressions and statements as values, and a rule as their list (the nft model: kptrace/model/nft/)."""

from __future__ import annotations

from typing import Any, NamedTuple, Union

__all__ = [
    "AnonMap", "AnonSet", "Binop", "Concat", "Counter", "Ct", "Fib", "Hash", "Limit", "Log", "Lookup", "Mangle",
    "Match", "Meta", "Nat", "Notrack", "NftRule", "Numgen", "Payload", "Prefix", "Range", "SetRef", "SetUpdate",
    "Unknown", "Value", "Verdict", "Vmap", "Xt", "PROTOCOL_SELECTORS", "selector_name",
]


# ---------------------------------------------------------------- expressions


class Payload(NamedTuple):
    """A header field: ``ip daddr``, ``tcp dport``, ``th dport`` (any transport header)."""

    protocol: str
    field: str


class Meta(NamedTuple):
    """``meta KEY`` (also written without ``meta``: ``mark``, ``iifname``)."""

    key: str


class Ct(NamedTuple):
    """``ct KEY``; ``direction`` is "original"/"reply" for ``ct original ip daddr`` (key ``"ip daddr"``)."""

    key: str
    direction: str | None = None


class Fib(NamedTuple):
    """``fib daddr type``: ``flags`` ("daddr",), ``result`` "type"; ``fib daddr . iif oif``: ("daddr", "iif"), "oif"."""

    flags: tuple[str, ...]
    result: str


class Numgen(NamedTuple):
    """``numgen random mod 2 [offset K]``: uniform over offset..offset+mod-1 (``inc``: round robin)."""

    mode: str
    mod: int
    offset: int = 0


class Hash(NamedTuple):
    """``jhash EXPR mod N [seed S] [offset K]`` or ``symhash mod N [offset K]`` (``expr`` None)."""

    kind: str
    expr: Any
    mod: int
    seed: int | None = None
    offset: int = 0


class Concat(NamedTuple):
    """``ip daddr . meta l4proto . th dport``."""

    items: tuple


class Binop(NamedTuple):
    """``meta mark & 0x4000`` (op ``&``, ``|``, ``^``, ``<<``, ``>>``)."""

    op: str
    left: Any
    right: Any


class Value(NamedTuple):
    """A literal in canonical spelling: ``"10.0.0.1"``, ``"80"``, ``"tcp"``, ``"16384"``, ``"established,related"``."""

    text: str


class Prefix(NamedTuple):
    """``10.0.0.0/8``."""

    addr: str
    length: int


class Range(NamedTuple):
    """``30000-32767``, ``10.0.0.1-10.0.0.9``."""

    lo: str
    hi: str


class SetRef(NamedTuple):
    """``@name``: a named set or map of the rule's table."""

    name: str


class AnonSet(NamedTuple):
    """``{ a, b }``: keys as in :class:`NftSet` (strings, Prefix/Range, tuples for concatenations)."""

    elements: tuple


class AnonMap(NamedTuple):
    """``{ 0 : goto x, 1 : goto y }`` or ``{ 0 : 10.0.0.1 . 80 }``: (key, value) pairs as in :class:`NftSet`."""

    pairs: tuple

    def get(self, key: Any) -> Any:
        for k, v in self.pairs:
            if k == key:
                return v
        return None


class Lookup(NamedTuple):
    """``KEY map MAPPING`` used as a value: ``meta mark set ip saddr map @marks``."""

    key: Any
    mapping: Any


Expr = Union[Payload, Meta, Ct, Fib, Numgen, Hash, Concat, Binop, Value, Prefix, Range, SetRef, AnonSet, AnonMap, Lookup]

# ---------------------------------------------------------------- statements


class Match(NamedTuple):
    """``left op right``. ``op``: ``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, or ``in`` (a bit test: ``ct state new``).

    ``ip daddr @set`` is ``Match(Payload("ip", "daddr"), "==", SetRef("set"))``; ``ip daddr { a, b }`` has
    an :class:`AnonSet` on the right; ``mark and 0x4000 == 0`` is ``Match(Binop("&", Meta("mark"), Value("16384")), "==", Value("0"))``.
    """

    left: Any
    op: str
    right: Any


class Verdict(NamedTuple):
    """``accept``, ``drop``, ``continue``, ``return``, ``jump X``, ``goto X``, ``queue``, ``reject [with ...]``.

    ``reject_with`` is None for the family's default (``icmp port-unreachable`` in ip), else e.g.
    ``"tcp reset"``, ``"icmp host-unreachable"``, ``"icmpx admin-prohibited"``.
    """

    kind: str
    target: str | None = None
    reject_with: str | None = None


class Vmap(NamedTuple):
    """``KEY vmap MAPPING``: the packet takes the verdict of the element its key finds; none found: the rule does not match."""

    key: Any
    mapping: Any  # SetRef | AnonMap


class Nat(NamedTuple):
    """``dnat``/``snat``/``masquerade``/``redirect``.

    ``dnat to 10.0.0.1:80``: addr Value("10.0.0.1"), port Value("80"). ``redirect to :8080``: port only.
    ``dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.0.4 . 80, ... }``: ``map_key`` the
    Numgen, ``addr`` the AnonMap (its values are (addr, port) tuples), ``port`` None. ``family`` is
    "ip"/"ip6" (the table's for an ip/ip6 table) or None (masquerade, redirect).
    """

    kind: str
    family: str | None = None
    addr: Any = None
    port: Any = None
    flags: tuple[str, ...] = ()
    map_key: Any = None


class Mangle(NamedTuple):
    """``KEY set VALUE``: ``meta mark set meta mark | 0x4000``, ``ct mark set meta mark``, ``meta nftrace set 1``."""

    key: Any
    value: Any


class SetUpdate(NamedTuple):
    """``update @affinity { ip saddr }`` (op "add", "update" or "delete"); ``timeout`` in seconds or None."""

    op: str
    set: str
    key: Any
    timeout: float | None = None


class Counter(NamedTuple):
    """``counter`` (``packets``/``bytes`` None when not printed)."""

    packets: int | None = None
    bytes: int | None = None


class Log(NamedTuple):
    """``log [prefix "x"] [level L] [group N ...]``: other options as (name, value) pairs."""

    prefix: str | None = None
    level: str | None = None
    options: tuple[tuple[str, str], ...] = ()


class Limit(NamedTuple):
    """``limit rate [over] RATE[ UNIT]/PER [burst B UNIT]``: ``unit`` "packets" or bytes units; ``burst`` None when default."""

    rate: int
    per: str
    burst: int | None = None
    unit: str = "packets"
    over: bool = False


class Notrack(NamedTuple):
    """``notrack``."""

    kind: str = "notrack"


class Xt(NamedTuple):
    """``xt match NAME`` / ``xt target NAME``: an iptables-nft extension nft cannot show (its options are lost)."""

    kind: str
    name: str


class Unknown(NamedTuple):
    """A statement kptrace does not model, kept as written (nft syntax; ``json:`` + JSON from nft -j)."""

    text: str
    reason: str = ""


def _typed_eq(self: tuple, other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _typed_ne(self: tuple, other: object) -> bool:
    return not (type(self) is type(other) and tuple.__eq__(self, other))


for _cls in (Payload, Meta, Ct, Fib, Numgen, Hash, Concat, Binop, Value, Prefix, Range, SetRef, AnonSet, AnonMap,
             Lookup, Match, Verdict, Vmap, Nat, Mangle, SetUpdate, Counter, Log, Limit, Notrack, Xt, Unknown):
    _cls.__eq__ = _typed_eq  # type: ignore[method-assign]
    _cls.__ne__ = _typed_ne  # type: ignore[method-assign,assignment]


#: the selectors whose value is a protocol (a number there is written by its name: 6 is tcp)
PROTOCOL_SELECTORS = frozenset({"meta l4proto", "ip protocol", "ip6 nexthdr", "ct protocol"})


def selector_name(e: Any) -> str:
    """How nft names a selector expression ("ip daddr", "meta l4proto", "ct state"); "" for anything else."""
    t = type(e)
    if t is Payload:
        return f"{e.protocol} {e.field}"
    if t is Meta:
        return f"meta {e.key}"
    if t is Ct:
        return f"ct {e.key}"
    return ""


class NftRule(NamedTuple):
    """One rule: its statements in order, and where it came from.

    ``text`` is the rule as written (JSON: rendered in nft syntax); ``line`` 1-based (0 for JSON);
    ``handle`` from ``nft -a`` or JSON; ``counters`` (packets, bytes) of its first ``counter``.
    """

    # a class attribute, not a field (never supplied by kptrace; the engine's Step reads it from every rule)
    synthetic = False  # type: ignore[misc]
    family: str
    table: str
    chain: str
    number: int  # 1-based position in its chain
    exprs: tuple
    text: str
    source: str
    line: int
    handle: int | None = None
    counters: tuple[int, int] | None = None
    comment: str | None = None

    @property
    def location(self) -> str:
        if self.line:
            return f"{self.source}:{self.line}"
        return f"{self.source} (handle {self.handle})" if self.handle is not None else self.source

    @property
    def verdict(self) -> Verdict | None:
        """The rule's last statement if it is a verdict."""
        if self.exprs and type(self.exprs[-1]) is Verdict:
            return self.exprs[-1]
        return None
