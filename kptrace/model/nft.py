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

from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Union

from kptrace.model.addr import is_uint

__all__ = [
    "AnonMap", "AnonSet", "Binop", "Concat", "Counter", "Ct", "Fib", "Hash", "Limit", "Log", "Lookup",
    "Mangle", "Match", "Meta", "Nat", "Notrack", "NftChain", "NftRule", "NftRuleset", "NftSet", "NftTable",
    "Numgen", "Payload", "Prefix", "Range", "SetRef", "SetUpdate", "Unknown", "Value", "Verdict", "Vmap", "Xt",
    "PROTOCOL_SELECTORS", "canonical_view", "format_expr", "format_nft", "format_rule", "format_stmt", "selector_name",
]


# Expressions and statements are NamedTuples (as rules.py's Option/Match/Rule: a lazily parsed rule
# builds a dozen of them, and frozen dataclasses' __init__ cost 2/3 of a rule's parse there). Plain
# NamedTuples compare as tuples, so Value("x") == SetRef("x"); _typed_eq below makes equality compare
# the type as well (hashes stay tuple hashes: equal values still hash alike).

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
    return type(self) is type(other) and tuple.__eq__(self, other)  # type: ignore[arg-type]


def _typed_ne(self: tuple, other: object) -> bool:
    return not (type(self) is type(other) and tuple.__eq__(self, other))  # type: ignore[arg-type]


for _cls in (Payload, Meta, Ct, Fib, Numgen, Hash, Concat, Binop, Value, Prefix, Range, SetRef, AnonSet, AnonMap,
             Lookup, Match, Verdict, Vmap, Nat, Mangle, SetUpdate, Counter, Log, Limit, Notrack, Xt, Unknown):
    _cls.__eq__ = _typed_eq  # type: ignore[method-assign,assignment]
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

    synthetic = False  # (never supplied by kptrace; the engine's Step reads it from every rule)
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


# ---------------------------------------------------------------- chains and sets


class NftChain:
    """A chain: its declaration (``type``/``hook``/``priority``/``policy`` for base chains) and its rules,
    parsed on first use.

    Value-like: the declaration and rule lines never change after load; ``_rules`` is a cache. At load
    a chain holds only one small entry per rule (an index into the input's lines, or the JSON object);
    building NftRules up front for ~350k rules would cost several times the whole load.

    >>> c = NftChain("c", "t", "ip", source="x", line=1)
    >>> len(c), c.is_base
    (0, False)
    """

    __slots__ = ("name", "table", "family", "type", "hook", "priority", "policy", "device", "comment", "source",
                 "line", "handle", "declared", "_entries", "_reader", "_rules")

    def __init__(self, name: str, table: str, family: str, *, source: str, line: int, type: str | None = None,
                 hook: str | None = None, priority: int | None = None, policy: str | None = None,
                 device: str | None = None, comment: str | None = None, handle: int | None = None,
                 declared: bool = True, reader: Any = None) -> None:
        self.name = name
        self.table = table
        self.family = family
        self.type = type
        self.hook = hook
        self.priority = priority
        self.policy = policy  # "accept"/"drop" for base chains, None for regular chains
        self.device = device
        self.comment = comment
        self.source = source
        self.line = line
        self.handle = handle
        self.declared = declared
        self._entries: list = []  # the parser's handle on each rule, in rule order
        self._reader = reader  # parser object with .text(entry) and .parse(chain, number, entry)
        self._rules: tuple[NftRule, ...] | None = None

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def rule_at(self, index: int) -> NftRule:
        """One rule (0-based index), parsed without parsing the rest of the chain."""
        if self._rules is not None:
            return self._rules[index]
        return self._reader.parse(self, index + 1, self._entries[index])

    @property
    def rules(self) -> tuple[NftRule, ...]:
        if self._rules is None:
            parse = self._reader.parse
            self._rules = tuple(parse(self, i + 1, e) for i, e in enumerate(self._entries))
        return self._rules

    def text_at(self, index: int) -> str | None:
        """Rule ``index``'s text (0-based) as the input wrote it, without parsing it; None where the input has no
        text to read (``nft -j``: its text would be rendered from the parsed rule) or the rules are parsed."""
        if self._rules is not None or not hasattr(self._reader, "lines"):
            return None
        return self._reader.text(self._entries[index])[1]

    def texts(self) -> list[tuple[int, str]]:
        """``(line, text)`` of every rule, without parsing them (JSON: rendered, so parsed)."""
        text = self._reader.text
        return [text(e) for e in self._entries]

    def index_of_handle(self, handle: int) -> int | None:
        """The 0-based index of the rule with this handle (from ``nft -a`` or nft -j; what ``nft monitor
        trace`` names), without parsing the chain; None when no rule has it."""
        get = self._reader.handle
        for i, e in enumerate(self._entries):
            if get(e) == handle:
                return i
        return None

    def __len__(self) -> int:
        return len(self._entries)

    def _changed(self) -> None:
        self._rules = None

    def __repr__(self) -> str:
        base = f", {self.type} hook {self.hook} priority {self.priority}" if self.hook else ""
        return f"NftChain({self.family} {self.table} {self.name}{base}, {len(self._entries)} rules)"


#: parsed element chunks by their text and the set's types (NftSet._read_chunk); values are immutable
_CHUNKS: dict = {}


class NftSet:
    """A named set or map; elements are parsed on first use and indexed for exact-key lookup.

    ``key_type``: a tuple of type names (one per part of a concatenation: ``("ipv4_addr",
    "inet_proto", "inet_service")``); ``data_type``: None for a set, ``("verdict",)`` for a verdict map,
    the data's types for a data map. ``elements``: (key, value) pairs (see the module docstring);
    ``lookup(key)`` finds an exact key (not an interval); ``comments`` holds element comments.
    """

    __slots__ = ("name", "table", "family", "key_type", "data_type", "flags", "timeout", "size", "comment", "typeof",
                 "extra", "source", "line", "handle", "declared", "_chunks", "_reader", "_elements", "_index", "_info")

    def __init__(self, name: str, table: str, family: str, *, source: str, line: int, key_type: tuple[str, ...] = (),
                 data_type: tuple[str, ...] | None = None, flags: tuple[str, ...] = (), timeout: float | None = None,
                 size: int | None = None, comment: str | None = None, typeof: str | None = None,
                 extra: tuple[tuple[str, str], ...] = (), handle: int | None = None, declared: bool = True,
                 reader: Any = None) -> None:
        self.name = name
        self.table = table
        self.family = family
        self.key_type = key_type
        self.data_type = data_type
        self.flags = flags
        self.timeout = timeout
        self.size = size
        self.comment = comment
        self.typeof = typeof  # "ip saddr : meta mark" when declared with typeof (nft -j does not say)
        self.extra = extra  # declarations kept but not modelled: policy, auto-merge, gc-interval
        self.source = source
        self.line = line
        self.handle = handle
        self.declared = declared
        self._chunks: list = []  # ("add" | "delete" | "flush", line, payload) in input order
        self._reader = reader  # parser object with .elements(set, line, payload, op) -> [(key, value, info)]
        self._elements: tuple | None = None
        self._index: dict | None = None
        self._info: dict | None = None

    @property
    def is_map(self) -> bool:
        return self.data_type is not None

    @property
    def is_vmap(self) -> bool:
        return self.data_type == ("verdict",)

    @property
    def interval(self) -> bool:
        return "interval" in self.flags

    def _load(self) -> None:
        index: dict = {}
        info: dict = {}
        read = self._reader.elements if self._reader is not None else None
        for op, line, payload in self._chunks:
            if op == "flush":
                index.clear()
                info.clear()
                continue
            for key, value, extras in self._read_chunk(read, line, payload, op):
                if op == "delete":
                    index.pop(key, None)
                    info.pop(key, None)
                else:
                    index[key] = value
                    if extras:
                        info[key] = extras
                    elif info:
                        info.pop(key, None)
        self._index = index
        self._info = info
        self._elements = tuple(index.items())

    @property
    def elements(self) -> tuple:
        if self._elements is None:
            self._load()
        return self._elements  # type: ignore[return-value]

    def lookup(self, key: Any) -> Any:
        """The value stored for ``key`` (None for a set, or when absent: use ``in`` to tell)."""
        if self._index is None:
            self._load()
        return self._index.get(key)  # type: ignore[union-attr]

    def __contains__(self, key: Any) -> bool:
        if self._index is None:
            self._load()
        return key in self._index  # type: ignore[operator]

    def __len__(self) -> int:
        return len(self.elements)

    @property
    def comments(self) -> dict:
        """Element comments by key (``no-endpoint-services`` elements carry the Service name)."""
        return {k: dict(v).get("comment") for k, v in self.info.items() if dict(v).get("comment") is not None}

    @property
    def info(self) -> dict:
        """Per-element extras as written (``comment``, ``timeout``, ``expires``, ``counter``): key -> ((name, value), ...)."""
        if self._info is None:
            self._load()
        return self._info  # type: ignore[return-value]

    def _read_chunk(self, read, line: int, payload, op: str) -> list:
        """One element chunk, parsed. A text chunk parsed before for a set of the same types (the other side of a
        ``kptrace diff``: two snapshots share most of their 10k-element maps) is not parsed again."""
        text = payload[1] if type(payload) is tuple and len(payload) == 2 and type(payload[1]) is str else None
        if text is None or len(text) < 4096:
            return read(self, line, payload, op)
        key = (self.family, self.key_type, self.data_type, self.flags, op, text)
        got = _CHUNKS.get(key)
        if got is not None:
            return got
        diags = getattr(self._reader, "diagnostics", None)
        before = len(diags) if diags is not None else 0
        got = list(read(self, line, payload, op))
        if diags is not None and len(diags) == before:  # a chunk with problems is read (and reported) each time
            if len(_CHUNKS) >= 64:
                _CHUNKS.pop(next(iter(_CHUNKS)))
            _CHUNKS[key] = got
        return got

    def _changed(self) -> None:
        self._elements = self._index = self._info = None

    def element_lines(self) -> dict:
        """Key -> the 1-based input line its element is written on (the element list's first line when
        the spelling cannot be found; nothing for JSON, which has no lines). Read in one pass over the
        element text, for evidence (``file:line``) in findings."""
        out: dict = {}
        read = self._reader.elements if self._reader is not None else None
        for op, line, payload in self._chunks:
            if op != "add" or not line:
                continue
            text = payload[1] if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[1], str) else None
            pos = nl = 0
            for key, _value, _extras in read(self, line, payload, op):
                if text is None or "\n" not in text:
                    out[key] = line
                    continue
                first = key[0] if isinstance(key, tuple) else key
                first = first if isinstance(first, str) else getattr(first, "addr", getattr(first, "lo", ""))
                at = text.find(first, pos) if first else -1
                if at < 0:
                    out[key] = line
                    continue
                nl += text.count("\n", pos, at)
                pos = at + len(first)
                out[key] = line + nl
        return out

    def __repr__(self) -> str:
        kind = "map" if self.is_map else "set"
        return f"NftSet({kind} {self.family} {self.table} {self.name}, {len(self._chunks)} element chunks)"


@dataclass(slots=True)
class NftTable:
    family: str
    name: str
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    comment: str | None = None
    flags: tuple[str, ...] = ()
    source: str = ""
    line: int = 0
    handle: int | None = None
    #: flowtables, named counters, quotas, ct helpers...: (kind, name, text, line), kept but not modelled
    objects: list = field(default_factory=list)
    #: True for the table kptrace made up for chains or rules pasted without their table
    placeholder: bool = False


@dataclass(slots=True)
class NftRuleset:
    """Every table of one input, keyed by (family, name)."""

    tables: dict[tuple[str, str], NftTable] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # assumptions kptrace made about the input as a whole
    #: Problems found while reading; grows as lazily parsed rules are first used.
    diagnostics: list = field(default_factory=list)

    def table(self, family: str, name: str) -> NftTable | None:
        return self.tables.get((family, name))

    def chain(self, family: str, table: str, name: str) -> NftChain | None:
        t = self.tables.get((family, table))
        return t.chains.get(name) if t else None

    def set(self, family: str, table: str, name: str) -> NftSet | None:
        t = self.tables.get((family, table))
        return t.sets.get(name) if t else None

    def base_chains(self, hook: str | None = None, families: tuple[str, ...] | None = None) -> list[NftChain]:
        """Base chains (of every table, or of ``families``), at ``hook`` if given, in the order the kernel runs
        them: by priority, and at one priority the chain made last first (nf_hook_entries_grow inserts a hook
        before those of equal priority; nft lists tables and chains in the order they were made). A CNI's
        FORWARD policy drop made after kube-proxy's filter-forward at priority 0 decides first (fixtures/nft mixed-*)."""
        out = [c for t in self.tables.values() if families is None or t.family in families
               for c in t.chains.values() if c.hook is not None and (hook is None or c.hook == hook)]
        made = {id(c): n for n, c in enumerate(out)}
        out.sort(key=lambda c: (c.priority or 0, -made[id(c)]))
        return out

    def iter_rules(self) -> Iterator[NftRule]:
        for t in self.tables.values():
            for c in t.chains.values():
                yield from c.rules

    @property
    def rule_count(self) -> int:
        return sum(len(c) for t in self.tables.values() for c in t.chains.values())

    @property
    def chain_count(self) -> int:
        return sum(len(t.chains) for t in self.tables.values())


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


def _name(name: str) -> str:
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
            return f"{s.kind} {_name(s.target or '')}"
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
        return f"{s.op} @{_name(s.set)} {{ {format_expr(s.key)}{timeout} }}"
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


def _loadable(rule: NftRule) -> str | None:
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
        head = f"{family} {_name(tname)}"
        opts = []
        if t.flags:
            opts.append(f"flags {','.join(t.flags)}")
        if t.comment is not None:
            opts.append(f'comment "{t.comment}"')
        out.append(f"add table {head}" + (" { " + " ; ".join(opts) + " ; }" if opts else ""))
        if stub_missing:
            missing = {v.target for c in t.chains.values() for r in c.rules for v in r.exprs
                       if type(v) is Verdict and v.kind in ("jump", "goto") and v.target not in t.chains}
            missing |= {v.target for s in t.sets.values() if s.is_vmap for _, v in s.elements
                        if type(v) is Verdict and v.kind in ("jump", "goto") and v.target not in t.chains}
            for name in sorted(missing):
                out.append(f"add chain {head} {_name(name)} {{ comment \"kptrace: not in the input\" ; }}")
        for c in t.chains.values():
            opts = []
            if c.hook is not None:
                dev = f' device "{c.device}"' if c.device else ""
                opts.append(f"type {c.type or 'filter'} hook {c.hook}{dev} priority {c.priority or 0}")
                if c.policy:
                    opts.append(f"policy {c.policy}")
            if c.comment is not None:
                opts.append(f'comment "{c.comment}"')
            out.append(f"add chain {head} {_name(c.name)}" + (" { " + " ; ".join(opts) + " ; }" if opts else ""))
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
            out.append(f"add {'map' if s.is_map else 'set'} {head} {_name(s.name)} {{ " + " ; ".join(opts) + " ; }")
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
                out.append(f"add element {head} {_name(s.name)} {{ " + ", ".join(items) + " }")
        for c in t.chains.values():
            for r in c.rules:
                line = f"add rule {head} {_name(c.name)} {format_rule(r.exprs, r.comment)}"
                why = _loadable(r)
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
