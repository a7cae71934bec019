"""A trace is a value: Trace -> Outcome -> Branch -> Step. Renderers only read it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from kptrace.tracer.packet import Packet

__all__ = ["Branch", "Outcome", "Step", "Trace", "nice_fraction"]


class Step(NamedTuple):
    """One rule that matched (or a chain policy that applied) on the way.

    A NamedTuple rather than a frozen dataclass: a trace builds ~80 of these, and a frozen
    dataclass's __init__ costs 5x a tuple's (about a third of a 10k-Service trace's time, measured
    in benchmarks/). Immutable all the same.
    """

    hook: str
    table: str
    chain: str
    rule: int | None  # 1-based number within the chain; None for the chain's policy
    text: str
    source: str = ""
    line: int = 0
    probability: Fraction | None = None  # the branch probability when this rule was a random choice
    note: str = ""  # what the step did: "DNAT to 10.0.0.1:80", "mark 0x0 -> 0x4000", ...
    synthetic: bool = False  # a rule kptrace supplied (kube-proxy's standard jumps)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line else (self.source or "")


class Branch(NamedTuple):
    """One way of reaching an outcome: its probability and its path (a NamedTuple, as :class:`Step` is: a
    trace makes one a final state, and a frozen dataclass's __init__ costs several times a tuple's)."""

    probability: Fraction
    path: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    probability: Fraction
    verdict: str  # ACCEPT | DROP | REJECT | INCOMPLETE
    dst: str  # final destination "ip:port" (after DNAT)
    src: str  # final source address (after SNAT; "MASQUERADE" when the egress address is unknown)
    dnat: str | None
    snat: str | None
    masquerade: bool
    mark: int
    delivery: str  # "local" (INPUT) | "forward" (FORWARD -> POSTROUTING) | "none"
    reason: str  # why it ended as it did, in words
    branches: tuple[Branch, ...]
    assumptions: tuple[str, ...] = ()
    #: how many rule paths lead here: more than ``len(branches)`` when identical branches were merged on the
    #: way (only the most likely path of each merged group is kept); 0 means one per branch
    paths: int = 0
    #: the session-affinity lists (iptables ``recent`` names, nft ``affinity-`` sets) the client is in after this
    #: packet: where a returning client is pinned (``kptrace diff``'s returning-client source class)
    recent: frozenset[str] = frozenset()

    @property
    def path_count(self) -> int:
        return min(max(self.paths, len(self.branches)), 1 << 62)

    @property
    def path(self) -> tuple[Step, ...]:
        return self.branches[0].path

    @property
    def assumed(self) -> bool:
        return bool(self.assumptions)

    @property
    def masquerade_step(self) -> Step | None:
        """The rule that asked for masquerading (the jump to KUBE-MARK-MASQ or nftables mode's
        mark-for-masquerade, 1.37's inline ``mark set mark or 0x4000``, or the SNAT rule)."""
        for s in self.path:
            if "KUBE-MARK-MASQ" in s.text.split(" -j ", 1)[-1][:15] and s.chain != "KUBE-MARK-MASQ":
                return s
            if s.chain not in ("mark-for-masquerade", "masquerading") and (
                    "jump mark-for-masquerade" in s.text or ("mark set" in s.text and ("0x4000" in s.text or "0x00004000" in s.text))):
                return s
        for s in self.path:
            if s.note.startswith(("MASQUERADE", "SNAT")):
                return s
        return None


@dataclass(frozen=True, slots=True)
class Trace:
    packet: Packet
    outcomes: tuple[Outcome, ...]
    notes: tuple[str, ...] = ()  # about the input as a whole (assumed jumps, missing node IPs, ...)

    @property
    def assumed(self) -> bool:
        return any(o.assumed for o in self.outcomes)


def nice_fraction(p: Fraction) -> str:
    """A probability as people think of it: ``1/3`` when the kernel's quantised value is that close.

    >>> nice_fraction(Fraction(715827883, 2**31))
    '1/3'
    >>> nice_fraction(Fraction(1))
    '1'
    """
    if p == 1:
        return "1"
    if p == 0:
        return "0"
    approx = p.limit_denominator(1000)
    if abs(float(approx) - float(p)) < 2e-9:
        return f"{approx.numerator}/{approx.denominator}"
    return f"{float(p):.6f}"
