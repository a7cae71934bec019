"""Tell input formats apart before parsing, so a wrong file gets a clear message instead of a pile of errors.

:func:`detect_format` names the format family (``FORMATS``); :func:`detect_variant` also says which
output of the tool it is (``VARIANTS``: ``ipvsadm-list`` or ``ipvsadm-save``, ``ipset-save`` or
``ipset-list``, ``iptables-list`` (``iptables -L``) or ``iptables-rules`` (``iptables -S``)), and
:func:`find_variant` where in the text it saw it. :func:`cannot_tell` is the error for an input that is
none of them.
"""

from __future__ import annotations

import re

from kptrace.errors import Diagnostic

__all__ = ["FORMATS", "VARIANTS", "cannot_tell", "detect_format", "detect_variant", "find_variant", "wrong_format"]

FORMATS = {
    "iptables-save": "iptables-save / ip6tables-save output, or kube-proxy's iptables-restore input",
    "iptables-list": "an `iptables -L` listing",
    "ipvsadm": "an `ipvsadm` listing",
    "ipset": "`ipset save` / `ipset list` output",
    "nft": "nftables (`nft list ruleset` or kube-proxy's nft transaction)",
    "ip-addr": "`ip addr` output",
}

#: variant -> (format family, what it is). A family's variants are told apart here so that each parser
#: can take every output of its tool (an ipvsadm listing and ipvsadm-save; ipset save and ipset list).
VARIANTS = {
    "iptables-save": ("iptables-save", FORMATS["iptables-save"]),
    "iptables-list": ("iptables-list", FORMATS["iptables-list"]),
    "iptables-rules": ("iptables-list", "`iptables -S` output"),
    "ipvsadm-list": ("ipvsadm", "an `ipvsadm -L` listing"),
    "ipvsadm-save": ("ipvsadm", "`ipvsadm-save` output"),
    "ipset-save": ("ipset", "`ipset save` output"),
    "ipset-list": ("ipset", "an `ipset list` listing"),
    "nft": ("nft", FORMATS["nft"]),
    "ip-addr": ("ip-addr", FORMATS["ip-addr"]),
}

# One pattern per variant; the earliest match in the text wins (a tie goes to the first listed).
# iptables chain names never start with "-" (iptables refuses them), which keeps "-A -t 10.0.0.1:80"
# (ipvsadm-save) from reading as an iptables rule.
_PROTO_LINE = r"(?:(?:TCP|UDP|SCTP) +\S+|FWM +\d+(?: IPv6)?) +(?:[a-z]\w*|\d+[KMGT]?)\b"
_RULES = (
    # `iptables -S`: -P lines for built-in chains, -N lines for the others, no *table header; a tie with
    # iptables-save (both read "-N X") goes to it, listed first.
    ("iptables-rules", re.compile(r"^(-P (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) (ACCEPT|DROP)( -c \d+ \d+)?|-N [^\s-]\S*)\s*$", re.M)),
    ("iptables-save", re.compile(r"^(\*(raw|mangle|nat|filter|security)\s*$|:[A-Za-z0-9_.-]+ (ACCEPT|DROP|-) \[\d+:\d+\]|(\[\d+:\d+\] )?-[AIXNF] [^\s-]\S*)", re.M)),
    ("iptables-list", re.compile(r"^Chain \S+ \((policy \w+|\d+ references)", re.M)),
    ("ipvsadm-list", re.compile(rf"^(IP Virtual Server version|Prot LocalAddress:Port|(?:{_PROTO_LINE}).*\n\s*-> )", re.M)),
    ("ipvsadm-save", re.compile(r"^-[Aa] (-[tuf]|--(tcp|udp|sctp|fwmark)-service) \S+", re.M)),
    ("ipset-save", re.compile(r"^(create \S+ (hash|bitmap|list):|add \S+ (\d|[0-9a-fA-F]{1,4}:|:))", re.M)),
    ("ipset-list", re.compile(r"^Name: \S+\s*\nType: ", re.M)),
    ("nft", re.compile(r"^(table (ip|ip6|inet) \S+ \{|add (table|chain|rule|set|map|element) (ip|ip6|inet) |\s*chain \S+ \{)", re.M)),
    ("ip-addr", re.compile(r"^\d+: \S+: <[A-Z_,-]*> mtu", re.M)),
)


def find_variant(text: str) -> tuple[str, int] | None:
    """``(variant, offset)``: the variant of ``text`` and where its telltale line starts, or None.

    >>> find_variant("IP Virtual Server version 1.2.1 (size=4096)\\n")
    ('ipvsadm-list', 0)
    """
    head = text[:65536]
    best, best_pos = None, None
    for name, rx in _RULES:
        m = rx.search(head)
        if m and (best_pos is None or m.start() < best_pos):
            best, best_pos = name, m.start()
    return None if best is None else (best, best_pos)


def detect_variant(text: str) -> str | None:
    """The variant (a key of ``VARIANTS``) of ``text`` by its first 64 KB, or None when it cannot tell.

    >>> detect_variant("-A -t 10.96.0.1:443 -s rr\\n")
    'ipvsadm-save'
    >>> detect_variant("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\\n")
    'ipset-save'
    >>> detect_variant("Name: KUBE-CLUSTER-IP\\nType: hash:ip,port\\n")
    'ipset-list'
    >>> detect_variant("-P INPUT ACCEPT\\n-N KUBE-FIREWALL\\n-A INPUT -j KUBE-FIREWALL\\n")
    'iptables-rules'
    >>> detect_variant("*filter\\n-N KUBE-FIREWALL\\n-A INPUT -j KUBE-FIREWALL\\nCOMMIT\\n")
    'iptables-save'
    """
    found = find_variant(text)
    return found[0] if found else None


def detect_format(text: str) -> str | None:
    """The format of ``text`` by the first few KB, or None when it cannot tell.

    >>> detect_format("*nat\\n:PREROUTING ACCEPT [0:0]\\nCOMMIT\\n")
    'iptables-save'
    >>> detect_format("Chain KUBE-SERVICES (2 references)\\n")
    'iptables-list'
    >>> detect_format("TCP  10.96.0.1:443 rr\\n  -> 192.168.0.2:6443  Masq  1  0  0\\n")
    'ipvsadm'
    """
    variant = detect_variant(text)
    return None if variant is None else VARIANTS[variant][0]


def wrong_format(text: str, source: str, found: tuple[str, int], expected: str, hint: str) -> Diagnostic:
    """The one error for an input of another format (``found`` from :func:`find_variant`), at the line
    that shows which format it is.

    >>> text = "*nat\\n:PREROUTING ACCEPT [0:0]\\n"
    >>> wrong_format(text, "x.txt", find_variant(text), "ipvsadm output", "").message
    "this is iptables-save / ip6tables-save output, or kube-proxy's iptables-restore input, not ipvsadm output"
    """
    variant, offset = found
    line_no = text.count("\n", 0, offset) + 1
    end = text.find("\n", offset)
    line = text[offset:end if end >= 0 else len(text)]
    first = line.split()[0] if line.split() else ""
    return Diagnostic("error", f"this is {VARIANTS[variant][1]}, not {expected}", source, line_no, 1, line, len(first) or 1, hint)


def cannot_tell(text: str, source: str) -> Diagnostic:
    """The error for an input :func:`find_variant` cannot name, at its first line that is not blank or
    a ``#`` comment, with what kptrace reads.

    >>> d = cannot_tell("\\nhello, this is a shell transcript\\n", "x.txt")
    >>> d.location, d.message
    ('x.txt:2:1', 'cannot tell what this input is: it is none of the formats kptrace reads')
    """
    lines = text.split("\n")
    line_no, line = next(((i + 1, l) for i, l in enumerate(lines) if l.strip() and not l.lstrip().startswith("#")), (1, lines[0]))
    first = line.split()[0] if line.split() else ""
    return Diagnostic("error", "cannot tell what this input is: it is none of the formats kptrace reads", source, line_no,
                      1 if first else 0, line, len(first) or 1,
                      "kptrace reads iptables-save / ip6tables-save output (*nat, :CHAIN, -A ...), iptables -L listings "
                      "(Chain NAME (...)), iptables -S output (-P, -N, -A), ipvsadm, ipset and nft output")
