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
from typing import NamedTuple

from kptrace.model.ipvs import RealServer, VirtualService

__all__ = ["Choice", "choose"]

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
