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
9.6x-12.9x; extracting the same fields with no check at all already costs 3.4x-3.8x there, so the rest is the
checks (every address through inet_pton or, IPv6, a cache; ports and the protocol by look-up). The stale check
builds few entries (:meth:`ConntrackReader.only`: 3.45 us a line, docs/speed.md). Memory is bounded: peak RSS
61 MB for the whole table (13 MB for the split pass: the port tables and the bounded address cache are the
difference).

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

import io
import sys
from typing import Iterable

from kptrace.errors import InputError
from kptrace.parsers.conntrack.reader import ConntrackReader

__all__ = ["ConntrackReader", "iter_conntrack", "looks_like_conntrack", "read_conntrack"]


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
            return ConntrackReader(_unzipped(f, path), name, lenient=lenient, closing=closing)
        else:
            f = closing = open(path, encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="pass the output of `conntrack -L`, or - for stdin") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a conntrack table", hint="pass the output of `conntrack -L`") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied", hint="check the file's permissions (or run with sudo)") from None
    return ConntrackReader(f, name, lenient=lenient, closing=closing)


def _unzipped(f, path: str):
    """The lines of a gzip file; a file that is not one (or is cut) is an :class:`~kptrace.errors.InputError`."""
    import zlib

    try:
        yield from f
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot be read as gzip ({e})",
                         hint="pass the table as it came (`conntrack -L`), or gzip it whole: `gzip -t FILE` checks it") from None


def looks_like_conntrack(text_head: str) -> bool:
    """Whether a text (its first KB are enough) is a conntrack listing, pasted or not.

    >>> looks_like_conntrack("$ sudo conntrack -L\\nudp      17 29 src=10.0.0.1 dst=10.96.0.10 sport=5 dport=53 [UNREPLIED] "
    ...                      "src=10.0.2.7 dst=10.0.0.1 sport=53 dport=5 mark=0 use=1\\n")
    True
    >>> looks_like_conntrack("*nat\\n:PREROUTING ACCEPT [0:0]\\n")
    False
    """
    from kptrace.parsers.detect import VARIANTS, find_variant

    found = find_variant(text_head)
    return found is not None and VARIANTS[found[0]][0] == "conntrack"
