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
    groups: dict[tuple, list[tuple[Fraction, TraceState]]] = {}
    for s in states:
        groups.setdefault(outcome_key(s, family), []).append((Fraction(*s.prob), s))
    outcomes = []
    for members in groups.values():
        if len(members) > 1:
            members.sort(key=lambda m: -float(m[0]))
        s0 = members[0][1]
        assumptions: list[str] = []
        for _, m in members:
            for a in m.assumptions:
                if a not in assumptions:
                    assumptions.append(a)
        outcomes.append(Outcome(
            probability=exact_sum([p for p, _ in members]),
            verdict=s0.verdict or "",  # every final state has one (Tracer._settle)
            dst=format_endpoint(family, s0.dst, s0.dport),
            src=s0.snat if s0.snat else format_addr(family, s0.src),
            dnat=s0.dnat,
            snat=s0.snat,
            masquerade=s0.masq,
            mark=s0.mark,
            delivery=delivery_of(s0),
            reason=s0.reason,
            branches=tuple(Branch(p, tuple(m.path)) for p, m in members),
            assumptions=tuple(assumptions),
            paths=sum(m.npaths for _, m in members),
            recent=frozenset(s0.recent),
        ))
    outcomes.sort(key=lambda o: (-float(o.probability), o.dst))
    total = exact_sum([o.probability for o in outcomes])
    if total != 1:
        raise AssertionError(f"outcome probabilities sum to {total}, not 1")
    return tuple(outcomes)


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
