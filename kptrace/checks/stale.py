"""Stale connection-tracking entries: connections the kernel still sends to an endpoint that the current
rules (and, given the cluster state, the current EndpointSlices) no longer lead to.

A DNATed connection keeps its translation for as long as its conntrack entry lives: after an endpoint goes
away, its packets still go there until the entry expires or is deleted (kube-proxy deletes UDP entries on
endpoint changes, and that is where the bugs are). For each entry whose original destination is a Service
entry point of this node and whose reply comes from elsewhere (it was DNATed), the endpoints that entry
point leads to now, from that origin, are what the one tracer says (any mode: iptables, IPVS, nftables);
an entry whose endpoint is not among them is stale.

What it means for traffic: a UDP flow or a TCP connection that never got a reply is blackholed now (every
packet goes to the dead endpoint); an established TCP connection only keeps going to an endpoint that may
still be serving it (terminating pods finish their connections). kptrace never changes a node: the
``conntrack -D`` command that would clear each group is printed, not run.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, NamedTuple

from kptrace.model.conntrack import ConntrackEntry
from kptrace.model.dataplane import Dataplane

if TYPE_CHECKING:
    from kptrace.checks.diff import EntryInfo

__all__ = ["Stale", "StaleReport", "find_stale", "delete_command", "stale_findings"]


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}

#: TCP states of a closed connection (conntrack's names)
_CLOSED = frozenset({"TIME_WAIT", "CLOSE"})


class Stale(NamedTuple):
    entry: ConntrackEntry
    service: str | None  # ns/name:port, or None when no Service has the entry point now
    dst: str  # the entry point, as the client sent it: IP:PORT
    endpoint: str  # where the kernel still sends it
    reason: str
    blackholed: bool  # every packet of it goes to the old endpoint (UDP, unreplied)
    now: tuple[str, ...]  # the endpoints the entry point leads to now, from this origin


@dataclass(slots=True)
class StaleReport:
    entries: int = 0  # read
    service_entries: int = 0  # to a Service entry point of this node, DNATed
    stale: list[Stale] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_service(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for s in self.stale:
            key = s.service or f"? ({s.dst})"
            d = out.setdefault(key, {"stale": 0, "blackholed": 0, "protocols": set(), "endpoints": {}, "commands": []})
            d["stale"] += 1
            d["blackholed"] += int(s.blackholed)
            d["protocols"].add(s.entry.protocol)
            d["endpoints"][s.endpoint] = d["endpoints"].get(s.endpoint, 0) + 1
            cmd = delete_command(s)
            if cmd not in d["commands"]:
                d["commands"].append(cmd)
        for d in out.values():
            d["protocols"] = sorted(d["protocols"])
        return out


def _hostport(family: int, addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


def delete_command(s: Stale) -> str:
    """The ``conntrack -D`` that deletes this entry point's entries to the old endpoint (and no others)."""
    e = s.entry
    parts = ["conntrack", "-D"]
    if e.family == 6:
        parts += ["-f", "ipv6"]
    parts += ["-p", e.protocol, "--orig-dst", e.orig_dst]
    if e.orig_dport is not None:
        parts += ["--orig-port-dst", str(e.orig_dport)]
    parts += ["--reply-src", e.reply_src]
    if e.reply_sport is not None:
        parts += ["--reply-port-src", str(e.reply_sport)]
    return " ".join(parts)


class _Index:
    """The node's Service entry points, and what each leads to from each origin (traced once, kept in the
    dataplane's cache)."""

    def __init__(self, dp: Dataplane) -> None:
        from kptrace.checks.diff import entry_points

        self.dp = dp
        # Derived from the node's rules alone, so kept with them (dp.cache): a second table checked against the
        # same rules (monitor's next interval, svc and drift of one bundle) traces nothing again.
        cached = dp.cache.get("stale-index")
        if cached is None:
            cached = dp.cache["stale-index"] = (entry_points(dp)[0], {})
        self.entries: dict[tuple, EntryInfo] = cached[0]
        self._now: dict[tuple, tuple[str, ...]] = cached[1]
        self.node_ips = set(dp.node_ips_of(4)) | set(dp.node_ips_of(6))
        from kptrace.tracer.defaults import cached_pod_cidr

        self.pod_cidrs = {fam: cached_pod_cidr(dp, fam) for fam in dp.rulesets}
        from kptrace.checks.diff import service_cidr
        from kptrace.model.addr import parse_cidr

        self.service_cidrs = []
        for fam in dp.rulesets:
            c = service_cidr(dp, fam)
            if c:
                try:
                    self.service_cidrs.append(parse_cidr(c))
                except ValueError:
                    pass

    def in_service_cidr(self, addr: str) -> bool:
        from kptrace.model.addr import parse_addr

        try:
            fam, a = parse_addr(addr)
        except ValueError:
            return False
        return any(c.version == fam and c.contains(a) for c in self.service_cidrs)

    def key_of(self, e: ConntrackEntry) -> tuple | None:
        proto = e.protocol
        k: tuple = (e.family, proto, e.orig_dst, e.orig_dport)
        if k in self.entries:
            return k
        if e.orig_dst in self.node_ips or e.orig_dst.startswith("127."):
            k = (e.family, proto, None, e.orig_dport)
            if k in self.entries:
                return k
        return None

    def origin(self, e: ConntrackEntry) -> str:
        src = e.orig_src
        if src in self.node_ips or src.startswith("127.") or src == "::1":
            return "node"
        cidr = self.pod_cidrs.get(e.family)
        if cidr is not None:
            try:  # the reader's addresses are checked and canonical: inet_pton takes them (~4x parse_addr)
                if cidr.contains(int.from_bytes(socket.inet_pton(_AF[e.family], src), "big")):
                    return "pod"
            except (OSError, KeyError, AttributeError):
                pass
        return "external"

    def now(self, key: tuple, origin: str, src: str | None) -> tuple[str, ...]:
        """The endpoints ``key`` leads to from ``origin`` (from ``src`` when the entry point has source ranges)."""
        info = self.entries[key]
        pinned = src if info.source_ranges and origin == "external" else None
        ck = (key, origin, pinned)
        got = self._now.get(ck)
        if got is None:
            from kptrace.checks.diff import Probe, accepted_endpoints

            fam, proto, addr, port = key
            got = self._now[ck] = accepted_endpoints(self.dp, Probe(fam, proto, addr, port, origin, pinned))
        return got


_ORIGINS = ("pod", "node", "external")


class _Check:
    """What one entry is for the report: a bucket to count it in, and the stale finding if it is one."""

    def __init__(self, dp: Dataplane, expected: dict[str, set[str]] | None, service_cidrs: Iterable[str]) -> None:
        from kptrace.model.addr import parse_cidr

        self.idx = idx = _Index(dp)
        idx.service_cidrs.extend(parse_cidr(c) for c in service_cidrs)
        self.expected = expected
        self.nodeport_numbers = {(k[0], k[1], k[3]) for k in idx.entries if k[2] is None}
        self._last: tuple[ConntrackEntry, tuple[str, Stale | None]] | None = None

    def entry(self, e: ConntrackEntry, origin: str | None = None) -> tuple[str, Stale | None]:
        """``(bucket, stale)``: bucket "closed" (a closed TCP connection, whatever else it holds: the reader decides
        them once), "other" (not DNATed, no ports), "nodeport-unknown", "elsewhere" (DNATed to no entry point of
        these rules) or "service"; ``stale`` the finding, or None. ``origin`` overrides the one the entry's source
        gives (the per-key decision asks each)."""
        if e.protocol == "tcp" and e.state in _CLOSED:
            # a closed connection: the SYN that reuses its 5-tuple drops this entry, and the new connection is
            # translated by the current rules (seen in the kernel: tests/test_stale_kernel.py)
            return "closed", None
        if not e.dnat or e.orig_dport is None:
            return "other", None
        idx = self.idx
        key = idx.key_of(e)
        if key is None and not idx.node_ips and (e.family, e.protocol, e.orig_dport) in self.nodeport_numbers:
            return "nodeport-unknown", None
        if key is None:
            if idx.in_service_cidr(e.orig_dst):  # a ClusterIP no Service has now: the Service was deleted
                dst = _hostport(e.family, e.orig_dst, e.orig_dport)
                return "service", Stale(e, None, dst, e.endpoint, f"no Service has {dst} now (deleted?); the kernel still "
                                        f"sends this {e.protocol.upper()} flow to {e.endpoint}",
                                        e.protocol not in ("tcp", "sctp") or e.unreplied, ())
            return "elsewhere", None
        info = idx.entries[key]
        if origin is None:
            origin = idx.origin(e)
        now = idx.now(key, origin, e.orig_src)
        endpoint = e.endpoint
        dst = _hostport(e.family, e.orig_dst, e.orig_dport)
        reason = None
        if endpoint not in now:
            if not now:
                reason = f"the rules send no new {e.protocol.upper()} connection from {origin} to {dst} anywhere now (no endpoints)"
            else:
                reason = (f"{endpoint} is not an endpoint of {dst} from {origin} under the current rules "
                          f"({len(now)} {'is' if len(now) == 1 else 'are'})")
        elif self.expected is not None and info.service in self.expected and endpoint not in self.expected[info.service]:
            reason = f"{endpoint} is still in the node's rules but not an endpoint of {info.service} in the API (the rules are behind)"
        if reason is None:
            return "service", None
        return "service", Stale(e, info.service, dst, endpoint, reason, e.protocol not in ("tcp", "sctp") or e.unreplied, now)

    def decide(self, e: ConntrackEntry) -> str | None:
        """For :meth:`ConntrackReader.only`: the bucket of every entry with ``e``'s protocol, state, original
        destination and reply source, when it is one bucket and none of them is stale, from whatever client;
        None when the client matters (some origin would find it stale, the entry point has source ranges)."""
        got = bucket, stale = self.entry(e)
        if stale is not None:
            self._last = (e, got)  # the reader yields this entry next: find_stale takes the finding made here
            return None
        idx = self.idx
        key = idx.key_of(e)
        if bucket != "service" or key is None:
            return bucket
        if idx.entries[key].source_ranges:
            return None
        # Not stale from this entry's origin, nor by the API (the same from any origin): from the others?
        endpoint = e.endpoint
        for origin in _ORIGINS:
            if endpoint not in idx.now(key, origin, None):
                return None
        return bucket

    def finding(self, e: ConntrackEntry) -> tuple[str, Stale | None]:
        """:meth:`entry` of an entry the reader yields (the one :meth:`decide` just looked at, if it is)."""
        last = self._last
        if last is not None and last[0] is e:
            self._last = None
            return last[1]
        return self.entry(e)


def find_stale(dp: Dataplane, *tables: Iterable[ConntrackEntry], expected: dict[str, set[str]] | None = None,
               service_cidrs: Iterable[str] = ()) -> StaleReport:
    """Every stale entry of ``tables``, the node's conntrack tables (streamed: a million-entry table is never held
    whole). An IPv6 connection in two of them (``conntrack -L`` of conntrack-tools >= 1.4.7 lists the IPv6 table
    too, beside ``conntrack -L -f ipv6``) is counted once.

    ``expected``: Service port name -> the endpoints the API has for it (from the cluster state); an entry to
    an endpoint the rules still have but the API does not is stale too (the rules are behind).

    A table given as a :class:`~kptrace.parsers.conntrack.ConntrackReader` has only the entries whose answer
    depends on more than where they were sent and where they went built (:meth:`_Check.decide`); the others are
    counted. What its reading found (a paste's prompts and elisions, lines skipped by a lenient reader, a count
    that does not add up) is in the report's notes."""
    report = StaleReport()
    check = _Check(dp, expected, service_cidrs)
    counts = {"other": 0, "closed": 0, "nodeport-unknown": 0, "elsewhere": 0, "service": 0}
    v6_seen: set[tuple] = set()  # the entries built here
    v6_counted: set[tuple] = set()  # the readers' (their own form)
    for entries in tables:
        only = getattr(entries, "only", None)
        if only is not None:
            entries = only(check.decide, {"tcp": _CLOSED}, v6_counted)
        for e in entries:
            if e.family == 6:
                ident = (e.protocol, e.orig_src, e.orig_dst, e.orig_sport, e.orig_dport, e.zone)
                if ident in v6_seen:
                    continue
                v6_seen.add(ident)
            bucket, stale = check.finding(e)
            counts[bucket] += 1
            if stale is not None:
                report.stale.append(stale)
        for bucket, n in getattr(entries, "counted", {}).items():
            counts[bucket] += n
        report.notes.extend(getattr(entries, "notes", ()))
        skipped = getattr(entries, "skipped", 0)
        if skipped:
            d = entries.diagnostics[0]  # type: ignore[attr-defined]  # a reader's: it counted them
            report.notes.append(f"{d.source}: {skipped} line{'s' * (skipped != 1)} skipped, not read as entries (--lenient); "
                                f"the first at line {d.line}, column {d.col}: {d.message}")
    report.entries = sum(counts.values())
    report.service_entries = counts["service"]
    closed, nodeports_unknown, elsewhere = counts["closed"], counts["nodeport-unknown"], counts["elsewhere"]
    if closed:
        report.notes.append(f"{closed} closed TCP connection{'s' * (closed != 1)} (TIME_WAIT, CLOSE) not checked: the next "
                            "connection from the same client port replaces its entry and is translated by the current rules")
    if nodeports_unknown:
        report.notes.append(f"{nodeports_unknown} DNATed entr{'ies' if nodeports_unknown != 1 else 'y'} to a NodePort's port on "
                            "an address kptrace cannot tell is the node's: not checked (give --node-ip)")
    if elsewhere:
        report.notes.append(f"{elsewhere} DNATed entr{'ies' if elsewhere != 1 else 'y'} to addresses that are no Service entry point "
                            "of this node's rules (hostPorts, a CNI's DNAT, or Services deleted"
                            + (")" if check.idx.service_cidrs else "; give --service-cidr to tell those apart)"))
    return report


def stale_findings(report: StaleReport, node: str) -> list:
    """Drift findings (kind ``stale-conntrack``) for a node's stale entries: one per Service, protocol and old
    endpoint, with the entries as evidence and the command that clears them."""
    from kptrace.checks.drift import Finding
    from kptrace.model.programmed import Evidence

    groups: dict[tuple, list[Stale]] = {}
    for s in report.stale:
        groups.setdefault((s.service or f"? ({s.dst})", s.entry.protocol, s.entry.family, s.endpoint), []).append(s)
    out = []
    for (service, proto, fam, endpoint), items in sorted(groups.items()):
        black = sum(x.blackholed for x in items)
        what = f"{black} blackholed" if black == len(items) else (f"{black} blackholed, " if black else "") + \
            f"{len(items) - black} old connection{'s' * (len(items) - black != 1)}"
        detail = (f"{len(items)} {proto.upper()} conntrack entr{'ies' if len(items) != 1 else 'y'} to {items[0].dst} still "
                  f"sent to {endpoint} ({what}): {items[0].reason}; clear with: {delete_command(items[0])}")
        evidence = tuple(Evidence(x.entry.location, f"{x.entry.orig_src}:{x.entry.orig_sport} -> {x.dst} -> {x.endpoint}"
                                  + (f" {x.entry.state}" if x.entry.state else "") + (" [UNREPLIED]" if x.entry.unreplied else ""))
                         for x in items[:3])
        out.append(Finding("stale-conntrack", node, service, proto, fam, detail, endpoint, f"{items[0].dst}", evidence))
    return out
