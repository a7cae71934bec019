"""IPVS mode as values: virtual services and their real servers (``ipvsadm``), and ipsets (``ipset``).

Every value keeps where it came from (``location``: file and line) and the line as written (``text``).
Addresses are canonical: IPv4 dotted quads, IPv6 compressed and lower case, never in brackets.

>>> rs = RealServer("10.244.1.3", 53, "Masq", 1, 0, 0, Location("node1.ipvsadm", 6), "  -> 10.244.1.3:53  Masq 1 0 0")
>>> vs = VirtualService("UDP", "10.96.0.10", 53, None, "rr", (), None, None, (rs,), Location("node1.ipvsadm", 5), "UDP  10.96.0.10:53 rr", family=4)
>>> table = IPVSTable((vs,), "node1.ipvsadm")
>>> table.virtual("udp", "10.96.0.10", 53).real_servers[0].endpoint
'10.244.1.3:53'
>>> str(vs.location), vs.endpoint
('node1.ipvsadm:5', '10.96.0.10:53')
>>> canonical_member("FD00:0::A,TCP:80", ("ip", "proto_port"))
'fd00::a,tcp:80'
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, NamedTuple

from kptrace.errors import Diagnostic
from kptrace.model.addr import is_uint

__all__ = [
    "IPSet",
    "IPSets",
    "IPVSTable",
    "Location",
    "MEMBER_KINDS",
    "MemberError",
    "MemberMeta",
    "Rates",
    "RealServer",
    "Scheduler",
    "Stats",
    "VirtualService",
    "canonical_address",
    "canonical_member",
    "canonical_network",
    "format_endpoint",
]


class Location(NamedTuple):
    """A line of an input file (1-based)."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


# ---------------------------------------------------------------- addresses

_V4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: A canonical dotted quad (no leading zeros, as inet_ntop prints): such text is its own canonical form,
#: which keeps ipaddress (~15 us an address) off the path of the 100,000 real servers of a big node.
_V4 = re.compile(rf"{_V4_OCTET}(?:\.{_V4_OCTET}){{3}}")


@functools.lru_cache(maxsize=65536)
def _canonical_slow(text: str) -> str:
    return str(ipaddress.ip_address(text))


def canonical_address(text: str) -> str:
    """``10.0.0.1`` as is; IPv6 compressed, lower case, brackets removed. Raises ValueError.

    >>> canonical_address("[FD00:0:0::A]")
    'fd00::a'
    """
    if _V4.fullmatch(text):
        return text
    if text[:1] == "[" and text[-1:] == "]":
        text = text[1:-1]
    try:
        return _canonical_slow(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


@functools.lru_cache(maxsize=65536)
def canonical_network(text: str) -> str:
    """``ADDR[/PREFIX]`` with host bits cleared; a full-length prefix is written bare, as ipset prints it.

    >>> canonical_network("10.1.2.3/16"), canonical_network("10.1.2.3/32"), canonical_network("FD00::1/64")
    ('10.1.0.0/16', '10.1.2.3', 'fd00::/64')
    """
    addr, sep, plen = text.partition("/")
    if not sep:
        return canonical_address(addr)
    try:
        net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a network (ADDRESS/PREFIX)") from None
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def format_endpoint(address: str, port: int | None) -> str:
    """``10.0.0.1:80`` or ``[fd00::1]:80`` (``ADDRESS`` alone without a port)."""
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ---------------------------------------------------------------- ipvsadm

class Stats(NamedTuple):
    """``ipvsadm --stats``: totals since the service (or server) was added."""

    conns: int
    in_packets: int
    out_packets: int
    in_bytes: int
    out_bytes: int
    #: False when ipvsadm rounded a number to K/M/G/T thousands (listings taken without --exact).
    exact: bool = True


class Rates(NamedTuple):
    """``ipvsadm --rate``: per-second rates, as the kernel estimates them."""

    cps: int
    in_pps: int
    out_pps: int
    in_bps: int
    out_bps: int
    exact: bool = True


# RealServer and VirtualService are NamedTuples, not frozen dataclasses: a 10k-Service node lists ~100k real
# servers, and a frozen dataclass's __init__ alone cost more than the parse of the line (benchmarked in
# tests/test_ipvs_parsers.py::test_speed_of_a_big_listing).

class RealServer(NamedTuple):
    """One ``-> ADDRESS:PORT`` line of a listing, or one ``-a`` rule of ``ipvsadm-save``.

    A listing variant shows only some columns: a field it does not show is None (``forward`` and
    ``weight`` with ``--stats``/``--rate``, the connection counts with ``--stats``, ...). ``address``
    (``port``) is None when the listing printed a name kptrace could not turn into one
    (``host_name``/``port_name`` keep what it printed).
    """

    address: str | None
    port: int | None
    forward: str | None  # "Masq" | "Route" | "Tunnel" | "Local"
    weight: int | None
    active_conns: int | None
    inactive_conns: int | None
    location: Location
    text: str
    persistent_conns: int | None = None
    upper_threshold: int | None = None
    lower_threshold: int | None = None
    tunnel: str | None = None  # --tun-info column ("gue:6080:-c") or the saved --tun-type options
    stats: Stats | None = None
    rates: Rates | None = None
    host_name: str | None = None  # printed in place of the address (a listing without -n)
    port_name: str | None = None  # printed in place of the port

    @property
    def family(self) -> int | None:
        if self.address is None:
            return None
        return 6 if ":" in self.address else 4

    @property
    def endpoint(self) -> str:
        """``ADDRESS:PORT`` (``[ADDRESS]:PORT`` for IPv6), with the printed name where it was not resolved."""
        addr = self.address if self.address is not None else (self.host_name or "?")
        return format_endpoint(addr, self.port) if self.port is not None else f"{addr}:{self.port_name or '?'}"


class VirtualService(NamedTuple):
    """One virtual service: a listing's ``TCP  ADDRESS:PORT ...`` line or a saved ``-A`` rule, with its real servers.

    ``protocol`` is TCP, UDP, SCTP or FWM; a firewall-mark service has ``fwmark`` and no address or port.
    ``persistent`` is the persistence timeout in seconds (kube-proxy's ClientIP session affinity), None
    when not persistent; ``netmask`` its granularity as a prefix length when not a single address.
    ``scheduler`` is None in ``--stats``/``--rate`` listings, which do not show it.
    """

    protocol: str
    address: str | None
    port: int | None
    fwmark: int | None
    scheduler: str | None
    flags: tuple[str, ...]  # scheduler flags: sh-fallback, sh-port, mh-port, flag-1, ...
    persistent: int | None
    netmask: int | None
    real_servers: tuple[RealServer, ...]
    location: Location
    text: str
    stats: Stats | None = None
    rates: Rates | None = None
    one_packet: bool = False  # ops: one-packet scheduling (UDP)
    persistence_engine: str | None = None  # pe: sip
    family: int | None = 4
    host_name: str | None = None
    port_name: str | None = None

    @property
    def key(self) -> tuple:
        """What IPVS tells virtual services apart by: (protocol, address, port), or ("FWM", mark, family)."""
        if self.protocol == "FWM":
            return ("FWM", self.fwmark, self.family)
        return (self.protocol, self.address, self.port)

    @property
    def endpoint(self) -> str:
        """``10.96.0.10:53``, ``[fd00::a]:80`` or ``FWM 1`` (``FWM 1 IPv6``)."""
        if self.protocol == "FWM":
            return f"FWM {self.fwmark}" + (" IPv6" if self.family == 6 else "")
        addr = self.address if self.address is not None else (self.host_name or "?")
        return format_endpoint(addr, self.port) if self.port is not None else f"{addr}:{self.port_name or '?'}"

    @property
    def schedulable(self) -> tuple[RealServer, ...]:
        """The real servers that take new connections: weight above 0 (weight 0 drains a server)."""
        return tuple(r for r in self.real_servers if r.weight is None or r.weight > 0)


class Scheduler(NamedTuple):
    """What grammars/ipvsadm.toml says of a scheduler: see its [scheduler.*] tables for the kinds."""

    name: str
    description: str
    kind: str  # rotation | least-connection | locality | hash | failover | random
    weighted: bool
    flags: tuple[str, ...]


def _canonical_proto(proto: str | None) -> str | None:
    if proto is None:
        return None
    return proto.upper()


@dataclass(frozen=True, slots=True)
class IPVSTable:
    """A node's IPVS virtual services, read from one ``ipvsadm`` listing or ``ipvsadm-save`` output.

    ``variant`` is the listing's column variant (``default``, ``stats``, ``rate``, ``persistent-conn``,
    ``thresholds``, ``tun-info``) or ``save``. ``numeric`` is False when the listing printed names
    (no ``-n``); ``notes`` then say which could not be resolved. Look a service up with
    :meth:`virtual` or :meth:`by_fwmark`; a duplicate in the input is kept in ``virtual_services``
    and the lookups find the first.
    """

    virtual_services: tuple[VirtualService, ...]
    source: str
    diagnostics: tuple[Diagnostic, ...] = ()
    notes: tuple[str, ...] = ()
    variant: str = "default"
    version: str | None = None  # "1.2.1", from "IP Virtual Server version 1.2.1 (size=4096)"
    numeric: bool = True
    #: The input ends in the middle of a line (a cut copy): a service or server not in it is unknown, not absent.
    truncated: bool = False
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = self._index
        for vs in self.virtual_services:
            index.setdefault(vs.key, vs)

    def virtual(self, proto: str, address: str, port: int) -> VirtualService | None:
        """The virtual service for ``proto`` (tcp, udp, sctp; any case), ``address`` (any spelling) and ``port``.

        >>> IPVSTable((), "x").virtual("tcp", "10.0.0.1", 80) is None
        True
        """
        try:
            addr = canonical_address(address)
        except ValueError:
            return None
        return self._index.get((_canonical_proto(proto), addr, int(port)))

    def by_fwmark(self, mark: int, family: int = 4) -> VirtualService | None:
        """The firewall-mark virtual service for ``mark`` (IPv4 by default; IPv6 ones are separate)."""
        return self._index.get(("FWM", int(mark), family))

    def iter_real_servers(self) -> Iterator[tuple[VirtualService, RealServer]]:
        """Every (virtual service, real server) pair, in the input's order."""
        for vs in self.virtual_services:
            for rs in vs.real_servers:
                yield vs, rs

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def __iter__(self) -> Iterator[VirtualService]:
        return iter(self.virtual_services)

    def __len__(self) -> int:
        return len(self.virtual_services)


# ---------------------------------------------------------------- ipset

class MemberError(ValueError):
    """A malformed set member; ``offset`` and ``length`` say which part of the text (0-based)."""

    def __init__(self, message: str, offset: int = 0, length: int = 0) -> None:
        super().__init__(message)
        self.offset = offset
        self.length = length


_PORT_PROTOCOLS = frozenset(("tcp", "udp", "sctp", "udplite"))


def _port(text: str) -> int:
    if not is_uint(text) or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port (0-65535)")
    return int(text)


def _kind_ip(text: str) -> str:
    return canonical_address(text)


def _kind_proto_port(text: str) -> str:
    proto, sep, port = text.rpartition(":")
    if not sep:
        # ipset takes a bare PORT as tcp:PORT (lib/parse.c, ipset_parse_proto_port).
        return f"tcp:{_port(text)}"
    proto = proto.lower()
    if not proto or not proto.replace("-", "").isalnum():
        raise ValueError(f"{text!r} is not PROTO:PORT")
    if proto in _PORT_PROTOCOLS:
        return f"{proto}:{_port(port)}"
    if not port:
        raise ValueError(f"{text!r} has no port or type after the protocol")
    return f"{proto}:{port.lower()}"  # icmp:echo-request, icmp:8/0, a protocol without ports: kept


def _kind_port(text: str) -> str:
    _, _, port = text.rpartition(":")  # bitmap:port accepts tcp:80 and stores the port alone
    return str(_port(port))


def _kind_mac(text: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", text):
        raise ValueError(f"{text!r} is not an Ethernet address")
    return text.upper()


def _kind_mark(text: str) -> str:
    try:
        return f"0x{int(text, 0):08x}"
    except ValueError:
        raise ValueError(f"{text!r} is not a mark") from None


def _kind_name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a name")
    return text


#: One canonicaliser per element part kind (grammars/ipset.toml, dimensions): a new kind is one entry here.
MEMBER_KINDS: dict[str, Callable[[str], str]] = {
    "ip": _kind_ip,
    "net": canonical_network,
    "proto_port": _kind_proto_port,
    "port": _kind_port,
    "mac": _kind_mac,
    "mark": _kind_mark,
    "iface": _kind_name,
    "setname": _kind_name,
}


def _guess_kind(part: str) -> str:
    """For a set whose type is unknown (an ``add`` with no ``create``): the kind its text shows."""
    if "/" in part:
        return "net"
    if is_uint(part):
        return "port"
    if ":" in part and part.split(":", 1)[0].isalpha() and "." not in part and part.count(":") == 1:
        return "proto_port"
    return "ip"


def canonical_member(text: str, dimensions: tuple[str, ...] | None) -> str:
    """A set member as kptrace keeps it: each comma-separated part canonical for its kind.

    ``dimensions`` are the kinds of the set type's parts (None: read each part by its look). Raises
    :class:`MemberError` saying which part is wrong.

    >>> canonical_member("10.0.0.1,TCP:0080,10.0.0.0/8", ("ip", "proto_port", "net"))
    '10.0.0.1,tcp:80,10.0.0.0/8'
    >>> canonical_member("30080", ("port",))
    '30080'
    """
    parts = text.split(",")
    if dimensions is not None and len(parts) != len(dimensions):
        raise MemberError(f"{text!r} has {len(parts)} part{'s' if len(parts) != 1 else ''}; this set type takes "
                          f"{len(dimensions)} ({','.join(dimensions)})", 0, len(text))
    out = []
    offset = 0
    for i, part in enumerate(parts):
        kind = dimensions[i] if dimensions is not None else _guess_kind(part)
        try:
            out.append(MEMBER_KINDS[kind](part))
        except (ValueError, KeyError) as e:
            msg = str(e) if isinstance(e, ValueError) else f"no reader for element kind {kind!r}"
            raise MemberError(f"{msg} (part {i + 1} of the element: {kind})", offset, max(len(part), 1)) from None
        offset += len(part) + 1
    return ",".join(out)


class MemberMeta(NamedTuple):
    """A member's own options: ``timeout`` (seconds left), counters, ``comment``, ``nomatch``, skbinfo."""

    timeout: int | None = None
    packets: int | None = None
    bytes: int | None = None
    comment: str | None = None
    nomatch: bool = False
    other: tuple[tuple[str, str], ...] = ()  # skbmark, skbprio, skbqueue, before/after: as written


@dataclass(frozen=True, slots=True)
class IPSet:
    """One set: its header and members.

    ``members`` are canonical (see :func:`canonical_member`). ``options`` are the header's options as
    written (``{"family": "inet", "hashsize": "1024", "counters": True}``). ``truncated`` is True when
    the input does not hold every member: an ``ipset list`` whose "Number of entries" is more than the
    members shown, or headers only (``ipset list -t``); a member not shown is then unknown, not absent.
    """

    name: str
    type: str | None
    family: int | None  # 4, 6, or None for types without a family (bitmap:port)
    options: Mapping[str, str | bool]
    members: frozenset[str]
    members_with_meta: Mapping[str, MemberMeta]
    location: Location
    text: str
    dimensions: tuple[str, ...] | None = None
    truncated: bool = False
    expected_entries: int | None = None  # "Number of entries:" of ipset list
    revision: int | None = None
    member_lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def contains(self, member: str) -> bool:
        """Whether ``member`` (any spelling ipset accepts) is listed. Raises :class:`MemberError` if malformed.

        >>> s = IPSet("S", "hash:ip,port", 4, {}, frozenset({"10.0.0.1,udp:53"}), {}, Location("x", 1), "", ("ip", "proto_port"))
        >>> s.contains("10.0.0.1,UDP:53"), s.contains("10.0.0.1,tcp:53")
        (True, False)
        """
        return canonical_member(member, self.dimensions) in self.members

    def __contains__(self, member: str) -> bool:
        try:
            return self.contains(member)
        except ValueError:
            return False

    def meta(self, member: str) -> MemberMeta:
        """The member's own options (empty when it has none or is not in the set)."""
        return self.members_with_meta.get(canonical_member(member, self.dimensions), _NO_META)

    def location_of(self, member: str) -> Location | None:
        line = self.member_lines.get(canonical_member(member, self.dimensions))
        return Location(self.location.source, line) if line else None

    @property
    def timeout(self) -> int | None:
        """The set's default timeout in seconds (header ``timeout``), None without one."""
        t = self.options.get("timeout")
        return int(t) if isinstance(t, str) and is_uint(t) else None

    @property
    def comment(self) -> bool:
        return self.options.get("comment") is True

    @property
    def counters(self) -> bool:
        return self.options.get("counters") is True

    def __len__(self) -> int:
        return len(self.members)


_NO_META = MemberMeta()


@dataclass(frozen=True, slots=True)
class IPSets:
    """The sets of one ``ipset save`` or ``ipset list`` output, by name. ``variant`` is ``save`` or ``list``."""

    sets: Mapping[str, IPSet]
    source: str
    diagnostics: tuple[Diagnostic, ...] = ()
    notes: tuple[str, ...] = ()
    variant: str = "save"

    def get(self, name: str) -> IPSet | None:
        return self.sets.get(name)

    def __getitem__(self, name: str) -> IPSet:
        return self.sets[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sets

    def __iter__(self) -> Iterator[IPSet]:
        return iter(self.sets.values())

    def __len__(self) -> int:
        return len(self.sets)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]
