"""The hypothetical packet a trace follows: the first packet of a NEW connection."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kptrace.model.addr import format_endpoint, parse_addr

__all__ = ["DEFAULT_EXTERNAL_SOURCE", "DEFAULT_SPORT", "Origin", "Packet", "PROTOCOLS"]

#: TEST-NET-3 (RFC 5737): never a real client, so it cannot collide with the cluster's addresses.
DEFAULT_EXTERNAL_SOURCE = "203.0.113.1"
DEFAULT_EXTERNAL_SOURCE6 = "2001:db8:ffff::1"
#: An ephemeral source port; only rules that match on --sport care.
DEFAULT_SPORT = 43210
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "udplite": 136, "dccp": 33, "ipv6-icmp": 58, "icmpv6": 58}


class Origin(str, Enum):
    """Where the packet starts: a pod on this node, the node itself, or outside the cluster."""

    POD = "pod"
    NODE = "node"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"
    sport: int = DEFAULT_SPORT
    origin: Origin = Origin.POD
    in_iface: str | None = None  # None: unknown (a rule that matches on -i is then marked assumed)
    out_iface: str | None = None  # the interface routes send it out of, when not the node itself; None: unknown

    @property
    def family(self) -> int:
        return parse_addr(self.dst)[0]

    def __str__(self) -> str:
        v = self.family
        return (f"{self.proto} {format_endpoint(v, parse_addr(self.src)[1], self.sport)} -> "
                f"{format_endpoint(v, parse_addr(self.dst)[1], self.dport)} from {self.origin.value}")
