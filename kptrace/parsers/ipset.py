"""Parse ``ipset save`` and ``ipset list`` output into :class:`IPSets`; :func:`parse_ipset` tells the two apart.

Grammar (the line's first word decides; what each set type's elements look like and which options
take a value are data, in ``grammars/ipset.toml``)::

    save     := (create | add)*
    create   := "create" SETNAME TYPE option*
    add      := "add" SETNAME ELEMENT member_option*
    list     := set (blank set)*
    set      := "Name:" SETNAME  "Type:" TYPE  "Revision:" INT  "Header:" option*
                "Size in memory:" INT  "References:" INT  ["Number of entries:" INT]
                ["Members:" member*]                         (no Members: with ipset list -t)
    member   := ELEMENT member_option*
    ELEMENT  := PART ("," PART)*                             one PART per dimension of the type
    option   := NAME [VALUE]                                 family inet, hashsize 1024, counters, ...
    member_option := "timeout" INT | "packets" INT | "bytes" INT | "comment" QUOTED | "nomatch" | ...

As in kptrace/parsers/ipvsadm/ the pyparsing grammar (:func:`line_grammar`) reports the lines the
fast path cannot take, with the column where they go wrong; well-formed lines never reach it.

Pasted text is read too (kptrace/parsers/paste.py): prompts, fences, quote markers and colour codes go,
positions stay the original's. A set whose members are elided (``...``) is ``truncated`` and a note says
where; its "Number of entries" is then no sign of a cut copy.

A listing that holds fewer members than its "Number of entries" says was cut: the set is marked
``truncated`` and an error says so (a warning for a set with timeouts, whose entries may have
expired while it was listed).
"""

from __future__ import annotations

import functools
import re
import tomllib
from typing import Any, NamedTuple

from kptrace.errors import ParseError
from kptrace.model.addr import is_uint
from kptrace.model.ipvs import IPSet, IPSets, Location, MemberError, MemberMeta, canonical_member
from kptrace.parsers.grammar import grammar_path
from kptrace.parsers.linereader import Cut, LineReader, cleaned, diagnose, paused_gc

__all__ = ["IpsetGrammar", "ipset_grammar", "line_grammar", "parse_ipset"]

_new = tuple.__new__
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_FAMILIES = {"inet": 4, "inet6": 6}


class SetType(NamedTuple):
    name: str
    dimensions: tuple[str, ...]
    families: tuple[int, ...]


class IpsetGrammar(NamedTuple):
    """grammars/ipset.toml, loaded."""

    types: dict[str, SetType]
    create: dict[str, str]  # header option -> the kind of its value ("flag": none)
    element: dict[str, str]  # member option -> the kind of its value


@functools.cache
def ipset_grammar() -> IpsetGrammar:
    with open(grammar_path("ipset.toml"), "rb") as f:
        data = tomllib.load(f)
    types = {k: SetType(k, tuple(v["dimensions"]), tuple(v["families"])) for k, v in data["type"].items()}
    return IpsetGrammar(types, dict(data["create"]), dict(data["element"]))


@functools.cache
def line_grammar(kind: str, dimensions: tuple[str, ...] | None = None):
    """The pyparsing grammar of one line kind: ``create``, ``add`` and ``member`` (for a set type's
    ``dimensions``), ``header`` (a ``Key: value`` line of ``ipset list``)."""
    import pyparsing as pp

    g = ipset_grammar()

    def element_action(s, loc, toks):
        try:
            return canonical_member(toks[0], dimensions)
        except MemberError as e:
            raise pp.ParseFatalException(s, loc + e.offset, str(e)) from None

    setname = pp.Regex(r"[^\s]{1,31}").set_name("a set name")
    value = (pp.QuotedString('"') | pp.Regex(r"[^\s\"]+")).set_name("a value")
    element = pp.Regex(r"[^\s]+").set_name("an element").set_parse_action(element_action)

    values = {"int": pp.Regex(r"\d+").set_name("a number"), "family": pp.one_of(list(_FAMILIES), as_keyword=True).set_name("inet or inet6"),
              "quoted": pp.QuotedString('"').set_name("a quoted string"), "value": value}

    def options(table: dict[str, str], what: str):
        by_kind: dict[str, list[str]] = {}
        for name, k in table.items():
            by_kind.setdefault(k, []).append(name)
        opt = pp.MatchFirst([pp.one_of(names, as_keyword=True) if k == "flag" else pp.one_of(names, as_keyword=True) - values[k]
                             for k, names in by_kind.items()])
        return pp.ZeroOrMore(pp.Group(opt.set_name(what)))

    if kind == "create":
        set_type = pp.one_of(list(g.types), as_keyword=True).set_name("a set type") | pp.Regex(r"[a-z]+:\S+").set_name("a set type")
        return pp.Keyword("create") - setname("name") - set_type("type") - options(g.create, "a set option")("options") - pp.StringEnd()
    if kind == "add":
        return pp.Keyword("add") - setname("name") - element("member") - options(g.element, "a member option")("options") - pp.StringEnd()
    if kind == "member":
        return element("member") - options(g.element, "a member option")("options") - pp.StringEnd()
    if kind == "header":
        keys = ["Name", "Type", "Revision", "Header", "Size in memory", "References", "Number of entries", "Members"]
        return pp.one_of(keys)("key") - pp.Suppress(":") - pp.rest_of_line("value")
    raise ValueError(f"no grammar for line kind {kind!r}")


_ELEMENT_WORD = re.compile(r"[^\s,]+")


def _diagnose(line: str, kind: str, dimensions: tuple[str, ...] | None) -> tuple[int, int, str]:
    return diagnose(line_grammar(kind, dimensions), line, lambda found: f"unknown option {found!r}", _ELEMENT_WORD)


class _Set:
    """A set while it is read."""

    __slots__ = ("name", "type", "dims", "family", "options", "members", "meta", "lines", "idx", "text",
                 "revision", "expected", "expected_idx", "listed", "elided")

    def __init__(self, name: str, idx: int, text: str) -> None:
        self.name = name
        self.type: str | None = None
        self.dims: tuple[str, ...] | None = None
        self.family: int | None = None
        self.options: dict[str, str | bool] = {}
        self.members: set[str] = set()
        self.meta: dict[str, MemberMeta] = {}
        self.lines: dict[str, int] = {}
        self.idx = idx
        self.text = text
        self.revision: int | None = None
        self.expected: int | None = None
        self.expected_idx = 0
        self.listed = False  # ipset list: a Members: line was seen
        self.elided: list[int] = []  # line numbers of elisions ("...") among its members


class _Reader(LineReader):
    LAST_LINE = ("members after this line are missing", "ipset ends every line; check that the copy is whole")

    def __init__(self, text: str, source: str, elided: frozenset[int] = frozenset()) -> None:
        super().__init__(text, source)
        self.g = ipset_grammar()
        self.elided = elided  # indexes of the lines a paste elided ("...")
        self.elided_outside: list[int] = []  # ... before any set
        self.sets: dict[str, _Set] = {}
        self.current: _Set | None = None  # the set the last line belonged to

    def diagnosis(self, line: str, kind: str, variant: Any) -> tuple[int, int, str]:
        return _diagnose(line, kind, variant)

    def elide(self, idx: int) -> None:
        """An elided line: members of the set it is in (or sets before the first) may be missing."""
        if self.current is not None:
            self.current.elided.append(idx + 1)
        else:
            self.elided_outside.append(idx + 1)

    # -- pieces

    def tokens(self, line: str) -> list[str]:
        if '"' not in line:
            return line.split()
        return [m.group(1) if m.group(1) is not None else m.group(2) for m in _TOKEN.finditer(line)]

    def set_type(self, st: _Set, type_name: str, idx: int, col: int) -> None:
        st.type = type_name
        t = self.g.types.get(type_name)
        if t is None:
            self.problem("warning", idx, f"set type {type_name!r} is not one kptrace knows; its members are read by their look",
                         f"known types: {', '.join(self.g.types)}", col, len(type_name))
            return
        st.dims = t.dimensions
        if t.families:
            st.family = 4  # ipset's default family, when the header does not say

    def header_options(self, st: _Set, toks: list[str], idx: int, line: str) -> None:
        """``family inet hashsize 1024 ... counters comment``: kept as written; family read."""
        table = self.g.create
        i, n = 0, len(toks)
        while i < n:
            name = toks[i]
            kind = table.get(name)
            if kind is None:
                # A newer ipset's option: kept as written (with the word after it, unless that is an option too).
                self.problem("warning", idx, f"unknown set option {name!r}", "kept as written", line.find(name) + 1, len(name))
                kind = "value" if i + 1 < n and toks[i + 1] not in table else "flag"
            if kind == "flag":
                st.options[name] = True
                i += 1
                continue
            if i + 1 >= n:
                raise Cut
            val = toks[i + 1]
            if kind == "int" and not is_uint(val):
                raise Cut
            if kind == "family":
                if val not in _FAMILIES:
                    col = line.find(" " + val) + 2
                    self.problem("error", idx, f"unknown family {val!r}", "family is inet or inet6", col, len(val))
                else:
                    st.family = _FAMILIES[val]
            st.options[name] = val
            i += 2

    def member(self, st: _Set, elem: str, opts: list[str], idx: int) -> None:
        try:
            m = canonical_member(elem, st.dims)
        except MemberError:
            raise Cut from None
        if st.family is not None and st.dims and st.dims[0] in ("ip", "net") \
                and (":" in m.partition(",")[0]) != (st.family == 6):
            line = self.lines[idx]
            self.problem("error", idx, f"member {elem!r} is not of the set's family (inet{'6' if st.family == 6 else ''})",
                         "a set holds addresses of one family: two outputs mixed?", line.find(elem) + 1, len(elem))
            return
        if m in st.members:
            self.problem("warning", idx, f"member {elem!r} of set {st.name} is listed twice (first at line {st.lines[m]})",
                         "ipset prints each member once: two outputs in one input?", 0, 0)
            return
        meta = self.member_meta(opts) if opts else None  # before the member is kept: a refused line adds nothing
        st.members.add(m)
        st.lines[m] = idx + 1
        if meta is not None:
            st.meta[m] = meta

    def member_meta(self, opts: list[str]) -> MemberMeta:
        table = self.g.element
        timeout = packets = nbytes = comment = None
        nomatch = False
        other = []
        i, n = 0, len(opts)
        while i < n:
            name = opts[i]
            kind = table.get(name)
            arity = 0 if kind == "flag" else 1
            if kind is None or (arity and i + 1 >= n):
                raise Cut
            val = opts[i + 1] if arity else ""
            if kind == "int" and not is_uint(val):
                raise Cut
            if name in ("timeout", "packets", "bytes"):
                if name == "timeout":
                    timeout = int(val)
                elif name == "packets":
                    packets = int(val)
                else:
                    nbytes = int(val)
            elif name == "comment":
                comment = val
            elif name == "nomatch":
                nomatch = True
            else:
                other.append((name, val))
            i += 1 + arity
        return _new(MemberMeta, (timeout, packets, nbytes, comment, nomatch, tuple(other)))

    # -- the end

    def finish(self, variant: str, filtered: bool = False) -> dict[str, IPSet]:
        out = {}
        names = list(self.sets)
        for n in self.elided_outside:
            first = f" before set {names[0]}" if names else ""
            self.notes.append(f"{self.source}: the output is elided at line {n}: sets{first} may be missing")
        for k, (name, st) in enumerate(self.sets.items()):
            truncated = filtered
            if filtered:
                self.notes.append(f"set {name}: the output went through a filter: a member not shown is unknown, not absent")
            for n in st.elided:
                after = ""
                if self._next_set_starts(n, name):
                    after = f" and sets between it and {names[k + 1]}" if k + 1 < len(names) else " and sets after it"
                self.notes.append(f"{self.source}: the output is elided at line {n}: members of set {name}{after} may be missing")
            if st.elided:
                truncated = True
                shown = f"{len(st.members)} of {st.expected}" if variant == "list" and st.expected is not None else f"{len(st.members)}"
                self.notes.append(f"set {name}: {shown} members shown (elided at line {st.elided[0]}): a member not shown is "
                                  "unknown, not absent")
            elif self.cut and st is self.current:
                truncated = True
                self.notes.append(f"set {name}: the input was cut off while it was listed: a member not shown is unknown, not absent")
            elif variant == "list":
                if not st.listed:
                    truncated = bool(st.expected)
                    self.notes.append(f"set {name}: headers only (ipset list -t): its members are not in this input")
                elif st.expected is not None and len(st.members) < st.expected:
                    truncated = True
                    timeout = "timeout" in st.options
                    line = self.lines[st.expected_idx]
                    col = line.rfind(str(st.expected)) + 1
                    if timeout:
                        self.problem("warning", st.expected_idx, f"set {name} counts {st.expected} entries, the listing holds {len(st.members)}",
                                     "a set with timeouts: entries may have expired while it was listed, or the listing was cut",
                                     col, len(str(st.expected)))
                    else:
                        self.problem("error", st.expected_idx, f"set {name} counts {st.expected} entries, the listing holds "
                                     f"{len(st.members)}: the listing was cut",
                                     "take `ipset list` (or `ipset save`) again, or pass --lenient to use the members shown "
                                     "(a member not shown is then unknown, not absent)", col, len(str(st.expected)))
                    self.notes.append(f"set {name}: {len(st.members)} of {st.expected} members shown: a member not shown is unknown, not absent")
                elif st.expected is not None and len(st.members) > st.expected:
                    line = self.lines[st.expected_idx]
                    self.problem("warning", st.expected_idx, f"set {name} counts {st.expected} entries, the listing holds {len(st.members)}",
                                 "the set changed while it was listed?", line.rfind(str(st.expected)) + 1, len(str(st.expected)))
            out[name] = IPSet(name, st.type, st.family, st.options, frozenset(st.members), st.meta,
                              _new(Location, (self.source, st.idx + 1)), st.text, st.dims, truncated, st.expected,
                              st.revision, st.lines)
        return out

    def _next_set_starts(self, n: int, name: str) -> bool:
        """Whether what follows line ``n`` is another set (or nothing): an elision there may hide whole sets."""
        line = next((ln for ln in self.lines[n:] if ln.strip()), "")
        toks = line.split()
        return not toks or toks[0] in ("Name:", "create") or (toks[0] == "add" and len(toks) > 1 and toks[1] != name)


class _SaveReader(_Reader):
    """``ipset save``: create lines, each followed by its set's add lines."""

    def read(self) -> None:
        sets = self.sets
        st: _Set | None = None
        last_name = None
        elided = self.elided
        for idx, line in enumerate(self.lines):
            if not line:
                if idx in elided:
                    self.elide(idx)
                continue
            if line[:4] == "add ":
                toks = self.tokens(line)
                if len(toks) >= 3:
                    if toks[1] != last_name:
                        last_name = toks[1]
                        st = sets.get(last_name)
                        if st is None:
                            st = self.implicit_set(last_name, idx, line)
                    assert st is not None  # set with last_name, whatever its name
                    self.current = st
                    try:
                        self.member(st, toks[2], toks[3:], idx)
                        continue
                    except Cut:
                        pass
                self.refuse(idx, "add", st.dims if st is not None and toks[1:2] == [st.name] else None,
                            "an add line is add SETNAME ELEMENT [options]")
                continue
            if line[:7] == "create ":
                toks = self.tokens(line)
                if len(toks) < 3:
                    self.refuse(idx, "create", None, "a create line is create SETNAME TYPE [options]")
                    continue
                name = toks[1]
                if name in sets:
                    self.problem("error", idx, f"set {name} is created twice (first at line {sets[name].idx + 1})",
                                 "ipset restore would refuse it: two outputs in one input?", 8, len(name))
                    continue
                new = _Set(name, idx, line)
                self.set_type(new, toks[2], idx, 9 + len(name))
                try:
                    self.header_options(new, toks[3:], idx, line)
                except Cut:
                    self.refuse(idx, "create", None, "a create line is create SETNAME TYPE [options]")
                    continue
                sets[name] = new
                self.current = new
                last_name = None
                continue
            stripped = line.strip()
            if not stripped or stripped[0] == "#":
                continue
            first = stripped.split(None, 1)[0]
            self.problem("error", idx, f"not an ipset save line: {first!r}",
                         "ipset save prints create and add lines", 1, len(first))
        self.check_last_line()

    def implicit_set(self, name: str, idx: int, line: str) -> _Set:
        self.problem("error", idx, f"member of set {name}, which no create line before it makes",
                     "ipset restore would refuse it; a grep of ipset save output? keep the create line", 5, len(name))
        st = _Set(name, idx, line)  # its type unknown: members read by their look
        self.sets[name] = st
        return st


class _ListReader(_Reader):
    """``ipset list``: Name:/Type:/.../Members: blocks, separated by blank lines."""

    _KEYS = ("Name", "Type", "Revision", "Header", "Size in memory", "References", "Number of entries", "Members")

    def read(self) -> None:
        sets = self.sets
        st: _Set | None = None
        in_members = False
        elided = self.elided
        for idx, line in enumerate(self.lines):
            if not line and idx in elided:
                self.elide(idx)
                continue  # members may follow
            if in_members:
                assert st is not None  # a Members: line of a set opened in_members
                if line and line[:6] != "Name: ":
                    toks = self.tokens(line)
                    try:
                        self.member(st, toks[0], toks[1:], idx)
                    except (Cut, IndexError):
                        self.refuse(idx, "member", st.dims, f"a member of a {st.type} set")
                    continue
                in_members = False
                if not line:
                    continue
            if not line or line.isspace():
                continue
            key, sep, value = line.partition(":")
            value = value.strip()
            if not sep or key not in self._KEYS:
                if line.lstrip()[:1] == "#":
                    continue
                first = line.split(None, 1)[0]
                if idx == len(self.lines) - 1 and not self.ends_with_newline:
                    self.cut = True
                    self.problem("error", idx, f"the input ends in the middle of a line ({first!r})",
                                 "the listing looks cut off (an interrupted copy?); take it again, or pass --lenient to read what is there",
                                 1, len(first))
                else:
                    self.problem("error", idx, f"not a line of an ipset listing: {first!r}",
                                 "ipset list prints Name:, Type:, Revision:, Header:, ... Members: and the members", 1, len(first))
                continue
            if key == "Name":
                if not value:
                    self.refuse(idx, "header", None, "Name: SETNAME")
                    st = None
                    continue
                if value in sets:
                    self.problem("error", idx, f"set {value} is listed twice (first at line {sets[value].idx + 1})",
                                 "two listings in one input?", 7, len(value))
                    st = None
                    continue
                st = _Set(value, idx, line)
                sets[value] = st
                self.current = st
                continue
            if st is None:
                self.problem("error", idx, f"{key}: before any Name: line", "each set's listing starts with Name: SETNAME", 1, len(key))
                continue
            col = len(key) + 3
            if key == "Type":
                self.set_type(st, value, idx, col)
            elif key == "Header":
                try:
                    self.header_options(st, self.tokens(value), idx, line)
                except Cut:
                    self.problem("error", idx, "a header option lacks its value", "Header: family inet hashsize 1024 ...",
                                 len(line) + 1, 1)
            elif key == "Members":
                st.listed = True
                in_members = True
            elif key in ("Revision", "Number of entries", "Size in memory", "References"):
                if not is_uint(value):
                    self.problem("error", idx, f"{key}: takes a number", "", col, max(1, len(value)))
                elif key == "Revision":
                    st.revision = int(value)
                elif key == "Number of entries":
                    st.expected = int(value)
                    st.expected_idx = idx
        self.check_last_line()


def parse_ipset(text: str, source: str = "-", *, lenient: bool = False) -> IPSets:
    """Read ``ipset save`` or ``ipset list`` output (told from the text). Problems are collected as
    diagnostics; errors raise :class:`ParseError` unless ``lenient``, which keeps what could be read.

    >>> sets = parse_ipset("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\\nadd KUBE-NODE-PORT-TCP 30080\\n", "s.txt")
    >>> sets["KUBE-NODE-PORT-TCP"].contains("30080"), sets["KUBE-NODE-PORT-TCP"].options["range"]
    (True, '0-65535')
    """
    with paused_gc():
        return _parse(text, source, lenient)


def _parse(text: str, source: str, lenient: bool) -> IPSets:
    # What a paste adds is taken away first (kptrace/parsers/paste.py); lines stay where they were.
    paste, kind = cleaned(text, source, "ipset", ("ipset-save", "ipset-list"), "ipset output",
                          "kptrace reads `ipset save` and `ipset list` output here")
    text = paste.text
    variant = "list" if kind == "ipset-list" else "save"
    elided = frozenset(n - 1 for n in paste.elisions)
    reader = _ListReader(text, source, elided) if variant == "list" else _SaveReader(text, source, elided)
    reader.read()
    sets = reader.finish(variant, bool(paste.filtered))
    if not sets and not any(d.severity == "error" for d in reader.diags):
        reader.notes.append(f"{source}: no sets")
    result = IPSets(sets, source, reader.diagnostics(paste), tuple(paste.notes) + tuple(reader.notes),
                    variant)
    if not lenient and result.errors:
        raise ParseError(list(result.diagnostics))
    return result
