"""Connection-tracking entries as values (what ``conntrack -L``, ``/proc/net/nf_conntrack`` and
``conntrack -L -o xml`` list), for finding the connections the rules no longer explain.

An entry has the original tuple (what the client sent: src -> dst) and the reply tuple (what the other
end answers from: src -> dst). A DNATed connection's reply comes from the endpoint: ``reply_src:reply_sport``
is where the kernel sends the connection's packets, whatever the rules say now.

>>> e = ConntrackEntry(4, "udp", None, 29, "10.244.1.5", "10.96.0.10", 40000, 53, "10.244.2.7", "10.244.1.5", 53, 40000,
...                    ("UNREPLIED",), source="x", line=1)
>>> e.dnat, e.endpoint, e.unreplied
(True, '10.244.2.7:53', True)
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ConntrackEntry"]


class ConntrackEntry(NamedTuple):
    family: int  # 4 or 6
    protocol: str  # "tcp", "udp", "sctp", "icmp", "icmpv6", "gre", ... (lower case)
    state: str | None  # TCP/SCTP state ("ESTABLISHED", "TIME_WAIT", ...); None for protocols without one
    timeout: int | None  # seconds left; None when the listing does not say
    orig_src: str
    orig_dst: str
    orig_sport: int | None  # None for protocols without ports (ICMP: see ``extra``)
    orig_dport: int | None
    reply_src: str
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None
    flags: tuple[str, ...] = ()  # "UNREPLIED", "ASSURED", "OFFLOAD", ... as listed
    mark: int | None = None
    zone: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # anything else listed (icmp type/code/id, use=, id=, secctx=, ...)
    source: str = ""
    line: int = 0  # 1-based line of the entry in its input (0: not line-based, e.g. XML)

    @property
    def dnat(self) -> bool:
        """The destination was rewritten: the reply comes from somewhere else than the original destination."""
        return self.reply_src != self.orig_dst or (self.orig_dport is not None and self.reply_sport != self.orig_dport)

    @property
    def snat(self) -> bool:
        return self.reply_dst != self.orig_src or (self.orig_sport is not None and self.reply_dport != self.orig_sport)

    @property
    def endpoint(self) -> str:
        """Where the connection's packets go: the reply's source (``[v6]:port`` for IPv6)."""
        if self.reply_sport is None:
            return self.reply_src
        return f"[{self.reply_src}]:{self.reply_sport}" if self.family == 6 else f"{self.reply_src}:{self.reply_sport}"

    @property
    def unreplied(self) -> bool:
        return "UNREPLIED" in self.flags

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source
