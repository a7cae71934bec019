"""``-m set --match-set NAME FLAGS`` evaluated from a node's ipsets: each dimension of the set's type
takes the packet's source or destination (``src``/``dst`` in FLAGS, in order) address, port (with its
protocol) or network containment, as the kernel's ``ip_set_match`` does.

>>> from kptrace.model.ipvs import IPSet, Location
>>> s = IPSet("KUBE-CLUSTER-IP", "hash:ip,port", 4, {}, frozenset({"10.96.0.10,udp:53"}), {}, Location("x", 1), "", ("ip", "proto_port"))
>>> m = SetMatcher(s)
>>> m.match("dst,dst", src=(4, 0x0A000001), dst=(4, 0x0A60000A), sport=40000, dport=53, proto="udp")
True
>>> m.match("dst,dst", src=(4, 0x0A000001), dst=(4, 0x0A60000A), sport=40000, dport=53, proto="tcp")
False
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from kptrace.model.ipvs import IPSet
from kptrace.tracer.matchers import Assumed
from kptrace.tracer.state import TraceState

if TYPE_CHECKING:
    from kptrace.tracer.engine import Tracer

__all__ = ["SetMatcher", "lookup"]

_NET_KINDS = {"net"}
_IP_KINDS = {"ip"}
_PORT_KINDS = {"proto_port", "port"}


class SetMatcher:
    """Matches packets against one set; members are indexed once."""

    def __init__(self, ipset: IPSet) -> None:
        self.set = ipset
        self.dims = ipset.dimensions or _dims_of(ipset.type)
        self.exact = not any(d in _NET_KINDS for d in self.dims)
        self.rows: list[tuple] = []
        if not self.exact:
            for m in ipset.members:
                self.rows.append(tuple(m.split(",")))

    def match(self, flags: str, *, src: tuple[int, int], dst: tuple[int, int], sport: int, dport: int, proto: str) -> bool:
        dirs = [f.strip() for f in flags.split(",") if f.strip()] or ["src"]
        values = []
        for i, kind in enumerate(self.dims):
            side = dirs[i] if i < len(dirs) else dirs[-1]
            fam, addr = src if side == "src" else dst
            port = sport if side == "src" else dport
            values.append((kind, fam, addr, port))
        if self.exact:
            return ",".join(_text(kind, fam, addr, port, proto) for kind, fam, addr, port in values) in self.set.members
        for row in self.rows:
            if len(row) == len(values) and all(_part_matches(part, kind, fam, addr, port, proto)
                                               for part, (kind, fam, addr, port) in zip(row, values)):
                return True
        return False


def _dims_of(set_type: str | None) -> tuple[str, ...]:
    parts = (set_type or "hash:ip").split(":", 1)[-1].split(",")
    if (set_type or "").startswith("bitmap:port"):
        return ("port",)
    return tuple({"ip": "ip", "port": "proto_port", "net": "net"}.get(p, p) for p in parts)


def _addr_text(fam: int, addr: int) -> str:
    return str(ipaddress.IPv4Address(addr) if fam == 4 else ipaddress.IPv6Address(addr))


def _text(kind: str, fam: int, addr: int, port: int, proto: str) -> str:
    if kind in _IP_KINDS:
        return _addr_text(fam, addr)
    if kind == "proto_port":
        return f"{proto}:{port}"
    if kind == "port":
        return str(port)
    return _addr_text(fam, addr)


def _part_matches(part: str, kind: str, fam: int, addr: int, port: int, proto: str) -> bool:
    if kind in _NET_KINDS:
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            return False
        host_bits = net.max_prefixlen - net.prefixlen
        return net.version == fam and (addr >> host_bits) == (int(net.network_address) >> host_bits)
    return part == _text(kind, fam, addr, port, proto)


def lookup(tracer: Tracer, name: str, flags: str, st: TraceState):
    """The answer of ipset NAME for the packet: a bool, or an Assumed one where the sets were not given."""
    if tracer.ipsets is None:
        return Assumed(False, f"ipset {name} contents not given: assumed no match (give --ipset)")
    m = tracer.set_matchers.get(name)
    if m is None:
        ipset = tracer.ipsets.get(name)
        if ipset is None:
            return Assumed(False, f"ipset {name} is not in the ipset input: assumed no match")
        m = tracer.set_matchers[name] = SetMatcher(ipset)
    proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(st.proto_num, "tcp")
    hit = m.match(flags, src=(tracer.family, st.src), dst=(tracer.family, st.dst), sport=st.sport, dport=st.dport, proto=proto)
    if not hit and m.set.truncated:
        return Assumed(False, f"ipset {name} is listed only in part (truncated): no match assumed")
    return hit
