"""``conntrack -L -o xml`` listings: each ``<flow>`` read as it ends (a pull parser fed line by line, so memory
stays one flow's) into a :class:`~kptrace.model.conntrack.ConntrackEntry`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator
from xml.etree.ElementTree import ParseError as XMLError
from xml.etree.ElementTree import XMLPullParser

from kptrace.errors import Diagnostic
from kptrace.model.conntrack import ConntrackEntry
from kptrace.parsers.conntrack.line import (
    DIGITS,
    MARK,
    PORTED,
    PROTO_NAMES,
    PROTO_NUMBERS,
    SMALL,
    STATS,
    conntrack_address,
    number_value,
)

if TYPE_CHECKING:
    from kptrace.parsers.conntrack.reader import ConntrackReader

__all__ = ["FlowError", "xml_entries"]


def xml_entries(reader: ConntrackReader, first: str, n: int, numbered, line_map) -> Iterator:
    """The flows of a ``conntrack -L -o xml`` listing that starts at line ``n`` (and the stats line's count
    when one follows it). Fed to an XML pull parser line by line: each flow is handled and dropped at its
    end, so memory stays one flow's; its entry's ``line`` is the line its ``<flow>`` starts on."""
    parser: XMLPullParser = XMLPullParser(("start", "end"))
    root: Any = None
    flow_line = line_no = n
    text = flow_text = first
    numbered_iter = iter(numbered)
    while True:
        try:
            parser.feed(text if text.endswith("\n") else text + "\n")
            events: Iterator[tuple[str, Any]] = parser.read_events()  # type: ignore[assignment]  # (event, Element) here
            for event, elem in events:
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag != "conntrack":
                            raise FlowError(f"<{elem.tag}> is not a conntrack -o xml listing (its root is <conntrack>)")
                    elif elem.tag == "flow":
                        flow_line, flow_text = line_no, text
                    continue
                if elem.tag == "flow":
                    try:
                        yield flow_entry(elem, reader.source, flow_line)
                    except FlowError as e:
                        reader.report_bad(Diagnostic("error", e.args[0], reader.source, flow_line, 1,
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
            reader.report_bad(Diagnostic("error", f"not well-formed XML: {msg}", reader.source, where, col + 1, quoted, 1,
                                 "pass the whole output of `conntrack -L -o xml`"))
            for _ in numbered_iter:  # nothing after a broken XML document can be read reliably
                pass
            return
        except FlowError as e:
            reader.report_bad(Diagnostic("error", e.args[0], reader.source, line_no, 1, text.rstrip("\r\n"), 1, e.hint))
            return
        nxt = next(numbered_iter, None)
        if nxt is None:
            reader.report_bad(Diagnostic("error", "the XML listing ends before </conntrack>", reader.source, line_no, 0, "", 0,
                                 "the listing is cut short (a partial copy?)"))
            return
        line_no, text = nxt
        s = text.strip()
        m = STATS.match(text) if s.startswith("conntrack v") else None
        if m and m.group(1) is not None:
            yield int(m.group(1))
            text = "\n"


class FlowError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _flow_tuple(meta, direction: str, extra: list, family: int, protocol: str | None) -> tuple:
    """One ``<meta direction="original|reply">``: ``((src, dst, sport, dport), family, protocol)``, the family and
    protocol as far as it says them."""
    prefix = "orig" if direction == "original" else "reply"
    src = dst = sport = dport = None
    for part in meta:
        if part.tag == "layer3":
            l3 = part.get("protoname", "")
            family = {"ipv4": 4, "ipv6": 6}.get(l3.lower(), family)
            for x in part:
                if x.tag == "src":
                    src = xml_address(x.text, direction)
                elif x.tag == "dst":
                    dst = xml_address(x.text, direction)
        elif part.tag == "layer4":
            name, num = part.get("protoname", ""), part.get("protonum", "")
            if name in PROTO_NUMBERS:
                if num and num != PROTO_NUMBERS[name]:
                    raise FlowError(f"{name} is protocol {PROTO_NUMBERS[name]}, not {num!r}")
                protocol = name
            elif DIGITS.fullmatch(num or "") and int(num) <= 255:
                protocol = PROTO_NAMES.get(num, str(int(num)))
            else:
                raise FlowError(f"<layer4> of the {direction} tuple has no protocol (protoname={name!r}, protonum={num!r})")
            for x in part:
                if x.tag in ("sport", "dport"):
                    port = SMALL.get((x.text or "").strip())
                    if port is None:
                        raise FlowError(f"<{x.tag}>{x.text}</{x.tag}> in the {direction} tuple is not a port (0-65535)")
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
        raise FlowError(f"the {direction} tuple has no {'<src>' if src is None else '<dst>'}")
    return (src, dst, sport, dport), family, protocol


def _flow_items(meta, extra: list, flags: list, items: tuple) -> tuple:
    """``<meta direction="independent">``: ``(state, timeout, mark, zone)`` as far as it says them; its flags and
    other items go to ``flags`` and ``extra``."""
    state, timeout, mark, zone = items
    for x in meta:
        value = (x.text or "").strip()
        if x.tag == "state":
            state = value
        elif x.tag == "timeout":
            if not DIGITS.fullmatch(value):
                raise FlowError(f"<timeout>{value}</timeout> is not a number of seconds")
            timeout = int(value)
        elif x.tag == "mark":
            if not MARK.fullmatch(value) or number_value(value) > 0xFFFFFFFF:
                raise FlowError(f"<mark>{value}</mark> is not a mark (a 32-bit number)")
            mark = number_value(value)
        elif x.tag == "zone":
            if not DIGITS.fullmatch(value) or int(value) > 0xFFFF:
                raise FlowError(f"<zone>{value}</zone> is not a zone (0-65535)")
            zone = int(value)
        elif x.tag == "deltatime":
            extra.append(("delta-time", value))
        elif x.tag == "timestamp":
            extra.extend((y.tag, (y.text or "").strip()) for y in x)
        elif not value and not len(x):
            flags.append(x.tag.upper().replace("-", "_"))
        else:
            extra.append((x.tag, value))
    return state, timeout, mark, zone


def flow_entry(flow, source: str, line: int) -> ConntrackEntry:
    """The entry of one ``<flow>`` element."""
    tuples = {}
    extra: list[tuple[str, str]] = []
    flags: list[str] = []
    items: tuple = (None, None, None, None)  # state, timeout, mark, zone
    protocol: str | None = None
    family = 0
    for meta in flow:
        if meta.tag != "meta":
            continue
        direction = meta.get("direction")
        if direction in ("original", "reply"):
            tuples[direction], family, protocol = _flow_tuple(meta, direction, extra, family, protocol)
        elif direction == "independent":
            items = _flow_items(meta, extra, flags, items)
    state, timeout, mark, zone = items
    for direction in ("original", "reply"):
        if direction not in tuples:
            raise FlowError(f"the flow has no {direction} tuple (<meta direction=\"{direction}\">)")
    if protocol is None:
        raise FlowError("the flow has no <layer4> protocol")
    (os_, od, osp, odp), (rs, rd, rsp, rdp) = tuples["original"], tuples["reply"]
    fams = {os_[0], od[0], rs[0], rd[0]}
    if len(fams) > 1:
        raise FlowError("the flow mixes IPv4 and IPv6 addresses")
    fam = fams.pop()
    if family and family != fam:
        raise FlowError(f"<layer3> says ipv{family} but the addresses are IPv{fam}")
    if protocol in PORTED and None in (osp, odp, rsp, rdp):
        raise FlowError(f"a {protocol} flow without <sport>/<dport> in each tuple")
    # The order conntrack's text lists flags in: UNREPLIED between the tuples, the others after them.
    flags.sort(key=lambda f: f != "UNREPLIED")
    return ConntrackEntry(fam, protocol, state, timeout, os_[1], od[1], osp, odp, rs[1], rd[1], rsp, rdp, tuple(flags), mark,
                          zone, tuple(extra), source, line)


def xml_address(text: str | None, direction: str) -> tuple[int, str]:
    try:
        return conntrack_address((text or "").strip())
    except ValueError:
        raise FlowError(f"{text!r} in the {direction} tuple is not an IP address") from None
