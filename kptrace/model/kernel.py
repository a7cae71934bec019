"""What the kernel did with a lab's connections: the values lab/ records and checks/verify compares with a trace.

They live here, below both, so that the checker (checks/verify.py) and the kernel lab (lab/netns.py) share them
without either importing the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["KernelFlow", "KernelObservation"]


@dataclass(frozen=True, slots=True)
class KernelFlow:
    """Where the kernel sent one connection: its destination after NAT and whether its source was rewritten."""

    verdict: str  # ACCEPT (conntrack has it) | DROP | REJECT
    dst: str | None  # "ip:port" after DNAT (the original destination when there was none); None if blocked
    snat: bool | None  # source rewritten; None in a prediction that cannot say


@dataclass(slots=True)
class KernelObservation:
    """One probe's record, filled in as the lab sends connections and reads conntrack and the trace (hence not
    frozen: the lab appends to it; checks only read it)."""

    flows: Counter[KernelFlow] = field(default_factory=Counter)  # KernelFlow -> connections
    sent: int = 0
    #: (table, chain, rule text or "policy X"); from nft monitor trace (table "FAMILY NAME"), the rule's
    #: handle (an int) instead of its text
    path: list[tuple[str, str, object]] = field(default_factory=list)
    path_raw: list[str] = field(default_factory=list)
    probe_verdict: str = ""
    notes: list[str] = field(default_factory=list)
    tracer: str = "xtables-monitor"
