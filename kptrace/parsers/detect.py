"""Tell input formats apart before parsing, so a wrong file gets a clear message instead of a pile of errors.

:func:`detect_format` names the format family (``FORMATS``); :func:`detect_variant` also says which
output of the tool it is (``VARIANTS``: ``ipvsadm-list`` or ``ipvsadm-save``, ``ipset-save`` or
``ipset-list``, ``iptables-list`` (``iptables -L``) or ``iptables-rules`` (``iptables -S``)), and
:func:`find_variant` where in the text it saw it. :func:`cannot_tell` is the error for an input that is
none of them.

Every one of them looks through what a paste adds (prompts and command lines, code fences, ``> `` quote
markers, colour codes: :mod:`kptrace.parsers.paste`); a command line tells the format when the output alone
does not (``$ ipvsadm -Ln`` over an empty table).
"""

from __future__ import annotations

import re

from kptrace.errors import Diagnostic
from kptrace.parsers.paste import Paste, clean_paste
from kptrace.parsers.shell import command_families

__all__ = ["FORMATS", "READ_FORMATS", "RUN_ON_NODE", "VARIANTS", "cannot_tell", "detect_format", "detect_variant",
           "find_variant", "find_variant_clean", "find_variant_paste", "formats_read", "run_on_node", "wrong_format"]

FORMATS = {
    "iptables-save": "iptables-save / ip6tables-save output, or kube-proxy's iptables-restore input",
    "iptables-list": "an `iptables -L` listing",
    "ipvsadm": "an `ipvsadm` listing",
    "ipset": "`ipset save` / `ipset list` output",
    "nft": "nftables (`nft list ruleset` or kube-proxy's nft transaction)",
    "ip-addr": "`ip addr` output",
    "conntrack": "a conntrack table (`conntrack -L` output: pass it with --conntrack)",
}

#: The formats kptrace reads today: the one place that says so (hints are made from it). A format named in
#: FORMATS but not here is recognised, named and refused.
READ_FORMATS = frozenset({"iptables-save", "iptables-list", "ipvsadm", "ipset", "nft"})
# A conntrack table is recognised and named, and read only where a command asks for one (--conntrack, by
# kptrace/parsers/conntrack.py): given as --dump it is refused with "pass it with --conntrack".

#: What to run on a node to have each format, for hints (the first is the one to ask for).
RUN_ON_NODE = {
    "iptables-save": "iptables-save",
    "nft": "nft list ruleset",
    "ipvsadm": "ipvsadm -Ln",
    "ipset": "ipset save",
    "iptables-list": "iptables -t nat -L -n -v",
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
    "nft-json": ("nft", "`nft -j list ruleset` JSON"),
    "ip-addr": ("ip-addr", FORMATS["ip-addr"]),
    "conntrack": ("conntrack", FORMATS["conntrack"]),
    "conntrack-xml": ("conntrack", "a conntrack table (`conntrack -L -o xml` output: pass it with --conntrack)"),
}

# One pattern per variant; the earliest match in the text wins (a tie goes to the first listed).
# iptables chain names never start with "-" (iptables refuses them), which keeps "-A -t 10.0.0.1:80"
# (ipvsadm-save) from reading as an iptables rule.
_PROTO_LINE = r"(?:(?:TCP|UDP|SCTP) +\S+|FWM +\d+(?: IPv6)?) +(?:[a-z]\w*|\d+[KMGT]?)\b"
_RULES = (
    # `iptables -S`: -P lines for built-in chains, -N lines for the others, no *table header; a tie with
    # iptables-save (both read "-N X") goes to it, listed first.
    ("iptables-rules", re.compile(r"^(-P (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) (ACCEPT|DROP)( -c \d+ \d+)?|-N [^\s-]\S*)\s*$", re.M)),
    ("iptables-save", re.compile(r"^(\*(raw|mangle|nat|filter|security)\s*$|:[A-Za-z0-9_.-]+ (ACCEPT|DROP|-) \[\d+:\d+\]"
                                 r"|(\[\d+:\d+\] )?-[AIXNF] [^\s-]\S*)", re.M)),
    ("iptables-list", re.compile(r"^Chain \S+ \((policy \w+|\d+ references)", re.M)),
    ("ipvsadm-list", re.compile(rf"^(IP Virtual Server version|Prot LocalAddress:Port|(?:{_PROTO_LINE}).*\n\s*-> )", re.M)),
    # One virtual service pasted alone: PROTO ADDRESS:PORT SCHEDULER, nothing after it.
    ("ipvsadm-list", re.compile(r"^(?:TCP|UDP|SCTP) +(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):[\w-]+ +[a-z][a-z0-9]*\b[^\n]*(?:\n|$)", re.M)),
    ("ipvsadm-save", re.compile(r"^-[Aa] (-[tuf]|--(tcp|udp|sctp|fwmark)-service) \S+", re.M)),
    ("ipset-save", re.compile(r"^(create \S+ (hash|bitmap|list):|add \S+ (\d|[0-9a-fA-F]{1,4}:|:))", re.M)),
    ("ipset-list", re.compile(r"^Name: \S+\s*\nType: ", re.M)),
    ("nft-json", re.compile(r'^\s*\{\s*"nftables"\s*:', re.M)),
    ("nft", re.compile(r"^(table (ip|ip6|inet) \S+ \{|add (table|chain|rule|set|map|element) (ip|ip6|inet) |\s*chain \S+ \{)", re.M)),
    ("ip-addr", re.compile(r"^\d+: \S+: <[A-Z_,-]*> mtu", re.M)),
    # conntrack -L (-o extended, /proc/net/nf_conntrack: "ipv4 2 " before it): protocol, number, timeout,
    # state, then the original tuple; or only conntrack's closing line on stderr (an empty table).
    ("conntrack", re.compile(r"^(?:ipv[46] +\d+ +)?[a-z][a-z0-9]* +\d+ +(?:\d+ +)?(?:[A-Z][A-Z0-9_]* +)?"
                             r"(?:\S+=\S+,? +)*src=\S+ +dst=\S+|^conntrack v[\d.]+\S* \(conntrack-tools\): \d+ flow entr", re.M)),
    ("conntrack-xml", re.compile(r"^<conntrack>|^<\?xml[^\n]*\?>\s*<conntrack>", re.M)),
)


def find_variant(text: str) -> tuple[str, int] | None:
    """``(variant, offset)``: the variant of ``text`` and where its telltale line starts, or None. The offset
    is in the text :func:`~kptrace.parsers.paste.clean_paste` makes of ``text``'s first 64 KB, whose lines
    are the original's (a skipped line is left empty).

    >>> find_variant("IP Virtual Server version 1.2.1 (size=4096)\\n")
    ('ipvsadm-list', 0)
    >>> find_variant("[root@vm01 ~]# ipvsadm -L -n\\nTCP  10.1.109.187:443 rr\\n")
    ('ipvsadm-list', 1)
    """
    return find_variant_paste(clean_paste(text[:65536]))


def find_variant_paste(paste: Paste) -> tuple[str, int] | None:
    """:func:`find_variant` of a text already through :func:`~kptrace.parsers.paste.clean_paste`; when its
    output does not tell, the command line before it does (`$ ipvsadm -Ln` over an empty table)."""
    found = find_variant_clean(paste.text)
    if found is None:
        for seg in paste.segments:
            variant = _command_variant(seg.command)
            if variant is not None:
                return variant, _line_offset(paste.text, seg.command_line)
    return found


def find_variant_clean(text: str) -> tuple[str, int] | None:
    """:func:`find_variant` of a text already through :func:`~kptrace.parsers.paste.clean_paste`."""
    head = text[:65536]
    best, best_pos = None, None
    for name, rx in _RULES:
        m = rx.search(head)
        if m and (best_pos is None or m.start() < best_pos):
            best, best_pos = name, m.start()
    return None if best is None or best_pos is None else (best, best_pos)


_CONNTRACK_COMMAND = re.compile(r"(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?conntrack\s+(?:-\w*L\b|--dump\b|v[\d.]+\S* \(conntrack-tools\))")


def _command_variant(command: str) -> str | None:
    if _CONNTRACK_COMMAND.match(command):  # `conntrack -L`, or its closing line that reads like a command
        return "conntrack"
    families, _ = command_families(command)
    family = next((f for f in families if f is not None), None)
    if family is None or family not in FORMATS:
        return None
    saves = re.search(r"(?:^|\s|-)save\b|\s-\w*S", command) is not None
    if family == "ipvsadm":
        return "ipvsadm-save" if saves else "ipvsadm-list"
    if family == "ipset":
        return "ipset-save" if saves else "ipset-list"
    if family == "iptables-list":
        return "iptables-rules" if saves else "iptables-list"
    return family


def _line_offset(text: str, line: int) -> int:
    pos = 0
    for _ in range(line - 1):
        pos = text.find("\n", pos) + 1
    return pos


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
    >>> detect_format("ipv4     2 udp      17 29 src=10.0.1.2 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] ...\\n")
    'conntrack'
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


def formats_read() -> str:
    """The formats kptrace reads, for a hint (from ``READ_FORMATS``).

    >>> formats_read() == ("iptables-save / ip6tables-save output (*nat, :CHAIN, -A ...), `iptables -L` listings (Chain NAME (...)) "
    ...                    "and `iptables -S` output (-P, -N, -A), ipvsadm -Ln / ipvsadm-save output, ipset save / list output "
    ...                    "and nft list ruleset output (text or -j JSON) and kube-proxy's nft transactions")
    True
    """
    parts = {
        "iptables-save": "iptables-save / ip6tables-save output (*nat, :CHAIN, -A ...)",
        "iptables-list": "`iptables -L` listings (Chain NAME (...)) and `iptables -S` output (-P, -N, -A)",
        "ipvsadm": "ipvsadm -Ln / ipvsadm-save output",
        "ipset": "ipset save / list output",
        "nft": "nft list ruleset output (text or -j JSON) and kube-proxy's nft transactions",
    }
    shown = [parts.get(f, FORMATS[f]) for f in FORMATS if f in READ_FORMATS]
    return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else "".join(shown)


def run_on_node() -> str:
    """What to run on the node instead: "run `iptables-save` (or `ipvsadm -Ln`, `ipset save`) on the node"."""
    cmds = [c for f, c in RUN_ON_NODE.items() if f in READ_FORMATS and f != "iptables-list"]
    return f"run `{cmds[0]}`" + (f" (or {', '.join(f'`{c}`' for c in cmds[1:])})" if len(cmds) > 1 else "") + \
        " on the node and pass its output"


def cannot_tell(text: str, source: str) -> Diagnostic:
    """The error for an input :func:`find_variant` cannot name, at its first line that is not blank, a
    ``#`` comment or something a paste adds (a prompt, a fence), with the formats tried and what to run.

    >>> d = cannot_tell("\\nhello, this is a shell transcript\\n", "x.txt")
    >>> d.location, d.message
    ('x.txt:2:1', 'cannot tell what this input is: it is none of the formats kptrace reads')
    >>> d.hint.split("; ")[1]
    'run `iptables-save` (or `nft list ruleset`, `ipvsadm -Ln`, `ipset save`) on the node and pass its output'
    """
    paste = clean_paste(text, source)
    lines = paste.text.split("\n")
    line_no, line = next(((i + 1, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")),
                         (1, lines[0]))
    stripped = line.lstrip()
    first = stripped.split()[0] if stripped else ""
    d = Diagnostic("error", "cannot tell what this input is: it is none of the formats kptrace reads", source, line_no,
                   len(line) - len(stripped) + 1 if first else 0, line, len(first) or 1,
                   f"kptrace tried {formats_read()}, and this line fits none of them; {run_on_node()}")
    return paste.line_map.restore(d)
