"""Which real server IPVS picks for a new connection to a virtual service, and with what probability.

Following the kernel's schedulers (``net/netfilter/ipvs/ip_vs_*.c``):

* ``rr``: round robin over the servers with weight > 0: 1/n each. ``wrr``: weighted round robin:
  weight / sum of weights. Over many connections these are the shares, exactly.
* ``lc``, ``wlc``, ``sed``, ``nq``, ``lblc``, ``lblcr``, ``fo``, ``ovf``, ``twos``: the choice depends on
  live connection counts; the share shown is the weight-based one (what the counts converge to under
  equal load) and marked approximate.
* ``sh`` / ``dh``: a hash of the source / destination address into 256 buckets filled in the
  listing's server order, each server holding ``weight`` consecutive buckets (``ip_vs_sh_reassign``):
  the one server for the given packet, computed. ``mh`` (maglev): marked, shares by weight.
* Weight 0 is never chosen (draining / terminating endpoints).

>>> from kptrace.model.ipvs import Location, RealServer, VirtualService
>>> rs = lambda a, w: RealServer(a, 53, "Masq", w, 0, 0, Location("x", 1), "")
>>> vs = VirtualService("UDP", "10.96.0.10", 53, None, "rr", (), None, None, (rs("10.0.0.1", 1), rs("10.0.0.2", 0)), Location("x", 1), "")
>>> [(c.server.address, str(c.probability)) for c in choose(vs, "10.0.0.9", 40000)]
[('10.0.0.1', '1')]
"""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple

from kptrace.model.addr import format_addr, format_endpoint, parse_addr
from kptrace.model.ipvs import RealServer, VirtualService
from kptrace.tracer.result import Step
from kptrace.tracer.state import TraceState

if TYPE_CHECKING:
    from kptrace.tracer.engine import Tracer

_new = tuple.__new__  # Steps are NamedTuples; tuple.__new__ skips their Python-level __new__

__all__ = ["Choice", "balance", "choose"]

_EXACT = {"rr", "wrr"}
_CONNECTION_BASED = {"lc", "wlc", "sed", "nq", "lblc", "lblcr", "fo", "ovf", "twos"}
_TAB_BITS = 8
_TAB_SIZE = 1 << _TAB_BITS


class Choice(NamedTuple):
    server: RealServer
    probability: Fraction
    note: str  # how the share was decided
    approximate: bool  # the kernel decides by live state kptrace does not see


def choose(vs: VirtualService, src: str, sport: int) -> list[Choice]:
    """The real servers a new connection from ``src:sport`` can go to. Empty: none takes connections."""
    live = [r for r in vs.real_servers if r.weight is None or r.weight > 0]
    if not live:
        return []
    sched = (vs.scheduler or "wlc").lower()
    if sched in ("sh", "dh"):
        picked = _hashed(vs, src, sport, sched)
        if picked is not None:
            key = "source" if sched == "sh" else "destination"
            return [Choice(picked, Fraction(1), f"{sched}: {key} hash bucket of {src if sched == 'sh' else vs.address}", False)]
        return []
    weights = [Fraction(1) if sched == "rr" else Fraction(r.weight if r.weight is not None else 1) for r in live]
    total = sum(weights)
    if sched in _EXACT:
        note = "rr: every server with weight > 0 in turn" if sched == "rr" else "wrr: in proportion to the weights"
        return [Choice(r, w / total, note, False) for r, w in zip(live, weights)]
    if sched in _CONNECTION_BASED:
        note = f"{sched} picks by live connection counts; the share shown is by weight (approximate)"
    else:
        note = f"{sched}: not modelled; the share shown is by weight (approximate)"
    return [Choice(r, w / total, note, True) for r, w in zip(live, weights)]


def _hash_32(value: int) -> int:
    return ((value * 0x61C88647) & 0xFFFFFFFF) >> (32 - _TAB_BITS)


def _fold(address: str) -> int:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return int(ip)
    v = int(ip)
    return (v >> 96) ^ ((v >> 64) & 0xFFFFFFFF) ^ ((v >> 32) & 0xFFFFFFFF) ^ (v & 0xFFFFFFFF)


def _hashed(vs: VirtualService, src: str, sport: int, sched: str) -> RealServer | None:
    """ip_vs_sh / ip_vs_dh: buckets filled round the server list, ``weight`` buckets each (a weight-0
    server still holds one bucket: unavailable, then ``sh-fallback`` walks on, else no server)."""
    servers = list(vs.real_servers)
    buckets: list[RealServer] = []
    i = count = 0
    for _ in range(_TAB_SIZE):
        dest = servers[i % len(servers)]
        buckets.append(dest)
        count += 1
        if count >= (dest.weight if dest.weight is not None else 1):
            i += 1
            count = 0
    key_addr = src if sched == "sh" else (vs.address or src)
    port = sport if (sched == "sh" and "sh-port" in vs.flags) else 0
    fallback = sched == "sh" and "sh-fallback" in vs.flags
    folded = _fold(key_addr)
    for offset in range(_TAB_SIZE if fallback else 1):
        h = (offset + _hash_32((port + folded) & 0xFFFFFFFF)) & (_TAB_SIZE - 1)
        dest = buckets[h]
        if dest.weight is None or dest.weight > 0:
            return dest
    return None


def balance(tracer: Tracer, states: list[TraceState], hook: str, finals: list[TraceState]
            ) -> tuple[list[TraceState], list[TraceState]]:
    """IPVS: a new connection to a virtual service goes to one of its real servers (LOCAL_IN after filter
    INPUT, LOCAL_OUT after nat OUTPUT; ip_vs_core.c). Returns (balanced states, the others)."""
    out, rest = [], []
    for st in states:
        proto = {6: "TCP", 17: "UDP", 132: "SCTP"}.get(st.proto_num, "TCP")
        vs = tracer.ipvs.by_fwmark(st.mark, tracer.family) if st.mark else None
        vs = vs or tracer.ipvs.virtual(proto, format_addr(tracer.family, st.dst), st.dport)
        if vs is None:
            rest.append(st)
            continue
        src_text = format_addr(tracer.family, st.src)
        choices = choose(vs, src_text, st.sport)
        loc = vs.location
        if getattr(tracer.ipvs, "truncated", False):
            # An elided or fragmentary listing (a paste): the real servers shown may not be all of them.
            st.assumptions.append(f"the IPVS listing is partial: real servers of {vs.endpoint} may be missing "
                                  f"(give the whole `ipvsadm -Ln` output)")
        if not choices:
            st.path.append(_new(Step, (hook, "ipvs", vs.endpoint, None, vs.text or vs.endpoint, loc.source, loc.line, None,
                                       "virtual service with no real server taking connections", False)))
            st.verdict, st.reason = "REJECT", f"IPVS: {vs.endpoint} has no real servers (weight > 0): connections fail"
            finals.append(st)
            continue
        for c in choices:
            n = st.copy() if len(choices) > 1 else st
            num, den = n.prob
            n.prob = (num * c.probability.numerator, den * c.probability.denominator)
            rs = c.server
            rs_family, rs_addr = parse_addr(rs.address) if rs.address is not None else (tracer.family, None)
            if rs_family != tracer.family:
                # An IPv6 real server behind an IPv4 virtual service (IPVS tunnelling can): this trace, of
                # one family, does not follow it there.
                n.assumptions.append(f"real server {rs.endpoint} is IPv{rs_family} behind the IPv{tracer.family} virtual "
                                     f"service {vs.endpoint}: where it goes from there is not traced")
                n.dnat = rs.endpoint
            elif rs_addr is not None and rs.port is not None:
                n.dst, n.dport = rs_addr, rs.port
                n.dnat = format_endpoint(tracer.family, n.dst, n.dport)
            persist = f", persistent {vs.persistent} s" if vs.persistent else ""
            note = f"{vs.scheduler or '?'} -> {rs.endpoint} weight {rs.weight}{persist}: {c.note}"
            n.path.append(_new(Step, (hook, "ipvs", vs.endpoint, vs.real_servers.index(rs) + 1, rs.text or rs.endpoint, rs.location.source,
                                      rs.location.line, c.probability if len(choices) > 1 else None, note, False)))
            if c.approximate:
                n.assumptions.append(f"IPVS {vs.endpoint}: {c.note}")
            if rs.forward not in (None, "Masq"):
                n.assumptions.append(f"IPVS {vs.endpoint} forwards to {rs.endpoint} by {rs.forward}, not NAT: "
                                     "the destination address is not rewritten on the wire")
            out.append(n)
    return out, rest
