"""An nftables ruleset as values: tables, chains, sets and maps, rules as expressions.

One AST for the three forms a ruleset comes in (knftables transaction text, ``nft list ruleset`` text,
``nft -j list ruleset`` JSON): the parsers in ``kptrace/parsers/nft/`` (``text.py`` and ``json_doc.py``)
produce it, and spellings are canonical at parse time, so ``mark set mark or 0x4000`` (what kube-proxy
writes) and ``meta mark set meta mark | 0x00004000`` (what nft prints) are the same value::

    Mangle(Meta("mark"), Binop("|", Meta("mark"), Value("16384")))

Canonical spellings: numbers in decimal (``0x00004000`` -> ``"16384"``), IPv6 addresses compressed,
a full-length prefix is the address (``10.0.0.1/32`` -> ``10.0.0.1``), an address range that is a
prefix is the prefix, flag lists sorted (``ct state established,new``), a one-element anonymous set in
a match is its element (as nft stores it), ``dnat to`` in an ip/ip6 table has the table's family,
``reject`` with the family's default ``with`` has ``reject_with`` None, timeouts in seconds, priorities
as numbers. Strings are unquoted (``iifname "eth0"`` -> ``Value("eth0")``).

Expressions: :class:`Payload`, :class:`Meta`, :class:`Ct`, :class:`Fib`, :class:`Numgen`, :class:`Hash`,
:class:`Concat`, :class:`Binop`, :class:`Value`, :class:`Prefix`, :class:`Range`, :class:`SetRef`,
:class:`AnonSet`, :class:`AnonMap`, :class:`Lookup`.
Statements: :class:`Match`, :class:`Verdict`, :class:`Vmap`, :class:`Nat`, :class:`Mangle`,
:class:`SetUpdate`, :class:`Counter`, :class:`Log`, :class:`Limit`, :class:`Notrack`, :class:`Xt`,
:class:`Unknown` (anything not modelled: kept with its text, never dropped).

Set elements and anonymous set/map elements share one representation: a key is a string (one value,
``"172.30.0.41"``), a :class:`Prefix` or :class:`Range` (interval sets), or a tuple of those for a
concatenation (``("172.30.0.41", "tcp", "80")``); a map's value is a :class:`Verdict` (verdict maps) or a
tuple of strings (data maps: ``("10.180.0.4", "80")``).

>>> Value("1") == SetRef("1")   # equality compares the type too (plain NamedTuples would say True)
False
>>> format_stmt(Match(Binop("&", Meta("mark"), Value("16384")), "==", Value("0")))
'meta mark & 0x4000 == 0'

Chains parse their rules, and sets their elements, on first use: a 10k-Service node has ~350k lines
and a trace reads a few hundred rules and a few map elements (see ``NftChain``).
"""

from __future__ import annotations

from kptrace.model.nft.expr import (
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
    selector_name,
)
from kptrace.model.nft.objects import NftChain, NftRuleset, NftSet, NftTable
from kptrace.model.nft.text import (
    UNLOADABLE,
    canonical_view,
    format_expr,
    format_nft,
    format_rule,
    format_stmt,
    quoted_name,
    unloadable_reason,
)

__all__ = [
    "AnonMap", "AnonSet", "Binop", "Concat", "Counter", "Ct", "Fib", "Hash", "Limit", "Log", "Lookup", "Mangle",
    "Match", "Meta", "Nat", "NftChain", "NftRule", "NftRuleset", "NftSet", "NftTable", "Notrack", "Numgen",
    "PROTOCOL_SELECTORS", "Payload", "Prefix", "Range", "SetRef", "SetUpdate", "UNLOADABLE", "Unknown", "Value",
    "Verdict", "Vmap", "Xt", "canonical_view", "format_expr", "format_nft", "format_rule", "format_stmt",
    "quoted_name", "selector_name", "unloadable_reason",
]
