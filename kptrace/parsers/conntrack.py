"""Read connection-tracking tables into :class:`~kptrace.model.conntrack.ConntrackEntry` values, streamed.

Four listings of one table, IPv4 and IPv6, any protocol::

    conntrack -L                  tcp      6 431999 ESTABLISHED src=A dst=B sport=P dport=Q src=C dst=D sport=R dport=S [ASSURED] mark=0 use=1
    conntrack -L -o extended      ipv4     2 tcp      6 431999 ESTABLISHED src=A ...
    /proc/net/nf_conntrack        ipv4     2 tcp      6 431999 ESTABLISHED src=A ... mark=0 zone=0 use=2
    conntrack -L -o xml           <?xml ...?><conntrack><flow><meta direction="original">...</flow>...</conntrack>

Grammar of a text line (the line's first word decides; one entry a line)::

    entry   := [family l3num] proto protonum [timeout] [STATE] pre* tuple [flag*] tuple item*
    family  := "ipv4" | "ipv6"                      (-o extended and /proc only; l3num 2 or 10)
    proto   := "tcp" | "udp" | "icmp" | ... | "unknown"   (an unknown one is named by its number: "99")
    tuple   := "src=" ADDR "dst=" ADDR tkey*        sport=, dport=, type=, code=, id=, srckey=, dstkey=,
                                                    packets=, bytes=, ... (a tuple's keys, see _TUPLE_KEYS)
    flag    := "[" NAME "]"                         [UNREPLIED] [ASSURED] [OFFLOAD] [HW_OFFLOAD] ...
    item    := KEY "=" VALUE | flag | "[" KEY "=" text "]"    mark=, zone=, use=, id=, secctx=, labels=,
                                                    delta-time=, [start=Tue Dec  2 17:59:24 2026], ...
    pre     := KEY "=" VALUE [","]                  /proc's GRE "timeout=30, stream_timeout=180"

What the model has no field for is kept in ``extra`` as printed, in order: a tuple's keys other than the
ports with the tuple's direction before them (``orig_type``, ``orig_code``, ``orig_id``, ``reply_packets``,
...; XML's counters the same), the entry's own items by their name (``use``, ``id``, ``secctx``, ...).
IPv6 addresses come out compressed as conntrack prints them (/proc prints them in full).

Pasted text (kptrace/parsers/paste.py) is read too: shell prompts and command lines, the
``conntrack v1.4.7 (conntrack-tools): N flow entries have been shown.`` line conntrack prints on stderr
(checked against the entries read), elisions (``...``, noted: entries may be missing), fences, quote
markers, CRLF. An input up to ``_WHOLE_BYTES`` goes through the shared pre-pass whole; a larger one
(a node's million-entry table, never typed into a ticket) streams, and each line the fast path cannot
take is looked at alone.

Speed (benchmarks/conntrack.py, a synthetic 1,000,000-entry table in the default format, 164 MB, CPU time on
a shared 2-core machine): ~10-13 us an entry against ~1 us a line for a plain ``for line in f: line.split()``,
9.6x-12.9x (the issue's target is 3x, not met); extracting the same fields with no check at all already costs
3.4x-3.8x there, so the rest is the checks (every address through inet_pton or, IPv6, a cache; ports and the
protocol by look-up). Memory is bounded: peak RSS 61 MB for the whole table (13 MB for the split pass: the
port tables and the bounded address cache are the difference).

A line that is no entry is an error with ``file:line:col``, the line quoted, a caret and a hint
(:class:`~kptrace.errors.ParseError`, after reading on to collect the others); ``lenient`` skips such lines
and counts them (:attr:`ConntrackReader.skipped`, :attr:`ConntrackReader.diagnostics`).

>>> rows = ["tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.96.0.1 sport=43210 dport=443 "
...         "src=192.168.0.2 dst=10.0.1.2 sport=6443 dport=43210 [ASSURED] mark=0 use=1\\n"]
>>> e = next(iter_conntrack(rows, "ct.txt"))
>>> e.protocol, e.state, e.timeout, e.endpoint, e.flags, e.extra
('tcp', 'ESTABLISHED', 431999, '192.168.0.2:6443', ('ASSURED',), (('use', '1'),))
"""

from __future__ import annotations

import collections
import functools
import io
import ipaddress
import re
import socket
from dataclasses import replace
import sys
from typing import IO, Iterable, Iterator
from xml.etree.ElementTree import ParseError as XMLError
from xml.etree.ElementTree import XMLPullParser

from kptrace.errors import Diagnostic, InputError, ParseError
from kptrace.model.conntrack import ConntrackEntry

__all__ = ["ConntrackReader", "iter_conntrack", "looks_like_conntrack", "read_conntrack"]

# ---------------------------------------------------------------- data

#: protocol name as listed -> its number as listed (conntrack's and the kernel's names are the same)
_PROTO_NUMBERS = {"tcp": "6", "udp": "17", "udplite": "136", "icmp": "1", "icmpv6": "58", "sctp": "132", "dccp": "33",
                  "gre": "47"}
#: what ``unknown NUMBER`` is called: the name /etc/protocols gives it, else the number itself
_PROTO_NAMES = {"4": "ipencap", "41": "ipv6", "50": "esp", "51": "ah", "89": "ospf", "94": "ipip", "103": "pim",
                "112": "vrrp", "115": "l2tp", "137": "mpls-in-ip"}
_FAMILIES = {"ipv4": (4, "2"), "ipv6": (6, "10")}
#: keys that belong to a tuple (printed between its src=/dst= and the next tuple or the entry's items), by
#: protocol: ``id=`` after an ICMP tuple is the echo id, after a TCP one (``-o id``) the entry's id
_TUPLE_COMMON = frozenset({"sport", "dport", "packets", "bytes"})
_TUPLE_KEYS = {"icmp": _TUPLE_COMMON | {"type", "code", "id"}, "icmpv6": _TUPLE_COMMON | {"type", "code", "id"},
               "gre": _TUPLE_COMMON | {"srckey", "dstkey", "key"}, "sctp": _TUPLE_COMMON | {"vtag"}}
_PORTED = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
#: the states the fast path knows; any upper-case word is one for the slow path (a newer kernel's)
_STATES = frozenset({"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
                     "CLOSE", "SYN_SENT2", "LISTEN", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "SHUTDOWN_SENT",
                     "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED", "REQUEST", "RESPOND",
                     "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT", "IGNORE", "INVALID"})
_FAST_FLAGS = {"[ASSURED]": "ASSURED", "[UNREPLIED]": "UNREPLIED", "[OFFLOAD]": "OFFLOAD", "[HW_OFFLOAD]": "HW_OFFLOAD"}
_STATE_RX = re.compile(r"[A-Z][A-Z0-9_]*")
_FLAG_RX = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
_KEY_RX = re.compile(r"[a-z][a-z0-9_-]*")
_DIGITS = re.compile(r"[0-9]+")
_MARK = re.compile(r"[0-9]+|0x[0-9a-fA-F]+")
#: "0".."65535" -> int: a port's check and conversion in one dict look-up (a port is "080" never)
_SMALL = {str(i): i for i in range(65536)}

_STATS = re.compile(r"\s*conntrack v[\d.]+\S* \(conntrack-tools\): (?:(\d+) (?:flow|expectation) entr\w* ha\w+ been "
                    r"(?:shown|deleted|updated)\.?|(?P<error>.*?))\s*$")
_QUOTED = re.compile(r"^(?:[ ]{0,3}>[ \t]?)+")
_EVENT = re.compile(r"\s*\[(?:NEW|UPDATE|DESTROY)\]\s")
_TOKEN = re.compile(r"\[[^\]]*\]|\S+")

#: an input of up to this many characters goes through the shared paste pre-pass whole (a paste is far
#: smaller); a longer one streams and lines the fast path cannot take are looked at one by one
_WHOLE_BYTES = 4 << 20
_KEEP_DIAGNOSTICS = 100

_HINT_LINE = ("conntrack -L lines start with the protocol (`tcp 6 431999 ESTABLISHED src=...`), -o extended and "
              "/proc/net/nf_conntrack lines with the family (`ipv4 2 tcp 6 ...`)")


class _Bad(Exception):
    """A line that is no entry: where (0-based offset, length), why and what to do."""

    def __init__(self, offset: int, length: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.offset, self.length, self.message, self.hint = offset, length, message, hint


# ---------------------------------------------------------------- addresses

_ADDR: dict[str, tuple[int, str]] = {}


def _address(text: str) -> tuple[int, str]:
    """``(family, compressed text)`` of an address as conntrack or /proc prints it; cached, since a table
    repeats its Service and endpoint addresses a million times."""
    got = _ADDR.get(text)
    if got is not None:
        return got
    try:
        if ":" in text:  # compressed as kptrace.model.addr.format_addr writes it (the endpoints' form)
            if "%" in text or "/" in text:
                raise ValueError(text)
            got = (6, ipaddress.IPv6Address(text).compressed)
        else:
            socket.inet_pton(socket.AF_INET, text)
            got = (4, text)
    except (OSError, ValueError):
        raise ValueError(text) from None
    if len(_ADDR) > 65536:  # bounded (~12 MB): a table of a million IPv6 clients must not grow it without end
        _ADDR.clear()
    _ADDR[text] = got
    return got


def _v6_fast(text: str) -> str:
    """The compressed form of an IPv6 address of a fast-path line; LookupError for an IPv4 one (a line
    mixing families: the careful path says so), ValueError for no address."""
    got = _ADDR.get(text) or _address(text)
    if got[0] != 6:
        raise LookupError(text)
    return got[1]


@functools.cache
def _port_tokens() -> tuple[dict[str, int], dict[str, int]]:
    """``{"sport=0": 0, ..., "sport=65535": 65535}`` and the same for dport=: a port token's check and
    conversion in one look-up (~40 ms and ~12 MB, made on first use)."""
    return {f"sport={i}": i for i in range(65536)}, {f"dport={i}": i for i in range(65536)}


# ---------------------------------------------------------------- one text line, the careful way

def _tokens(line: str) -> list[tuple[int, str]]:
    """``(offset, token)``; a ``[key=value with spaces]`` (conntrack's ``[start=Tue Dec  2 ...]``) is one."""
    return [(m.start(), m.group()) for m in _TOKEN.finditer(line)]


def _parse_line(line: str, n: int, source: str) -> ConntrackEntry:
    """The entry of one text line, or :class:`_Bad` saying where it goes wrong. The fast path in
    :meth:`ConntrackReader._text` takes the common lines and must agree with this (a test checks)."""
    toks = _tokens(line)
    if not toks:
        raise _Bad(0, 0, "an empty line")
    pos = 0
    family = 0
    off, word = toks[0]
    if word in _FAMILIES:
        family, l3num = _FAMILIES[word]
        if len(toks) < 2:
            raise _Bad(len(line.rstrip()), 1, f"the line ends after {word!r}: a layer-3 protocol number follows it",
                       "the line is cut short (a partial copy?)")
        if toks[1][1] != l3num:
            raise _Bad(toks[1][0], len(toks[1][1]), f"{word} is layer-3 protocol {l3num}, not {toks[1][1]!r}")
        pos = 2
    if pos >= len(toks):
        raise _Bad(len(line.rstrip()), 1, "the line ends before the protocol", "the line is cut short (a partial copy?)")
    off, word = toks[pos]
    if _EVENT.match(line):
        raise _Bad(off, len(word), f"{word} starts a `conntrack -E` event, not an entry of the table",
                   "kptrace reads the table as `conntrack -L` lists it, not events")
    if word not in _PROTO_NUMBERS and word != "unknown":
        raise _Bad(off, len(word), f"{word!r} is not a protocol conntrack lists: this line is not a conntrack entry", _HINT_LINE)
    if pos + 1 >= len(toks):
        raise _Bad(len(line.rstrip()), 1, f"the line ends after {word!r}: its protocol number follows it",
                   "the line is cut short (a partial copy?)")
    noff, num = toks[pos + 1]
    if word == "unknown":
        if not _DIGITS.fullmatch(num) or int(num) > 255:
            raise _Bad(noff, len(num), f"{num!r} is not a protocol number (0-255)")
        protocol = _PROTO_NAMES.get(num, str(int(num)))
    else:
        if num != _PROTO_NUMBERS[word]:
            raise _Bad(noff, len(num), f"{word} is protocol {_PROTO_NUMBERS[word]}, not {num!r}")
        protocol = word
    pos += 2
    tuple_keys = _TUPLE_KEYS.get(protocol, _TUPLE_COMMON)
    timeout = state = None
    if pos < len(toks) and _DIGITS.fullmatch(toks[pos][1]):
        timeout = int(toks[pos][1])
        pos += 1
    if pos < len(toks) and _STATE_RX.fullmatch(toks[pos][1]):
        state = toks[pos][1]
        pos += 1
    addrs: list[list] = []  # per tuple: [src, dst, sport, dport]
    flags: list[str] = []
    extra: list[tuple[str, str]] = []
    mark = zone = None
    phase = 0  # 0 before the first tuple, 1 in the original, 2 in the reply, 3 after it
    for off, tok in toks[pos:]:
        if tok[0] == "[":
            m = _FLAG_RX.fullmatch(tok)
            if m:
                flags.append(m.group(1))
                if phase == 2:
                    phase = 3
                continue
            key, eq, value = tok[1:-1].partition("=")
            if not (tok.endswith("]") and eq and _KEY_RX.fullmatch(key)) or " " in tok:
                raise _Bad(off, len(tok), f"{tok!r} is neither a [FLAG] nor a [key=value]")
            extra.append((key, value))
            phase = max(phase, 3) if phase != 1 else 1
            continue
        key, eq, value = tok.partition("=")
        if not eq or not _KEY_RX.fullmatch(key):
            if _STATE_RX.fullmatch(tok):
                where = "after the state" if state is not None else "here"
                raise _Bad(off, len(tok), f"a state word {tok!r} {where}: the state comes right after the timeout")
            raise _Bad(off, len(tok), f"unexpected {tok!r}: after the protocol and timeout an entry has key=value fields and [FLAGS]",
                       _HINT_LINE)
        if phase == 0 and key != "src":
            extra.append((key, value.rstrip(",")))  # /proc's GRE: "timeout=30, stream_timeout=180"
            continue
        if key == "src":
            if phase >= 2:
                raise _Bad(off, len(tok), "a third src=: an entry has two tuples (original and reply)")
            phase += 1
            addrs.append([_addr_at(value, off + 4, family), None, None, None])
            continue
        if key == "dst" and phase in (1, 2) and addrs[-1][1] is None:
            addrs[-1][1] = _addr_at(value, off + 4, family)
            continue
        if phase in (1, 2) and addrs[-1][1] is None:
            raise _Bad(off, len(tok), f"{key}= before the tuple's dst=: a tuple is src= dst= then its ports")
        if phase in (1, 2) and key in tuple_keys:
            direction = "orig" if phase == 1 else "reply"
            if key in ("sport", "dport"):
                port = _SMALL.get(value)
                if port is None:
                    raise _Bad(off + len(key) + 1, max(len(value), 1), f"{value!r} is not a port (0-65535)")
                slot = 2 if key == "sport" else 3
                if addrs[-1][slot] is not None:
                    raise _Bad(off, len(tok), f"a second {key}= in the {direction} tuple")
                addrs[-1][slot] = port
            else:
                extra.append((f"{direction}_{key}", value))
            continue
        if phase == 2:
            phase = 3
        if key == "mark":
            if not _MARK.fullmatch(value) or _number(value) > 0xFFFFFFFF:
                raise _Bad(off + 5, max(len(value), 1), f"{value!r} is not a mark (a 32-bit number)")
            mark = _number(value)
        elif key == "zone":
            if not _DIGITS.fullmatch(value) or int(value) > 0xFFFF:
                raise _Bad(off + 5, max(len(value), 1), f"{value!r} is not a zone (0-65535)")
            zone = int(value)
        else:
            extra.append((key, value))
    end = len(line.rstrip())
    if len(addrs) < 2:  # (a "[" left open can swallow both tuples: counted by the tuples, not the phase)
        what = "no tuple (src=... dst=...)" if not addrs else "no reply tuple (a second src=... dst=...)"
        raise _Bad(end, 1, f"the entry has {what}", "the line is cut short (a partial copy?)" if toks else _HINT_LINE)
    for i, t in enumerate(addrs):
        if t[1] is None:
            raise _Bad(end, 1, f"the {('original', 'reply')[i]} tuple has no dst=", "the line is cut short (a partial copy?)")
        if protocol in _PORTED and (t[2] is None or t[3] is None):
            raise _Bad(end, 1, f"the {('original', 'reply')[i]} {protocol} tuple has no {'sport' if t[2] is None else 'dport'}=",
                       "the line is cut short (a partial copy?)")
    fams = {a[0] for t in addrs for a in t[:2]}
    if len(fams) > 1:
        raise _Bad(toks[pos][0] if pos < len(toks) else 0, 1, "the entry mixes IPv4 and IPv6 addresses")
    fam = fams.pop()
    if family and fam != family:
        raise _Bad(0, 4, f"the line says ipv{family} but its addresses are IPv{fam}")
    (os_, od, osp, odp), (rs, rd, rsp, rdp) = addrs
    return ConntrackEntry(fam, protocol, state, timeout, os_[1], od[1], osp, odp, rs[1], rd[1], rsp, rdp, tuple(flags), mark,
                          zone, tuple(extra), source, n)


def _number(value: str) -> int:
    """A mark as listed: decimal (conntrack -L, /proc) or 0x hex."""
    return int(value, 16) if value[:2] == "0x" else int(value)


def _addr_at(value: str, offset: int, family: int) -> tuple[int, str]:
    try:
        return _address(value)
    except ValueError:
        fam = {4: "an IPv4 ", 6: "an IPv6 "}.get(family, "an IP ")
        raise _Bad(offset, max(len(value), 1), f"{value!r} is not {fam}address") from None


#: what follows the reply tuple -> (flags, mark, zone, extra): the fast path's cache (bounded: with -o id
#: every tail differs, and then each is worked out anew)
_TAILS: dict[tuple, tuple] = {}
_TAIL_KEYS = {"use": "use", "id": "id", "secctx": "secctx", "labels": "labels", "helper": "helper", "delta-time": "delta-time"}


def _tail(tokens: tuple) -> tuple:
    """The flags, mark, zone and extras of a fast-path line's tail; LookupError when it is not one the fast
    path takes (tuple keys like packets=, [start=...], anything odd): the careful path reads that line."""
    flags: tuple = ()
    mark = zone = None
    extra = []
    for s in tokens:
        if s[0] == "[":
            flags += (_FAST_FLAGS[s],)
            continue
        key, eq, value = s.partition("=")
        if key == "mark":
            mark = _SMALL.get(value)
            if mark is None:
                if not (value.isdigit() and value.isascii() and int(value) <= 0xFFFFFFFF):
                    raise LookupError
                mark = int(value)
        elif key == "zone":
            zone = _SMALL[value]
        elif key in _TAIL_KEYS and value and "=" not in value and "[" not in value:
            extra.append((_TAIL_KEYS[key], value))
        else:
            raise LookupError
    got = (flags, mark, zone, tuple(extra))
    if len(_TAILS) < 4096:
        _TAILS[tokens] = got
    return got


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
        self._decide = None
        #: entries counted, not built, by what :meth:`only`'s ``decide`` said of them
        self.counted: dict[str, int] = {}
        self._gen = self._run()

    def __iter__(self) -> Iterator[ConntrackEntry]:
        return self._gen

    def __next__(self) -> ConntrackEntry:
        return next(self._gen)

    def only(self, decide, states: frozenset[str] = frozenset()) -> "ConntrackReader":
        """Build only the entries an analysis needs; count the others. Call before iterating.

        ``decide(entry)`` is asked once for each (protocol, whether the state is one of ``states``, original
        destination and port, reply source and port) a plain ``conntrack -L`` line has (the first line with them, built and checked in full): None
        to have every entry with them built and yielded, or a name to only count them in :attr:`counted` under
        it. An analysis whose answer depends on nothing else (the stale check: where the connection was sent,
        and where the rules send it now) then reads most lines of a million-entry table with one ``split`` and
        a dictionary look-up (benchmarks/conntrack.py). An IPv6 connection listed twice (conntrack-tools 1.4.7
        lists the IPv6 table again) is counted once."""
        self._decide = decide
        self._decide_states = states
        return self

    # -- errors

    def _bad(self, d: Diagnostic) -> None:
        """One bad line: kept (up to a limit), counted; lenient readers go on, the others raise at the end."""
        self._errors += 1
        self.skipped += 1
        if len(self.diagnostics) < _KEEP_DIAGNOSTICS:
            self.diagnostics.append(d)

    def _diag(self, e: _Bad, line: str, n: int, line_map=None) -> Diagnostic:
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
                if size > _WHOLE_BYTES:
                    whole = False
                    break
            if whole:
                yield from self._pasted("".join(head))
            else:
                yield from self._stream(head, it)
            here = self.read + self.skipped + sum(self.counted.values())
            if self.shown is not None and self.shown != here and not self._filtered:
                self.notes.append(f"{self.source}: conntrack says it showed {self.shown} entries, but {here} "
                                  f"are here: {'some are missing (cut or elided)' if here < self.shown else 'the copy is not one listing'}")
            if self._errors and not self.lenient:
                raise ParseError(list(self.diagnostics))
        finally:
            if self._closing is not None:
                self._closing.close()

    def _pasted(self, text: str) -> Iterator[ConntrackEntry]:
        """A text small enough for the shared paste pre-pass (every paste is)."""
        from kptrace.parsers.paste import clean_paste

        # conntrack's closing line on stderr reads like a command line to the pre-pass: taken out first
        # (its line left blank, so line numbers stay) and handled where it was.
        stats: dict[int, re.Match] = {}
        if "(conntrack-tools)" in text:
            lines = text.split("\n")
            for k, line in enumerate(lines):
                m = _STATS.match(_QUOTED.sub("", line)) if "(conntrack-tools)" in line else None
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

        decide = self._decide
        decisions: dict[tuple, str | None] = {}
        counted: dict[str, int] = collections.defaultdict(int)
        families = _FAMILIES
        states = _STATES
        marked = self._decide_states
        v6_seen: set[tuple] = set()
        lines_of = self._lines_of
        missing = decisions  # a sentinel no bucket is
        try:
            for n, raw in numbered:
                t = raw.split()
                try:
                    i = 2 if t[0] in families else 0
                    state = t[i + 3]
                    if state in states:
                        j = i + 4
                        mark = state in marked
                    else:
                        j = i + 3
                        mark = False
                    k = j + 5 if t[j + 4] == "[UNREPLIED]" else j + 4
                    key = (t[i], mark, t[j + 1], t[j + 3], t[k], t[k + 2])
                    if t[j][:4] != "src=":
                        raise LookupError
                except LookupError:
                    yield from lines_of(itertools.chain(((n, raw),), numbered), None, head_text)
                    return
                bucket = decisions.get(key, missing)
                if bucket is missing:
                    bucket = yield from self._first(key, n, raw, head_text, decisions)
                    if bucket is None:
                        continue
                elif bucket is None:
                    yield from lines_of(((n, raw),), None, head_text)
                    continue
                if ":" in key[2]:  # IPv6: a connection listed twice is counted once
                    zone = next((x for x in t[k + 4:] if x[:5] == "zone="), None) if "zone=" in raw else None
                    ident = (key[0], t[j], t[j + 1], t[j + 2], t[j + 3], zone)
                    if ident in v6_seen:
                        continue
                    v6_seen.add(ident)
                counted[bucket] += 1
        finally:
            for bucket, c in counted.items():
                self.counted[bucket] = self.counted.get(bucket, 0) + c

    def _first(self, key: tuple, n: int, raw: str, head_text: str, decisions: dict):
        """The first line with ``key``: built and checked in full, and decided; yields it when it is to be built.
        Returns the bucket to count it in (None: yielded, or not an entry)."""
        entries = list(self._lines_of(((n, raw),), None, head_text))
        if len(entries) != 1:  # not an entry after all (a bad line, reported; the stats line)
            yield from entries
            return None
        if key[2][:4] == "dst=" and key[3][:6] == "dport=" and key[4][:4] == "src=" and key[5][:6] == "sport=":
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
        anything else goes to :func:`_parse_line`, which must give the same entry or say what is wrong (a
        hypothesis test checks both agree). Measured: benchmarks/conntrack.py."""
        source = self.source
        families = _FAMILIES
        fast_protos = {p: n for p, n in _PROTO_NUMBERS.items() if p in _PORTED}
        small = _SMALL
        states = _STATES
        v6 = _v6_fast
        pton = socket.inet_pton
        inet = socket.AF_INET
        sports, dports = _port_tokens()
        tails = _TAILS
        tail_of = _tail
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
                    flags = ()
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
                        for x in self._xml(raw, n, numbered, line_map):
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
        """A line the fast path did not take: an entry after all (``_parse_line``), the stats line (its count,
        an int), a paste's prompt or elision in a stream (None), the start of an XML listing ("xml"), or a bad line
        (None, after :meth:`_bad`)."""
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if stripped.startswith("<?xml") or stripped.startswith("<conntrack"):
            return "xml"
        m = _STATS.match(line)
        if m:
            if m.group("error") is not None:
                self._bad(Diagnostic("error", f"conntrack failed: {m.group('error')}", self.source, n, 1, line, len(line),
                                     "run `conntrack -L` as root on the node (in its network namespace) and pass what it prints"))
                return None
            return int(m.group(1))
        try:
            return _parse_line(line, n, self.source)
        except _Bad as e:
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
                    return _parse_line(cleaned, n, self.source)
                except _Bad as e2:
                    d = p.line_map.restore(self._diag(e2, cleaned, 1))  # the one-line paste's line 1 is line n
                    self._bad(replace(d, line=n, text=line))
                    return None
        if not counted and head_text and not self._format_checked:  # before any entry: another tool's output?
            self._format_checked = True
            d = _other_format(head_text, self.source)
            if d is not None:
                self._bad(d)
                raise ParseError(self.diagnostics) from None
        self._bad(self._diag(bad, line, n, line_map))
        return None

    # -- XML

    def _xml(self, first: str, n: int, numbered, line_map) -> Iterator:
        """The flows of a ``conntrack -L -o xml`` listing that starts at line ``n`` (and the stats line's count
        when one follows it). Fed to an XML pull parser line by line: each flow is handled and dropped at its
        end, so memory stays one flow's; its entry's ``line`` is the line its ``<flow>`` starts on."""
        parser = XMLPullParser(("start", "end"))
        root = None
        flow_line = line_no = n
        text = flow_text = first
        numbered_iter = iter(numbered)
        while True:
            try:
                parser.feed(text if text.endswith("\n") else text + "\n")
                for event, elem in parser.read_events():
                    if event == "start":
                        if root is None:
                            root = elem
                            if elem.tag != "conntrack":
                                raise _XMLBad(f"<{elem.tag}> is not a conntrack -o xml listing (its root is <conntrack>)")
                        elif elem.tag == "flow":
                            flow_line, flow_text = line_no, text
                        continue
                    if elem.tag == "flow":
                        try:
                            yield _flow(elem, self.source, flow_line)
                        except _XMLBad as e:
                            self._bad(Diagnostic("error", e.args[0], self.source, flow_line, 1,
                                                 flow_text.rstrip("\r\n"), 5, e.hint))
                        root.remove(elem)
                    elif elem is root:
                        parser.close()
                        return
            except XMLError as e:
                ln, col = e.position
                where = n + ln - 1
                quoted = text.rstrip("\r\n") if where == line_no else ""
                msg = str(e).split(":")[0]
                self._bad(Diagnostic("error", f"not well-formed XML: {msg}", self.source, where, col + 1, quoted, 1,
                                     "pass the whole output of `conntrack -L -o xml`"))
                for _ in numbered_iter:  # nothing after a broken XML document can be read reliably
                    pass
                return
            except _XMLBad as e:
                self._bad(Diagnostic("error", e.args[0], self.source, line_no, 1, text.rstrip("\r\n"), 1, e.hint))
                return
            nxt = next(numbered_iter, None)
            if nxt is None:
                self._bad(Diagnostic("error", "the XML listing ends before </conntrack>", self.source, line_no, 0, "", 0,
                                     "the listing is cut short (a partial copy?)"))
                return
            line_no, text = nxt
            s = text.strip()
            m = _STATS.match(text) if s.startswith("conntrack v") else None
            if m and m.group(1) is not None:
                yield int(m.group(1))
                text = "\n"


class _XMLBad(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _flow(flow, source: str, line: int) -> ConntrackEntry:
    """The entry of one ``<flow>`` element."""
    tuples = {}
    extra: list[tuple[str, str]] = []
    flags: list[str] = []
    state = timeout = mark = zone = None
    protocol = None
    family = 0
    for meta in flow:
        if meta.tag != "meta":
            continue
        direction = meta.get("direction")
        if direction in ("original", "reply"):
            prefix = "orig" if direction == "original" else "reply"
            src = dst = sport = dport = None
            for part in meta:
                if part.tag == "layer3":
                    l3 = part.get("protoname", "")
                    family = {"ipv4": 4, "ipv6": 6}.get(l3.lower(), family)
                    for x in part:
                        if x.tag == "src":
                            src = _xml_addr(x.text, direction)
                        elif x.tag == "dst":
                            dst = _xml_addr(x.text, direction)
                elif part.tag == "layer4":
                    name, num = part.get("protoname", ""), part.get("protonum", "")
                    if name in _PROTO_NUMBERS:
                        if num and num != _PROTO_NUMBERS[name]:
                            raise _XMLBad(f"{name} is protocol {_PROTO_NUMBERS[name]}, not {num!r}")
                        protocol = name
                    elif _DIGITS.fullmatch(num or "") and int(num) <= 255:
                        protocol = _PROTO_NAMES.get(num, str(int(num)))
                    else:
                        raise _XMLBad(f"<layer4> of the {direction} tuple has no protocol (protoname={name!r}, protonum={num!r})")
                    for x in part:
                        if x.tag in ("sport", "dport"):
                            port = _SMALL.get((x.text or "").strip())
                            if port is None:
                                raise _XMLBad(f"<{x.tag}>{x.text}</{x.tag}> in the {direction} tuple is not a port (0-65535)")
                            if x.tag == "sport":
                                sport = port
                            else:
                                dport = port
                        else:
                            extra.append((f"{prefix}_{x.tag}", (x.text or "").strip()))
                elif part.tag == "counters":
                    for x in part:
                        extra.append((f"{prefix}_{x.tag}", (x.text or "").strip()))
                elif part.tag == "zone":
                    extra.append((f"zone-{prefix}", (part.text or "").strip()))
            if src is None or dst is None:
                raise _XMLBad(f"the {direction} tuple has no {'<src>' if src is None else '<dst>'}")
            tuples[direction] = (src, dst, sport, dport)
        elif direction == "independent":
            for x in meta:
                value = (x.text or "").strip()
                if x.tag == "state":
                    state = value
                elif x.tag == "timeout":
                    if not _DIGITS.fullmatch(value):
                        raise _XMLBad(f"<timeout>{value}</timeout> is not a number of seconds")
                    timeout = int(value)
                elif x.tag == "mark":
                    if not _MARK.fullmatch(value) or _number(value) > 0xFFFFFFFF:
                        raise _XMLBad(f"<mark>{value}</mark> is not a mark (a 32-bit number)")
                    mark = _number(value)
                elif x.tag == "zone":
                    if not _DIGITS.fullmatch(value) or int(value) > 0xFFFF:
                        raise _XMLBad(f"<zone>{value}</zone> is not a zone (0-65535)")
                    zone = int(value)
                elif x.tag == "deltatime":
                    extra.append(("delta-time", value))
                elif x.tag == "timestamp":
                    extra.extend((y.tag, (y.text or "").strip()) for y in x)
                elif not value and not len(x):
                    flags.append(x.tag.upper().replace("-", "_"))
                else:
                    extra.append((x.tag, value))
    for direction in ("original", "reply"):
        if direction not in tuples:
            raise _XMLBad(f"the flow has no {direction} tuple (<meta direction=\"{direction}\">)")
    if protocol is None:
        raise _XMLBad("the flow has no <layer4> protocol")
    (os_, od, osp, odp), (rs, rd, rsp, rdp) = tuples["original"], tuples["reply"]
    fams = {os_[0], od[0], rs[0], rd[0]}
    if len(fams) > 1:
        raise _XMLBad("the flow mixes IPv4 and IPv6 addresses")
    fam = fams.pop()
    if family and family != fam:
        raise _XMLBad(f"<layer3> says ipv{family} but the addresses are IPv{fam}")
    if protocol in _PORTED and None in (osp, odp, rsp, rdp):
        raise _XMLBad(f"a {protocol} flow without <sport>/<dport> in each tuple")
    # The order conntrack's text lists flags in: UNREPLIED between the tuples, the others after them.
    flags.sort(key=lambda f: f != "UNREPLIED")
    return ConntrackEntry(fam, protocol, state, timeout, os_[1], od[1], osp, odp, rs[1], rd[1], rsp, rdp, tuple(flags), mark,
                          zone, tuple(extra), source, line)


def _xml_addr(text: str | None, direction: str) -> tuple[int, str]:
    try:
        return _address((text or "").strip())
    except ValueError:
        raise _XMLBad(f"{text!r} in the {direction} tuple is not an IP address") from None


def _other_format(head: str, source: str) -> Diagnostic | None:
    """The error for an input of another format kptrace knows (iptables-save given as --conntrack)."""
    from kptrace.parsers.detect import VARIANTS, find_variant, wrong_format
    from kptrace.parsers.paste import clean_paste

    found = find_variant(head)
    if found is None or VARIANTS[found[0]][0] == "conntrack":
        return None
    return wrong_format(clean_paste(head[:65536]).text, source, found, "a conntrack table",
                        "pass `conntrack -L` output (or -o extended, -o xml, /proc/net/nf_conntrack) with --conntrack, "
                        "the node's rules with --dump")


# ---------------------------------------------------------------- the API

def iter_conntrack(lines: Iterable[str], source: str, *, lenient: bool = False) -> ConntrackReader:
    """The entries of a conntrack listing given as lines (a file object, a list), streamed: any of the
    listings in this module's docstring, pasted or not. The result is an iterator of
    :class:`~kptrace.model.conntrack.ConntrackEntry` that also says what it skipped (:class:`ConntrackReader`).

    >>> xml = ['<?xml version="1.0" encoding="utf-8"?>', '<conntrack>',
    ...        '<flow><meta direction="original"><layer3 protonum="10" protoname="ipv6"><src>fd00::2</src><dst>fd00:30::a</dst></layer3>'
    ...        '<layer4 protonum="17" protoname="udp"><sport>40000</sport><dport>53</dport></layer4></meta>'
    ...        '<meta direction="reply"><layer3 protonum="10" protoname="ipv6"><src>fd00:10::7</src><dst>fd00::2</dst></layer3>'
    ...        '<layer4 protonum="17" protoname="udp"><sport>53</sport><dport>40000</dport></layer4></meta>'
    ...        '<meta direction="independent"><timeout>29</timeout><mark>0</mark><use>1</use><unreplied/></meta></flow>', '</conntrack>']
    >>> [(e.endpoint, e.flags, e.line) for e in iter_conntrack(xml, "ct.xml")]
    [('[fd00:10::7]:53', ('UNREPLIED',), 3)]
    >>> list(iter_conntrack(["udp 17 29 src=10.0.0.1 dst=10.96.0.10 sport=5 dport=53 src=10.0.0.9\\n"], "ct.txt"))
    Traceback (most recent call last):
    ...
    kptrace.errors.ParseError: ct.txt:1:68: the reply tuple has no dst=
    """
    return ConntrackReader(lines, source, lenient=lenient)


def read_conntrack(path: str, *, lenient: bool = False, source: str | None = None) -> ConntrackReader:
    """:func:`iter_conntrack` of a file (``-``: stdin; a ``.gz`` is read through gzip), opened now (a missing file
    is an :class:`~kptrace.errors.InputError` here, not at the first entry) and closed when read to the end."""
    name = source or ("<stdin>" if path == "-" else path)
    try:
        if path == "-":  # as text, whatever the terminal's encoding; the line ends as they came (CRLF is noted)
            buffer = getattr(sys.stdin, "buffer", None)
            f = sys.stdin if buffer is None else io.TextIOWrapper(buffer, encoding="utf-8", errors="replace", newline="")
            closing = None
        elif path.endswith(".gz"):
            import gzip

            f = closing = gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
        else:
            f = closing = open(path, encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="pass the output of `conntrack -L`, or - for stdin") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a conntrack table", hint="pass the output of `conntrack -L`") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied", hint="check the file's permissions (or run with sudo)") from None
    return ConntrackReader(f, name, lenient=lenient, closing=closing)


def looks_like_conntrack(text_head: str) -> bool:
    """Whether a text (its first KB are enough) is a conntrack listing, pasted or not.

    >>> looks_like_conntrack("$ sudo conntrack -L\\nudp      17 29 src=10.0.0.1 dst=10.96.0.10 sport=5 dport=53 [UNREPLIED] src=10.0.2.7 dst=10.0.0.1 sport=53 dport=5 mark=0 use=1\\n")
    True
    >>> looks_like_conntrack("*nat\\n:PREROUTING ACCEPT [0:0]\\n")
    False
    """
    from kptrace.parsers.detect import VARIANTS, find_variant

    found = find_variant(text_head)
    return found is not None and VARIANTS[found[0]][0] == "conntrack"
