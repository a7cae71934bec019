"""One ``conntrack -L`` text line, read carefully (:func:`parse_line`), and the tables the reader's fast path
shares with it (kptrace/parsers/conntrack/: the package's docstring has the grammar)."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

from kptrace.model.conntrack import ConntrackEntry

__all__ = [
    "DIGITS", "FAMILIES", "KEEP_DIAGNOSTICS", "LineError", "MARK", "PORTED", "PROTO_NAMES", "PROTO_NUMBERS",
    "QUOTED", "SMALL", "STATES", "STATS", "TAILS", "WHOLE_BYTES", "conntrack_address", "number_value",
    "parse_line", "port_tokens", "tail_items", "v6_compressed",
]

# ---------------------------------------------------------------- data

#: protocol name as listed -> its number as listed (conntrack's and the kernel's names are the same)
PROTO_NUMBERS = {"tcp": "6", "udp": "17", "udplite": "136", "icmp": "1", "icmpv6": "58", "sctp": "132", "dccp": "33",
                  "gre": "47"}
#: what ``unknown NUMBER`` is called: the name /etc/protocols gives it, else the number itself
PROTO_NAMES = {"4": "ipencap", "41": "ipv6", "50": "esp", "51": "ah", "89": "ospf", "94": "ipip", "103": "pim",
                "112": "vrrp", "115": "l2tp", "137": "mpls-in-ip"}
FAMILIES = {"ipv4": (4, "2"), "ipv6": (6, "10")}
#: keys that belong to a tuple (printed between its src=/dst= and the next tuple or the entry's items), by
#: protocol: ``id=`` after an ICMP tuple is the echo id, after a TCP one (``-o id``) the entry's id
TUPLE_COMMON = frozenset({"sport", "dport", "packets", "bytes"})
TUPLE_KEYS = {"icmp": TUPLE_COMMON | {"type", "code", "id"}, "icmpv6": TUPLE_COMMON | {"type", "code", "id"},
               "gre": TUPLE_COMMON | {"srckey", "dstkey", "key"}, "sctp": TUPLE_COMMON | {"vtag"}}
PORTED = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
#: the states the fast path knows; any upper-case word is one for the slow path (a newer kernel's)
STATES = frozenset({"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
                     "CLOSE", "SYN_SENT2", "LISTEN", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "SHUTDOWN_SENT",
                     "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED", "REQUEST", "RESPOND",
                     "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT", "IGNORE", "INVALID"})
FAST_FLAGS = {"[ASSURED]": "ASSURED", "[UNREPLIED]": "UNREPLIED", "[OFFLOAD]": "OFFLOAD", "[HW_OFFLOAD]": "HW_OFFLOAD"}
STATE_RX = re.compile(r"[A-Z][A-Z0-9_]*")
FLAG_RX = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
KEY_RX = re.compile(r"[a-z][a-z0-9_-]*")
DIGITS = re.compile(r"[0-9]+")
MARK = re.compile(r"[0-9]+|0x[0-9a-fA-F]+")
#: "0".."65535" -> int: a port's check and conversion in one dict look-up (a port is "080" never)
SMALL = {str(i): i for i in range(65536)}

STATS = re.compile(r"\s*conntrack v[\d.]+\S* \(conntrack-tools\): (?:(\d+) (?:flow|expectation) entr\w* ha\w+ been "
                    r"(?:shown|deleted|updated)\.?|(?P<error>.*?))\s*$")
QUOTED = re.compile(r"^(?:[ ]{0,3}>[ \t]?)+")
EVENT = re.compile(r"\s*\[(?:NEW|UPDATE|DESTROY)\]\s")
TOKEN = re.compile(r"\[[^\]]*\]|\S+")

#: an input of up to this many characters goes through the shared paste pre-pass whole (a paste is far
#: smaller); a longer one streams and lines the fast path cannot take are looked at one by one
WHOLE_BYTES = 4 << 20
KEEP_DIAGNOSTICS = 100

HINT_LINE = ("conntrack -L lines start with the protocol (`tcp 6 431999 ESTABLISHED src=...`), -o extended and "
              "/proc/net/nf_conntrack lines with the family (`ipv4 2 tcp 6 ...`)")


class LineError(Exception):
    """A line that is no entry: where (0-based offset, length), why and what to do."""

    def __init__(self, offset: int, length: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.offset, self.length, self.message, self.hint = offset, length, message, hint


# ---------------------------------------------------------------- addresses

ADDR: dict[str, tuple[int, str]] = {}


def conntrack_address(text: str) -> tuple[int, str]:
    """``(family, compressed text)`` of an address as conntrack or /proc prints it; cached, since a table
    repeats its Service and endpoint addresses a million times."""
    got = ADDR.get(text)
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
    if len(ADDR) > 65536:  # bounded (~12 MB): a table of a million IPv6 clients must not grow it without end
        ADDR.clear()
    ADDR[text] = got
    return got


def v6_compressed(text: str) -> str:
    """The compressed form of an IPv6 address of a fast-path line; LookupError for an IPv4 one (a line
    mixing families: the careful path says so), ValueError for no address."""
    got = ADDR.get(text) or conntrack_address(text)
    if got[0] != 6:
        raise LookupError(text)
    return got[1]


@functools.cache
def port_tokens() -> tuple[dict[str, int], dict[str, int]]:
    """``{"sport=0": 0, ..., "sport=65535": 65535}`` and the same for dport=: a port token's check and
    conversion in one look-up (~40 ms and ~12 MB, made on first use)."""
    return {f"sport={i}": i for i in range(65536)}, {f"dport={i}": i for i in range(65536)}


# ---------------------------------------------------------------- one text line, the careful way

def line_tokens(line: str) -> list[tuple[int, str]]:
    """``(offset, token)``; a ``[key=value with spaces]`` (conntrack's ``[start=Tue Dec  2 ...]``) is one."""
    return [(m.start(), m.group()) for m in TOKEN.finditer(line)]


def parse_line(line: str, n: int, source: str) -> ConntrackEntry:
    """The entry of one text line, or :class:`LineError` saying where it goes wrong. The fast path in
    :meth:`ConntrackReader._text` takes the common lines and must agree with this (a test checks)."""
    toks = line_tokens(line)
    family, protocol, timeout, state, pos = _head(line, toks)
    addrs, flags, extra, mark, zone = _items(toks, pos, family, protocol, state)
    end = len(line.rstrip())
    if len(addrs) < 2:  # (a "[" left open can swallow both tuples: counted by the tuples, not the phase)
        what = "no tuple (src=... dst=...)" if not addrs else "no reply tuple (a second src=... dst=...)"
        raise LineError(end, 1, f"the entry has {what}", "the line is cut short (a partial copy?)" if toks else HINT_LINE)
    for i, t in enumerate(addrs):
        if t[1] is None:
            raise LineError(end, 1, f"the {('original', 'reply')[i]} tuple has no dst=", "the line is cut short (a partial copy?)")
        if protocol in PORTED and (t[2] is None or t[3] is None):
            raise LineError(end, 1, f"the {('original', 'reply')[i]} {protocol} tuple has no {'sport' if t[2] is None else 'dport'}=",
                       "the line is cut short (a partial copy?)")
    fams = {a[0] for t in addrs for a in t[:2]}
    if len(fams) > 1:
        raise LineError(toks[pos][0] if pos < len(toks) else 0, 1, "the entry mixes IPv4 and IPv6 addresses")
    fam = fams.pop()
    if family and fam != family:
        raise LineError(0, 4, f"the line says ipv{family} but its addresses are IPv{fam}")
    (os_, od, osp, odp), (rs, rd, rsp, rdp) = addrs
    return ConntrackEntry(fam, protocol, state, timeout, os_[1], od[1], osp, odp, rs[1], rd[1], rsp, rdp, tuple(flags), mark,
                          zone, tuple(extra), source, n)




def _head(line: str, toks: list[tuple[int, str]]) -> tuple[int, str, int | None, str | None, int]:
    """The words before the tuples: ``(family or 0, protocol, timeout, state, index of the next token)``."""
    if not toks:
        raise LineError(0, 0, "an empty line")
    pos = 0
    family = 0
    off, word = toks[0]
    if word in FAMILIES:
        family, l3num = FAMILIES[word]
        if len(toks) < 2:
            raise LineError(len(line.rstrip()), 1, f"the line ends after {word!r}: a layer-3 protocol number follows it",
                       "the line is cut short (a partial copy?)")
        if toks[1][1] != l3num:
            raise LineError(toks[1][0], len(toks[1][1]), f"{word} is layer-3 protocol {l3num}, not {toks[1][1]!r}")
        pos = 2
    if pos >= len(toks):
        raise LineError(len(line.rstrip()), 1, "the line ends before the protocol", "the line is cut short (a partial copy?)")
    off, word = toks[pos]
    if EVENT.match(line):
        raise LineError(off, len(word), f"{word} starts a `conntrack -E` event, not an entry of the table",
                   "kptrace reads the table as `conntrack -L` lists it, not events")
    if word not in PROTO_NUMBERS and word != "unknown":
        raise LineError(off, len(word), f"{word!r} is not a protocol conntrack lists: this line is not a conntrack entry", HINT_LINE)
    if pos + 1 >= len(toks):
        raise LineError(len(line.rstrip()), 1, f"the line ends after {word!r}: its protocol number follows it",
                   "the line is cut short (a partial copy?)")
    noff, num = toks[pos + 1]
    if word == "unknown":
        if not DIGITS.fullmatch(num) or int(num) > 255:
            raise LineError(noff, len(num), f"{num!r} is not a protocol number (0-255)")
        protocol = PROTO_NAMES.get(num, str(int(num)))
    else:
        if num != PROTO_NUMBERS[word]:
            raise LineError(noff, len(num), f"{word} is protocol {PROTO_NUMBERS[word]}, not {num!r}")
        protocol = word
    pos += 2
    timeout = state = None
    if pos < len(toks) and DIGITS.fullmatch(toks[pos][1]):
        timeout = int(toks[pos][1])
        pos += 1
    if pos < len(toks) and STATE_RX.fullmatch(toks[pos][1]):
        state = toks[pos][1]
        pos += 1
    return family, protocol, timeout, state, pos


def _items(toks: list[tuple[int, str]], pos: int, family: int, protocol: str, state: str | None) -> tuple:
    """The tuples and the items around them: ``(addrs, flags, extra, mark, zone)``; ``addrs`` one
    ``[src, dst, sport, dport]`` a tuple."""
    tuple_keys = TUPLE_KEYS.get(protocol, TUPLE_COMMON)
    addrs: list[list] = []  # per tuple: [src, dst, sport, dport]
    flags: list[str] = []
    extra: list[tuple[str, str]] = []
    mark = zone = None
    phase = 0  # 0 before the first tuple, 1 in the original, 2 in the reply, 3 after it
    for off, tok in toks[pos:]:
        if tok[0] == "[":
            m = FLAG_RX.fullmatch(tok)
            if m:
                flags.append(m.group(1))
                if phase == 2:
                    phase = 3
                continue
            key, eq, value = tok[1:-1].partition("=")
            if not (tok.endswith("]") and eq and KEY_RX.fullmatch(key)) or " " in tok:
                raise LineError(off, len(tok), f"{tok!r} is neither a [FLAG] nor a [key=value]")
            extra.append((key, value))
            phase = max(phase, 3) if phase != 1 else 1
            continue
        key, eq, value = tok.partition("=")
        if not eq or not KEY_RX.fullmatch(key):
            if STATE_RX.fullmatch(tok):
                where = "after the state" if state is not None else "here"
                raise LineError(off, len(tok), f"a state word {tok!r} {where}: the state comes right after the timeout")
            raise LineError(off, len(tok), f"unexpected {tok!r}: after the protocol and timeout an entry has key=value fields and [FLAGS]",
                       HINT_LINE)
        if phase == 0 and key != "src":
            extra.append((key, value.rstrip(",")))  # /proc's GRE: "timeout=30, stream_timeout=180"
            continue
        if key == "src":
            if phase >= 2:
                raise LineError(off, len(tok), "a third src=: an entry has two tuples (original and reply)")
            phase += 1
            addrs.append([address_at(value, off + 4, family), None, None, None])
            continue
        if key == "dst" and phase in (1, 2) and addrs[-1][1] is None:
            addrs[-1][1] = address_at(value, off + 4, family)
            continue
        if phase in (1, 2) and addrs[-1][1] is None:
            raise LineError(off, len(tok), f"{key}= before the tuple's dst=: a tuple is src= dst= then its ports")
        if phase in (1, 2) and key in tuple_keys:
            direction = "orig" if phase == 1 else "reply"
            if key in ("sport", "dport"):
                port = SMALL.get(value)
                if port is None:
                    raise LineError(off + len(key) + 1, max(len(value), 1), f"{value!r} is not a port (0-65535)")
                slot = 2 if key == "sport" else 3
                if addrs[-1][slot] is not None:
                    raise LineError(off, len(tok), f"a second {key}= in the {direction} tuple")
                addrs[-1][slot] = port
            else:
                extra.append((f"{direction}_{key}", value))
            continue
        if phase == 2:
            phase = 3
        if key == "mark":
            if not MARK.fullmatch(value) or number_value(value) > 0xFFFFFFFF:
                raise LineError(off + 5, max(len(value), 1), f"{value!r} is not a mark (a 32-bit number)")
            mark = number_value(value)
        elif key == "zone":
            if not DIGITS.fullmatch(value) or int(value) > 0xFFFF:
                raise LineError(off + 5, max(len(value), 1), f"{value!r} is not a zone (0-65535)")
            zone = int(value)
        else:
            extra.append((key, value))
    return addrs, flags, extra, mark, zone


def number_value(value: str) -> int:
    """A mark as listed: decimal (conntrack -L, /proc) or 0x hex."""
    return int(value, 16) if value[:2] == "0x" else int(value)


def address_at(value: str, offset: int, family: int) -> tuple[int, str]:
    try:
        return conntrack_address(value)
    except ValueError:
        fam = {4: "an IPv4 ", 6: "an IPv6 "}.get(family, "an IP ")
        raise LineError(offset, max(len(value), 1), f"{value!r} is not {fam}address") from None


#: what follows the reply tuple -> (flags, mark, zone, extra): the fast path's cache (bounded: with -o id
#: every tail differs, and then each is worked out anew)
TAILS: dict[tuple, tuple] = {}
TAIL_KEYS = {"use": "use", "id": "id", "secctx": "secctx", "labels": "labels", "helper": "helper", "delta-time": "delta-time"}


def tail_items(tokens: tuple) -> tuple:
    """The flags, mark, zone and extras of a fast-path line's tail; LookupError when it is not one the fast
    path takes (tuple keys like packets=, [start=...], anything odd): the careful path reads that line."""
    flags: tuple = ()
    mark = zone = None
    extra = []
    for s in tokens:
        if s[0] == "[":
            flags += (FAST_FLAGS[s],)
            continue
        key, eq, value = s.partition("=")
        if key == "mark":
            mark = SMALL.get(value)
            if mark is None:
                if not (value.isdigit() and value.isascii() and int(value) <= 0xFFFFFFFF):
                    raise LookupError
                mark = int(value)
        elif key == "zone":
            zone = SMALL[value]
        elif key in TAIL_KEYS and value and "=" not in value and "[" not in value:
            extra.append((TAIL_KEYS[key], value))
        else:
            raise LookupError
    got = (flags, mark, zone, tuple(extra))
    if len(TAILS) < 4096:
        TAILS[tokens] = got
    return got
