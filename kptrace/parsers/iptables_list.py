"""Parse ``iptables -L`` listings and ``iptables -S`` output into the model an iptables-save dump builds.

Every form the tools print is read: ``iptables [-t TABLE] -L [CHAIN]`` with or without ``-n``, ``-v``,
``-x`` and ``--line-numbers``, of one chain or of all, of any table, ``ip6tables`` as well, and
``iptables [-t TABLE] -S [CHAIN] [-v]``; several of them pasted one after another, with the shell
prompts and command lines between them or without (``fixtures/listings/`` has each form).

Grammar (line by line; blank lines and ``# ...`` lines between chains are skipped)::

    listing  := (command | chain | spec)*
    command  := [PROMPT] ("iptables" | "ip6tables") ARGS   says the table, the family and the flags of
                                                            what follows (no -t: the filter table)
    chain    := "Chain" NAME "(" ("policy" POLICY [COUNT "packets," COUNT "bytes"] | N "references") ")"
                header rule*
    header   := ["num"] ["pkts" "bytes"] "target" "prot" "opt" ["in" "out"] "source" "destination"
    rule     := [N] [COUNT COUNT] [TARGET] ["!"]PROT OPT [IFACE IFACE] ["!"]ADDR ["!"]ADDR ["[goto]"] text*
    text     := what a match module or the target prints   (grammars/iptables_list.toml)
    COUNT    := DIGITS ["K" | "M" | "G" | "T"]             (-v without -x: rounded to thousands, millions, ...)
    spec     := "-P" CHAIN POLICY ["-c" N N] | "-N" CHAIN | "-A" CHAIN rule-spec       (iptables -S [-v])

How: each rule line is turned into the line iptables-save would have written for the same rule
(``-A CHAIN -d 10.96.0.1/32 -p tcp -m comment --comment "..." -m tcp --dport 443 -j KUBE-SVC-...``),
and the iptables-save parser's rule parser builds the :class:`~kptrace.model.rules.Rule` from it, so a
listing and a dump of the same rules give the same model and the same traces. A rule keeps its line in
the listing: problems are reported at the listing's ``line:col``, with the listing's line quoted.

The texts the match modules and targets print are data (``grammars/iptables_list.toml``), compiled two
ways: into regular expressions, one per phrase, found by a dictionary lookup on the phrase's first
characters (the fast path, ~10 us a kube-proxy rule), and into a pyparsing grammar, which takes a text
the fast path could not read and, when it cannot read it either, says where and what it expected.
``tests/test_iptables_list.py`` checks that both read every fixture line alike. pyparsing is imported
only when a line needs it.

Without ``-n``, iptables prints names: ``anywhere``, services for ports, protocol names, host and
network names for addresses. They are read back with the fixed tables in ``grammars/names.toml``; a
name those do not resolve is reported (a warning at its position) and kept as written, so the tracer
cannot use it as an address or a port and marks what rests on it as assumed. Listings also lose
things an iptables-save dump has: interface matches without ``-v``, exact counters without ``-x``, and
whatever an iptables older than the one that wrote the rules cannot print; what can be noticed is
noted (a rule that matches everything before others, a Service dispatch rule with no port).

A listing does not always say which table it shows. A command line pasted with it does (``-L``
without ``-t`` lists the filter table); otherwise the table is read from the chains: which built-in
chains are there, which chains kube-proxy (and docker, flannel, kind) put in which table, which
targets work in one table only, and chains listed together are in the same table. The table chosen,
and why, is a note.

Speed: like the iptables-save parser, a load files each rule line under its chain; a rule is turned
into iptables-save form and parsed the first time a trace uses it. A listing of at most
``EAGER_RULES`` rules (a pasted one) is read whole at load instead, so every problem and note is known
up front. Measured on the synthetic 10k-Service node (its nat table as ``iptables -t nat -L -n -v``
prints it, 656,000 lines, 63 MB; ``fixtures/listings/format_listing.py``): load 1.7 s (its
iptables-save nat table: 0.9 s), first trace 0.3 s (it reads KUBE-SERVICES' 20,000 rules for the
destination index; 0.1 s), then 3.2 ms a trace into a Service not traced before (1.9 ms), ~30 us a
rule turned into iptables-save form.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from kptrace.model.addr import is_uint
from kptrace.errors import Diagnostic, ParseError
from kptrace.model.rules import BUILTIN_CHAINS, TABLES, Chain, RawRule, Rule, Ruleset, Table
from kptrace.parsers.grammar import grammar_path, iptables_grammar
from kptrace.parsers.iptables_rule import RuleParser
from kptrace.parsers.iptables_save import ParseResult
from kptrace.parsers.tokens import tokenize
from kptrace.parsers.paste import clean_paste

__all__ = ["EAGER_RULES", "LISTING_FORMATS", "ListingGrammar", "ListingResult", "listing_grammar", "parse_iptables_list",
           "save_string"]

#: The detected formats (:func:`kptrace.parsers.detect.detect_format`) this parser reads.
LISTING_FORMATS = frozenset({"iptables-list"})
#: Listings with at most this many rules are read whole at load (see the module's docstring).
EAGER_RULES = 5000

_ANY_ADDRESS = frozenset({"0.0.0.0/0", "::/0", "anywhere"})
_ANY_IFACE = frozenset({"*", "any"})
_ANY_PROTO = frozenset({"all", "0"})
_OPT = {"--": "", "-f": " -f", "!f": " ! -f"}
_SUFFIX = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BUILTIN_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_BUILTIN_TABLES = {c: frozenset(t for t in TABLES if c in BUILTIN_CHAINS[t]) for c in _BUILTIN_ORDER}
_TABLE_PREFERENCE = ("filter", "nat", "mangle", "raw", "security")  # filter: what `iptables -L` lists without -t
_CHAIN_HEADER = re.compile(
    r"Chain (\S+) \((?:policy (\S+)(?: (\d+[KMGT]?) packets, (\d+[KMGT]?) bytes)?|(\d+) references|ERROR obtaining refs)\)\s*$")
#: a shell prompt ("root@node1:~# ", "$ ", "[root@node1 ~]# ") or a "# comment" line
_PROMPT = re.compile(r"(?:\[[^\]]*\]|[^\s#$%>]*)[#$%>](?=\s|$)")
#: a prompt that is one, not a "# comment": something before the # ("root@node1:~#", "[root@node1 ~]#"), or $ or %
_SHELL_PROMPT = re.compile(r"(?:\[[^\]]*\]|[^\s#$%>]+)[#$%>]\s|[$%]\s")
_COMMAND = re.compile(r"\s*(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?(ip6?tables)(?:-legacy|-nft)?\s+(.*)$")
_TOOL_ERROR = re.compile(r"(?:ip6?tables(?:-legacy|-nft)?(?: v[\d.]+(?: \(\w+\))?)?: |# Table `)")
_LEGACY_WARNING = "# Warning: ip"
# re.ASCII: \d would also take the digits of other scripts ("٣"), which iptables never prints.
_PROTO_LIKE = re.compile(r"!?(?:[a-z][a-z0-9._-]*|\d+)$", re.ASCII)
_V4_HOST = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}$", re.ASCII)
_V4_ADDR = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?:/[0-9.]+)?$", re.ASCII)
_SPEC_COUNTERS = re.compile(r" -c (\d+) (\d+)(?= |$)", re.ASCII)
_SPEC_TARGET = re.compile(r" -[jg] (\S+)")
#: how the rule lines of a -v (or --line-numbers) listing start
_VERBOSE_FIRSTS = frozenset(" 0123456789")
_FIRST = operator.itemgetter(0)




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


_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: most of a small tuple's cost
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"[\"\\']")


# ---------------------------------------------------------------- the grammar data, compiled

class _Phrase(NamedTuple):
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


class _Module(NamedTuple):
    name: str
    save: str  # "-m tcp"; "" for a target
    head: _Phrase | None
    phrases: tuple[_Phrase, ...]
    ranked: bool  # some phrase has a rank: its options are sorted
    follow: dict[str, tuple[_Phrase, ...]]  # the phrases by their first characters (see _candidates)
    loose: tuple[_Phrase, ...]  # the phrases that start with a value


_PLACE = re.compile(r"<(!|[a-z0-9]+)(?::([a-z0-9]+))?>")
_REF = re.compile(r"\{(~?)([a-z0-9!]+)\}")


def _compile_phrase(spec: Any, types: dict[str, str]) -> _Phrase:
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
    return _Phrase(listing, re.compile("".join(regex) + r"(?=\s|$)"), tuple(pieces), tuple(template), names,
                   int(extra.get("rank", 0)), extra.get("target"), "<!>" in listing, key)


@dataclass(frozen=True, slots=True)
class ListingGrammar:
    """``grammars/iptables_list.toml`` and ``grammars/names.toml``, compiled."""

    matches: dict[str, _Module]
    targets: dict[str, _Module]
    #: key length -> first characters -> (module, phrase) that can open a match there
    openers: dict[int, dict[str, list[tuple[_Module, _Phrase]]]]
    chain_tables: tuple[tuple[str, frozenset[str]], ...]
    target_tables: dict[str, frozenset[str]]
    addresses: dict[str, dict[str, str]]
    services: dict[str, int | list[int]]
    protocol_save: dict[int, str]
    protocol_names: dict[str, int]
    icmp: dict[int, dict[str, str]]  # family -> name -> save value
    _pp: dict = field(default_factory=dict)  # the pyparsing grammars, built on first need
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
        return self._chain_glob_tables[m.lastindex - 1] if m is not None else None


@functools.cache
def listing_grammar() -> ListingGrammar:
    """``grammars/iptables_list.toml`` and ``grammars/names.toml``, compiled once per process."""
    with open(grammar_path("iptables_list.toml"), "rb") as f:
        data = tomllib.load(f)
    with open(grammar_path("names.toml"), "rb") as f:
        names = tomllib.load(f)
    types = data["types"]

    def module(name: str, spec: dict, save: str) -> _Module:
        head = None
        if "head" in spec:
            head = _compile_phrase(spec["head"], types)
        phrases = tuple(_compile_phrase(p, types) for p in spec.get("phrases", ()))
        follow: dict[str, list[_Phrase]] = {}
        for ph in phrases:
            if ph.key:
                follow.setdefault(ph.key, []).append(ph)
        return _Module(name, spec.get("save", save), head, phrases, any(p.rank for p in phrases),
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


# ---------------------------------------------------------------- reading a rule's text

class _Hit(NamedTuple):
    """One phrase read from a rule's text: positions are offsets in that text."""

    module: _Module | None  # None: text nobody reads
    phrase: _Phrase | None
    groups: dict
    start: int
    end: int
    negated: bool
    opens: bool  # starts a new match (a head, or a phrase of a module without one)
    target: bool  # a phrase of the target


def _skip(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def _comment_at(text: str, pos: int, min_end: int = 0) -> tuple[int, int] | None:
    """``(end of the comment text, end of the phrase)`` for ``/* TEXT */`` at ``pos``: the first " */"
    that ends a word (a comment may contain " */"; :func:`_scan` tries later ones if the rest fails)."""
    if not text.startswith("/* ", pos):
        return None
    at = max(pos + 2, min_end)
    while True:
        end = text.find(" */", at)
        if end < 0:
            return None
        stop = end + 3
        if stop == len(text) or text[stop].isspace():
            return end, stop
        at = end + 1


class _Scan(NamedTuple):
    hits: list[_Hit]
    fail: int | None  # where reading stopped, None when the whole text was read


def _candidates(index: dict[str, tuple[_Phrase, ...]], loose: tuple[_Phrase, ...], text: str, pos: int) -> list[_Phrase]:
    """The phrases of one module that may start at ``pos``: those whose first characters are there
    ("!" aside), then those that start with a value."""
    q = pos
    if text[q] == "!":
        q += 1
        while q < len(text) and text[q] == " ":
            q += 1
    out: list[_Phrase] = []
    for k in (4, 3, 2, 1):
        found = index.get(text[q:q + k])
        if found:
            out.extend(found)
    if loose:
        out.extend(loose)
    return out


def _scan(text: str, g: ListingGrammar, target: _Module | None, comment_ends: dict[int, int] | None = None) -> _Scan:
    """Read ``text`` (the part of a rule line after the address columns) into phrases: the fast path.

    Each match opens with its head (or, for a module without one, any of its phrases), found by its
    first characters; its phrases follow greedily; of two modules that open alike (limit and
    hashlimit both print "limit:"), the one that reads further wins. After the matches come the
    target's phrases. Comments are read by hand: they are most of a kube-proxy rule's text.
    """
    hits: list[_Hit] = []
    n = len(text)
    pos = 0
    while pos < n and text[pos] == " ":
        pos += 1
    in_target = False
    comment = g.matches.get("comment")
    openers = g.openers
    while pos < n:
        if not in_target:
            if text.startswith("/* ", pos) and comment is not None:
                found = _comment_at(text, pos, comment_ends.get(pos, 0) if comment_ends else 0)
                if found is not None:
                    hits.append(_new(_Hit, (comment, comment.head, {"comment": text[pos + 3:found[0]]}, pos, found[1], False, True, False)))
                    pos = found[1]
                    while pos < n and text[pos] == " ":
                        pos += 1
                    continue
            q = pos
            if text[q] == "!":
                q += 1
                while q < n and text[q] == " ":
                    q += 1
            best: tuple[int, list[_Hit]] | None = None
            for k in (4, 3, 2, 1):
                for mod, ph in openers[k].get(text[q:q + k], ()):
                    m = ph.regex.match(text, pos)
                    if m is None:
                        continue
                    neg = ph.negatable and m.group("neg") is not None
                    chunk = [_Hit(mod, ph, m.groupdict(), pos, m.end(), neg, True, False)]
                    end = _extend(text, m.end(), mod, neg if mod.head is not None else False, chunk)
                    if best is None or end > best[0]:
                        best = (end, chunk)
            if best is not None:
                hits.extend(best[1])
                pos = best[0]
                while pos < n and text[pos] == " ":
                    pos += 1
                continue
        if target is not None:
            for ph in _candidates(target.follow, target.loose, text, pos):
                m = ph.regex.match(text, pos)
                if m is not None:
                    hits.append(_new(_Hit, (target, ph, m.groupdict(), pos, m.end(), ph.negatable and m.group("neg") is not None, False, True)))
                    in_target = True
                    pos = m.end()
                    while pos < n and text[pos] == " ":
                        pos += 1
                    break
            else:
                return _new(_Scan, (hits, pos))
            continue
        return _new(_Scan, (hits, pos))
    return _new(_Scan, (hits, None))


def _extend(text: str, pos: int, mod: _Module, head_negated: bool, chunk: list[_Hit]) -> int:
    """Add the phrases of ``mod`` that follow at ``pos`` to ``chunk``; the end of the last one."""
    end = pos
    n = len(text)
    while pos < n and text[pos] == " ":
        pos += 1
    while pos < n:
        for ph in _candidates(mod.follow, mod.loose, text, pos):
            m = ph.regex.match(text, pos)
            if m is not None:
                neg = m.group("neg") is not None if ph.negatable else head_negated
                chunk.append(_new(_Hit, (mod, ph, m.groupdict(), pos, m.end(), neg, False, False)))
                end = pos = m.end()
                while pos < n and text[pos] == " ":
                    pos += 1
                break
        else:
            break
    return end


def _scan_all(text: str, g: ListingGrammar, target: _Module | None) -> _Scan:
    """:func:`_scan`, trying later ends of comments that may contain " */" when the first reading
    stops short; then the pyparsing grammar; the result reads as much of the text as either could."""
    first = _scan(text, g, target)
    if first.fail is None:
        return first
    ends: dict[int, int] = {}
    tried = 0
    best = first
    while tried < 8:
        longer = [h for h in best.hits if h.phrase is not None and h.module is not None and h.module.name == "comment"
                  and text.find(" */", h.end - 2) >= 0 and _comment_at(text, h.start, h.end - 1) is not None]
        if not longer:
            break
        h = longer[-1]
        ends[h.start] = h.end - 1
        again = _scan(text, g, target, dict(ends))
        tried += 1
        if again.fail is None:
            return again
        if again.fail > best.fail:
            best = again
    pp_hits = _pp_scan(text, g, target)
    if isinstance(pp_hits, list):
        return _Scan(pp_hits, None)
    return best


# ---------------------------------------------------------------- the pyparsing grammar

def _pp_grammar(g: ListingGrammar, target: _Module | None):
    """The pyparsing grammar of a rule's text for rules with ``target``: the same phrases as the fast
    path, as pyparsing expressions (``Or`` takes the longest of two modules with the same head, as the
    fast path does)."""
    key = target.name if target is not None else ""
    cached = g._pp.get(key)
    if cached is not None:
        return cached
    import pyparsing as pp

    end_of_word = pp.FollowedBy(pp.White() | pp.StringEnd()).set_name("end of word")
    # A phrase whose first word no other phrase starts with commits to itself once that word is read
    # (pyparsing's "-"), so an error lands on the spot: "probability" without its number.
    firsts: dict[str, int] = {}
    every = [ph for mod in (*g.matches.values(), *g.targets.values()) for ph in (*([mod.head] if mod.head else ()), *mod.phrases)]
    for ph in every:
        lit = next((rx for kind, rx, _ in ph.pieces if kind == "lit"), None)
        firsts[lit] = firsts.get(lit, 0) + 1

    def phrase_expr(mod: _Module, ph: _Phrase, *, opens: bool, in_target: bool):
        parts = []
        commit_after = None
        for i, (kind, rx, name) in enumerate(ph.pieces):
            e = pp.Regex(rx)
            if kind == "ws":
                following = next((p for p in ph.pieces[i + 1:] if p[0] != "ws"), None)
                said = (f"<{ph.types[following[2]]}>" if following[0] == "val" else repr(following[1].replace("\\", ""))
                        if following is not None and following[0] != "neg" else "white space")
                parts.append(e.leave_whitespace().suppress().set_name(said))
                continue
            if parts:
                e = e.leave_whitespace()
            if kind == "val":
                e = e.set_name(f"<{ph.types[name]}>")
            elif kind == "neg":
                e = pp.Opt(e).set_name("!")
            else:
                following = ph.pieces[i + 1][0] if i + 1 < len(ph.pieces) else "end"
                if following in ("ws", "end"):
                    # a word ends here: "ctorigdst" is not the start of "ctorigdstport"
                    e = pp.Regex(rx + r"(?=\s|$)")
                    if parts:
                        e = e.leave_whitespace()
                e = e.set_name(repr(rx.replace("\\", "")))
                if commit_after is None and firsts.get(rx) == 1 and len(ph.pieces) > i + 1:
                    commit_after = len(parts) + 1
            parts.append(e)
        if commit_after is not None and commit_after < len(parts):
            whole = pp.And(parts[:commit_after]) - pp.And(parts[commit_after:] + [end_of_word])
        else:
            whole = pp.And(parts + [end_of_word])
        whole = whole.set_name(repr(ph.pattern))

        def action(s, loc, toks, mod=mod, ph=ph):
            # The phrase's regular expression is its pieces in a row: matching it again at the
            # phrase's start gives the values and the end, as the fast path has them.
            m = ph.regex.match(s, loc)
            neg = ph.negatable and m.group("neg") is not None
            return [_new(_Hit, (mod, ph, m.groupdict(), loc, m.end(), neg, opens, in_target))]

        return whole.set_parse_action(action)

    comment = g.matches.get("comment")
    alternatives = []
    for mod in g.matches.values():
        if mod is comment:
            continue
        follow = pp.MatchFirst([phrase_expr(mod, ph, opens=False, in_target=False) for ph in mod.phrases]) if mod.phrases else None
        if mod.head is not None:
            e = phrase_expr(mod, mod.head, opens=True, in_target=False) + (pp.ZeroOrMore(follow) if follow is not None else pp.Empty())
        else:
            e = pp.MatchFirst([phrase_expr(mod, ph, opens=True, in_target=False) for ph in mod.phrases]) + pp.ZeroOrMore(follow)
        alternatives.append(e.set_name(mod.name))
    if comment is not None:
        rx = pp.Regex(r"/\* (?P<comment>.*?) \*/(?=\s|$)").set_name("/* comment */")

        def comment_action(s, loc, toks):
            m = re.compile(r"/\* (?P<comment>.*?) \*/(?=\s|$)").match(s, loc)
            return [_Hit(comment, comment.head, {"comment": m.group("comment")}, loc, m.end(), False, True, False)]

        alternatives.insert(0, rx.set_parse_action(comment_action))
    matches = pp.ZeroOrMore(pp.Or(alternatives))
    tail = pp.Empty()
    if target is not None and target.phrases:
        tail = pp.ZeroOrMore(pp.MatchFirst([phrase_expr(target, ph, opens=False, in_target=True) for ph in target.phrases]))
    grammar = (matches + tail + pp.StringEnd()).set_name("rule text")
    g._pp[key] = grammar
    return grammar


def _pp_scan(text: str, g: ListingGrammar, target: _Module | None) -> list[_Hit] | tuple[int, str]:
    """The pyparsing grammar's reading of ``text``: the phrases, or where it stopped and what it expected."""
    import pyparsing as pp

    try:
        result = _pp_grammar(g, target).parse_string(text, parse_all=True)
    except pp.ParseBaseException as e:
        return e.loc, str(e.msg)
    hits = []
    head_negated = False
    for h in result:
        if not isinstance(h, _Hit):
            continue
        if h.opens:
            head_negated = h.negated if h.module is not None and h.phrase is h.module.head else False
        elif not h.target and not h.phrase.negatable and head_negated:
            h = h._replace(negated=True)  # "! recent: CHECK": the head's "!" is the check's
        hits.append(h)
    return hits


# ---------------------------------------------------------------- values

class _Values:
    """Turns the values a listing prints into what iptables-save writes: ports, protocols, addresses,
    names. What the tables cannot resolve is reported once per name and kept as written."""

    def __init__(self, g: ListingGrammar, listing: "_Listing") -> None:
        self.g = g
        self.listing = listing

    def port(self, value: str, where: tuple[int, int, int]) -> str:
        if is_uint(value):
            return value
        port = self.g.services.get(value)
        if isinstance(port, int):
            self.listing.resolved(value, str(port))
            return str(port)
        if port is None:
            self.listing.unresolved(value, where, f"service name {value!r} is not in kptrace's table of well-known ports",
                                    "kept as written: a rule that needs it is assumed not to match; list with -n to see the number")
        else:
            self.listing.unresolved(value, where, f"service name {value!r} stands for ports {', '.join(map(str, port))}",
                                    "kept as written: a rule that needs it is assumed not to match; list with -n to see the number")
        return value

    def ports(self, value: str, where: tuple[int, int, int]) -> str:
        if is_uint(value.replace(",", "").replace(":", "")):
            return value
        return ",".join(":".join(self.port(p, where) for p in part.split(":")) for part in value.split(","))

    def address(self, value: str, where: tuple[int, int, int], *, host_suffix: bool) -> str:
        """An address column or value: ``10.0.0.1`` -> ``10.0.0.1/32`` (``host_suffix``), names resolved."""
        family = self.listing.family
        host, sep, plen = value.partition("/")
        if _V4_HOST.match(host) or (":" in host and family == 6):
            if sep or not host_suffix:
                return value
            return f"{value}/{32 if ':' not in host else 128}"
        known = self.g.addresses.get(host)
        if known is not None:
            net_addr, _, net_plen = known["network"].partition("/")
            if sep and is_uint(plen) and int(plen) <= int(net_plen):
                read = f"{net_addr}/{plen}"
                self.listing.resolved(value, read)
                return read
            if not sep and known.get("host") is None and (net_plen in ("32", "128")):
                read = f"{net_addr}/{net_plen}" if host_suffix else net_addr
                self.listing.resolved(value, read)
                return read
            if known.get("host") is not None:
                read = known["host"] + (f"/{plen}" if sep else ("/32" if host_suffix else ""))
                self.listing.unresolved(value, where, f"{host!r} names several addresses ({known['network']}); read as {known['host']}",
                                        "take the listing with -n to be sure", keep=False, name=host)
                self.listing.resolved(value, read)
                return read
        self.listing.unresolved(value, where, f"host name {host!r} cannot be turned into an address from the listing",
                                "kept as written: rules that need it are assumed not to match; take the listing with -n", name=host)
        return value

    def protocol(self, value: str, where: tuple[int, int, int]) -> str:
        if is_uint(value):
            return self.g.protocol_save.get(int(value), value)
        num = self.g.protocol_names.get(value.lower())
        if num is None:
            self.listing.unresolved(value, where, f"protocol {value!r} is not in kptrace's table of protocols",
                                    "kept as written: rules that need it are assumed not to match; take the listing with -n")
            return value
        return self.g.protocol_save.get(num, str(num))

    def convert(self, typ: str, value: str, where: tuple[int, int, int]) -> str | None:
        """The iptables-save text of a value of type ``typ``; None leaves the option out (a default)."""
        f = _CONVERTERS.get(typ)
        return value if f is None else f(self, value, where)


def _tcpflags(v: _Values, value: str, where) -> str:
    if not value.startswith("0x"):
        return value
    bits = int(value, 16)
    names = []
    for name, bit in (("FIN", 1), ("SYN", 2), ("RST", 4), ("PSH", 8), ("ACK", 16), ("URG", 32)):
        if bits & bit:
            names.append(name)
    return ",".join(names) or "NONE"


def _icmp(v: _Values, value: str, where) -> str:
    table = v.g.icmp[v.listing.family]
    found = table.get(value)
    if found is None:
        v.listing.unresolved(value, where, f"ICMP type {value!r} is not in kptrace's table", "kept as written")
        return value
    return found


def _user(v: _Values, value: str, where) -> str:
    if is_uint(value):
        return value
    if value == "root":  # uid and gid 0 on every node; other names are the node's own
        v.listing.resolved(value, "0")
        return "0"
    v.listing.unresolved(value, where, f"user or group name {value!r} is the node's own: kptrace cannot turn it into an id",
                         "kept as written; take the listing with -n")
    return value


_LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6, "debug": 7}
# XT_LOG_TCPSEQ, XT_LOG_TCPOPT, XT_LOG_IPOPT, XT_LOG_UID, XT_LOG_MACDECODE (0x10 was XT_LOG_NFLOG)
_LOG_FLAGS = ((1, "--log-tcp-sequence"), (2, "--log-tcp-options"), (4, "--log-ip-options"), (8, "--log-uid"), (32, "--log-macdecode"))

_CONVERTERS: dict[str, Callable[[_Values, str, Any], str | None]] = {
    "port": _Values.port,
    "ports": _Values.ports,
    "addr": lambda v, value, where: v.address(value, where, host_suffix=False) if value not in _ANY_ADDRESS else value,
    "proto": lambda v, value, where: value if is_uint(value) else str(v.g.protocol_names.get(value.lower(), value)),
    "protoname": lambda v, value, where: v.protocol(value, where),
    "str": lambda v, value, where: save_string(value[1:-1]),
    "comment": lambda v, value, where: save_string(value),
    "tcpflags": _tcpflags,
    "icmp": _icmp,
    "icmptype": lambda v, value, where: "any" if value == "255" else value,
    "user": _user,
    "int": lambda v, value, where: value,
    "hlmode": lambda v, value, where: value.replace("-", ","),
    "burst": lambda v, value, where: None if value == "5" else value,
    "loglevel": lambda v, value, where: (lambda n: None if n == 4 else str(n))(int(value) if is_uint(value) else _LOG_LEVELS.get(value, -1)),
    "logflags": lambda v, value, where: " ".join(opt for bit, opt in _LOG_FLAGS if int(value) & bit) or None,
    "classid": lambda v, value, where: ":".join(f"{int(x, 16):04x}" for x in value.split(":")),
}


# ---------------------------------------------------------------- the listing

@dataclass(slots=True)
class _Layout:
    """Which columns a chain's rules have, from its column header line."""

    words: tuple[str, ...]
    target: int
    opt: int | None
    counters: int | None  # index of pkts
    via: int | None  # index of in (out follows)
    exact: bool  # -x: the counters are 8 wide ("    pkts      bytes")

    @classmethod
    def of(cls, words: list[str], header: str) -> "_Layout":
        return cls(tuple(words), words.index("target"), words.index("opt") if "opt" in words else None,
                   words.index("pkts") if "pkts" in words else None, words.index("in") if "in" in words else None,
                   "pkts" in words and "pkts bytes" not in header)


@dataclass(slots=True)
class _Block:
    """One chain as the listing shows it (a ``Chain`` header, or ``-P``/``-N`` of ``iptables -S``)."""

    name: str
    line: int  # 0-based index of its header
    kind: str  # "L" or "S"
    policy: str | None = None
    counters: tuple[int, int] | None = None
    layout: _Layout | None = None
    rules: list[int] = field(default_factory=list)
    command: "_Command | None" = None
    table: str | None = None
    known: frozenset[str] | None = None  # the tables its name says it is in (grammars: [tables.chains])


@dataclass(slots=True)
class _Command:
    """A pasted command line: what it says about the listing below it."""

    line: int
    family: int
    table: str | None  # None: not given (-L lists the filter table)
    form: str  # "-L" or "-S"
    flags: str  # "-n -v", as written


def _read_command(text: str, line: int) -> _Command | None:
    m = _COMMAND.match(text)
    if m is None:
        return None
    args = m.group(2).split()
    table, form, flags = None, None, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-t", "--table") and i + 1 < len(args):
            table = args[i + 1]
            i += 2
            continue
        if a.startswith("--table="):
            table = a.split("=", 1)[1]
        elif a in ("--list", "--list-rules"):
            form = "-L" if a == "--list" else "-S"
        elif a in ("--numeric", "--verbose", "--exact", "--line-numbers"):
            flags.append(a)
        elif a.startswith("-") and not a.startswith("--"):
            letters = a[1:]
            if "t" in letters and letters.endswith("t") and i + 1 < len(args):
                table = args[i + 1]
                i += 1
            for c in letters:
                if c in "LS":
                    form = "-" + c
                elif c in "nvx":
                    flags.append("-" + c)
        i += 1
    if form is None:
        return None
    if table is not None and table not in BUILTIN_CHAINS:
        return None
    return _Command(line, 6 if m.group(1) == "ip6tables" else 4, table, form, " ".join(flags))


def _count(text: str) -> int:
    mult = _SUFFIX.get(text[-1])
    return int(text[:-1]) * mult if mult else int(text)


class _ListingLines:
    """The rule lines of a listing as iptables-save lines, made when first read: what a
    :class:`~kptrace.model.rules.Chain` indexes (its ``_lines``)."""

    __slots__ = ("_listing", "_cache")

    def __init__(self, listing: "_Listing") -> None:
        self._listing = listing
        self._cache: list[str | None] = [None] * len(listing.lines)

    def __getitem__(self, i: int) -> str:
        text = self._cache[i]
        if text is None:
            text = self._cache[i] = self._listing.translate(i)
        return text

    def __len__(self) -> int:
        return len(self._cache)


class _Piece(NamedTuple):
    text: str
    field: int | None  # a column of the listing line (index among its words)
    start: int  # or offsets in the rule's text (the part after the address columns)
    end: int


class _Listing:
    """One input: its lines, its chains, and what reading it has found."""

    def __init__(self, text: str, source: str, g: ListingGrammar, diagnostics: list[Diagnostic]) -> None:
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self.lines = text.split("\n")
        self.elided: frozenset[int] = frozenset()  # 0-based lines a paste elided (`...`), blank in ``lines``
        self.source = source
        self.g = g
        self.diagnostics = diagnostics
        self.family = 4
        self.blocks: list[_Block] = []
        self.owner: list[_Block | None] = [None] * len(self.lines)
        self.values = _Values(g, self)
        self.names_read: dict[str, str] = {}
        self.unresolved_values: set[str] = set()
        self._reported: set[str] = set()
        self.rounded = False
        self.forms: set[str] = set()
        self.notes: list[str] = []
        self.lossy = 0  # rules that look incomplete (_ListingRuleParser._check)
        self._tails: dict[tuple[str, str], tuple[str, str | None, str]] = {}  # _text_fast's memory
        self._protocols: dict[str, str] = {}  # prot column -> "-p NAME"

    # -- problems

    def problem(self, severity: str, message: str, line: int, col: int = 0, length: int = 0, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(severity, message, self.source, line + 1, col, self.lines[line].rstrip(), length, hint))

    def unresolved(self, value: str, where: tuple[int, int, int], message: str, hint: str, *, severity: str = "warning",
                   keep: bool = True, name: str | None = None) -> None:
        """Say once per name that it could not be read; ``keep``: the value stays in the rule as written."""
        if keep:
            self.unresolved_values.add(value)
        key = name or value
        if key in self._reported:
            return
        self._reported.add(key)
        line, col, length = where() if callable(where) else where
        self.problem(severity, message, line, col, length, hint)

    def resolved(self, name: str, value: str) -> None:
        self.names_read.setdefault(name, value)

    # -- translation

    def translate(self, i: int) -> str:
        """Line ``i`` as iptables-save writes it, with ``[pkts:bytes]`` in front when it has counters."""
        text, counters, _ = self.translate_mapped(i, want_map=False)
        return f"[{counters[0]}:{counters[1]}] {text}" if counters is not None else text

    def translate_mapped(self, i: int, *, want_map: bool) -> tuple[str, tuple[int, int] | None, list[_Piece]]:
        block = self.owner[i]
        line = self.lines[i].rstrip()
        if block is None:
            return line, None, []
        if block.kind == "S":
            return self._translate_spec(block, line)
        return self._translate_rule(i, block, line, want_map)

    def _translate_spec(self, block: _Block, line: str) -> tuple[str, tuple[int, int] | None, list[_Piece]]:
        counters = None
        if " -c " in line:
            for m in _SPEC_COUNTERS.finditer(line):
                if line.count('"', 0, m.start()) % 2 == 0:
                    counters = (int(m.group(1)), int(m.group(2)))
                    line = line[:m.start()] + line[m.end():]
                    break
        return line, counters, []

    def _fields(self, line: str, layout: _Layout) -> tuple[list[str], str, int] | None:
        """The columns of a rule line, an empty target and an empty opt column filled in; the rest of
        the line and where it starts."""
        words = layout.words
        n = len(words)
        opt_at = layout.opt
        for drop_target, drop_opt in ((False, False), (True, False), (False, True), (True, True)):
            if drop_opt and opt_at is None:
                continue
            k = n - drop_target - drop_opt
            parts = line.split(None, k)
            if len(parts) < k:
                continue
            if drop_target:
                parts.insert(layout.target, "")
            if drop_opt:
                parts.insert(opt_at, "--")
            elif opt_at is not None and parts[opt_at] not in _OPT:
                continue
            if not _PROTO_LIKE.match(parts[layout.target + 1]):
                continue
            rest = parts[n] if len(parts) > n else ""
            return parts[:n], rest, len(line) - len(rest)
        return None

    def _translate_rule(self, i: int, block: _Block, line: str, want_map: bool) -> tuple[str, tuple[int, int] | None, list[_Piece]]:
        """A ``-L`` rule line in iptables-save form. The fast path takes the usual line (every column
        filled, text the phrases read); :meth:`_translate_rule_general` takes the rest, and maps the
        result back to the line's columns (``want_map``)."""
        layout = block.layout
        n = len(layout.words)
        parts = line.split(None, n)
        if want_map or len(parts) < n or (layout.opt is not None and parts[layout.opt] not in _OPT):
            return self._translate_rule_general(i, block, line, want_map)
        out = [f"-A {block.name}"]
        value = parts[n - 2]
        if value not in _ANY_ADDRESS and (option := self._address_option("-s", value, i, line, layout, n - 2)):
            out.append(option)
        value = parts[n - 1]
        if value not in _ANY_ADDRESS and (option := self._address_option("-d", value, i, line, layout, n - 1)):
            out.append(option)
        if layout.via is not None:
            value = parts[layout.via]
            if value not in _ANY_IFACE:
                out.append(f"! -i {value[1:]}" if value[0] == "!" else f"-i {value}")
            value = parts[layout.via + 1]
            if value not in _ANY_IFACE:
                out.append(f"! -o {value[1:]}" if value[0] == "!" else f"-o {value}")
        t = layout.target
        value = parts[t + 1]
        if value not in _ANY_PROTO:
            out.append(self._protocol_option(value, i, line, layout, t + 1))
        if layout.opt is not None and parts[layout.opt] != "--":
            out.append(_OPT[parts[layout.opt]].strip())
        counters = None
        if layout.counters is not None:
            pk, by = parts[layout.counters], parts[layout.counters + 1]
            if is_uint(pk) and is_uint(by):
                counters = (int(pk), int(by))
            else:
                return self._translate_rule_general(i, block, line, want_map)
        target_name = parts[t]
        if len(parts) > n:
            rest = parts[n]
            goto = rest.startswith("[goto]")
            if goto:
                rest = rest[6:].lstrip()
            if rest and not self._text_fast(rest, target_name, goto, out, i, len(line) - len(rest)):
                return self._translate_rule_general(i, block, line, want_map)
            if not rest and target_name:
                out.append(("-g " if goto else "-j ") + target_name)
        elif target_name:
            out.append("-j " + target_name)
        return " ".join(out), counters, []

    def _translate_rule_general(self, i: int, block: _Block, line: str, want_map: bool) -> tuple[str, tuple[int, int] | None, list[_Piece]]:
        layout = block.layout
        words = layout.words
        n = len(words)
        # Every column filled (a target, an opt), or _fields works out which is empty.
        parts = line.split(None, n)
        if len(parts) >= n and (layout.opt is None or parts[layout.opt] in _OPT):
            cols, rest = parts[:n], (parts[n] if len(parts) > n else "")
        else:
            got = self._fields(line, layout)
            if got is None:
                self.problem("error", "not a rule line of this chain's listing", i, 1, len(line),
                             f"the chain's columns are: {' '.join(words)} (a line cut in two by a terminal's wrapping?)")
                return f"-A {block.name} -m ? --text {save_string(line.strip())}", None, []
            cols, rest, _ = got
        rest_col = len(line) - len(rest)
        counters = None
        if layout.counters is not None:
            pk, by = cols[layout.counters], cols[layout.counters + 1]
            try:
                counters = (int(pk), int(by))
            except ValueError:
                try:
                    counters = (_count(pk), _count(by))
                    self.rounded = True
                except ValueError:
                    self.problem("error", f"counters {pk!r} {by!r} are not numbers", i, 1, len(line),
                                 "a -v listing's rules start with packet and byte counts")
        out = [f"-A {block.name}"]
        pieces: list[_Piece] = [_Piece(out[0], None, -1, -1)] if want_map else []

        def add(text: str, field_index: int | None, start: int = -1, end: int = -1) -> None:
            out.append(text)
            if want_map:
                pieces.append(_Piece(text, field_index, start, end))

        for at, opt in ((n - 2, "-s"), (n - 1, "-d")):
            value = cols[at]
            if value not in _ANY_ADDRESS and (option := self._address_option(opt, value, i, line, layout, at)):
                add(option, at)
        if layout.via is not None:
            for at, opt in ((layout.via, "-i"), (layout.via + 1, "-o")):
                value = cols[at]
                if value not in _ANY_IFACE:
                    add(f"! {opt} {value[1:]}" if value[0] == "!" else f"{opt} {value}", at)
        t = layout.target
        proto = cols[t + 1]
        if proto not in _ANY_PROTO:
            add(self._protocol_option(proto, i, line, layout, t + 1), t + 1)
        if layout.opt is not None and cols[layout.opt] != "--":
            add(_OPT[cols[layout.opt]].strip(), layout.opt)
        goto = rest.startswith("[goto]")
        if goto:
            rest = rest[6:].lstrip()
            rest_col = len(line) - len(rest)
        if not rest:
            self._target(cols[t], goto, [], add, t)
        else:
            self._translate_text(i, rest, rest_col, cols[t], goto, add, t)
        return " ".join(out), counters, pieces

    def _address_option(self, opt: str, value: str, i: int, line: str, layout: _Layout, at: int) -> str:
        """``-s``/``-d`` and the address column's value as iptables-save writes it (a host gets /32)."""
        neg = value[0] == "!"
        if neg:
            value = value[1:]
        if not value:  # a "!" alone in the column: nothing to negate, nothing to read
            self.problem("error", f"'!' with no address in the {'source' if opt == '-s' else 'destination'} column",
                         *self._where(i, line, layout, at), "iptables prints a negated address as !10.0.0.0/8; read as any address")
            return ""
        if value in _ANY_ADDRESS:
            value = "0.0.0.0/0" if self.family == 4 else "::/0"
        elif ":" in value:
            if "/" not in value:
                value += "/128"
        elif is_uint(value[0]) and _V4_ADDR.match(value):
            if "/" not in value:
                value += "/32"
        else:
            value = self.values.address(value, lambda: self._where(i, line, layout, at), host_suffix=True)
        return f"! {opt} {value}" if neg else f"{opt} {value}"

    def _protocol_option(self, value: str, i: int, line: str, layout: _Layout, at: int) -> str:
        neg = value[0] == "!"
        name = self._protocols.get(value)
        if name is None:
            name = self.values.protocol(value[1:] if neg else value, lambda: self._where(i, line, layout, at))
            name = self._protocols[value] = f"! -p {name}" if neg else f"-p {name}"
        return name

    def _where(self, i: int, line: str, layout: _Layout, field_index: int) -> tuple[int, int, int]:
        got = self._fields(line, layout)
        spans = _word_spans(line, got[0]) if got else []
        col, length = spans[field_index] if field_index < len(spans) else (1, 1)
        return i, col, length

    def _text_fast(self, rest: str, target_name: str, goto: bool, out: list[str], i: int, rest_col: int) -> bool:
        """The fast path for a rule's text: comments up front, the rest read once per distinct text
        (kube-proxy's rules repeat "tcp dpt:80", "statistic mode random probability 0.1" thousands of
        times behind different comments, before jumps to different chains). False: the general path
        must read it."""
        pos = 0
        n = len(rest)
        parts = []
        while rest.startswith("/* ", pos):
            end = rest.find(" */", pos + 2)
            if end < 0:
                return False
            stop = end + 3
            if stop < n and rest[stop] != " ":
                return False
            parts.append("-m comment --comment " + save_string(rest[pos + 3:end]))
            pos = stop
            while pos < n and rest[pos] == " ":
                pos += 1
        target = self.g.targets.get(target_name)
        # A jump's target prints nothing: its text reads the same whatever chain it jumps to.
        key = (rest[pos:], target_name if target is not None else "")
        cached = self._tails.get(key)
        if cached is None:
            before = len(self.diagnostics)
            scan = _scan(key[0], self.g, target)
            if scan.fail is not None:
                return False
            matches: list[str] = []
            options: list[str] = []
            self._render_matches(i, rest_col + pos, [h for h in scan.hits if not h.target], lambda t, *_: matches.append(t))
            target_hits = [h for h in scan.hits if h.target]
            self._target_options(i, rest_col + pos, target_hits, lambda t, *_: options.append(t))
            rename = next((h.phrase.rename for h in target_hits if h.phrase.rename), None)
            cached = (" ".join(matches), rename, " ".join(options))
            if len(self.diagnostics) == before:
                self._tails[key] = cached
        out.extend(parts)
        if cached[0]:
            out.append(cached[0])
        name = cached[1] or target_name
        if name:
            out.append(("-g " if goto else "-j ") + name)
            if cached[2]:
                out.append(cached[2])
        return True

    def _translate_text(self, i: int, rest: str, rest_col: int, target_name: str, goto: bool, add, target_field: int) -> None:
        g = self.g
        target = g.targets.get(target_name)
        scan = _scan(rest, g, target)
        if scan.fail is not None:
            scan = _scan_all(rest, g, target)
        hits = scan.hits
        if scan.fail is not None:
            fail = scan.fail
            # The rule's target may still read the end of the text: keep what it reads.
            tail_at, tail = len(rest), []
            if target is not None:
                for m in re.finditer(r"\s(?=\S)", rest[fail:]):
                    at = fail + m.end()
                    t_hits = _target_only(rest, at, target)
                    if t_hits is not None:
                        tail_at, tail = at, t_hits
                        break
            unknown = rest[fail:tail_at].rstrip()
            # pyparsing says where exactly a phrase went wrong ("probability" without its number);
            # past the last phrase it read, what could have come there says more than its
            # "Expected end of text".
            expected = _pp_scan(rest, g, target)
            at = fail
            if isinstance(expected, tuple) and expected[0] > fail:
                at, why = expected[0], f"expected {expected[1].removeprefix('Expected ')} here"
            else:
                why = _could_follow(hits, target)
            if unknown.startswith("/* ") and " */" not in unknown:
                why = "a comment with no end: a line cut in two by a terminal's wrapping?"
            self.problem("warning", f"cannot read {_clip(rest[at:tail_at].rstrip() or unknown)!r}", i, rest_col + at + 1,
                         max(1, len(unknown) - (at - fail)),
                         f"{why}; kept as an unknown match, which a trace assumes does not match (kptrace reads the texts in "
                         "grammars/iptables_list.toml)")
            hits = hits + [_Hit(None, None, {"text": unknown}, fail, fail + len(unknown), False, True, False)] + tail
        self._render(i, rest_col, hits, target_name, goto, add, target_field)

    def _render(self, i: int, rest_col: int, hits: list[_Hit], target_name: str, goto: bool, add, target_field: int) -> None:
        self._render_matches(i, rest_col, [h for h in hits if not h.target], add)
        self._target(target_name, goto, [h for h in hits if h.target], add, target_field, i=i, rest_col=rest_col)

    def _render_matches(self, i: int, rest_col: int, hits: list[_Hit], add) -> None:
        """The matches' iptables-save text: ``-m MODULE`` and its options, for each match read."""
        groups: list[list[_Hit]] = []
        for h in hits:
            if h.opens or not groups:
                groups.append([h])
            else:
                groups[-1].append(h)
        for group in groups:
            first = group[0]
            mod = first.module
            if mod is None:
                add(f"-m ? --text {save_string(first.groups['text'])}", None, first.start, first.end)
                continue
            add(mod.save, None, first.start, group[-1].end)
            options = [(self._option(i, rest_col, h), h) for h in group]
            if mod.ranked:
                options.sort(key=lambda th: -1 if th[1].phrase is mod.head else th[1].phrase.rank)
            for text, h in options:
                if text:
                    add(text, None, h.start, h.end)

    def _target(self, name: str, goto: bool, hits: list[_Hit], add, field_index: int | None, *, i: int = 0, rest_col: int = 0) -> None:
        """``-j NAME`` (``-g``) and the target's options; a phrase may rename the target (CT NOTRACK)."""
        for h in hits:
            if h.phrase is not None and h.phrase.rename:
                name = h.phrase.rename
        if not name:
            return
        add(("-g " if goto else "-j ") + name, field_index)
        self._target_options(i, rest_col, hits, add)

    def _target_options(self, i: int, rest_col: int, hits: list[_Hit], add) -> None:
        options = [(self._option(i, rest_col, h), h) for h in hits if h.phrase is not None]
        if hits and hits[0].module.ranked:
            options.sort(key=lambda th: th[1].phrase.rank)
        for text, h in options:
            if text:
                add(text, None, h.start, h.end)
        for h in hits:
            if h.phrase is None:
                add(f"--text {save_string(h.groups['text'])}", None, h.start, h.end)

    def _option(self, i: int, rest_col: int, h: _Hit) -> str:
        """A phrase's iptables-save text ("" when it writes nothing, or a value left out as a default)."""
        out = []
        ph = h.phrase
        for part in ph.template:
            if part.__class__ is str:
                if part == "!":
                    if h.negated:
                        out.append("! ")
                else:
                    out.append(part)
                continue
            name, complement = part
            value = h.groups.get(name) or ""
            convert = _CONVERTERS.get(ph.types[name])
            if convert is not None:
                value = convert(self.values, value, lambda: (i, rest_col + h.start + 1, h.end - h.start))
                if value is None:
                    return ""
            if complement:
                value = f"{~int(value, 16) & 0xFFFFFFFF:#x}"
            out.append(value)
        return "".join(out).strip()

    # -- mapping a translated rule back to the listing

    def locate(self, i: int, text: str, token_index: int | None) -> tuple[int, int]:
        """The listing column and length of token ``token_index`` of the translated rule ``text``."""
        line = self.lines[i].rstrip()
        if token_index is None:
            return 0, 0
        block = self.owner[i]
        if block is not None and block.kind == "S":
            toks = tokenize(text)
            if token_index < len(toks):
                _, col, length = toks[token_index]
                return col, length
            return len(line) + 1, 1
        translated, _, pieces = self.translate_mapped(i, want_map=True)
        toks = tokenize(translated)
        if token_index >= len(toks):
            return len(line) + 1, 1
        offset = toks[token_index][1] - 1
        at = 0
        for p in pieces:
            if at <= offset < at + len(p.text) + 1:
                if p.field is not None:
                    got = self._fields(line, block.layout)
                    if got is None:
                        return 1, len(line)
                    return _word_spans(line, got[0])[p.field]
                if p.start >= 0:
                    got = self._fields(line, block.layout)
                    rest_col = got[2] if got else 0
                    if line[rest_col:].startswith("[goto]"):
                        rest_col += 6
                    return rest_col + p.start + 1, max(1, p.end - p.start)
                return 1, 1
            at += len(p.text) + 1
        return 1, 1


def _could_follow(hits: list[_Hit], target: _Module | None) -> str:
    """What kptrace could have read where it stopped: more of the match before, a new match, the target's text."""
    options = []
    last = hits[-1] if hits else None
    if last is not None and last.module is not None and not last.target and last.module.phrases:
        shown = [_lead(ph) for ph in last.module.phrases][:6]
        options.append(f"more of {last.module.name} ({', '.join(dict.fromkeys(shown))})")
    options.append("another match")
    if target is not None and target.phrases:
        shown = [_lead(ph) for ph in target.phrases][:4]
        options.append(f"the text of target {target.name} ({', '.join(dict.fromkeys(shown))})")
    return "kptrace expects " + (", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]) + " there"


def _lead(ph: _Phrase) -> str:
    """A phrase's words before its first value: "dpt:", "MARK or"."""
    return ph.pattern.replace("<!>", "").split("<")[0].strip() or ph.pattern


def _target_only(text: str, at: int, target: _Module) -> list[_Hit] | None:
    """The target's phrases reading ``text`` from ``at`` to its end, or None."""
    hits = []
    pos = _skip(text, at)
    while pos < len(text):
        for ph in _candidates(target.follow, target.loose, text, pos):
            m = ph.regex.match(text, pos)
            if m is not None:
                neg = m.group("neg") is not None if ph.negatable else False
                hits.append(_Hit(target, ph, m.groupdict(), pos, m.end(), neg, False, True))
                pos = _skip(text, m.end())
                break
        else:
            return None
    return hits


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _word_spans(line: str, cols: list[str]) -> list[tuple[int, int]]:
    """1-based ``(col, length)`` of each column of a rule line (an empty target or opt column: the spot it would be)."""
    spans = []
    pos = 0
    for value in cols:
        m = _WORD.search(line, pos)
        if value == "" or m is None or m.group() != value:
            spans.append((pos + 1, 1))
            continue
        spans.append((m.start() + 1, m.end() - m.start()))
        pos = m.end()
    return spans


_WORD = re.compile(r"\S+")


# ---------------------------------------------------------------- the rule parser, with positions in the listing

class _ListingRuleParser(RuleParser):
    """The iptables-save rule parser, reporting at the listing's line and column; it also notices rules
    a listing seems to have lost something of."""

    def __init__(self, listing: _Listing) -> None:
        super().__init__(iptables_grammar(), listing.source, listing.diagnostics)
        self.listing = listing

    def problem(self, severity: str, message: str, raw: RawRule, text: str, token_index: int | None, hint: str = "") -> None:
        lst = self.listing
        # The unknown match kptrace writes for text it cannot read, and names kept as written, are
        # already reported where the listing shows them.
        if "'?'" in message or "'--text'" in message:
            return
        if any(repr(v) in message or repr(v + "/32") in message or repr(v + "/128") in message for v in lst.unresolved_values):
            return
        i = raw.line - 1
        col, length = lst.locate(i, text, token_index)
        key = (raw.line, col, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.diagnostics.append(Diagnostic(severity, message, self.source, raw.line, col, lst.lines[i].rstrip(), length, hint))

    def parse(self, chain: Chain, number: int, raw: RawRule) -> Rule:
        rule = super().parse(chain, number, raw)
        self._check(chain, number, rule)
        return rule

    def _check(self, chain: Chain, number: int, rule: Rule) -> None:
        """Notice what a listing lost (rules written by a newer iptables than the one that listed them
        print without the matches the older one cannot show)."""
        lst = self.listing
        block = lst.owner[rule.line - 1]
        if block is None or block.kind != "L":
            return
        tgt = rule.target
        if tgt is None or any(m.module == "?" for m in rule.matches):
            return  # what kptrace could not read is reported already
        if (chain.name in ("KUBE-SERVICES", "KUBE-NODEPORTS") and tgt.name.startswith(("KUBE-SVC-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-", "KUBE-XLB-"))
                and any(o.name == "-p" and not o.negated and o.value in ("tcp", "udp", "sctp") for o in rule.base)
                and not any(m.module in ("tcp", "udp", "sctp", "multiport") and m.options for m in rule.matches)):
            self._lossy(rule, f"this rule sends {rule.base_option('-p').value} to {tgt.name} with no port: kube-proxy always "
                              "writes one (--dport) here, so the listing lost it",
                        "an iptables older than the one that wrote the rules cannot print them whole; a trace sends every port "
                        "to this Service: take `iptables-save` (or the listing) with the node's own iptables")
            return
        if (tgt.name in ("RETURN", "ACCEPT", "DROP", "REJECT") and not rule.base
                and all(m.module == "comment" for m in rule.matches) and number < len(chain)):
            hidden = "" if block.layout is not None and block.layout.via is not None else " or an interface (-i/-o, which a listing without -v does not show)"
            after = len(chain) - number
            self._lossy(rule, f"this rule matches every packet, so {'the rule' if after == 1 else f'the {after} rules'} after it "
                              f"in {chain.name} {'is' if after == 1 else 'are'} never reached",
                        f"the listing may have lost a match{hidden}: an iptables older than the one that wrote the rules prints "
                        "them without what it cannot show; take `iptables-save` (or the listing with -v) with the node's own iptables")

    def _lossy(self, rule: Rule, message: str, hint: str) -> None:
        key = (rule.line, 0, message)
        if key in self._seen:
            return
        self._seen.add(key)
        lst = self.listing
        line = lst.lines[rule.line - 1].rstrip()
        self.diagnostics.append(Diagnostic("warning", message, self.source, rule.line, 0, line, 0, hint))
        lst.lossy += 1


class _Diagnostics(list):
    """A listing's diagnostics. One that quotes a rule as iptables-save writes it (``kptrace parse``'s
    check of jump targets, :func:`parse_all_rules`, builds its own from the rule's text) is moved to the
    listing's line and column as it is added."""

    listing: "_Listing | None" = None
    line_map = None  # a pasted text's: positions go back to the original's

    def append(self, d: Diagnostic) -> None:
        lst = self.listing
        if lst is not None and d.source == lst.source and 0 < d.line <= len(lst.lines) and d.col:
            i = d.line - 1
            block = lst.owner[i]
            line = lst.lines[i].rstrip()
            if block is not None and block.kind == "L" and d.text != line:
                starts = [col for _, col, _ in tokenize(d.text)]
                if d.col in starts:
                    col, length = lst.locate(i, d.text, starts.index(d.col))
                    d = Diagnostic(d.severity, d.message, d.source, d.line, col, line, length, d.hint)
        if self.line_map is not None:
            d = self.line_map.restore(d)
        super().append(d)


# ---------------------------------------------------------------- reading the structure

class ListingResult(ParseResult):
    """A :class:`~kptrace.parsers.iptables_save.ParseResult` of a listing, plus the listing forms it holds
    (``"-L -n -v"``, ``"-S"``, ...)."""

    __slots__ = ("forms",)

    def __init__(self, ruleset: Ruleset, diagnostics: list[Diagnostic], lenient: bool, forms: tuple[str, ...]) -> None:
        super().__init__(ruleset, diagnostics, lenient)
        self.forms = forms


def parse_iptables_list(text: str, source: str = "<listing>", *, lenient: bool = False, family: int | None = None,
                        grammar: ListingGrammar | None = None) -> ListingResult:
    """Read an ``iptables -L`` / ``ip6tables -L`` listing or ``iptables -S`` output (any of their forms,
    one chain or many, one table or several) into a ruleset, as :func:`parse_iptables_save` reads a dump.

    Errors (a line that is no part of a listing, a rule line without the chain's columns) raise
    :class:`ParseError` unless ``lenient``; names that cannot be resolved, text no phrase reads, and
    what the listing seems to have lost are warnings; the tables read from chain names are notes.

    >>> r = parse_iptables_list('''Chain KUBE-SVC-X (1 references)
    ... target     prot opt source               destination
    ... KUBE-SEP-Y  all  --  0.0.0.0/0            0.0.0.0/0            /* ns/web:http */ statistic mode random probability 0.50000000000
    ... ''', "listing.txt")
    >>> rule = r.ruleset.chain("nat", "KUBE-SVC-X").rules[0]
    >>> rule.text
    '-A KUBE-SVC-X -m comment --comment "ns/web:http" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-Y'
    >>> rule.location, r.ruleset.notes[0]
    ('listing.txt:3', 'listing.txt lines 1-3 (KUBE-SVC-X): no table given; read as nat: kube-proxy keeps KUBE-SVC-X in nat')
    """
    g = grammar or listing_grammar()
    # Fences, quote markers, colour codes and elisions go (kptrace/parsers/paste.py); the prompts and command
    # lines stay: this reader reads them (`iptables -t nat -L` says the table).
    paste = clean_paste(text, source, keep_commands=True)
    text = paste.text
    diags = _Diagnostics()
    lst = _Listing(text, source, g, diags)
    lst.elided = frozenset(n - 1 for n in paste.elisions)  # blanked elision lines: they do not end a chain
    diags.listing = lst
    diags.line_map = paste.line_map
    _read_structure(lst)
    lst.family = family or _family(lst)
    rs = Ruleset(family=lst.family, sources=[source], diagnostics=diags)
    parser = _ListingRuleParser(lst)
    lines = _ListingLines(lst)
    _assign_tables(lst)
    parse = parser.parse
    for b in lst.blocks:
        t = rs.tables.get(b.table)
        if t is None:
            t = rs.tables[b.table] = Table(b.table, {}, source, b.line + 1)
        if b.name in t.chains:
            lst.problem("warning", f"chain {b.name} of table {b.table} is listed twice; the first listing is used", b.line, 1,
                        len(lst.lines[b.line]), "two listings of one chain pasted together?")
            continue
        builtin = b.name in BUILTIN_CHAINS[b.table]
        c = Chain(b.name, b.table, policy=(b.policy or "ACCEPT") if builtin else None, source=source, line=b.line + 1,
                  declared=True, lines=lines, parse=parse, counters=b.counters if builtin else None, indices=b.rules)
        t.chains[b.name] = c
        if b.policy and not builtin:
            lst.problem("warning", f"chain {b.name} has a policy but is not a built-in chain of {b.table}", b.line, 1,
                        len(lst.lines[b.line]))
    n_rules = sum(len(b.rules) for b in lst.blocks)
    if n_rules <= EAGER_RULES:
        for t in rs.tables.values():
            for c in t.chains.values():
                c.rules  # noqa: B018 -- read now: every problem and note is known at load
    _notes(lst, rs)
    rs.notes[:0] = [*paste.notes, *paste.elision_notes("rules")]
    _forms(lst)
    result = ListingResult(rs, diags, lenient, tuple(sorted(lst.forms)))
    if not lenient and result.errors:
        raise ParseError(diags)
    return result


def _read_structure(lst: _Listing) -> None:
    """Chains, their column layouts and rule lines, the -S lines, and the pasted command lines."""
    lines = lst.lines
    owner = lst.owner
    count = len(lines)
    block: _Block | None = None
    command: _Command | None = None
    spec_blocks: dict[str, _Block] = {}
    layouts: dict[str, _Layout] = {}
    foreign: list = []  # [prompt line, command, last line of its output]: another command, whose output is skipped

    def end_foreign() -> None:
        if foreign and foreign[2] > foreign[0]:
            where = f"line {foreign[2] + 1}" if foreign[2] == foreign[0] + 1 else f"lines {foreign[0] + 2}-{foreign[2] + 1}"
            lst.notes.append(f"{lst.source} {where}: the output of `{_clip(foreign[1], 40)}`, which kptrace skips")
        foreign.clear()

    skipping = False  # the rest of a chain kptrace could not read the header of: one error is enough
    i = 0
    while i < count:
        line = lines[i]
        if not line or line.isspace():
            block = None  # a blank line ends a chain's listing
            skipping = False
            i += 1
            continue
        c0 = line[0]
        if (foreign or skipping) and not (c0 == "C" and line.startswith("Chain ")) and not (c0 == "-" and line[1:3] in ("P ", "N ", "A ")) \
                and _aside(line) is None:
            if foreign:
                foreign[2] = i
            i += 1
            continue
        if foreign:
            end_foreign()
        skipping = False
        if c0 == "C" and line.startswith("Chain "):
            block = _chain_block(lst, i, line, command)
            i += 1
            if block is None:
                skipping = True
                continue
            header = lines[i] if i < count else ""
            layout = layouts.get(header)
            if layout is None:
                words = header.split()
                if "target" not in words or "destination" not in words:
                    lst.problem("error", f"chain {block.name} has no column header line", min(i, count - 1), 1, len(header.rstrip()),
                                "after `Chain NAME (...)` iptables prints `target prot opt source destination` (or the -v columns); "
                                "kptrace skips this chain's rules")
                    lst.blocks.pop()  # a chain kptrace cannot read is not in the input: a trace says it stops there
                    block = None
                    skipping = True
                    continue
                layout = layouts[header] = _Layout.of(words, header)
            block.layout = layout
            i += 1
            # The chain's rules: every line up to a blank one, that a shell prompt or a command does not
            # interrupt. With -v (and --line-numbers) they start with a space or a digit: the fast case.
            start = i
            verbose = layout.counters is not None or layout.words[0] == "num"
            if verbose:
                # The chain's lines up to the next empty one, when they all start as rules do (a
                # 10k-Service listing is 110,000 chains and 540,000 rule lines): looked at in C.
                try:
                    end = lines.index("", i)
                except ValueError:
                    end = count
                if set(map(_FIRST, lines[i:end])) <= _VERBOSE_FIRSTS:
                    i = end
            elided = lst.elided
            while i < count:
                line = lines[i]
                if not line:
                    if i in elided:  # `...` among the rules: the chain goes on after it (its notes say what may be missing)
                        i += 1
                        continue
                    break
                c0 = line[0]
                if verbose and (c0 == " " or is_uint(c0)):
                    i += 1
                    continue
                if line.isspace() or (c0 == "C" and line.startswith("Chain ")) or _aside(line):
                    break
                i += 1
            if i > start:
                if elided:
                    block.rules = [j for j in range(start, i) if j not in elided]
                    for j in block.rules:
                        owner[j] = block
                else:
                    block.rules = list(range(start, i))
                    owner[start:i] = [block] * (i - start)
            continue
        if c0 == "-" and len(line) > 3 and line[2] == " " and line[1] in "PNA":
            block = _spec_line(lst, i, line, command, spec_blocks)
            i += 1
            continue
        aside = _aside(line)
        if aside is not None:
            block = None
            body = aside
            if _TOOL_ERROR.match(line) or _TOOL_ERROR.match(body.strip()):
                lst.problem("error", "iptables printed an error here, not a listing", i, 1, len(line.rstrip()),
                            "the command failed (no such chain? an iptables-nft table iptables-legacy cannot read?): "
                            "paste what the command printed when it worked")
            else:
                cmd = _read_command(body, i)
                if cmd is not None:
                    command = cmd
                    spec_blocks = {}
                elif line.startswith(_LEGACY_WARNING):
                    lst.notes.append(f"{lst.source} line {i + 1}: the node also has iptables-legacy rules, which this "
                                     "listing does not show (list them with iptables-legacy)")
                elif body.strip() and _SHELL_PROMPT.match(line):
                    foreign[:] = [i, body.strip(), i]  # another command: its output follows
            # else a comment ("# KUBE-SERVICES" above a chain, as people label them)
            i += 1
            continue
        stripped = line.strip()
        lst.problem("error", "not part of an iptables listing", i, 1, len(stripped.split()[0]) if stripped else 1,
                    "kptrace reads `iptables -L` (any flags) and `iptables -S` output; a line outside a chain, "
                    "between a blank line and the next `Chain NAME (...)`, is none of them")
        block = None
        i += 1
    end_foreign()


def _aside(line: str) -> str | None:
    """For a line that is no part of a listing but may stand between listings (a shell prompt and what
    follows it, a command line, a ``# comment``, what iptables prints when it fails): the text after
    the prompt. None for anything else (rule lines: without -v they start with their target, which no
    prompt pattern takes)."""
    c0 = line[0]
    if c0 == " " or is_uint(c0):
        return None
    prompt = _PROMPT.match(line)
    if prompt is not None:
        return line[prompt.end():]
    if line.startswith(("iptables", "ip6tables", "sudo ")):
        return line
    return None


def _chain_block(lst: _Listing, i: int, line: str, command: _Command | None) -> _Block | None:
    m = _CHAIN_HEADER.match(line)
    if m is None:
        lst.problem("error", "a Chain line that is not `Chain NAME (policy P)` or `Chain NAME (N references)`", i, 1, 5,
                    "is the line cut off?")
        return None
    block = _Block(m.group(1), i, "L", policy=m.group(2), command=command)
    if m.group(3) is not None:
        block.counters = (_count(m.group(3)), _count(m.group(4)))
    lst.blocks.append(block)
    return block


def _spec_line(lst: _Listing, i: int, line: str, command: _Command | None, spec_blocks: dict[str, _Block]) -> _Block:
    """A line of ``iptables -S``: ``-P`` and ``-N`` declare a chain, ``-A`` adds a rule to it."""
    parts = line.split()
    name = parts[1] if len(parts) > 1 else ""
    if line[1] != "N":
        lst.forms.add("-S -v" if _SPEC_COUNTERS.search(line) else "-S")
    if line[1] == "A":
        b = spec_blocks.get(name)
        if b is None:  # `iptables -S | grep` may leave out the -N
            b = spec_blocks[name] = _Block(name, i, "S", command=command)
            lst.blocks.append(b)
        b.rules.append(i)
        lst.owner[i] = b
        return b
    b = _Block(name, i, "S", command=command)
    if line[1] == "P":
        b.policy = parts[2] if len(parts) > 2 else "ACCEPT"
        c = _SPEC_COUNTERS.search(line)
        if c is not None:
            b.counters = (int(c.group(1)), int(c.group(2)))
    spec_blocks[name] = b
    lst.blocks.append(b)
    return b


def _forms(lst: _Listing) -> None:
    """Which listing forms the input holds ("-L -n -v", "-S"), from the column headers, the command
    lines, and whether addresses are printed as numbers ("0.0.0.0/0") or names ("anywhere")."""
    numeric = None
    for b in lst.blocks:
        if b.kind == "L" and numeric is None:
            for i in b.rules:
                words = lst.lines[i].split()
                if "anywhere" in words:
                    numeric = False
                elif "0.0.0.0/0" in words or "::/0" in words:
                    numeric = True
                if numeric is not None:
                    break
    seen = set()
    for b in lst.blocks:
        if b.kind != "L" or b.layout is None or (b.layout.words, id(b.command)) in seen:
            continue
        seen.add((b.layout.words, id(b.command)))
        flags = b.command.flags.split() if b.command is not None else []
        form = ["-L"]
        if "-n" in flags or "--numeric" in flags or (numeric and not b.command):
            form.append("-n")
        if b.layout.counters is not None:
            form.append("-v")
            if b.layout.exact:
                form.append("-x")
        if b.layout.words[0] == "num":
            form.append("--line-numbers")
        lst.forms.add(" ".join(form))


def _family(lst: _Listing) -> int:
    """IPv6 when a command line says ip6tables, or the rules' addresses (or ICMPv6, ip6- names) are IPv6;
    IPv4 when they are IPv4; when nothing says, IPv4 and a note."""
    families = {b.command.family for b in lst.blocks if b.command is not None}
    if families:
        if len(families) > 1:
            first6 = next(b for b in lst.blocks if b.command is not None and b.command.family == 6)
            lst.problem("error", "this input holds both iptables and ip6tables output", first6.command.line, 1,
                        len(lst.lines[first6.command.line]), "pass the IPv4 and the IPv6 listing as two files (--dump twice)")
        return 6 if 6 in families and len(families) == 1 else 4
    seen = 0
    for b in lst.blocks:
        for i in b.rules:
            line = lst.lines[i]
            if b.kind == "L":
                got = lst._fields(line.rstrip(), b.layout)
                values = [v.lstrip("!").partition("/")[0] for v in got[0][-2:]] if got is not None else []
            else:
                values = [m.group(1).partition("/")[0] for m in _SPEC_ADDRESS.finditer(line)]
            for value in values:
                if value == "0.0.0.0" or _V4_HOST.match(value):
                    return 4
                if ":" in value or value.startswith("ip6-"):
                    return 6
            m = _FAMILY_WORDS.search(line)
            if m is not None:
                return 6 if m.group(1) else 4
            seen += 1
            if seen > 2000:
                break
    if lst.blocks:
        lst.notes.append(f"{lst.source}: nothing in the listing says whether iptables or ip6tables printed it (no address, "
                         "no ICMP type); read as IPv4: paste the `ip6tables -L ...` command line with an IPv6 listing")
    return 4


#: words only one family's rules print: ICMPv6 names and types, ip6tables' names; ICMP ones
_FAMILY_WORDS = re.compile(r"(ipv6-icmp|icmp6-|icmpv6|\bip6-\w+|to:\[)|(\bicmp\b|icmp-(?:port|host|net|proto|admin))")
_SPEC_ADDRESS = re.compile(r" -[sd] (\S+)")


def _assign_tables(lst: _Listing) -> None:
    """Each chain's table: said by a command line, or read from the chains listed together.

    The chains are cut into runs, each of one table: a run ends at a command line, at a chain listed
    twice, at a built-in chain after a user chain or out of the built-in order (a second table's
    listing starts), and where the chains' possible tables no longer meet. :func:`_decide` picks each
    run's table.
    """
    g = lst.g
    all_tables = frozenset(TABLES)
    runs: list[list[_Block]] = []
    run: list[_Block] = []
    names: set[str] = set()
    cands = all_tables
    last_builtin = -1
    has_user = False

    for b in lst.blocks:
        if b.command is not None:
            mine = frozenset({b.command.table or "filter"})
        else:
            mine = _BUILTIN_TABLES.get(b.name, all_tables)
            b.known = g.tables_of_chain(b.name)
            if b.known is not None:
                mine = mine & b.known
        builtin = _BUILTIN_ORDER.index(b.name) if b.name in _BUILTIN_ORDER else -1
        if run and (b.command is not run[-1].command or b.name in names or not (cands & mine)
                    or (builtin >= 0 and (has_user or builtin <= last_builtin))):
            runs.append(run)
            run, names, cands, last_builtin, has_user = [], set(), all_tables, -1, False
        run.append(b)
        names.add(b.name)
        cands = cands & mine
        if builtin >= 0:
            last_builtin = builtin
        else:
            has_user = True
    if run:
        runs.append(run)
    for run in runs:
        _decide(lst, run)


def _decide(lst: _Listing, run: list[_Block]) -> None:
    """The table of one run of chains listed together (see :func:`_assign_tables`), and a note saying
    why when no command line said it."""
    g = lst.g
    cmd = run[0].command
    if cmd is not None:
        for b in run:
            b.table = cmd.table or "filter"
        return
    cands = frozenset(TABLES)
    reasons: list[str] = []

    def narrow(tables: frozenset[str] | None, reason: Callable[[], str]) -> None:
        nonlocal cands
        if tables is not None and len(cands) > 1 and cands & tables and not cands <= tables:
            cands = cands & tables
            reasons.append(reason())

    builtins = [b.name for b in run if b.name in _BUILTIN_ORDER]
    leading = tuple(b.name for b in run[:len(builtins)])
    if builtins and leading == tuple(builtins):
        # A whole table's listing starts with its built-in chains, in order: nat's four are not mangle's five.
        exact = frozenset(t for t in TABLES if leading == tuple(c for c in _BUILTIN_ORDER if c in BUILTIN_CHAINS[t]))
        if exact:
            narrow(exact, lambda: f"its built-in chains {', '.join(leading)} are those of {_either(exact)}")
    for name in builtins:
        tables = frozenset(t for t in TABLES if name in BUILTIN_CHAINS[t])
        narrow(tables, lambda: f"built-in chain {name} is in {_either(tables)}")
    for b in run:
        if len(cands) == 1:
            break
        narrow(b.known, lambda: f"kube-proxy keeps {b.name} in {_either(b.known)}" if b.name.startswith("KUBE-")
               else f"{b.name} is in {_either(b.known)}")
    for b in run:
        if len(cands) == 1:
            break
        for i in b.rules:
            name = _target_of(lst, b, i)
            if name in g.target_tables:
                narrow(g.target_tables[name], lambda: f"its rules use {name}, which works in {_either(g.target_tables[name])} only")
            elif name:
                tables = g.tables_of_chain(name)
                narrow(tables, lambda: f"it jumps to {name}, which is in {_either(tables)}")
            if len(cands) == 1:
                break
    table = next(t for t in _TABLE_PREFERENCE if t in cands)
    if len(cands) > 1:
        reasons.append(f"it could also be {_either(cands - {table})}" + (" (filter is what `iptables -L` lists without -t)"
                                                                          if table == "filter" else ""))
    first = run[0].line + 1
    last = max([run[-1].line] + run[-1].rules) + 1
    names = ", ".join(b.name for b in run[:3]) + (f" and {len(run) - 3} more" if len(run) > 3 else "")
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    lst.notes.append(f"{lst.source} {where} ({names}): no table given; read as {table}: {'; '.join(reasons) or 'nothing says otherwise'}")
    for b in run:
        b.table = table


def _either(tables) -> str:
    tables = set(tables)
    ordered = [t for t in TABLES if t in tables]
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _target_of(lst: _Listing, b: _Block, i: int) -> str:
    line = lst.lines[i]
    if b.kind == "S":
        m = _SPEC_TARGET.search(line)
        return m.group(1) if m else ""
    got = lst._fields(line.rstrip(), b.layout)
    return got[0][b.layout.target] if got else ""


def _notes(lst: _Listing, rs: Ruleset) -> None:
    notes = list(lst.notes)
    if any(b.kind == "L" and b.layout is not None and b.layout.via is None for b in lst.blocks):
        notes.append(f"{lst.source}: a listing without -v has no interface columns: a rule that matches -i/-o reads "
                     "as matching every interface (take `iptables -L -n -v` to see them)")
    if lst.rounded:
        notes.append(f"{lst.source}: counters are rounded (K, M, G: thousands, millions, billions); take the listing with -x for exact ones")
    if lst.names_read:
        shown = ", ".join(f"{k}={v}" for k, v in list(lst.names_read.items())[:8])
        more = len(lst.names_read) - 8
        notes.append(f"{lst.source}: the listing was taken without -n; names read with kptrace's fixed tables: {shown}"
                     + (f" and {more} more" if more > 0 else ""))
    if lst.lossy:
        notes.append(f"{lst.source}: {lst.lossy} rule{'s look' if lst.lossy != 1 else ' looks'} incomplete (see the warnings): "
                     "traces through them may not be what the node does")
    for t in rs.tables.values():
        present = [c for c in BUILTIN_CHAINS[t.name] if c in t.chains]
        missing = [c for c in BUILTIN_CHAINS[t.name] if c not in t.chains]
        if present and missing:
            notes.append(f"{lst.source}: table {t.name} is listed without its built-in chain{'s' * (len(missing) > 1)} "
                         f"{', '.join(missing)}: a trace passes {'them' if len(missing) > 1 else 'it'} as if empty")
    rs.notes.extend(notes)
