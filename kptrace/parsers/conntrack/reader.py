"""The conntrack table reader: entries streamed as they are iterated, a fast path for the lines conntrack prints
most, the careful one (:func:`~kptrace.parsers.conntrack.line.parse_line`) for the rest, and what reading found."""

from __future__ import annotations

import collections
import re
import socket
from dataclasses import replace
from typing import IO, Callable, Iterable, Iterator, Mapping

from kptrace.errors import Diagnostic, ParseError, binary_data
from kptrace.model.conntrack import ConntrackEntry
from kptrace.parsers.conntrack.line import (
    FAMILIES,
    KEEP_DIAGNOSTICS,
    PORTED,
    PROTO_NUMBERS,
    QUOTED,
    SMALL,
    STATES,
    STATS,
    TAILS,
    WHOLE_BYTES,
    LineError,
    parse_line,
    port_tokens,
    tail_items,
    v6_compressed,
)
from kptrace.parsers.conntrack.xml import xml_entries

__all__ = ["ConntrackReader", "other_format"]

#: the protocols the fast path reads: their numbers as conntrack prints them
_FAST_PROTOS = {p: n for p, n in PROTO_NUMBERS.items() if p in PORTED}


# ---------------------------------------------------------------- the reader

class ConntrackReader:
    """The entries of one conntrack listing, read as they are iterated (a million-entry table is never held
    whole), and what reading them found: :attr:`skipped` lines and their :attr:`diagnostics` (lenient),
    :attr:`notes` (what a paste added, elisions, a count that does not add up), :attr:`shown` (the count on
    conntrack's "N flow entries have been shown." line, when pasted) and :attr:`read` (the entries yielded,
    counted when the iteration ends).

    Iterate it once. Not lenient, a bad line raises :class:`~kptrace.errors.ParseError` after the reader
    has read on to the end to collect the other bad lines (the entries before it were already yielded).
    """

    def __init__(self, lines: Iterable[str], source: str, *, lenient: bool = False, closing: IO | None = None) -> None:
        self.source = source
        self.lenient = lenient
        self.skipped = 0
        self.read = 0
        self.shown: int | None = None
        self.diagnostics: list[Diagnostic] = []
        self.notes: list[str] = []
        self._lines = lines
        self._closing = closing
        self._errors = 0
        self._filtered = False
        self._stats_lines: dict = {}
        self._format_checked = False
        self._decide: Callable[[ConntrackEntry], str | None] | None = None
        self._alike: set[tuple[str, str]] = set()
        self._v6_seen: set[tuple] = set()
        #: entries counted, not built, by what :meth:`only`'s ``decide`` said of them
        self.counted: dict[str, int] = {}
        self._gen = self._run()

    def __iter__(self) -> Iterator[ConntrackEntry]:
        return self._gen

    def __next__(self) -> ConntrackEntry:
        return next(self._gen)

    def only(self, decide, alike: Mapping[str, frozenset[str]] | None = None, seen: set[tuple] | None = None) -> "ConntrackReader":
        """Build only the entries an analysis needs; count the others. Call before iterating.

        ``decide(entry)`` is asked once for each (protocol, original destination and port, reply source and port)
        a plain ``conntrack -L`` line has (the first line with them, built and checked in full), and once for each
        protocol and state of ``alike`` (protocol -> states whose entries it answers alike, whatever else they
        hold: the stale check's closed TCP connections): None to have every entry with them built and yielded, or
        a name to only count them in :attr:`counted` under it. An analysis whose answer depends on nothing else
        (the stale check: where the connection was sent, and where the rules send it now) then reads most lines
        of a million-entry table with one ``split`` and a dictionary look-up (benchmarks/conntrack.py). An IPv6
        connection listed twice (conntrack-tools 1.4.7 lists the IPv6 table again) is counted once; ``seen`` (the
        IPv6 connections counted so far) is shared by the readers of one node's tables (``conntrack -L`` and
        ``conntrack -L -f ipv6`` list them both)."""
        self._decide = decide
        if seen is not None:
            self._v6_seen = seen
        self._alike = {(proto, state) for proto, states in (alike or {}).items() for state in states}
        return self

    # -- errors

    def report_bad(self, d: Diagnostic) -> None:
        """One bad line: kept (up to a limit), counted; lenient readers go on, the others raise at the end."""
        self._errors += 1
        self.skipped += 1
        if len(self.diagnostics) < KEEP_DIAGNOSTICS:
            self.diagnostics.append(d)

    def _diag(self, e: LineError, line: str, n: int, line_map=None) -> Diagnostic:
        line = line.rstrip("\r\n")
        d = Diagnostic("error", e.message, self.source, n, e.offset + 1, line, e.length, e.hint)
        return line_map.restore(d) if line_map is not None else d

    # -- the whole input

    def _run(self) -> Iterator[ConntrackEntry]:
        try:
            it = iter(self._lines)
            head: list[str] = []
            size = 0
            whole = True
            for raw in it:
                head.append(raw if raw.endswith("\n") else raw + "\n")
                size += len(raw)
                if size > WHOLE_BYTES:
                    whole = False
                    break
            self._binary(head)
            if whole:
                yield from self._pasted("".join(head))
            else:
                yield from self._stream(head, it)
            here = self.read + self.skipped + sum(self.counted.values())
            if whole and not here and self.shown is None and not any(h.strip() for h in head):
                self.notes.append(f"{self.source}: no entries at all (an idle node's table, or conntrack's output went "
                                  "elsewhere: it prints its entries on stdout and its count on stderr)")
            if self.shown is not None and self.shown != here and not self._filtered:
                self.notes.append(f"{self.source}: conntrack says it showed {self.shown} entries, but {here} "
                                  f"are here: {'some are missing (cut or elided)' if here < self.shown else 'the copy is not one listing'}")
            if self._errors and not self.lenient:
                raise ParseError(list(self.diagnostics))
        finally:
            if self._closing is not None:
                self._closing.close()

    def _binary(self, head: list[str]) -> None:
        """A NUL byte in the first lines: not a listing at all (one error, not one a line)."""
        for n, line in enumerate(head[:20000], 1):
            col = line.find("\0")
            if col >= 0:
                raise ParseError([binary_data(self.source, n, col + 1, "a conntrack table", "conntrack -L")])

    def _pasted(self, text: str) -> Iterator[ConntrackEntry]:
        """A text small enough for the shared paste pre-pass (every paste is)."""
        from kptrace.parsers.paste import clean_paste

        # conntrack's closing line on stderr reads like a command line to the pre-pass: taken out first
        # (its line left blank, so line numbers stay) and handled where it was.
        stats: dict[int, re.Match] = {}
        if "(conntrack-tools)" in text:
            lines = text.split("\n")
            for k, line in enumerate(lines):
                m = STATS.match(QUOTED.sub("", line)) if "(conntrack-tools)" in line else None
                if m:
                    stats[k + 1] = m
                    lines[k] = ""
            text = "\n".join(lines)
        self._stats_lines = stats
        paste = clean_paste(text, self.source)
        self.notes.extend(paste.notes)
        self.notes.extend(paste.elision_notes("conntrack entries"))
        lines = paste.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self._filtered = bool(paste.filtered)
        yield from self._lines_of(enumerate(lines, 1), paste.line_map, text)

    def _stream(self, head: list[str], rest: Iterator[str]) -> Iterator[ConntrackEntry]:
        import itertools

        numbered = enumerate(itertools.chain(head, rest), 1)
        if self._decide is not None:
            yield from self._decided(numbered, "".join(head[:2000]))
        else:
            yield from self._lines_of(numbered, None, "".join(head[:2000]))

    def _decided(self, numbered, head_text: str) -> Iterator[ConntrackEntry]:
        """:meth:`only`'s reading of a streamed table: a line whose key was decided before is counted after one
        split and a look-up; the first line of each key, and every line to build, go through :meth:`_lines_of`
        (so they are checked as always). A line of any other shape hands the rest of the input to
        :meth:`_lines_of` (an XML listing, a paste's prompt: read as without :meth:`only`)."""
        import itertools

        decisions: dict[str, str | None] = {}
        counted: dict[str, int] = collections.defaultdict(int)
        families = FAMILIES
        alike = self._alike
        alike_states = {state for _, state in alike}
        states = STATES
        unreplied = "[UNREPLIED]"
        v6_seen = self._v6_seen
        lines_of = self._lines_of
        try:
            for n, raw in numbered:
                # Only as many tokens as the key needs (split(None, 12): the rest of the line stays one string). The
                # key: protocol, whether the state is marked, original dst= and dport=, reply src= and sport=, at
                # their places in the four layouts (a state or none, [UNREPLIED] or not), joined in one string: a
                # dictionary finds a string ~8x faster than a tuple of six (benchmarks/conntrack.py).
                t = raw.split(None, 12)
                try:
                    if t[0] in families:  # -o extended, /proc: "ipv4 2 " first
                        t = raw.split(None, 14)[2:]
                    state = t[3]
                    if state in states:
                        j = 4
                        if state in alike_states and (t[0], state) in alike:
                            key = f"{t[0]} {state}"
                        else:
                            key = (f"{t[0]} {t[5]} {t[7]} {t[8]} {t[10]}" if t[8] != unreplied
                                   else f"{t[0]} {t[5]} {t[7]} {t[9]} {t[11]}")
                    else:
                        j = 3
                        key = (f"{t[0]} {t[4]} {t[6]} {t[7]} {t[9]}" if t[7] != unreplied
                               else f"{t[0]} {t[4]} {t[6]} {t[8]} {t[10]}")
                    if t[j][:4] != "src=":
                        raise LookupError
                except LookupError:
                    yield from lines_of(itertools.chain(((n, raw),), numbered), None, head_text)
                    return
                try:
                    bucket = decisions[key]
                except KeyError:
                    bucket = yield from self._first(key, n, raw, head_text, decisions)
                    if bucket is None:
                        continue
                if bucket is None:
                    yield from lines_of(((n, raw),), None, head_text)
                    continue
                if ":" in t[j + 1]:  # IPv6: a connection listed twice is counted once
                    zone = next((x for x in raw.split()[j + 8:] if x[:5] == "zone="), None) if "zone=" in raw else None
                    ident = (t[0], t[j], t[j + 1], t[j + 2], t[j + 3], zone)
                    if ident in v6_seen:
                        continue
                    v6_seen.add(ident)
                counted[bucket] += 1  # a str here: None went on above
        finally:
            for bucket, c in counted.items():
                self.counted[bucket] = self.counted.get(bucket, 0) + c

    def _first(self, key: str, n: int, raw: str, head_text: str, decisions: dict):
        """The first line with ``key``: built and checked in full, and decided; yields it when it is to be built.
        Returns the bucket to count it in (None: yielded, or not an entry)."""
        entries = list(self._lines_of(((n, raw),), None, head_text))
        if len(entries) != 1:  # not an entry after all (a bad line, reported; the stats line)
            yield from entries
            return None
        parts = key.split(" ")  # protocol and state (``alike``), or protocol and the four tuple values
        if self._decide is not None and (len(parts) == 2 or (parts[1][:4] == "dst=" and parts[2][:6] == "dport="
                                                             and parts[3][:4] == "src=" and parts[4][:6] == "sport=")):
            bucket = decisions[key] = self._decide(entries[0])
        else:  # not the plain layout (ICMP, counters between the tuples): every such line is built
            bucket = decisions[key] = None
        if bucket is None:
            yield entries[0]
            return None
        self.read -= 1  # built to decide, then counted instead of yielded
        return bucket

    def _lines_of(self, numbered, line_map, head_text: str) -> Iterator[ConntrackEntry]:
        """The entries of numbered lines. The fast path below takes the lines conntrack prints most (tcp/udp,
        a port pair in each tuple, at most [UNREPLIED] between them) with str.split, slices and dict look-ups,
        and what follows the tuples through a cache (a table's tails are a handful: "[ASSURED] mark=0 use=1");
        anything else goes to :func:`parse_line`, which must give the same entry or say what is wrong (a
        hypothesis test checks both agree). Measured: benchmarks/conntrack.py.

        One function, over 80 lines on purpose: it is the loop a million-entry table runs a million times, and its
        locals (the tables above) and the inline checks are what make it ~2x faster than a call per line."""
        source = self.source
        families = FAMILIES
        fast_protos = _FAST_PROTOS
        small = SMALL
        states = STATES
        v6 = v6_compressed
        pton = socket.inet_pton
        inet = socket.AF_INET
        sports, dports = port_tokens()
        tails = TAILS
        tail_of = tail_items
        unreplied = ("UNREPLIED",)
        new = tuple.__new__  # ConntrackEntry(...) through its __new__ costs ~0.3 us more per entry
        cls = ConntrackEntry
        stats_lines = self._stats_lines
        read = 0
        try:
            for n, raw in numbered:
                t = raw.split()
                if not t:
                    if stats_lines and n in stats_lines:
                        m = stats_lines[n]
                        if m.group("error") is not None:
                            self._slow(m.group(0), n, None, "", 1)
                        else:
                            self._stats(int(m.group(1)))
                    continue
                try:
                    a = t[0]
                    i = 0
                    fam = 0
                    if a in families:
                        fam, l3 = families[a]
                        if t[1] != l3:
                            raise LookupError
                        i = 2
                    proto = t[i]
                    if fast_protos[proto] != t[i + 1]:  # KeyError for the protocols without ports
                        raise LookupError
                    s = t[i + 2]
                    timeout = small.get(s)
                    if timeout is None:
                        if not (s.isdigit() and s.isascii()):
                            raise LookupError
                        timeout = int(s)
                    j = i + 3
                    state = t[j]
                    if state in states:
                        j += 1
                    else:
                        state = None
                    # The ports: whole tokens are the keys ("sport=43210"), one look-up checks the key and converts
                    # the value. The addresses: an IPv4 one is checked by inet_pton and is its own canonical text (a
                    # cache of a million clients' addresses costs more in memory misses than the call); IPv6 ones
                    # are compressed through a cache.
                    s, d = t[j], t[j + 1]
                    osp = sports[t[j + 2]]
                    odp = dports[t[j + 3]]
                    if s[:4] != "src=" or d[:4] != "dst=":
                        raise LookupError
                    osrc, odst = s[4:], d[4:]
                    s = t[j + 4]
                    flags: tuple[str, ...] = ()
                    if s == "[UNREPLIED]":
                        flags = unreplied
                        j += 1
                        s = t[j + 4]
                    d = t[j + 5]
                    rsp = sports[t[j + 6]]
                    rdp = dports[t[j + 7]]
                    if s[:4] != "src=" or d[:4] != "dst=":
                        raise LookupError
                    rsrc, rdst = s[4:], d[4:]
                    if ":" in osrc:
                        f = 6
                        osrc, odst, rsrc, rdst = v6(osrc), v6(odst), v6(rsrc), v6(rdst)
                    else:
                        f = 4
                        pton(inet, osrc)
                        pton(inet, odst)
                        pton(inet, rsrc)
                        if rdst != osrc:  # the reply goes back to the client unless it was masqueraded
                            pton(inet, rdst)
                    if fam and fam != f:
                        raise LookupError
                    tail = tuple(t[j + 8:])
                    got = tails.get(tail) or tail_of(tail)
                    if got[0]:
                        flags += got[0]
                    e = new(cls, (f, proto, state, timeout, osrc, odst, osp, odp, rsrc, rdst, rsp, rdp, flags,
                                  got[1], got[2], got[3], source, n))
                except (LookupError, ValueError, OSError):
                    e = self._slow(raw, n, line_map, head_text, read)
                    if e is None:
                        continue
                    if e.__class__ is int:  # the stats line
                        self._stats(e)
                        continue
                    if e.__class__ is not cls:  # an XML listing starts here
                        for x in xml_entries(self, raw, n, numbered, line_map):
                            if x.__class__ is int:
                                self._stats(x)
                                continue
                            read += 1
                            yield x
                        continue
                read += 1
                yield e
        finally:
            self.read += read

    def _stats(self, shown: int) -> None:
        self.shown = shown if self.shown is None else self.shown + shown

    def _slow(self, raw: str, n: int, line_map, head_text: str, counted: int):
        """A line the fast path did not take: an entry after all (``parse_line``), the stats line (its count,
        an int), a paste's prompt or elision in a stream (None), the start of an XML listing ("xml"), or a bad line
        (None, after :meth:`_bad`)."""
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if stripped.startswith("<?xml") or stripped.startswith("<conntrack"):
            return "xml"
        m = STATS.match(line)
        if m:
            if m.group("error") is not None:
                self.report_bad(Diagnostic("error", f"conntrack failed: {m.group('error')}", self.source, n, 1, line, len(line),
                                     "run `conntrack -L` as root on the node (in its network namespace) and pass what it prints"))
                return None
            return int(m.group(1))
        try:
            return parse_line(line, n, self.source)
        except LineError as e:
            bad = e
        if line_map is None:  # streaming: what a paste adds, looked at one line at a time
            from kptrace.parsers.paste import clean_paste

            p = clean_paste(line + "\n", self.source)
            cleaned = p.text.rstrip("\n")
            if cleaned != line:
                if not cleaned.strip():
                    if p.elisions:
                        self.notes.append(f"{self.source}: the text was elided at line {n}: conntrack entries may be missing")
                    elif p.segments and p.segments[0].command:
                        self.notes.append(f"{self.source}:{n}: skipped the prompt and command line `{p.segments[0].command}`")
                    return None
                try:
                    return parse_line(cleaned, n, self.source)
                except LineError as e2:
                    d = p.line_map.restore(self._diag(e2, cleaned, 1))  # the one-line paste's line 1 is line n
                    self.report_bad(replace(d, line=n, text=line))
                    return None
        if not counted and head_text and not self._format_checked:  # before any entry: another tool's output?
            self._format_checked = True
            other = other_format(head_text, self.source)
            if other is not None:
                self.report_bad(other)
                raise ParseError(self.diagnostics) from None
        self.report_bad(self._diag(bad, line, n, line_map))
        return None

    # -- XML


def other_format(head: str, source: str) -> Diagnostic | None:
    """The error for an input of another format kptrace knows (iptables-save given as --conntrack)."""
    from kptrace.parsers.detect import VARIANTS, find_variant, wrong_format
    from kptrace.parsers.paste import clean_paste

    found = find_variant(head)
    if found is None or VARIANTS[found[0]][0] == "conntrack":
        return None
    return wrong_format(clean_paste(head[:65536]).text, source, found, "a conntrack table",
                        "pass `conntrack -L` output (or -o extended, -o xml, /proc/net/nf_conntrack) with --conntrack, "
                        "the node's rules with --dump")
