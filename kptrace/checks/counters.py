"""Observed vs predicted: how a node really spread a Service's new connections, from the packet counters
of its endpoints' DNAT rules (``iptables-save -c``, ``iptables -L -v``), beside the shares the rules
predict, and whether a difference is more than chance for the counts seen.

The nat table sees only a connection's first packet, so a DNAT rule's packet counter counts
connections. With ``since`` (an earlier snapshot of the same node) the deltas are used: what happened
between the two.

The test is Pearson's chi-square goodness of fit over the endpoints (degrees of freedom k - 1) and, per
endpoint, an exact binomial tail for one that got nothing; a skew is flagged when p < ``alpha``
(0.001: a check run often should not cry wolf), never merely for being different.

>>> round(chi2_sf(3.84, 1), 3), round(chi2_sf(0.0, 2), 3)
(0.05, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from kptrace.model.dataplane import Dataplane

__all__ = ["CounterReport", "EndpointCount", "chi2_sf", "observed_shares"]

ALPHA = 0.001
MIN_CONNECTIONS = 20


@dataclass(frozen=True, slots=True)
class EndpointCount:
    address: str
    chain: str
    predicted: Fraction | None
    connections: int | None  # None: no counter (the input had none, or the rule is missing in the earlier snapshot)
    observed: float | None
    location: str = ""


@dataclass(frozen=True, slots=True)
class CounterReport:
    endpoints: tuple[EndpointCount, ...]
    total: int
    p_value: float | None
    skewed: bool
    verdict: str  # one sentence for people
    since: str | None = None
    notes: tuple[str, ...] = ()


def observed_shares(dp: Dataplane, view, since: Dataplane | None = None, *, alpha: float = ALPHA) -> CounterReport | None:
    """The observed split of ``view``'s endpoints (a ServiceView) from DNAT counters; None without counters."""
    fam = view.family
    if (dp.ruleset(fam) is None and dp.nft is None) or not view.endpoints:
        return None
    now_dp, before = dp, since
    rows, notes = [], []
    any_counters = False
    earlier = since.sources[0] if since is not None and since.sources else None
    if before is not None and _later(before, now_dp, view):
        earlier = now_dp.sources[0] if now_dp.sources else earlier
        # "--dump before.rules --since after.rules": the two the other way round; the difference is the same
        now_dp, before = before, now_dp
        notes.append("the --since snapshot has the higher counters, so it is the later one: the growth is taken from "
                     "the --dump snapshot to it")
    shared = {ep.chain for ep in view.endpoints if sum(e.chain == ep.chain for e in view.endpoints) > 1}
    for ep in view.endpoints:
        now = _dnat_counter(now_dp, fam, ep.chain) if ep.chain not in shared else None
        count = now[0] if now else None
        if now is not None:
            any_counters = True
        if before is not None and now is not None:
            then = _dnat_counter(before, fam, ep.chain)
            if then is None:
                notes.append(f"{ep.chain} is not in the earlier snapshot: its count is since it was created")
            elif then[0] > now[0]:
                notes.append(f"{ep.chain}: the counter went down ({then[0]} -> {now[0]}): counters were reset or the rule was "
                             "re-created between the snapshots; its count is since then")
            else:
                count = now[0] - then[0]
        rows.append((ep, count, now[1] if now else ""))
    if shared and any(_dnat_counter(now_dp, fam, c, any_rule=True) is not None for c in shared):
        notes.append(f"{', '.join(sorted(shared))} sends to {'its' if len(shared) == 1 else 'their'} endpoints with one "
                     "`dnat ... numgen random mod N map` rule (kube-proxy 1.36+): its counter counts every endpoint's "
                     "connections together, so the split is not observable from counters")
        if not any_counters:
            return CounterReport(tuple(EndpointCount(ep.address, ep.chain, ep.probability, None, None) for ep in view.endpoints),
                                 0, None, False, "not observable: one rule DNATs to every endpoint", since=earlier,
                                 notes=tuple(notes))
    if not any_counters or all(c in (None, 0) for _, c, _ in rows) and not _had_counters_text(now_dp, view):
        return None
    total = sum(c for _, c, _ in rows if c)
    eps = tuple(EndpointCount(ep.address, ep.chain, ep.probability, c, (c / total) if (c is not None and total) else None, loc)
                for ep, c, loc in rows)
    if view.affinity_timeout:
        notes.append("session affinity pins returning clients to their endpoint: the split of connections is not "
                     "expected to follow the shares (few clients, many connections)")
    if any("counters are rounded" in n for n in now_dp.notes + (before.notes if before is not None else [])):
        notes.append("the counts are rounded (a listing taken without -x): shown, not judged; take it with -x")
        mixed = True
    else:
        mixed = False
    if view.external_policy == "Local" and view.internal_policy != "Local":
        mixed = True
    if view.external_policy == "Local" and view.internal_policy != "Local":
        notes.append("externalTrafficPolicy Local: the DNAT counters also count outside traffic, which goes to local "
                     "endpoints only, so the counts are not held against the cluster-wide shares")
    p_value, skewed, verdict = _judge(eps, total, alpha, bool(view.affinity_timeout) or mixed)
    return CounterReport(eps, total, p_value, skewed, verdict, since=earlier, notes=tuple(notes))


def _later(a: Dataplane, b: Dataplane, view) -> bool:
    """Whether snapshot ``a`` is later than ``b``: no endpoint counter lower, one higher."""
    read = [(_dnat_counter(a, view.family, ep.chain), _dnat_counter(b, view.family, ep.chain)) for ep in view.endpoints]
    pairs = [(x[0], y[0]) for x, y in read if x is not None and y is not None]
    return bool(pairs) and all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def _had_counters_text(dp: Dataplane, view) -> bool:
    return any(_dnat_counter(dp, view.family, ep.chain) is not None for ep in view.endpoints)


def _dnat_counter(dp: Dataplane, family: int, chain_name: str, *, any_rule: bool = False) -> tuple[int, str] | None:
    """The packet counter of the DNAT rule of an endpoint chain (iptables KUBE-SEP-…, nftables endpoint-…, or a
    1.37 service chain's single ``dnat to``) and where it is; ``any_rule``: a map-based dnat's too."""
    rs = dp.ruleset(family)
    chain = rs.chain("nat", chain_name) if rs is not None else None
    if chain is not None:
        for raw in chain.raw:
            if " -j DNAT" in raw.text and raw.counters is not None:
                return raw.counters[0], f"{chain.source}:{raw.line}"
        return None
    if dp.nft is None:
        return None
    from kptrace.model.nft import Nat

    nchain = dp.nft.chain("ip" if family == 4 else "ip6", "kube-proxy", chain_name)
    for r in nchain.rules if nchain is not None else ():
        if r.counters is not None and any(type(x) is Nat and x.kind == "dnat" and (any_rule or x.map_key is None) for x in r.exprs):
            return r.counters[0], r.location
    return None


def _judge(eps: tuple[EndpointCount, ...], total: int, alpha: float, affinity: bool) -> tuple[float | None, bool, str]:
    # (connections, share) of each endpoint both are known for
    usable = [(e, e.connections, e.predicted) for e in eps if e.connections is not None and e.predicted is not None]
    if len(eps) == 1:
        return None, False, f"a single endpoint: it took all {total} connection{'s' if total != 1 else ''}"
    if total < MIN_CONNECTIONS or len(usable) < 2:
        return None, False, f"{total} connection{'s' if total != 1 else ''} counted: too few to tell a skew from chance"
    chi2 = 0.0
    for e, connections, share in usable:
        expected = float(share) * total
        if expected > 0:
            chi2 += (connections - expected) ** 2 / expected
        elif connections:
            return 0.0, True, f"{e.address} got {connections} connections but the rules give it none"
    p = chi2_sf(chi2, len(usable) - 1)
    starved = [(e, share) for e, connections, share in usable
               if connections == 0 and share and (1 - float(share)) ** total < alpha / len(usable)]
    if affinity:
        return p, False, f"{total} connections; p = {p:.2g} (not judged: see the note)"
    if starved:
        names = ", ".join(e.address for e, _ in starved)
        p_starved = min(p, max((1 - float(share)) ** total for _, share in starved))
        return p, True, (f"{names} got no connection of {total}, where the rules give {'it' if len(starved) == 1 else 'each'} "
                         f"{float(starved[0][1]):.1%}: significant (p = {p_starved:.2g})")
    if p < alpha:
        return p, True, f"the split of {total} connections differs from the rules' shares more than chance explains (p = {p:.2g})"
    return p, False, f"{total} connections split as the rules predict, within chance (p = {p:.2g})"


def chi2_sf(x: float, k: int) -> float:
    """P(X >= x) for a chi-square variable with ``k`` degrees of freedom (the regularized upper gamma Q(k/2, x/2))."""
    if x <= 0:
        return 1.0
    a, z = k / 2.0, x / 2.0
    if z < a + 1:  # series for the lower incomplete gamma
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1
            term *= z / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # continued fraction for the upper one (Lentz)
    tiny = 1e-300
    b = z + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - math.lgamma(a)) * h)
