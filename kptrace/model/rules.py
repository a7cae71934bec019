"""The rules of one node as values: tables, chains, rules, matches, targets.

Rules are small frozen values that keep their raw text and source position. A chain parses its rules
the first time they are asked for: a 10k-Service node has 434,000 rule lines, a trace reads a few
hundred of them, and parsing every one up front costs ~10x the whole load (measured in
``benchmarks/``). ``kptrace parse`` asks for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from kptrace.model.tree import TableTree

__all__ = [
    "BUILTIN_CHAINS",
    "TABLES",
    "Chain",
    "Match",
    "Option",
    "RawRule",
    "Rule",
    "Ruleset",
    "Table",
    "Target",
]

#: The tables netfilter knows, and the built-in chains each has.
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLES = tuple(BUILTIN_CHAINS)


# Option, Match, Target and Rule are NamedTuples, not frozen dataclasses: they are as immutable, and
# a trace into a Service not traced before parses ~30 rules, where frozen dataclasses' __init__
# took 18 us of each rule's 27 us (benchmarks/run.py: 3.5 ms -> under 2 ms a trace).


class Option(NamedTuple):
    """One option and its values; ``negated`` when a ``!`` stood before it."""

    name: str
    args: tuple[str, ...] = ()
    negated: bool = False

    @property
    def value(self) -> str:
        return self.args[0] if self.args else ""

    def __str__(self) -> str:
        return ("! " if self.negated else "") + " ".join((self.name, *self.args))


class Match(NamedTuple):
    """``-m MODULE`` and its options, in the order written. ``known`` is False for a module kptrace has no
    grammar for."""

    module: str
    options: tuple[Option, ...]
    known: bool = True

    def get(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None


class Target(NamedTuple):
    """``-j NAME`` (``goto`` False) or ``-g NAME`` (``goto`` True) and its options."""

    name: str
    options: tuple[Option, ...] = ()
    goto: bool = False

    def get(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None


class Rule(NamedTuple):
    """One rule: base options (``-s -d -p -i -o -f``), matches, target, and where it came from."""

    table: str
    chain: str
    number: int  # 1-based position in its chain
    base: tuple[Option, ...]
    matches: tuple[Match, ...]
    target: Target | None
    text: str  # the rule as written, from "-A CHAIN" on
    source: str
    line: int
    counters: tuple[int, int] | None = None
    synthetic: bool = False  # supplied by kptrace (kube-proxy's standard jumps), not in the input

    @property
    def comment(self) -> str | None:
        for m in self.matches:
            if m.module == "comment":
                o = m.get("--comment")
                if o is not None:
                    return o.value
        return None

    def base_option(self, name: str) -> Option | None:
        for o in self.base:
            if o.name == name:
                return o
        return None

    def match(self, module: str) -> Match | None:
        for m in self.matches:
            if m.module == module:
                return m
        return None

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


class RawRule(NamedTuple):
    """A rule line as read at load time, before it is parsed."""

    line: int
    text: str  # from "-A CHAIN" on (counters removed)
    counters: tuple[int, int] | None = None


class Chain:
    """A chain: its declaration and its rules, parsed on first use.

    Value-like: the name, policy and rule lines never change after load; ``raw`` and ``rules`` are
    caches. At load a chain holds only the indices of its lines in the dump's line list: building a
    small object per rule line for 434,000 lines costs more than the rest of the load together.

    A reader builds one with the input's ``lines`` (shared by every chain of the input), the ``parse``
    function that turns a line into a :class:`Rule`, and the list of ``indices`` of its rule lines,
    which the reader may go on filling until its load ends; :meth:`of_texts` builds one from rule texts
    that are in no file.

    >>> c = Chain("X", "nat", policy=None, source="d", line=1, declared=True, lines=["*nat", "-A X -j RETURN"],
    ...           parse=lambda chain, n, raw: raw, indices=[1])
    >>> len(c), c.text_at(0), c.loaded_lines()[1]
    (1, '-A X -j RETURN', [1])
    """

    __slots__ = ("name", "table", "policy", "counters", "source", "line", "declared", "_lines", "_idx", "_parse",
                 "_raw", "_rules")

    def __init__(
        self,
        name: str,
        table: str,
        *,
        policy: str | None,
        source: str,
        line: int,
        declared: bool,
        lines: Sequence[str],
        parse: Callable[[Chain, int, RawRule], Rule],
        counters: tuple[int, int] | None = None,
        indices: list[int] | None = None,
    ) -> None:
        self.name = name
        self.table = table
        self.policy = policy  # ACCEPT/DROP for built-in chains, None for user chains
        self.counters = counters
        self.source = source
        self.line = line
        self.declared = declared
        self._lines = lines  # the whole input's lines, shared by every chain of it
        # 0-based indices of this chain's rule lines, in rule order. A reader passes the list and goes on
        # filling it until its load ends: 400,000 appends, where a method call per line would cost ~10% of
        # the load (benchmarks/run.py).
        self._idx: list[int] = indices if indices is not None else []
        self._parse = parse
        self._raw: list[RawRule] | None = None
        self._rules: tuple[Rule, ...] | None = None

    @classmethod
    def of_texts(cls, name: str, table: str, texts: Sequence[str], *, source: str,
                 parse: Callable[[Chain, int, RawRule], Rule]) -> Chain:
        """A declared chain of rule ``texts`` that are in no file (kptrace's own assumptions): line 0 each."""
        policy = "ACCEPT" if name in BUILTIN_CHAINS.get(table, ()) else None
        chain = cls(name, table, policy=policy, source=source, line=0, declared=True, lines=list(texts), parse=parse,
                    indices=list(range(len(texts))))
        chain._raw = [RawRule(0, t) for t in texts]
        return chain

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_CHAINS.get(self.table, ())

    @property
    def raw(self) -> list[RawRule]:
        if self._raw is None:
            out = []
            for i in self._idx:
                text = self._lines[i]
                counters = None
                if text.startswith("["):
                    end = text.index("]")
                    pkts, _, byts = text[1:end].partition(":")
                    counters = (int(pkts), int(byts))
                    text = text[end + 1:].lstrip()
                out.append(RawRule(i + 1, text.rstrip("\r"), counters))
            self._raw = out
        return self._raw

    def texts(self) -> list[tuple[int, str]]:
        """``(line, text)`` of every rule, without building :attr:`raw` (the drift check reads 100k endpoint
        chains once; building their RawRules cost ~1 s of a 10k-Service check)."""
        if self._raw is not None:
            return [(r.line, r.text) for r in self._raw]
        lines = self._lines
        out = []
        for i in self._idx:
            text = lines[i]
            if text.startswith("["):
                text = text[text.index("]") + 1:].lstrip()
            out.append((i + 1, text.rstrip("\r")))
        return out

    def text_at(self, index: int) -> str:
        """The text of rule ``index`` (0-based) from "-A" on, without building :attr:`raw`."""
        if self._raw is not None:
            return self._raw[index].text
        text = self._lines[self._idx[index]]
        return text[text.index("]") + 1:].lstrip() if text.startswith("[") else text

    def rule_at(self, index: int) -> Rule:
        """One rule, parsed without parsing the rest of the chain (a Service lookup in a 20k-rule chain)."""
        if self._rules is not None:
            return self._rules[index]
        if self._raw is not None:
            return self._parse(self, index + 1, self._raw[index])
        i = self._idx[index]
        text = self._lines[i]
        if text.startswith("["):
            return self._parse(self, index + 1, self.raw[index])
        return self._parse(self, index + 1, RawRule(i + 1, text, None))

    @property
    def rules(self) -> tuple[Rule, ...]:
        if self._rules is None:
            self._rules = tuple(self._parse(self, i + 1, r) for i, r in enumerate(self.raw))
        return self._rules

    def parse_rule(self, number: int, raw: RawRule) -> Rule:
        """Rule ``number`` (1-based) parsed from ``raw`` now, by the chain's parser; nothing is kept."""
        return self._parse(self, number, raw)

    @property
    def rule_parser(self) -> object | None:
        """The object whose method parses this chain's rules (a reader's rule parser), or None."""
        return getattr(self._parse, "__self__", None)

    def raw_rules(self) -> list[RawRule]:
        """:attr:`raw`, without keeping it when it was not kept already (``kptrace parse`` reads every
        rule of a 10k-Service dump once: its RawRules would hold ~100 MB)."""
        if self._raw is not None:
            return self._raw
        raw = self.raw
        self._raw = None
        return raw

    def loaded_lines(self) -> tuple[Sequence[str], list[int]]:
        """The input's lines (shared by every chain of it) and the 0-based indices of this chain's rule
        lines among them, in rule order: for checks that read 100,000 chains' lines as loaded, without
        building a :class:`RawRule` each (a rule line may start with ``[pkts:bytes]``)."""
        return self._lines, self._idx

    def __len__(self) -> int:
        return len(self._idx)

    def __repr__(self) -> str:
        return f"Chain({self.table}/{self.name}, {len(self._idx)} rules)"


@dataclass(slots=True)
class Table:
    name: str
    chains: dict[str, Chain]
    source: str = ""
    line: int = 0


@dataclass(slots=True)
class Ruleset(TableTree[Rule]):
    """Everything one address family of a node holds: ``family`` 4 (iptables) or 6 (ip6tables)."""

    family: int
    tables: dict[str, Table] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # assumptions kptrace made about the input as a whole
    #: Problems found while reading; grows as lazily parsed rules are first used.
    diagnostics: list = field(default_factory=list)

    def chain(self, table: str, name: str) -> Chain | None:
        t = self.tables.get(table)
        return t.chains.get(name) if t else None
