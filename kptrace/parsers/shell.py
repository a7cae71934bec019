"""Which tool a pasted command line runs (through ``sudo``, ``kubectl exec``, ``ssh``, ...) and what it pipes its
output through, and where each tool's output starts in a paste of several: the segments
:func:`~kptrace.parsers.paste.clean_paste` reports."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Segment", "command_families", "pass_through", "segments"]

#: The first line of each tool's output, which starts a new dump when several are pasted one after another.
_START = re.compile(
    r"(?P<iptables_save>\#[ ]Generated[ ]by[ ]ip6?tables-|\*(?:raw|mangle|nat|filter|security)[ \t]*$)"
    r"|(?P<iptables_list>Chain[ ]\S+[ ]\((?:policy|\d+[ ]references))"
    r"|(?P<ipvsadm>IP[ ]Virtual[ ]Server[ ]version|Prot[ ]LocalAddress:Port|-A[ ]-[tuf][ ])"
    r"|(?P<ipset>create[ ]\S+[ ](?:hash|bitmap|list):|Name:[ ]\S+[ \t]*$)"
    r"|(?P<nft>table[ ](?:ip|ip6|inet|arp|bridge|netdev)[ ]\S+[ ]\{)"
    r"|(?P<cluster_state>\{[ \t]*$|apiVersion:[ ]|kind:[ ]\w*List)", re.M)
_START_AT = re.compile(r"\n(?:" + _START.pattern + ")", re.M)

#: Commands that print a file or another command's output: what they print is told by its look.
_PASS_THROUGH = frozenset({"cat", "less", "more", "zcat", "head", "tail", "tee", "bat", "type"})
#: Commands a pipe may send a dump through that leave lines out.
_FILTERS = frozenset({"grep", "egrep", "fgrep", "head", "tail", "sed", "awk", "cut", "sort", "uniq", "less", "more"})
_TOOL_FAMILY = (
    (re.compile(r"ip6?tables(?:-legacy|-nft)?-save"), "iptables-save", None),
    (re.compile(r"ip6?tables(?:-legacy|-nft)?"), "iptables-list", re.compile(r"-\w*[LS]|--list")),
    (re.compile(r"ipvsadm-save"), "ipvsadm", None),
    (re.compile(r"ipvsadm"), "ipvsadm", re.compile(r"^$|-\w*[LlSs]|--list|--save")),
    (re.compile(r"ipset"), "ipset", re.compile(r"\b(?:list|save|-L|-S|-o)\b")),
    (re.compile(r"nft"), "nft", re.compile(r"\blist\b")),
    (re.compile(r"kubectl|oc"), "cluster-state", re.compile(r"\bget\b.*(?:-o|--output)[ =]?(?:json|yaml)")),
)


class Segment(NamedTuple):
    """One command's output: lines ``start``..``end`` (1-based, inclusive) of the original text. ``family``
    is the format it is (``iptables-save``, ``iptables-list``, ``ipvsadm``, ``ipset``, ``nft``,
    ``cluster-state``; None: not told), ``command`` the command line that printed it ("" if none was pasted)
    and ``command_line`` where that was (0: none)."""

    start: int
    end: int
    family: str | None
    command: str = ""
    command_line: int = 0

    @property
    def foreign(self) -> bool:
        """Printed by a command that is no dump of the data plane (``kubectl get pods``)."""
        return self.family is None and bool(self.command) and not pass_through(self.command)


def command_families(command: str) -> tuple[list[str | None], list[str]]:
    """The format each command of a command line prints (None: not a dump), and the filters it is piped through.

    >>> command_families("sudo ipvsadm -ln")
    (['ipvsadm'], [])
    >>> command_families("kubectl exec -n kube-system kube-proxy-x -- iptables-save | grep KUBE; ipset save")
    (['iptables-save', 'ipset'], ['grep KUBE'])
    """
    families: list[str | None] = []
    filters: list[str] = []
    for part in re.split(r";|&&|\|\|", command):
        stages = [s.strip() for s in part.split("|")]
        if not stages[0]:
            continue
        words = _unwrap(stages[0].split())
        families.append(_family_of(words))
        filters.extend(s for s in stages[1:] if s and s.split()[0] in _FILTERS)
    return families, filters


def segments(text: str, commands: list[tuple[int, str]]) -> tuple[list[Segment], list[str]]:
    """One segment per command's output, split again where another tool's output starts."""
    if not commands:
        return [], []
    n_lines = text.count("\n") + 1
    markers: list[tuple[int, str]] = []  # (line number, family) of each tool's first line
    one_tool = len(commands) == 1 and commands[0][0] == 1 and len(set(command_families(commands[0][1])[0])) == 1
    if not one_tool:  # `$ iptables-save` and its output needs no look for where another tool's starts
        if (m := _START.match(text)) is not None:
            markers.append((1, (m.lastgroup or "").replace("_", "-")))
        pos, line = 0, 1
        for m in _START_AT.finditer(text):
            line += text.count("\n", pos, m.start() + 1)
            pos = m.start() + 1
            markers.append((line, (m.lastgroup or "").replace("_", "-")))
    bounds: list[tuple[int, int, list, str, int]] = []
    filtered: list[str] = []
    first = commands[0][0]
    if first > 1 and any(ln.strip() for ln in text.split("\n", first - 1)[:first - 1]):
        bounds.append((1, first - 1, [], "", 0))  # output pasted before the first command line
    for k, (n, cmd) in enumerate(commands):
        end = commands[k + 1][0] - 1 if k + 1 < len(commands) else n_lines
        families, filters = command_families(cmd)
        filtered.extend(filters)
        bounds.append((n + 1, end, families, cmd, n))
    out = []
    for start, end, families, cmd, at in bounds:
        if start > end:
            continue
        known = {f for f in families if f is not None}
        current = known.pop() if len(known) == 1 else None
        seg_start = start
        for ln, fam in markers:
            if ln < start or ln > end:
                continue
            if current is None:
                current = fam
            elif fam != current:
                if ln > seg_start:
                    out.append(Segment(seg_start, ln - 1, current, cmd, at))
                seg_start, current = ln, fam
        out.append(Segment(seg_start, end, current, cmd, at))
    return out, filtered


def _unwrap(words: list[str]) -> list[str]:
    """The command a wrapper runs: ``sudo -E X``, ``kubectl exec POD -- X``, ``docker exec C X``, ``ssh H X``."""
    while words:
        w = words[0].rsplit("/", 1)[-1]
        if w in ("kubectl", "oc", "nsenter", "crictl", "docker", "nerdctl") and "--" in words and \
                (w == "nsenter" or (len(words) > 1 and words[1] == "exec")):
            words = words[words.index("--") + 1:]
        elif w in ("docker", "crictl", "nerdctl") and len(words) > 1 and words[1] == "exec":
            rest = words[2:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-u", "--user", "-e", "--env", "-w", "--workdir") else rest[1:]
            words = rest[1:]
        elif w == "sudo":
            rest = words[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-u", "-g", "-h", "-p") else rest[1:]
            words = rest
        elif w == "ssh":
            rest = words[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-p", "-i", "-l", "-o", "-J", "-F") else rest[1:]
            words = rest[1:]
        elif w in ("time", "watch", "env", "chroot", "nice", "command"):
            rest = words[1:]
            if w == "chroot" and rest:
                rest = rest[1:]
            while rest and (rest[0].startswith("-") or (w == "env" and "=" in rest[0])):
                rest = rest[1:]
            words = rest
        else:
            break
    return words


def _family_of(words: list[str]) -> str | None:
    if not words:
        return None
    name = words[0].rsplit("/", 1)[-1]
    args = " ".join(words[1:])
    for rx, family, needs in _TOOL_FAMILY:
        if rx.fullmatch(name):
            return family if needs is None or needs.search(args) else None
    return None


def pass_through(command: str) -> bool:
    words = _unwrap(command.split())
    return bool(words) and words[0].rsplit("/", 1)[-1] in _PASS_THROUGH
