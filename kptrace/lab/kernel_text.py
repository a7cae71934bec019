"""What the kernel's tools print about the lab's packets, read: ``xtables-monitor --trace`` and ``nft monitor
trace`` (a probe's path), ``nft -j list ruleset`` (rule handles), ``conntrack -L`` / ``-E`` (where each
connection went)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kptrace.model.kernel import KernelFlow

__all__ = ["TRACE_TABLE", "kernel_handles", "parse_conntrack", "parse_nft_trace", "parse_trace", "trace_ended", "trace_verdict"]

#: the lab's own nft table (nft labs): base chains at prerouting and output, priority -400 (before raw, conntrack
#: and every table of the dump), set ``meta nftrace`` on the probe so that ``nft monitor trace`` reports its path,
#: and count a burst's packets; chains at the end of input and postrouting mark where a probe's trace ends
TRACE_TABLE = ("inet", "kptrace-trace")

_TRACE = re.compile(r"^\s*TRACE: \d+ ([0-9a-f]+) (\w+):([^:]+):(rule|policy|return):([^ ]*)\s*(.*)$")


def parse_trace(text: str) -> list[tuple[str, str, object]]:
    """xtables-monitor --trace output -> the first traced packet's path: (table, chain, rule text from
    "-A" on, or "policy ACCEPT"). kptrace's own TRACE rule is left out."""
    path: list[tuple[str, str, object]] = []
    first_id = None
    for line in text.splitlines():
        m = _TRACE.match(line)
        if not m:
            continue
        pid, table, chain, kind, verdict, rest = m.groups()
        if first_id is None:
            first_id = pid
        if pid != first_id:
            continue
        if kind == "rule":
            rule = re.sub(r"^-[46] -t \w+ ?", "", rest.strip())
            if not rule.startswith("-A "):
                # xtables-monitor could not print the rule (seen for IPv6 with iptables 1.8.9, where the
                # trace also stops there): no usable path.
                return []
            if rule.endswith("-j TRACE"):
                continue
            path.append((table, chain, rule))
        elif kind == "policy":
            path.append((table, chain, f"policy {verdict}"))
    return path


_NFT_TRACE = re.compile(r"^trace id ([0-9a-f]+) (ip|ip6|inet|arp|bridge|netdev) (\S+) (\S+) (rule|policy|verdict|packet:) ?(.*)$")
_NFT_RULE = re.compile(r"# handle (\d+) \(verdict ([^)]*)\)\s*$")


def _first_trace(lines: list[str]):
    """``(match, line)`` of each `nft monitor trace` event of the first trace id in ``lines`` (the probe's)."""
    first = None
    for line in lines:
        m = _NFT_TRACE.match(line)
        if not m:
            continue
        first = first or m.group(1)
        if m.group(1) == first:
            yield m, line


def trace_ended(lines: list[str]) -> bool:
    """Whether the probe's trace is complete: it reached the trace table's end-of-hook chain (input or
    postrouting) or something dropped it."""
    for m, line in _first_trace(lines):
        if f"{m.group(2)} {m.group(3)}" == " ".join(TRACE_TABLE) and m.group(4).endswith("-end") or \
                m.group(5) == "policy" and m.group(6).startswith("drop") or "(verdict drop)" in line:
            return True
    return False


_REJECT = re.compile(r"(^|\s)reject(\s|$)")


def trace_verdict(lines: list[str]) -> str | None:
    """How the probe's trace ended when something stopped it: "DROP" (a drop verdict or policy), "REJECT" (a rule
    with a reject statement: the kernel traces it as a drop), or None (it was not stopped)."""
    for m, line in _first_trace(lines):
        if m.group(5) == "policy" and m.group(6).startswith("drop"):
            return "DROP"
        if m.group(5) == "rule" and line.rstrip().endswith("(verdict drop)"):
            rule = re.sub(r'comment "(?:[^"\\]|\\.)*"', "", _NFT_RULE.sub("", m.group(6)))
            return "REJECT" if _REJECT.search(rule) else "DROP"
    return None


def parse_nft_trace(text: str) -> list[tuple[str, str, object]]:
    """``nft monitor trace`` output -> the first traced packet's path: ``("FAMILY TABLE", chain, handle)`` for
    each rule that matched (with its verdict or without: "continue"), ``(table, chain, "policy ACCEPT")`` for a
    base chain's policy. The lab's own trace table is left out.

    >>> parse_nft_trace('trace id 07 ip kube-proxy services rule jump x # handle 44 (verdict jump x)\\n'
    ...                 'trace id 07 ip kube-proxy nat-prerouting policy accept ')
    [('ip kube-proxy', 'services', 44), ('ip kube-proxy', 'nat-prerouting', 'policy ACCEPT')]
    """
    path: list[tuple[str, str, object]] = []
    first_id = None
    skip = " ".join(TRACE_TABLE)
    for line in text.splitlines():
        m = _NFT_TRACE.match(line)
        if not m:
            continue
        pid, family, table, chain, kind, rest = m.groups()
        if first_id is None:
            first_id = pid
        if pid != first_id or f"{family} {table}" == skip:
            continue
        if kind == "rule":
            h = _NFT_RULE.search(rest)
            if h is None:
                return []  # a rule without its handle: no usable path
            path.append((f"{family} {table}", chain, int(h.group(1))))
        elif kind == "policy":
            path.append((f"{family} {table}", chain, f"policy {rest.split()[0].upper()}"))
    return path


def kernel_handles(listing: str) -> dict[tuple[str, str], list[int]]:
    """``nft -j list ruleset`` -> ``("FAMILY TABLE", chain) -> [handles of its rules, in order]``."""
    import json

    out: dict[tuple[str, str], list[int]] = {}
    for item in json.loads(listing).get("nftables", ()):
        r = item.get("rule")
        if r is not None:
            out.setdefault((f"{r['family']} {r['table']}", r["chain"]), []).append(r["handle"])
    return out


_CT_FIELD = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True, slots=True)
class _CtEntry:
    orig: dict
    reply: dict

    @property
    def sport(self) -> int:
        return int(self.orig["sport"])


def _flows_with_ports(text: str, src: str, dst: str, dport: int) -> list[_CtEntry]:
    out = []
    for line in text.splitlines():
        fields = _CT_FIELD.findall(line)
        if len(fields) < 8:
            continue
        orig, reply = dict(fields[:4]), dict(fields[4:8])
        if orig.get("src") == src and orig.get("dst") == dst and orig.get("dport") == str(dport):
            out.append(_CtEntry(orig, reply))
    return out


def parse_conntrack(text: str, src: str, dst: str, dport: int, sports: range, family: int) -> list[KernelFlow]:
    """``conntrack -L`` / ``-E`` lines of our connections -> where each went (the reply source is the
    destination after DNAT) and whether its source was rewritten: the reply tuple is not the original
    one reversed, which is exactly when the kernel records source NAT (MASQUERADE to the address and
    port a connection already had changes nothing, and the kernel does not count it)."""
    flows = []
    seen = set()
    for e in _flows_with_ports(text, src, dst, dport):
        sport = e.sport
        if sport not in sports or sport in seen:
            continue
        seen.add(sport)
        host = e.reply["src"] if family == 4 else f"[{e.reply['src']}]"
        rewritten = e.reply["dst"] != e.orig["src"] or e.reply["dport"] != e.orig["sport"]
        flows.append(KernelFlow("ACCEPT", f"{host}:{e.reply['sport']}", rewritten))
    return flows
