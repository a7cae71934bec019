"""The texts match modules and targets print in a listing (``grammars/iptables_list.toml``) and the names
a listing without ``-n`` prints (``grammars/names.toml``), compiled: each phrase into a regular expression
(the fast path's) and into the pieces the pyparsing grammar is built from."""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kptrace.parsers.grammar import grammar_path, names_table

__all__ = ["ListingGrammar", "Module", "Phrase", "compile_phrase", "listing_grammar", "save_string"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"[\"\\']")


def save_string(value: str) -> str:
    """A value written as iptables-save writes strings (``xtables_save_string``): bare when it is only
    letters, digits, ``_`` and ``-``; otherwise double-quoted, with ``"``, ``\\`` and ``'`` escaped.

    >>> save_string("kubernetes"), save_string("kubernetes service portals"), save_string('a "b"')
    ('kubernetes', '"kubernetes service portals"', '"a \\\\"b\\\\""')
    """
    if value and _BARE.fullmatch(value):
        return value
    if '"' in value or "\\" in value or "'" in value:
        value = _ESCAPE.sub(r"\\\g<0>", value)
    return f'"{value}"'


class Phrase(NamedTuple):
    """One text a module prints (``dpt:<!><port>``) and what iptables-save writes for it."""

    pattern: str  # as written in the data: names the phrase in messages
    regex: re.Pattern
    pieces: tuple  # (kind, regex, name) for the pyparsing grammar: "lit", "ws", "neg", "val"
    template: tuple  # literal strings and (name, complement) references; "!" is the negation
    types: dict  # value name -> type name
    rank: int  # where iptables-save writes the option among its module's (0: as listed)
    rename: str | None  # the phrase renames the rule's target
    negatable: bool  # the pattern has its own <!>
    key: str  # its first literal characters (the fast path's lookup)


class Module(NamedTuple):
    name: str
    save: str  # "-m tcp"; "" for a target
    head: Phrase | None
    phrases: tuple[Phrase, ...]
    ranked: bool  # some phrase has a rank: its options are sorted
    follow: dict[str, tuple[Phrase, ...]]  # the phrases by their first characters (see candidates)
    loose: tuple[Phrase, ...]  # the phrases that start with a value


_PLACE = re.compile(r"<(!|[a-z0-9]+)(?::([a-z0-9]+))?>")
_REF = re.compile(r"\{(~?)([a-z0-9!]+)\}")


def compile_phrase(spec: Any, types: dict[str, str]) -> Phrase:
    if isinstance(spec, str):
        listing, _, save = spec.partition(" => ")
        extra: dict = {}
    else:
        listing, save, extra = spec["list"], spec.get("save", ""), spec
    listing = listing.strip()
    exact = "<comment>" in listing  # a comment is "/* TEXT */" exactly: its spaces are part of the text
    regex: list[str] = []
    pieces: list[tuple[str, str, str]] = []
    names: dict[str, str] = {}
    pos = 0

    def literal(text: str) -> None:
        for part in re.split(r"( +)", text):
            if not part:
                continue
            if part.startswith(" "):
                rx = " " if exact else r"\s+"
                regex.append(rx)
                pieces.append(("ws", rx, ""))
            else:
                regex.append(re.escape(part))
                pieces.append(("lit", re.escape(part), ""))

    for m in _PLACE.finditer(listing):
        literal(listing[pos:m.start()])
        if m.group(1) == "!":
            rx = r"(?:\s*(?P<neg>!)\s*)?"
            regex.append(rx)
            pieces.append(("neg", rx, "neg"))
        else:
            typ, name = m.group(1), m.group(2) or m.group(1)
            if typ not in types:
                raise ValueError(f"grammars/iptables_list.toml: unknown type <{typ}> in {listing!r}")
            names[name] = typ
            rx = f"(?P<{name}>{types[typ]})"
            regex.append(rx)
            pieces.append(("val", rx, name))
        pos = m.end()
    literal(listing[pos:])
    template: list = []
    at = 0
    for m in _REF.finditer(save):
        if m.start() > at:
            template.append(save[at:m.start()])
        ref = m.group(2)
        if ref != "!" and ref not in names:
            raise ValueError(f"grammars/iptables_list.toml: {{{ref}}} is not a value of {listing!r}")
        template.append("!" if ref == "!" else (ref, m.group(1) == "~"))
        at = m.end()
    if at < len(save):
        template.append(save[at:])
    first = listing[3:] if listing.startswith("<!>") else listing
    key = re.split(r"[ <]", first, maxsplit=1)[0][:4]
    return Phrase(listing, re.compile("".join(regex) + r"(?=\s|$)"), tuple(pieces), tuple(template), names,
                   int(extra.get("rank", 0)), extra.get("target"), "<!>" in listing, key)


@dataclass(frozen=True, slots=True)
class ListingGrammar:
    """``grammars/iptables_list.toml`` and ``grammars/names.toml``, compiled."""

    matches: dict[str, Module]
    targets: dict[str, Module]
    #: key length -> first characters -> (module, phrase) that can open a match there
    openers: dict[int, dict[str, list[tuple[Module, Phrase]]]]
    chain_tables: tuple[tuple[str, frozenset[str]], ...]
    target_tables: dict[str, frozenset[str]]
    addresses: dict[str, dict[str, str]]
    services: dict[str, int | list[int]]
    protocol_save: dict[int, str]
    protocol_names: dict[str, int]
    icmp: dict[int, dict[str, str]]  # family -> name -> save value
    #: the pyparsing grammars by target name, built on first need (listing/fallback.py)
    pp_cache: dict[str, Any] = field(default_factory=dict)
    # chain_tables for speed (111,000 chains in a 10k-Service listing): names without wildcards in a
    # dict, the patterns as one regular expression whose matching group says which
    _chain_exact: dict = field(default_factory=dict)
    _chain_globs: re.Pattern = None  # type: ignore[assignment]
    _chain_glob_tables: list = field(default_factory=list)

    def __post_init__(self) -> None:
        globs = []
        for pattern, tables in self.chain_tables:
            if any(c in pattern for c in "*?["):
                globs.append(f"({fnmatch.translate(pattern)})")
                self._chain_glob_tables.append(tables)
            else:
                self._chain_exact.setdefault(pattern, tables)
        object.__setattr__(self, "_chain_globs", re.compile("|".join(globs) or "(?!)"))

    def tables_of_chain(self, name: str) -> frozenset[str] | None:
        """The tables a chain of this name is in, when [tables.chains] knows it."""
        exact = self._chain_exact.get(name)
        if exact is not None:
            return exact
        m = self._chain_globs.match(name)
        return self._chain_glob_tables[(m.lastindex or 1) - 1] if m is not None else None


@functools.cache
def listing_grammar() -> ListingGrammar:
    """``grammars/iptables_list.toml`` and ``grammars/names.toml``, compiled once per process."""
    with open(grammar_path("iptables_list.toml"), "rb") as f:
        data = tomllib.load(f)
    names = names_table()
    types = data["types"]

    def module(name: str, spec: dict, save: str) -> Module:
        head = None
        if "head" in spec:
            head = compile_phrase(spec["head"], types)
        phrases = tuple(compile_phrase(p, types) for p in spec.get("phrases", ()))
        follow: dict[str, list[Phrase]] = {}
        for ph in phrases:
            if ph.key:
                follow.setdefault(ph.key, []).append(ph)
        return Module(name, spec.get("save", save), head, phrases, any(p.rank for p in phrases),
                       {k: tuple(v) for k, v in follow.items()}, tuple(ph for ph in phrases if not ph.key))

    matches = {k: module(k, v, f"-m {k}") for k, v in data["match"].items()}
    targets = {k: module(k, v, "") for k, v in data["target"].items()}
    openers: dict[int, dict[str, list]] = {1: {}, 2: {}, 3: {}, 4: {}}
    for mod in matches.values():
        for ph in ([mod.head] if mod.head is not None else list(mod.phrases)):
            if ph.key:
                openers[len(ph.key)].setdefault(ph.key, []).append((mod, ph))
    tables = data["tables"]
    return ListingGrammar(
        matches=matches,
        targets=targets,
        openers=openers,
        chain_tables=tuple((k, frozenset(v)) for k, v in tables["chains"].items()),
        target_tables={k: frozenset(v) for k, v in tables["targets"].items()},
        addresses=names["addresses"],
        services=names["services"],
        protocol_save={int(k): v for k, v in names["protocols"]["save"].items()},
        protocol_names=names["protocols"]["names"],
        icmp={4: names["icmp"], 6: names["icmpv6"]},
    )
