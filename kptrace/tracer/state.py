"""The state of one branch of a trace (:class:`TraceState`), what matchers may ask of the tracer
(:class:`MatchContext`), and how the exits of one chain's walk are merged (:func:`merged_exits`).

A trace copies a state at every random rule, so the state is a plain ``__slots__`` class, not a frozen value: a
copy is ~20 attribute assignments (tracer/engine.py walks it; benchmarks/run.py: one 10k-Service trace ~0.5 ms).
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from kptrace.model.addr import parse_cidr

if TYPE_CHECKING:
    from kptrace.tracer.engine import Tracer

__all__ = ["PATHS_CAP", "MatchContext", "TraceState", "merged_exits", "state_key"]

_MULTICAST4 = parse_cidr("224.0.0.0/4")
_MULTICAST6 = parse_cidr("ff00::/8")
#: Path counts saturate here: chains that are entered twice on every path (a jump, a RETURN, and the same
#: jump again) multiply their callers' path counts, and the exact count has no use past this.
PATHS_CAP = 1 << 62


class TraceState:
    """The state of one branch of the walk. Copied when a random rule splits the walk."""

    __slots__ = ("src", "dst", "sport", "dport", "proto_num", "mark", "ctmark", "prob", "path", "assumptions", "dnat",
                 "snat", "masq", "notrack", "recent", "verdict", "reason", "iif", "oif", "orig", "nat_done", "npaths",
                 "pinned")

    src: int  # addresses as ints (model/addr.py), ports as ints
    dst: int
    sport: int
    dport: int
    proto_num: int
    mark: int
    ctmark: int
    prob: tuple[int, int]  # numerator, denominator: multiplied without normalising (a Fraction at the end)
    path: list  # the Steps taken (tracer/result.py)
    assumptions: list[str]
    dnat: str | None  # "ip:port" after a DNAT
    snat: str | None  # the new source, or "MASQUERADE" when the egress address is unknown
    masq: bool
    notrack: bool
    recent: frozenset[str]  # the session-affinity lists (recent names, nft affinity sets) the client is in
    verdict: str | None
    reason: str
    iif: str | None
    oif: str | None
    orig: tuple[int, int, int, int]  # the original tuple: src, dst, sport, dport
    nat_done: set[str]  # "dst"/"src": a nat chain at this hook set the mapping
    npaths: int
    pinned: tuple[int, int, Any] | None  # (rule, value, share) while an nft numgen's branch is evaluated

    def copy(self) -> "TraceState":
        n = TraceState.__new__(TraceState)
        n.src, n.dst, n.sport, n.dport, n.proto_num = self.src, self.dst, self.sport, self.dport, self.proto_num
        n.mark, n.ctmark, n.prob, n.dnat, n.snat, n.masq = self.mark, self.ctmark, self.prob, self.dnat, self.snat, self.masq
        n.notrack, n.recent, n.verdict, n.reason = self.notrack, self.recent, self.verdict, self.reason
        n.iif, n.oif, n.orig, n.npaths, n.pinned = self.iif, self.oif, self.orig, self.npaths, self.pinned
        n.path = list(self.path)
        n.assumptions = list(self.assumptions)
        n.nat_done = set(self.nat_done)
        return n

    def ctstates(self) -> set[str]:
        if self.notrack:
            return {"UNTRACKED"}
        s = {"NEW"}
        if self.dnat is not None:
            s.add("DNAT")
        if self.snat is not None:
            s.add("SNAT")
        return s

    def ct_tuple(self, field: str) -> int:
        o_src, o_dst, o_sport, o_dport = self.orig
        return {
            "origsrc": o_src, "origdst": o_dst, "replsrc": self.dst, "repldst": self.src,
            "origsrcport": o_sport, "origdstport": o_dport, "replsrcport": self.dport, "repldstport": self.sport,
        }[field]

    def recent_set(self, name: str) -> None:
        self.recent = self.recent | {name}

    def recent_remove(self, name: str) -> None:
        self.recent = self.recent - {name}


class MatchContext:
    __slots__ = ("tracer", "hook")

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.hook = ""

    def is_local(self, addr: int):
        return self.tracer.is_local(addr)

    def is_multicast(self, addr: int) -> bool:
        return (_MULTICAST4 if self.tracer.family == 4 else _MULTICAST6).contains(addr)

    def ipset_lookup(self, name: str, flags: str, st: TraceState):
        return self.tracer.ipset_lookup(name, flags, st)


def state_key(s: TraceState) -> tuple:
    """Everything about a state that a rule can read or an outcome shows, except its path and probability."""
    return (s.src, s.dst, s.sport, s.dport, s.proto_num, s.mark, s.ctmark, s.dnat, s.snat, s.masq, s.notrack, s.recent,
            s.verdict, s.reason, s.iif, s.oif, frozenset(s.nat_done), tuple(s.assumptions))


def merged_exits(exits: list[tuple[TraceState, bool]]) -> list[tuple[TraceState, bool]]:
    """Exits of one chain whose states are identical become one, their probabilities added (exactly) and
    their paths counted; the most likely path is kept."""
    if len(exits) < 2:
        return exits
    groups: dict[tuple, list[TraceState]] = {}
    for e, stopped in exits:
        groups.setdefault((state_key(e), stopped), []).append(e)
    if len(groups) == len(exits):
        return exits
    out = []
    for (_, stopped), members in groups.items():
        if len(members) > 1:
            total = sum((Fraction(*m.prob) for m in members), Fraction(0))
            best = max(members, key=lambda m: Fraction(*m.prob)).copy()  # the members may be kept by _call
            best.npaths = min(sum(m.npaths for m in members), PATHS_CAP)
            best.prob = (total.numerator, total.denominator)
            out.append((best, stopped))
        else:
            out.append((members[0], stopped))
    return out
