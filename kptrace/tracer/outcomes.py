"""A trace's final states merged into its outcomes: states that end alike are one outcome, their probabilities
added exactly, each path kept as a branch."""

from __future__ import annotations

import math
from fractions import Fraction

from kptrace.model.addr import format_addr, format_endpoint
from kptrace.tracer.result import Branch, Outcome
from kptrace.tracer.state import TraceState

__all__ = ["delivery", "exact_sum", "merge_outcomes", "outcome_key"]


def outcome_key(s: TraceState, family: int) -> tuple:
    return (s.verdict, s.dnat, s.snat, s.masq, s.mark, s.reason, format_endpoint(family, s.dst, s.dport))


def merge_outcomes(states: list[TraceState], family: int, delivery_of) -> tuple[Outcome, ...]:
    """The outcomes of a trace's final states: those alike (:func:`outcome_key`) merged, the most likely first.

    Every trace ends here, so it is kept lean (benchmarks/conntrack.py --analysis: a quarter of a ClusterIP
    trace's time was spent here): states are grouped by the raw destination, which names it as the formatted
    one does, and a group of one (the usual case) skips the sorting and merging."""
    groups: dict[tuple, list[TraceState]] = {}
    for s in states:
        key = (s.verdict, s.dnat, s.snat, s.masq, s.mark, s.reason, s.dst, s.dport)
        got = groups.get(key)
        if got is None:
            groups[key] = [s]
        else:
            got.append(s)
    ranked = []
    for members in groups.values():
        if len(members) == 1:
            s0 = members[0]
            p = Fraction(*s0.prob)
            branches: tuple[Branch, ...] = (Branch(p, tuple(s0.path)),)
            assumptions = tuple(dict.fromkeys(s0.assumptions)) if s0.assumptions else ()
            paths = s0.npaths
        else:
            weighted = sorted(((Fraction(*m.prob), m) for m in members), key=lambda pm: -float(pm[0]))
            s0 = weighted[0][1]
            p = exact_sum([q for q, _ in weighted])
            branches = tuple(Branch(q, tuple(m.path)) for q, m in weighted)
            assumptions = tuple(dict.fromkeys(a for _, m in weighted for a in m.assumptions))
            paths = sum(m.npaths for m in members)
        dst = format_endpoint(family, s0.dst, s0.dport)
        ranked.append((-float(p), dst, Outcome(
            probability=p,
            verdict=s0.verdict or "",  # every final state has one (Tracer._settle)
            dst=dst,
            src=s0.snat if s0.snat else format_addr(family, s0.src),
            dnat=s0.dnat,
            snat=s0.snat,
            masquerade=s0.masq,
            mark=s0.mark,
            delivery=delivery_of(s0),
            reason=s0.reason,
            branches=branches,
            assumptions=assumptions,
            paths=paths,
            recent=frozenset(s0.recent),
        )))
    ranked.sort(key=lambda r: (r[0], r[1]))
    outcomes = tuple(o for _, _, o in ranked)
    total = exact_sum([o.probability for o in outcomes])
    if total != 1:
        raise AssertionError(f"outcome probabilities sum to {total}, not 1")
    return outcomes


def exact_sum(ps: list[Fraction]) -> Fraction:
    """Sum of fractions over their least common denominator: one normalisation instead of one per
    addition (the kernel's probabilities all have power-of-two denominators)."""
    if len(ps) == 1:
        return ps[0]
    den = math.lcm(*(p.denominator for p in ps))
    return Fraction(sum(p.numerator * (den // p.denominator) for p in ps), den)


def delivery(s: TraceState) -> str:
    if s.verdict in ("DROP", "REJECT", "INCOMPLETE"):
        return "none"
    return "local" if "INPUT" in s.reason else "forward"
