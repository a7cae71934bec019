"""A node's netfilter hooks: at each, the base chains the kernel runs, in its order, across every table that
has one there: iptables' (legacy or iptables-nft: raw, mangle, nat, filter, security at their standard
priorities) and nftables tables (kube-proxy's, a CNI's, a firewall's) at the priorities they declare.

The order is the tracer's own (:meth:`kptrace.tracer.engine.Tracer.hook_slots`), so a picture of a node
shows the order a trace follows.
"""

from __future__ import annotations

import re
from typing import Any

from kptrace.model.dataplane import Dataplane

__all__ = ["HOOKS", "base_chains"]

HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")

_IPT_JUMP = re.compile(r"\s-[jg]\s+(\S+)")
_NFT_JUMP = re.compile(r"\b(?:jump|goto)\s+([\w./:-]+)")
_IPT_TARGETS = {
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "QUEUE",
    "NFQUEUE",
    "LOG",
    "NFLOG",
    "MARK",
    "CONNMARK",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REDIRECT",
    "NETMAP",
    "CT",
    "NOTRACK",
    "TPROXY",
    "TCPMSS",
    "CHECKSUM",
    "CLASSIFY",
    "TRACE",
}


def base_chains(dp: Dataplane) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """(family, hook, base chains) for every family and hook with at least one base chain. A base chain:
    ``table`` ("nat (iptables)" or "ip kube-proxy"), ``chain``, ``priority``, ``policy``, ``rules`` (count),
    ``location`` (file:line of its declaration) and ``jumps`` (the chains its rules jump or go to, in order)."""
    from kptrace.tracer.defaults import tracer_for

    out: list[tuple[int, str, list[dict[str, Any]]]] = []
    for fam in sorted(dp.rulesets):
        t = tracer_for(dp, fam)
        for hook in HOOKS:
            rows = []
            for prio, _n, table, chain, _nat in t.hook_slots(hook):
                c: Any
                if " " in table:  # an nft table: "ip kube-proxy"
                    family, name = table.split(" ", 1)
                    nft: Any = dp.nft
                    c = nft.chain(family, name, chain) if nft is not None else None
                    texts = [text for _line, text in c.texts()] if c is not None else []
                    jumps = [m.group(1) for text in texts for m in _NFT_JUMP.finditer(text)]
                    label = table
                else:
                    c = dp.rulesets[fam].chain(table, chain)
                    texts = [r.text for r in c.raw] if c is not None else []
                    jumps = [
                        m.group(1) for text in texts for m in _IPT_JUMP.finditer(text) if m.group(1) not in _IPT_TARGETS
                    ]
                    label = f"{'ip' if fam == 4 else 'ip6'} {table} (iptables)"
                policy = (c.policy if c is not None else None) or "accept"
                location = f"{c.source}:{c.line}" if c is not None and c.line else ""
                rows.append(
                    {
                        "table": label,
                        "chain": chain,
                        "priority": prio,
                        "policy": policy.lower(),
                        "rules": len(texts),
                        "location": location,
                        "jumps": list(dict.fromkeys(jumps)),
                    }
                )
            if rows:
                out.append((fam, hook, rows))
    return out
