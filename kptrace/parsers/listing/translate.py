"""One listing as it is read (its lines, its chains, what reading it has found), and each rule line turned
into the line iptables-save would have written for the same rule, mapped back to the listing's columns
for diagnostics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from kptrace.errors import Diagnostic
from kptrace.model.addr import is_uint
from kptrace.parsers.listing.fallback import pp_scan, scan_with_fallbacks
from kptrace.parsers.listing.grammar import ListingGrammar, Module, Phrase, save_string
from kptrace.parsers.listing.scan import Hit, scan_text, target_only
from kptrace.parsers.listing.structure import (
    ANY_ADDRESS,
    ANY_IFACE,
    ANY_PROTO,
    OPT,
    SPEC_COUNTERS,
    Block,
    Layout,
    clip,
    count,
    rule_fields,
)
from kptrace.parsers.listing.values import CONVERTERS, Values, Where
from kptrace.parsers.tokens import tokenize

__all__ = ["Listing", "ListingLines", "Piece", "word_spans"]

_V4_ADDR = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?:/[0-9.]+)?$", re.ASCII)


class ListingLines(Sequence[str]):
    """The rule lines of a listing as iptables-save lines, made when first read: the ``lines`` a
    :class:`~kptrace.model.rules.Chain` of the listing indexes."""

    __slots__ = ("_cache", "listing")

    def __init__(self, listing: Listing) -> None:
        self.listing = listing
        self._cache: list[str | None] = [None] * len(listing.lines)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]  # one line at a time: no slices
        text = self._cache[i]
        if text is None:
            text = self._cache[i] = self.listing.translate(i)
        return text

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def translated(self) -> int:
        """How many lines have been turned into iptables-save form so far."""
        return len(self._cache) - self._cache.count(None)


class Piece(NamedTuple):
    text: str
    field: int | None  # a column of the listing line (index among its words)
    start: int  # or offsets in the rule's text (the part after the address columns)
    end: int


class Listing:
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
        self.blocks: list[Block] = []
        self.owner: list[Block | None] = [None] * len(self.lines)
        self.values = Values(g, self)
        self.names_read: dict[str, str] = {}
        self.unresolved_values: set[str] = set()
        self._reported: set[str] = set()
        self.rounded = False
        self.forms: set[str] = set()
        self.notes: list[str] = []
        self.lossy = 0  # rules that look incomplete (ListingRuleParser._check)
        self._tails: dict[tuple[str, str], tuple[str, str | None, str]] = {}  # _text_fast's memory
        self._protocols: dict[str, str] = {}  # prot column -> "-p NAME"

    # -- problems

    def problem(self, severity: str, message: str, line: int, col: int = 0, length: int = 0, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(severity, message, self.source, line + 1, col, self.lines[line].rstrip(), length, hint))

    def unresolved(self, value: str, where: Where, message: str, hint: str, *, severity: str = "warning",
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

    def translate_mapped(self, i: int, *, want_map: bool) -> tuple[str, tuple[int, int] | None, list[Piece]]:
        block = self.owner[i]
        line = self.lines[i].rstrip()
        if block is None:
            return line, None, []
        if block.kind == "S":
            return self._translate_spec(block, line)
        return self._translate_rule(i, block, line, want_map)

    def _translate_spec(self, block: Block, line: str) -> tuple[str, tuple[int, int] | None, list[Piece]]:
        counters = None
        if " -c " in line:
            for m in SPEC_COUNTERS.finditer(line):
                if line.count('"', 0, m.start()) % 2 == 0:
                    counters = (int(m.group(1)), int(m.group(2)))
                    line = line[:m.start()] + line[m.end():]
                    break
        return line, counters, []

    def _translate_rule(self, i: int, block: Block, line: str, want_map: bool) -> tuple[str, tuple[int, int] | None, list[Piece]]:
        """A ``-L`` rule line in iptables-save form. The fast path takes the usual line (every column
        filled, text the phrases read); :meth:`_translate_rule_general` takes the rest, and maps the
        result back to the line's columns (``want_map``)."""
        layout = block.layout
        assert layout is not None  # a -L chain's rule lines follow its column header
        n = len(layout.words)
        parts = line.split(None, n)
        if want_map or len(parts) < n or (layout.opt is not None and parts[layout.opt] not in OPT):
            return self._translate_rule_general(i, block, line, want_map)
        out = [f"-A {block.name}"]
        value = parts[n - 2]
        if value not in ANY_ADDRESS and (option := self._address_option("-s", value, i, line, layout, n - 2)):
            out.append(option)
        value = parts[n - 1]
        if value not in ANY_ADDRESS and (option := self._address_option("-d", value, i, line, layout, n - 1)):
            out.append(option)
        if layout.via is not None:
            value = parts[layout.via]
            if value not in ANY_IFACE:
                out.append(f"! -i {value[1:]}" if value[0] == "!" else f"-i {value}")
            value = parts[layout.via + 1]
            if value not in ANY_IFACE:
                out.append(f"! -o {value[1:]}" if value[0] == "!" else f"-o {value}")
        t = layout.target
        value = parts[t + 1]
        if value not in ANY_PROTO:
            out.append(self._protocol_option(value, i, line, layout, t + 1))
        if layout.opt is not None and parts[layout.opt] != "--":
            out.append(OPT[parts[layout.opt]].strip())
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

    def _translate_rule_general(self, i: int, block: Block, line: str, want_map: bool) -> tuple[str, tuple[int, int] | None, list[Piece]]:
        layout = block.layout
        assert layout is not None  # a -L chain's rule lines follow its column header
        words = layout.words
        n = len(words)
        # Every column filled (a target, an opt), or rule_fields works out which is empty.
        parts = line.split(None, n)
        if len(parts) >= n and (layout.opt is None or parts[layout.opt] in OPT):
            cols, rest = parts[:n], (parts[n] if len(parts) > n else "")
        else:
            got = rule_fields(line, layout)
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
                    counters = (count(pk), count(by))
                    self.rounded = True
                except ValueError:
                    self.problem("error", f"counters {pk!r} {by!r} are not numbers", i, 1, len(line),
                                 "a -v listing's rules start with packet and byte counts")
        out = [f"-A {block.name}"]
        pieces: list[Piece] = [Piece(out[0], None, -1, -1)] if want_map else []

        def add(text: str, field_index: int | None, start: int = -1, end: int = -1) -> None:
            out.append(text)
            if want_map:
                pieces.append(Piece(text, field_index, start, end))

        for at, opt in ((n - 2, "-s"), (n - 1, "-d")):
            value = cols[at]
            if value not in ANY_ADDRESS and (option := self._address_option(opt, value, i, line, layout, at)):
                add(option, at)
        if layout.via is not None:
            for at, opt in ((layout.via, "-i"), (layout.via + 1, "-o")):
                value = cols[at]
                if value not in ANY_IFACE:
                    add(f"! {opt} {value[1:]}" if value[0] == "!" else f"{opt} {value}", at)
        t = layout.target
        proto = cols[t + 1]
        if proto not in ANY_PROTO:
            add(self._protocol_option(proto, i, line, layout, t + 1), t + 1)
        if layout.opt is not None and cols[layout.opt] != "--":
            add(OPT[cols[layout.opt]].strip(), layout.opt)
        goto = rest.startswith("[goto]")
        if goto:
            rest = rest[6:].lstrip()
            rest_col = len(line) - len(rest)
        if not rest:
            self._target(cols[t], goto, [], add, t)
        else:
            self._translate_text(i, rest, rest_col, cols[t], goto, add, t)
        return " ".join(out), counters, pieces

    def _address_option(self, opt: str, value: str, i: int, line: str, layout: Layout, at: int) -> str:
        """``-s``/``-d`` and the address column's value as iptables-save writes it (a host gets /32)."""
        neg = value[0] == "!"
        if neg:
            value = value[1:]
        if not value:  # a "!" alone in the column: nothing to negate, nothing to read
            self.problem("error", f"'!' with no address in the {'source' if opt == '-s' else 'destination'} column",
                         *self._where(i, line, layout, at), "iptables prints a negated address as !10.0.0.0/8; read as any address")
            return ""
        if value in ANY_ADDRESS:
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

    def _protocol_option(self, value: str, i: int, line: str, layout: Layout, at: int) -> str:
        neg = value[0] == "!"
        name = self._protocols.get(value)
        if name is None:
            name = self.values.protocol(value[1:] if neg else value, lambda: self._where(i, line, layout, at))
            name = self._protocols[value] = f"! -p {name}" if neg else f"-p {name}"
        return name

    def _where(self, i: int, line: str, layout: Layout, field_index: int) -> tuple[int, int, int]:
        got = rule_fields(line, layout)
        spans = word_spans(line, got[0]) if got else []
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
            scan = scan_text(key[0], self.g, target)
            if scan.fail is not None:
                return False
            matches: list[str] = []
            options: list[str] = []
            self._render_matches(i, rest_col + pos, [h for h in scan.hits if not h.target], lambda t, *_: matches.append(t))
            target_hits = [h for h in scan.hits if h.target]
            self._target_options(i, rest_col + pos, target_hits, lambda t, *_: options.append(t))
            rename = next((h.phrase.rename for h in target_hits if h.phrase is not None and h.phrase.rename), None)
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
        scan = scan_text(rest, g, target)
        if scan.fail is not None:
            scan = scan_with_fallbacks(rest, g, target)
        hits = scan.hits
        if scan.fail is not None:
            fail = scan.fail
            # The rule's target may still read the end of the text: keep what it reads.
            tail_at, tail = len(rest), []
            if target is not None:
                for m in re.finditer(r"\s(?=\S)", rest[fail:]):
                    at = fail + m.end()
                    t_hits = target_only(rest, at, target)
                    if t_hits is not None:
                        tail_at, tail = at, t_hits
                        break
            unknown = rest[fail:tail_at].rstrip()
            # pyparsing says where exactly a phrase went wrong ("probability" without its number);
            # past the last phrase it read, what could have come there says more than its
            # "Expected end of text".
            expected = pp_scan(rest, g, target)
            at = fail
            if isinstance(expected, tuple) and expected[0] > fail:
                at, why = expected[0], f"expected {expected[1].removeprefix('Expected ')} here"
            else:
                why = could_follow(hits, target)
            if unknown.startswith("/* ") and " */" not in unknown:
                why = "a comment with no end: a line cut in two by a terminal's wrapping?"
            self.problem("warning", f"cannot read {clip(rest[at:tail_at].rstrip() or unknown)!r}", i, rest_col + at + 1,
                         max(1, len(unknown) - (at - fail)),
                         f"{why}; kept as an unknown match, which a trace assumes does not match (kptrace reads the texts in "
                         "grammars/iptables_list.toml)")
            hits = hits + [Hit(None, None, {"text": unknown}, fail, fail + len(unknown), False, True, False)] + tail
        self._render(i, rest_col, hits, target_name, goto, add, target_field)

    def _render(self, i: int, rest_col: int, hits: list[Hit], target_name: str, goto: bool, add, target_field: int) -> None:
        self._render_matches(i, rest_col, [h for h in hits if not h.target], add)
        self._target(target_name, goto, [h for h in hits if h.target], add, target_field, i=i, rest_col=rest_col)

    def _render_matches(self, i: int, rest_col: int, hits: list[Hit], add) -> None:
        """The matches' iptables-save text: ``-m MODULE`` and its options, for each match read."""
        groups: list[list[Hit]] = []
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
                options.sort(key=lambda th: -1 if th[1].phrase is mod.head else _rank(th[1]))
            for text, h in options:
                if text:
                    add(text, None, h.start, h.end)

    def _target(self, name: str, goto: bool, hits: list[Hit], add, field_index: int | None, *, i: int = 0, rest_col: int = 0) -> None:
        """``-j NAME`` (``-g``) and the target's options; a phrase may rename the target (CT NOTRACK)."""
        for h in hits:
            if h.phrase is not None and h.phrase.rename:
                name = h.phrase.rename
        if not name:
            return
        add(("-g " if goto else "-j ") + name, field_index)
        self._target_options(i, rest_col, hits, add)

    def _target_options(self, i: int, rest_col: int, hits: list[Hit], add) -> None:
        options = [(self._option(i, rest_col, h), h) for h in hits if h.phrase is not None]
        first = hits[0].module if hits else None
        if first is not None and first.ranked:
            options.sort(key=lambda th: _rank(th[1]))
        for text, h in options:
            if text:
                add(text, None, h.start, h.end)
        for h in hits:
            if h.phrase is None:
                add(f"--text {save_string(h.groups['text'])}", None, h.start, h.end)

    def _option(self, i: int, rest_col: int, h: Hit) -> str:
        """A phrase's iptables-save text ("" when it writes nothing, or a value left out as a default)."""
        out = []
        ph = h.phrase
        assert ph is not None  # only what a phrase read has options
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
            convert = CONVERTERS.get(ph.types[name])
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
        layout = block.layout if block is not None else None  # pieces: a -L rule line's, which has one
        toks = tokenize(translated)
        if token_index >= len(toks):
            return len(line) + 1, 1
        offset = toks[token_index][1] - 1
        at = 0
        for p in pieces:
            if at <= offset < at + len(p.text) + 1:
                if p.field is not None:
                    got = rule_fields(line, layout) if layout is not None else None
                    if got is None:
                        return 1, len(line)
                    return word_spans(line, got[0])[p.field]
                if p.start >= 0:
                    got = rule_fields(line, layout) if layout is not None else None
                    rest_col = got[2] if got else 0
                    if line[rest_col:].startswith("[goto]"):
                        rest_col += 6
                    return rest_col + p.start + 1, max(1, p.end - p.start)
                return 1, 1
            at += len(p.text) + 1
        return 1, 1


def could_follow(hits: list[Hit], target: Module | None) -> str:
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


def _lead(ph: Phrase) -> str:
    """A phrase's words before its first value: "dpt:", "MARK or"."""
    return ph.pattern.replace("<!>", "").split("<")[0].strip() or ph.pattern


def word_spans(line: str, cols: list[str]) -> list[tuple[int, int]]:
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


def _rank(h: Hit) -> int:
    """Where iptables-save writes the option a phrase read among its module's (0: as listed)."""
    return h.phrase.rank if h.phrase is not None else 0
