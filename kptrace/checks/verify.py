"""Compare kptrace's prediction for a packet with what the kernel did (``kptrace verify``).

Agreement means all of:

* the kernel's rule-by-rule path for one probe is one of the predicted paths;
* the set of outcomes (verdict, destination after NAT, source rewritten or not) is the same;
* each outcome's observed share of N connections lies within the binomial bound of its predicted
  probability at the stated confidence (Bonferroni-corrected over the outcomes);
* for a Service with session affinity, where one client is pinned after its first connection: every
  connection went to one endpoint, one of the predicted ones.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import NormalDist

from kptrace.model.kernel import KernelFlow, KernelObservation
from kptrace.tracer.result import Outcome, Trace

__all__ = ["OutcomeCheck", "VerifyResult", "compare", "connections_needed", "outcome_key"]


@dataclass(frozen=True, slots=True)
class OutcomeCheck:
    verdict: str
    dst: str | None
    snat: bool | None  # None: a prediction that cannot say (KernelFlow.snat)
    predicted: Fraction | None  # None: the kernel did something kptrace did not predict
    observed: int
    n: int
    low: int  # the range of counts the bound accepts
    high: int
    ok: bool


@dataclass(frozen=True, slots=True)
class VerifyResult:
    label: str
    trace: Trace
    status: str  # agree | disagree | unverifiable
    checks: tuple[OutcomeCheck, ...]
    path_ok: bool | None
    kernel_path: tuple[tuple[str, str, object], ...]  # (table, chain, rule text or nft handle)
    problems: tuple[str, ...]
    affinity: bool = False
    confidence: float = 0.999
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == "agree"


def outcome_key(o: Outcome, src: str, egress: str | None) -> KernelFlow:
    """The kernel-observable form of an outcome. MASQUERADE rewrites the source to the egress
    interface's address, which for a connection the node itself opened from that address changes
    nothing (conntrack then records no source NAT at all)."""
    if o.verdict in ("DROP", "REJECT"):
        return KernelFlow(o.verdict, None, False)
    if o.masquerade and o.delivery == "local":
        # Masquerading a connection delivered to the node itself picks an address for the loopback
        # route from whatever the node has: not predictable from a dump (kptrace says MASQUERADE).
        return KernelFlow("ACCEPT", o.dnat or o.dst, None)
    if o.masquerade:
        # MASQUERADE keeps the source port unless told to randomise it (iptables --random, --random-fully;
        # nft masquerade random, fully-random).
        masq = next((s for s in o.path if s.note.startswith("MASQUERADE") or " " in s.table and "masquerade (" in s.note),
                    None)
        randomised = masq is not None and (" --random" in masq.text or
                                           " " in masq.table and "random" in masq.text)
        if egress is not None and src == egress and randomised:
            # Only the port is rewritten, to a random one, which now and then is the port it had.
            return KernelFlow("ACCEPT", o.dnat or o.dst, None)
        rewritten = egress is None or src != egress
    else:
        rewritten = o.snat is not None and o.snat != src
    return KernelFlow("ACCEPT", o.dnat or o.dst, rewritten)


def connections_needed(trace: Trace, *, minimum: int = 200, expected_per_outcome: int = 40, cap: int = 5000) -> int:
    """Enough connections that every predicted outcome is expected ``expected_per_outcome`` times."""
    smallest = min((o.probability for o in trace.outcomes if o.probability > 0), default=Fraction(1))
    return max(minimum, min(cap, math.ceil(expected_per_outcome / float(smallest))))


def _band(n: int, p: float, z: float) -> tuple[int, int]:
    if p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    sd = math.sqrt(n * p * (1 - p))
    return max(0, math.floor(n * p - z * sd - 0.5)), min(n, math.ceil(n * p + z * sd + 0.5))


def _uses_affinity(trace: Trace) -> bool:
    # iptables: -m recent --set / --rcheck; nftables: a set updated from the packet path (kube-proxy's
    # `update @affinity-... { ip saddr }`)
    return any("-m recent" in s.text and ("--rcheck" in s.text or "--update" in s.text)
               for o in trace.outcomes for b in o.branches for s in b.path) or any(
        "-m recent" in s.text and "--set" in s.text or "update @" in s.text for o in trace.outcomes for s in o.path)


def _comparable(steps) -> list[tuple[str, str, object]]:
    # A chain's ACCEPT policy decides nothing, and the kernel prints it for base chains kptrace only
    # assumes; everything else must be the same, in the same order.
    return [s for s in steps if s[2] != "policy ACCEPT"]


def compare(label: str, trace: Trace, obs: KernelObservation, kernel_rule_index, *, confidence: float = 0.999,
            tables: set[str] | None = None, egress: str | None = None, omitted: dict | None = None) -> VerifyResult:
    """``kernel_rule_index(table, chain, text) -> 1-based rule number`` maps the kernel's rule texts (or, from
    nft monitor trace, handles) onto the loaded chains (the kernel prints rules in its own canonical form).
    ``omitted``: ``(table, chain, rule number) -> location`` of the rules the lab could not load (nft's ``xt``
    expressions). The lab runs without
    them, which is what kptrace assumes of them (an xt match matches nothing, an xt target lets the packet go
    on); a prediction that takes one of them (an ``xt match comment``, which matches everything) cannot be
    checked."""
    reason = _unverifiable(trace, omitted)
    if reason is not None:
        return VerifyResult(label, trace, "unverifiable", (), None, tuple(obs.path), (reason,), confidence=confidence)
    problems: list[str] = []
    notes: list[str] = []
    if omitted and any(f"at {loc} " in a for o in trace.outcomes for a in o.assumptions for loc in omitted.values()):
        notes.append("the prediction assumes a rule nft cannot load (an xt expression, shown by name only) does "
                     "nothing; the lab ran without it, so the kernel checked the rest under that assumption")
    kernel, path_ok = _compare_paths(trace, obs, kernel_rule_index, tables, problems, notes)
    affinity = _uses_affinity(trace)
    checks = _check_outcomes(trace, obs, egress, confidence, affinity, problems, notes)
    status = "agree" if not problems else "disagree"
    return VerifyResult(label, trace, status, tuple(checks), path_ok, tuple(kernel), tuple(problems), affinity, confidence,
                        tuple(notes))


def _unverifiable(trace: Trace, omitted: dict | None) -> str | None:
    """Why the lab cannot check this prediction, or None when it can."""
    if trace.packet.origin.value == "node" and any(o.delivery == "local" or (o.verdict != "ACCEPT" and any(
            s.hook == "INPUT" for s in o.path)) for o in trace.outcomes):
        return ("a connection the node opens to itself is confirmed by conntrack in POSTROUTING, before the loopback's "
                "INPUT decides, and the kernel stops tracing it there: the lab cannot see that verdict")
    if omitted and any((s.table, s.chain, s.rule) in omitted for o in trace.outcomes for b in o.branches for s in b.path):
        return ("the prediction takes a rule nft cannot load (an xt expression, shown by name only), which the lab "
                "runs without (give the iptables tables as iptables-save to check this path)")
    if any(o.verdict == "INCOMPLETE" for o in trace.outcomes):
        return "the prediction stops at a chain the input does not hold; the kernel saw it as an empty chain"
    return None


def _compare_paths(trace: Trace, obs: KernelObservation, kernel_rule_index, tables: set[str] | None,
                   problems: list[str], notes: list[str]) -> tuple[list, bool | None]:
    """The probe's path must be one of the predicted ones: (the kernel's comparable path, whether it is; None: no trace)."""
    kernel = []
    for table, chain, text in obs.path:
        if tables is not None and table not in tables:
            continue
        policy = isinstance(text, str) and text.startswith("policy ")
        kernel.append((table, chain, text if policy else kernel_rule_index(table, chain, text)))
    kernel = _comparable(kernel)
    predicted_paths = []
    from_node = trace.packet.origin.value == "node"
    for o in trace.outcomes:
        for b in o.branches:
            path = list(b.path)
            if from_node and o.delivery == "local":
                # The kernel stops tracing a packet once it loops back through lo: compare up to there.
                last = max((i for i, s in enumerate(path) if s.hook == "POSTROUTING"), default=len(path) - 1)
                path = path[:last + 1]
            steps = [(s.table, s.chain, s.rule if s.rule is not None else s.note) for s in path]
            predicted_paths.append(_comparable(steps))
    path_ok = None
    if obs.path:
        path_ok = kernel in predicted_paths
        if not path_ok:
            problems.append("the kernel's path for the probe is not one of the predicted paths")
    else:
        notes.append(f"{obs.tracer} gave no usable trace for the probe"
                     f"{' (it prints none for IPv6 here)' if obs.tracer == 'xtables-monitor' else ''}; "
                     "the path was not compared")
    return kernel, path_ok


def _check_outcomes(trace: Trace, obs: KernelObservation, egress: str | None, confidence: float, affinity: bool,
                    problems: list[str], notes: list[str]) -> list[OutcomeCheck]:
    """Each outcome's share of the probe's connections against its predicted probability."""
    predicted: dict[KernelFlow, Fraction] = {}
    for o in trace.outcomes:
        k = outcome_key(o, trace.packet.src, egress)
        predicted[k] = predicted.get(k, Fraction(0)) + o.probability
    n = obs.sent
    flows: Counter[KernelFlow] = Counter()
    for k, count in obs.flows.items():
        loose = KernelFlow(k.verdict, k.dst, None)
        flows[k if k in predicted or loose not in predicted else loose] += count
    checks: list[OutcomeCheck] = []
    if affinity and len(flows) == 1 and next(iter(flows)) in predicted:
        (k,) = flows
        notes.append("session affinity: after the first connection this client is pinned, so every connection went "
                     f"to {k.dst}; shares cannot be measured from one client")
        checks.append(OutcomeCheck(k.verdict, k.dst, k.snat, predicted[k], flows[k], n, 1, n, True))
        for other in predicted:
            if other != k:
                checks.append(OutcomeCheck(other.verdict, other.dst, other.snat, predicted[other], 0, n, 0, 0, True))
        return checks
    z = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * max(1, len(predicted))))
    for k in sorted(set(predicted) | set(flows), key=lambda k: (-(predicted.get(k) or 0), str(k.dst))):
        p = predicted.get(k)
        seen = flows.get(k, 0)
        low, high = _band(n, float(p), z) if p is not None else (0, 0)
        ok = p is not None and low <= seen <= high
        if p is None:
            problems.append(f"the kernel did what kptrace did not predict: {k.verdict} {k.dst or ''}"
                            f"{' with source rewritten' if k.snat else ''} ({seen} of {n})")
        elif not ok:
            problems.append(f"{k.verdict} {k.dst or ''}: {seen} of {n} connections, outside {low}..{high} for p={float(p):.4f}")
        checks.append(OutcomeCheck(k.verdict, k.dst, k.snat, p, seen, n, low, high, ok))
    return checks
