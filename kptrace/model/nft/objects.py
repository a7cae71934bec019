"""nft tables, chains, sets and maps: rules and elements read on first use (the nft model: kptrace/model/nft/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kptrace.model.nft.expr import NftRule
from kptrace.model.tree import TableTree

__all__ = [
    "NftChain", "NftRuleset", "NftSet", "NftTable",
]


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
        read = self._reader.elements if self._reader is not None else None  # (no chunks without a reader)
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
        if self._reader is None:
            return out
        read = self._reader.elements
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
class NftRuleset(TableTree[NftRule]):
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
