"""Tell input formats apart before parsing, so a wrong file gets a clear message instead of a pile of errors."""

from __future__ import annotations

import re

__all__ = ["FORMATS", "detect_format"]

FORMATS = {
    "iptables-save": "iptables-save / ip6tables-save output, or kube-proxy's iptables-restore input",
    "iptables-list": "an `iptables -L` listing",
    "ipvsadm": "an `ipvsadm` listing",
    "ipset": "`ipset save` / `ipset list` output",
    "nft": "nftables (`nft list ruleset` or kube-proxy's nft transaction)",
    "ip-addr": "`ip addr` output",
}

_RULES = (
    ("iptables-save", re.compile(r"^(\*(raw|mangle|nat|filter|security)\s*$|:[A-Za-z0-9_.-]+ (ACCEPT|DROP|-) \[\d+:\d+\]|(\[\d+:\d+\] )?-[AIXNF] \S+)", re.M)),
    ("iptables-list", re.compile(r"^Chain \S+ \((policy \w+|\d+ references)", re.M)),
    ("ipvsadm", re.compile(r"^(IP Virtual Server version|Prot LocalAddress:Port|-A -[tuf] )", re.M)),
    ("ipset", re.compile(r"^(create \S+ (hash|bitmap|list):|Name: \S+\s*\nType: )", re.M)),
    ("nft", re.compile(r"^(table (ip|ip6|inet) \S+ \{|add (table|chain|rule|set|map|element) (ip|ip6|inet) |\s*chain \S+ \{)", re.M)),
    ("ip-addr", re.compile(r"^\d+: \S+: <[A-Z_,-]*> mtu", re.M)),
)


def detect_format(text: str) -> str | None:
    """The format of ``text`` by the first few KB, or None when it cannot tell.

    >>> detect_format("*nat\\n:PREROUTING ACCEPT [0:0]\\nCOMMIT\\n")
    'iptables-save'
    >>> detect_format("Chain KUBE-SERVICES (2 references)\\n")
    'iptables-list'
    """
    head = text[:65536]
    best, best_pos = None, None
    for name, rx in _RULES:
        m = rx.search(head)
        if m and (best_pos is None or m.start() < best_pos):
            best, best_pos = name, m.start()
    return best
