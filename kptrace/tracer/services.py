"""Everything one node's rules say about a Service: entry points, endpoints and their real shares,
masquerading and why, traffic policy, session affinity, and what looks wrong.

Services are found by kube-proxy's chain-name hash (``KUBE-SVC-`` + hash of ``ns/name:port`` +
protocol), so dumps without comments work; comments, when present, supply the port names.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from kptrace.errors import InputError, NotFoundError, UsageError
from kptrace.model.addr import is_uint, parse_endpoint
from kptrace.model.dataplane import Dataplane
from kptrace.model.kube import SERVICE_CHAIN_PREFIXES, chain_hash_of, entry_point_kind, service_chain_hash
from kptrace.model.rules import Chain, Rule, Ruleset
from kptrace.tracer.packet import Origin
from kptrace.tracer.service_view import Endpoint, EntryPoint, EntryTrace, ServiceView, trace_entries, traced_shares

# The values every mode's view is made of, and the entry-point tracing the modes share, live in service_view.
__all__ = ["all_service_views", "find_services", "service_views"]

_PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True)
class _Key:
    hash: str
    family: int
    spn: str | None
    protocol: str | None


# ------------------------------------------------------------------ finding

def _rule_at(chain: Chain, index: int) -> Rule:
    return chain.rule_at(index)


def _spn_from_comment(comment: str | None) -> str | None:
    if not comment:
        return None
    first = comment.split(" ", 1)[0]
    return first if "/" in first else None


def _comment_spns(rs: Ruleset, ns_name: str) -> set[str]:
    found = set()
    needles = (f'"{ns_name}:', f'"{ns_name} ', f" {ns_name}:", f'"{ns_name}"')
    for tname, cname in (("nat", "KUBE-SERVICES"), ("nat", "KUBE-NODEPORTS"), ("filter", "KUBE-SERVICES"),
                         ("filter", "KUBE-EXTERNAL-SERVICES")):
        chain = rs.chain(tname, cname)
        if chain is None:
            continue
        for i, raw in enumerate(chain.raw):
            if ns_name in raw.text and any(n in raw.text for n in needles):
                spn = _spn_from_comment(_rule_at(chain, i).comment)
                if spn and (spn == ns_name or spn.startswith(ns_name + ":")):
                    found.add(spn)
    if not found:
        # A partial input (one pasted chain): the Service's own chains' comments name it.
        nat = rs.tables.get("nat")
        for name, chain in (nat.chains.items() if nat is not None else ()):
            if not name.startswith(SERVICE_CHAIN_PREFIXES):
                continue
            for i, raw in enumerate(chain.raw):
                if ns_name in raw.text and any(n in raw.text for n in needles):
                    spn = _spn_from_comment(_rule_at(chain, i).comment)
                    if spn and (spn == ns_name or spn.startswith(ns_name + ":")):
                        found.add(spn)
    return found


def _hash_chains(rs: Ruleset, h: str) -> list[str]:
    nat = rs.tables.get("nat")
    if nat is None:
        return []
    return [p + h for p in SERVICE_CHAIN_PREFIXES if p + h in nat.chains]


def find_services(dp: Dataplane, query: str) -> list[_Key]:
    """Service ports matching ``ns/name[:port]``, ``IP[:port]``, or a KUBE-SVC/SVL/EXT/FW/XLB/SEP chain name."""
    keys: list[_Key] = []
    query = query.strip()
    if query.startswith("KUBE-"):
        h = chain_hash_of(query)
        if h is None:
            raise InputError(f"{query} is not a kube-proxy Service or endpoint chain",
                             hint="give KUBE-SVC-…, KUBE-SVL-…, KUBE-EXT-…, KUBE-FW-…, KUBE-XLB-… or KUBE-SEP-…")
        for fam, rs in dp.rulesets.items():
            if query.startswith("KUBE-SEP-"):
                h2 = _service_hash_of_sep(rs, query)
                if h2:
                    keys.append(_Key(h2, fam, None, None))
            elif _hash_chains(rs, h):
                keys.append(_Key(h, fam, None, None))
        return _name_keys(dp, keys)
    if "/" in query and not _looks_like_address(query):
        ns_name, _, port = query.partition(":")
        if ns_name.count("/") != 1:
            raise InputError(f"{query!r} is not NAMESPACE/NAME[:PORT]")
        for fam, rs in dp.rulesets.items():
            spns = {f"{ns_name}:{port}"} if port else {ns_name, f"{ns_name}:"}
            spns |= _comment_spns(rs, ns_name) if not port else set()
            if port and is_uint(port):
                spns |= {s for s in _comment_spns(rs, ns_name)}
            seen = set()
            for spn in sorted(spns):
                for proto in _PROTOS:
                    h = service_chain_hash(spn, proto)
                    if _hash_chains(rs, h) and h not in seen:
                        seen.add(h)
                        keys.append(_Key(h, fam, spn, proto))
            # Services with no endpoints have no nat chains: only filter rules with comments name them.
            for spn in sorted(spns - {k.spn for k in keys}):
                if _filter_rules_for(rs, spn, ()):
                    keys.append(_Key(service_chain_hash(spn, "tcp"), fam, spn, None))
        if port and is_uint(port):
            # ns/name:80 -- a port number: keep the ports that have that number.
            keys = [k for k in keys if k.spn == f"{ns_name}:{port}" or _has_port(dp, k, int(port))]
        return keys
    # An address, with or without port.
    try:
        fam, addr, dport = parse_endpoint(query)
    except ValueError:
        raise UsageError(f"{query!r} is not a Service name, address or chain",
                         hint="give NAMESPACE/NAME[:PORT], a ClusterIP[:PORT], or a KUBE-SVC-… chain") from None
    ruleset = dp.ruleset(fam)
    if ruleset is None:
        return []
    from kptrace.model.addr import format_addr

    text = format_addr(fam, addr)
    for tname, cname in (("nat", "KUBE-SERVICES"),):
        chain = ruleset.chain(tname, cname)
        if chain is None:
            continue
        for i, raw in enumerate(chain.raw):
            if f"-d {text}/" not in raw.text and f"-d {text} " not in raw.text:
                continue
            r = _rule_at(chain, i)
            if dport is not None and _dport(r) not in (None, dport):
                continue
            tgt = r.target.name if r.target else ""
            h = chain_hash_of(tgt)
            if h and all(k.hash != h for k in keys):
                keys.append(_Key(h, fam, _spn_from_comment(r.comment), _proto(r)))
    for tname, cname in (("filter", "KUBE-SERVICES"), ("filter", "KUBE-EXTERNAL-SERVICES")):
        chain = ruleset.chain(tname, cname)
        if chain is None:
            continue
        for i, raw in enumerate(chain.raw):
            if f"-d {text}/" in raw.text or f"-d {text} " in raw.text:
                r = _rule_at(chain, i)
                if dport is not None and _dport(r) not in (None, dport):
                    continue
                named = _spn_from_comment(r.comment)
                if named and all(k.spn != named for k in keys):
                    keys.append(_Key(service_chain_hash(named, _proto(r) or "tcp"), fam, named, _proto(r)))
    return _name_keys(dp, keys)


def _looks_like_address(q: str) -> bool:
    try:
        parse_endpoint(q)
        return True
    except ValueError:
        return False


def _service_hash_of_sep(rs: Ruleset, sep: str) -> str | None:
    nat = rs.tables.get("nat")
    if nat is None:
        return None
    for name, chain in nat.chains.items():
        if name.startswith(("KUBE-SVC-", "KUBE-SVL-")) and any(sep in r.text for r in chain.raw):
            return chain_hash_of(name)
    return None


def _name_keys(dp: Dataplane, keys: list[_Key]) -> list[_Key]:
    """Fill in spn and protocol from comments where the query did not give them."""
    out = []
    for k in keys:
        spn, proto = k.spn, k.protocol
        rs = dp.rulesets[k.family]
        if spn is None or proto is None:
            for ep in _entry_rules(rs, k.hash):
                spn = spn or _spn_from_comment(ep.comment)
                proto = proto or _proto(ep)
        if spn is not None and proto is None:
            proto = next((p for p in _PROTOS if service_chain_hash(spn, p) == k.hash), None)
        if spn is not None and proto is not None and service_chain_hash(spn, proto) != k.hash:
            spn = None  # a comment that does not hash to the chain: do not trust it
        out.append(_Key(k.hash, k.family, spn, proto))
    return out


def _has_port(dp: Dataplane, k: _Key, port: int) -> bool:
    return any(_dport(r) == port for r in _entry_rules(dp.rulesets[k.family], k.hash))


def _dport(r: Rule) -> int | None:
    for m in r.matches:
        o = m.get("--dport")
        if o is not None and is_uint(o.value):
            return int(o.value)
    return None


def _proto(r: Rule) -> str | None:
    o = r.base_option("-p")
    return o.value.lower() if o is not None and not o.negated else None


def _entry_rules(rs: Ruleset, h: str) -> list[Rule]:
    """Rules in nat KUBE-SERVICES / KUBE-NODEPORTS that jump to one of the Service's chains."""
    out = []
    for cname in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        chain = rs.chain("nat", cname)
        if chain is None:
            continue
        for i, raw in enumerate(chain.raw):
            if h in raw.text:
                r = _rule_at(chain, i)
                if r.target is not None and chain_hash_of(r.target.name) == h:
                    out.append(r)
    return out


def _filter_rules_for(rs: Ruleset, spn: str | None, addresses: tuple[str, ...]) -> list[Rule]:
    out = []
    for cname in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
        chain = rs.chain("filter", cname)
        if chain is None:
            continue
        for i, raw in enumerate(chain.raw):
            t = raw.text
            if (spn and (f'"{spn} ' in t or f" {spn} " in t)) or any(f"-d {a}/" in t or f"-d {a} " in t for a in addresses):
                r = _rule_at(chain, i)
                if spn and _spn_from_comment(r.comment) not in (spn, None):
                    continue
                out.append(r)
    return out


# ------------------------------------------------------------------ describing

def _classify(r: Rule, proto: str) -> EntryPoint | None:
    tgt = r.target.name if r.target else ""
    dst = r.base_option("-d")
    addr = dst.value.split("/")[0] if dst is not None and not dst.negated else None
    port = _dport(r)
    if port is None:
        return None
    kind = entry_point_kind(r.chain, tgt, r.comment, addr)
    if kind is None:
        return None  # the localhost-NodePort twin of the rule below it
    return EntryPoint(kind, None if kind == "NodePort" else addr, port, proto, tgt, r.location, r.text)


def _endpoints_of(rs: Ruleset, chain_name: str) -> list[tuple[str, str]]:
    """(KUBE-SEP chain, ip:port) for each endpoint a SVC/SVL chain lists, in order."""
    chain = rs.chain("nat", chain_name)
    out: list[tuple[str, str]] = []
    if chain is None:
        return out
    for r in chain.rules:
        if r.target is None or not r.target.name.startswith("KUBE-SEP-"):
            continue
        if any(sep == r.target.name for sep, _ in out):
            continue
        sep = rs.chain("nat", r.target.name)
        dest = f"? ({r.target.name})"
        if sep is not None:
            for sr in sep.rules:
                if sr.target is not None and sr.target.name == "DNAT":
                    o = sr.target.get("--to-destination")
                    dest = o.value if o else dest
        elif r.comment and " -> " in r.comment:  # the endpoint chain is not in the input: kube-proxy's comment names it
            dest = r.comment.rsplit(" -> ", 1)[1].strip()
        out.append((r.target.name, dest))
    return out


def _unconditional(r: Rule) -> bool:
    if any(o.name in ("-s", "-d", "-i", "-o") for o in r.base):
        return False
    return all(m.module in ("comment", "nfacct") or (m.module in ("tcp", "udp", "sctp") and not m.options) for m in r.matches)


def _shadowed(rs: Ruleset, chains: list[str]) -> list[str]:
    warnings = []
    for cname in chains:
        chain = rs.chain("nat", cname)
        if chain is None:
            continue
        rules = chain.rules
        for i, r in enumerate(rules):
            if r.target is None or r.target.name in ("KUBE-MARK-MASQ", "RETURN", "MARK", "LOG"):
                continue
            if _unconditional(r) and i + 1 < len(rules):
                later = rules[i + 1:]
                warnings.append(f"{cname} rule {r.number} ({r.location}) catches every packet: "
                                f"{len(later)} later rule{'s' if len(later) > 1 else ''} (from rule {later[0].number}) can never match")
                break
    return warnings


def _affinity(rs: Ruleset, chain_name: str) -> int | None:
    chain = rs.chain("nat", chain_name)
    if chain is None:
        return None
    for raw in chain.raw:
        if "--rcheck" in raw.text or "--update" in raw.text:
            if "--seconds " in raw.text:
                return int(raw.text.split("--seconds ", 1)[1].split()[0])
            return 0
    return None


def _external_policy(rs: Ruleset, h: str) -> str | None:
    ext = rs.chain("nat", "KUBE-EXT-" + h)
    if rs.chain("nat", "KUBE-XLB-" + h) is not None:
        return "Local"
    if ext is None:
        return None
    for raw in ext.raw:
        if "KUBE-SVL-" in raw.text or "--src-type LOCAL" in raw.text or ("-s " in raw.text and "-j KUBE-SVC-" in raw.text):
            return "Local"
    return "Cluster"


def service_views(dp: Dataplane, query: str, *, origins: tuple[Origin, ...] | None = None) -> list[ServiceView]:
    from kptrace.tracer.services_nft import nft_service_views

    keys = find_services(dp, query) if not _is_nft_chain(query) else []
    nft = nft_service_views(dp, query, origins=origins)
    if not keys and not nft:
        hint = "check the name (kptrace parse FILE lists the Services it finds)"
        if "/" in query and ":" not in query:
            hint = (f"if the dump has no comments and the Service's port is named, give the port name "
                    f"({query}:PORTNAME): chains are found by kube-proxy's hash of NAMESPACE/NAME:PORT")
        raise NotFoundError(f"no rules for {query} in {', '.join(dp.sources)}", hint=hint)
    return [_view(dp, k, origins) for k in keys] + nft


def _is_nft_chain(query: str) -> bool:
    return query.strip().startswith(("service-", "local-", "external-", "endpoint-", "firewall-"))


def _view(dp: Dataplane, k: _Key, origins: tuple[Origin, ...] | None) -> ServiceView:
    rs = dp.rulesets[k.family]
    h = k.hash
    chains = _hash_chains(rs, h)
    proto = k.protocol or "tcp"
    warnings: list[str] = []
    notes: list[str] = []
    entries = _entry_points(rs, k, proto, warnings)
    svc_chain = "KUBE-SVC-" + h
    svl_chain = "KUBE-SVL-" + h
    listed = _endpoints_of(rs, svc_chain)
    local = _endpoints_of(rs, svl_chain)
    _chain_warnings(rs, chains, listed, local, warnings)
    # Trace each entry point from each origin that reaches it.
    source_ranges = _source_ranges(rs, h)
    traces = trace_entries(dp, k.family, entries, proto, source_ranges, origins, warnings, notes)
    endpoints = _endpoints(rs, svc_chain, entries, listed, local, traces, warnings, notes)
    name = k.spn if k.spn is not None else f"? (hash {h}; the input has no comment naming it)"
    internal = "Local" if any(e.via.startswith("KUBE-SVL-") for e in entries if e.kind == "ClusterIP") or any(
        "no local endpoints" in w and w.startswith("ClusterIP") for w in warnings) else "Cluster"
    return ServiceView(
        name=name, protocol=proto, hash=h, family=k.family, chains=tuple(chains), entry_points=tuple(entries),
        endpoints=endpoints, source_ranges=tuple(source_ranges), internal_policy=internal,
        external_policy=_external_policy(rs, h) if any(e.kind not in ("ClusterIP", "HealthCheckNodePort") for e in entries) else None,
        affinity_timeout=_affinity(rs, svc_chain) if rs.chain("nat", svc_chain) else _affinity(rs, svl_chain),
        traces=tuple(traces), warnings=tuple(dict.fromkeys(warnings)), notes=tuple(notes),
    )


def _entry_points(rs: Ruleset, k: _Key, proto: str, warnings: list[str]) -> list[EntryPoint]:
    """The nat rules that lead to the Service's chains, then the filter verdicts (health checks, REJECT/DROP)
    for entry points the nat rules do not already lead somewhere."""
    entries: list[EntryPoint] = []
    seen = set()
    for r in _entry_rules(rs, k.hash):
        e = _classify(r, proto)
        if e is not None and (e.kind, e.address, e.port) not in seen:
            seen.add((e.kind, e.address, e.port))
            entries.append(e)
    addresses = tuple(e.address for e in entries if e.address)
    for r in _filter_rules_for(rs, k.spn, addresses):
        verdict = r.target.name if r.target else ""
        comment = r.comment or ""
        port = _dport(r)
        if r.chain == "KUBE-NODEPORTS" and verdict == "ACCEPT" and port is not None:
            e = EntryPoint("HealthCheckNodePort", None, port, proto, "ACCEPT", r.location, r.text)
        elif verdict in ("REJECT", "DROP") and port is not None:
            dst = r.base_option("-d")
            addr = dst.value.split("/")[0] if dst is not None else None
            if r.chain == "KUBE-PROXY-FIREWALL":
                continue  # the source-range firewall: reported with the source ranges
            kind = "ClusterIP" if r.chain == "KUBE-SERVICES" else ("NodePort" if addr is None else
                                                                   next((e.kind for e in entries if e.address == addr), "ExternalIP/LoadBalancerIP"))
            e = EntryPoint(kind, addr, port, proto, verdict, r.location, r.text)
            if "no local endpoints" in comment:
                warnings.append(f"{kind} {addr or '*'}:{port}: {verdict} — the Service has no local endpoints on this node ({r.location})")
            elif "no endpoints" in comment or verdict == "REJECT":
                warnings.append(f"{kind} {addr or '*'}:{port}: {verdict} — the Service has no endpoints ({r.location})")
        else:
            continue
        if (e.kind, e.address, e.port) not in seen:  # an entry the nat rules already lead somewhere is traced once
            seen.add((e.kind, e.address, e.port))
            entries.append(e)
    return entries


def _chain_warnings(rs: Ruleset, chains: list[str], listed: list[tuple[str, str]], local: list[tuple[str, str]],
                    warnings: list[str]) -> None:
    """Endpoints listed twice, jumps to chains the input lacks, and rules no packet reaches."""
    dupes: dict[str, list[str]] = {}
    for sep, dest in listed + [x for x in local if x not in listed]:
        dupes.setdefault(dest, []).append(sep)
    for dest, seps in dupes.items():
        if len(seps) > 1:
            warnings.append(f"endpoint {dest} is listed {len(seps)} times ({', '.join(seps)}): it gets {len(seps)} shares")
    for cname in chains:
        chain = rs.chain("nat", cname)
        for r in chain.rules if chain else ():
            t = r.target.name if r.target else ""
            if t.startswith("KUBE-") and rs.chain("nat", t) is None and t not in ("KUBE-MARK-MASQ", "KUBE-MARK-DROP"):
                warnings.append(f"{cname} rule {r.number} ({r.location}) jumps to {t}, which is not in this input")
    warnings.extend(_shadowed(rs, chains))


def _endpoints(rs: Ruleset, svc_chain: str, entries: list[EntryPoint], listed: list[tuple[str, str]],
               local: list[tuple[str, str]], traces: list[EntryTrace], warnings: list[str], notes: list[str]) -> tuple[Endpoint, ...]:
    """The endpoints with their effective shares: traced from a pod to the ClusterIP, else the Service chain's own."""
    ref, shares = traced_shares(traces, warnings)
    have_shares = ref is not None
    if ref is None and listed and not any(e.kind == "ClusterIP" for e in entries):
        # Only the Service's chain is in the input (a pasted listing): the shares its own rules give.
        shares = _chain_shares(rs, svc_chain)
        if shares:
            have_shares = True
            notes.append(f"the input has {svc_chain} but no rule that leads to it (KUBE-SERVICES is not in it): the shares "
                         f"are the chain's own")
        missing = [sep for sep, d in listed if rs.chain("nat", sep) is None]
        if missing:
            named = all(not d.startswith("?") for _, d in listed)
            others = len(missing) - 1
            notes.append(f"a connection continues in {missing[0]}" + (f" (or {others} other endpoint chain{'s' * (others > 1)})" if others else "")
                         + ", which is not in this input: "
                         + ("the endpoints' addresses come from the rules' comments" if named else
                            "the endpoints' addresses are not in it (paste those chains too)"))
    local_dests = {d for _, d in local}
    endpoints = tuple(Endpoint(d, sep, shares.get(d) if have_shares else None, d in local_dests) for sep, d in listed)
    endpoints += tuple(Endpoint(d, sep, None, True) for sep, d in local if all(d != x for _, x in listed))
    return endpoints


def _chain_shares(rs: Ruleset, chain_name: str) -> dict[str, Fraction]:
    """Each endpoint's share of new connections from one SVC/SVL chain's own rules (exact, as the kernel
    quantises ``--probability``); affinity rules (clients seen before) are left out."""
    from kptrace.tracer.matchers import kernel_probability

    chain = rs.chain("nat", chain_name)
    out: dict[str, Fraction] = {}
    remaining = Fraction(1)
    listed = dict((sep, d) for sep, d in _endpoints_of(rs, chain_name))
    for r in chain.rules if chain else ():
        if r.target is None or not r.target.name.startswith("KUBE-SEP-"):
            continue
        rec = r.match("recent")
        if rec is not None and (rec.get("--rcheck") is not None or rec.get("--update") is not None):
            continue
        stat = r.match("statistic")
        p = Fraction(1)
        if stat is not None and (probability := stat.get("--probability")) is not None:
            p = kernel_probability(probability.value)
        share = remaining * p
        remaining -= share
        dest = listed.get(r.target.name, "?")
        out[dest] = out.get(dest, Fraction(0)) + share
    return out


def _source_ranges(rs: Ruleset, h: str) -> list[str]:
    fw = rs.chain("nat", "KUBE-FW-" + h)
    out = []
    for r in fw.rules if fw else ():
        s = r.base_option("-s")
        if s is not None and not s.negated and r.target is not None and chain_hash_of(r.target.name) == h:
            out.append(s.value)
    return out


def all_service_views(dp: Dataplane) -> list[ServiceView]:
    """A view of every Service port the dump has rules for (nat Service chains, and filter REJECT/DROP
    rules of Services without endpoints)."""
    keys: list[_Key] = []
    seen: set[tuple[int, str]] = set()
    for fam, rs in sorted(dp.rulesets.items()):
        nat = rs.tables.get("nat")
        for name in (nat.chains if nat else {}):
            h = chain_hash_of(name) if name.startswith(SERVICE_CHAIN_PREFIXES) else None
            if h and (fam, h) not in seen:
                seen.add((fam, h))
                keys.append(_Key(h, fam, None, None))
        for cname in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"):
            chain = rs.chain("filter", cname)
            if chain is None:
                continue
            for i, raw in enumerate(chain.raw):
                if "has no endpoints" not in raw.text:
                    continue
                r = chain.rule_at(i)
                spn = _spn_from_comment(r.comment)
                proto = _proto(r) or "tcp"
                if spn:
                    h = service_chain_hash(spn, proto)
                    if (fam, h) not in seen:
                        seen.add((fam, h))
                        keys.append(_Key(h, fam, spn, proto))
    from kptrace.tracer.services_nft import nft_service_views

    return [_view(dp, k, None) for k in _name_keys(dp, keys)] + nft_service_views(dp, None)
