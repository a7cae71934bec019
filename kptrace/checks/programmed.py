"""What a node's kube-proxy actually programmed, per Service port, read from the rules model in one
pass: entry rules (KUBE-SERVICES, KUBE-NODEPORTS), the filter verdicts ("has no endpoints" REJECT,
"has no local endpoints" DROP, health-check ACCEPT), the endpoints of the KUBE-SVC/KUBE-SVL chains with
their real shares, source ranges, session affinity, and the traffic policies the chains implement.

Service ports are keyed by kube-proxy's chain-name hash, so dumps without comments work; comments
only supply names.

Rules are read at the token level rather than fully parsed: a 10k-Service node has ~320,000 rules in
these chains and full parsing costs ~25 us a rule (8 s), token reading ~2 us (benchmarks/run.py,
the "kptrace drift, 10k Services" row).
"""

from __future__ import annotations

import math

from kptrace.model.dataplane import Dataplane
from kptrace.model.kube import SERVICE_CHAIN_PREFIXES, chain_hash_of, entry_point_kind, service_chain_hash
from kptrace.model.programmed import ChainEndpoint, Entry, Evidence, Programmed, ProgrammedPort
from kptrace.model.rules import Chain, Ruleset
from kptrace.parsers.tokens import rule_tokens

__all__ = ["ChainEndpoint", "Entry", "Evidence", "Programmed", "ProgrammedPort", "programmed"]


def _fields(text: str) -> dict[str, str]:
    """Option -> value for one rule (``!`` kept as a prefix of the option name; flags map to "")."""
    toks = rule_tokens(text)
    out: dict[str, str] = {}
    neg = False
    i, n = 2, len(toks)
    while i < n:
        t = toks[i]
        if t == "!":
            neg = True
            i += 1
            continue
        if t.startswith("-"):
            value = ""
            if i + 1 < n and (not toks[i + 1].startswith("-") or toks[i + 1] == "-"):
                value = toks[i + 1]
                i += 1
            out[("!" + t) if neg else t] = value
            neg = False
        i += 1
    return out


def _port(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _spn(comment: str) -> str | None:
    first = comment.split(" ", 1)[0]
    return first if "/" in first else None


def _addr(value: str | None) -> str | None:
    if not value:
        return None
    a, _, plen = value.partition("/")
    return a if plen in ("", "32", "128") else value


def programmed(dp: Dataplane, *, only: set[str] | None = None, names: set[tuple[str, str]] | None = None) -> Programmed:
    """Every Service port the rules program (``only``: read the chains of just these hashes)."""
    ports: dict[tuple[int, str], ProgrammedPort] = {}
    unnamed: dict[int, list[Entry]] = {}
    for fam, rs in sorted(dp.rulesets.items()):
        _read_family(fam, rs, ports, unnamed.setdefault(fam, []), only)
    if dp.nft is not None:
        from kptrace.model.programmed_nft import read_nft

        read_nft(dp.nft, ports, unnamed, only if names is None else None, names)
    return Programmed(ports, unnamed)


def _port_for(ports, fam: int, h: str) -> ProgrammedPort:
    p = ports.get((fam, h))
    if p is None:
        p = ports[(fam, h)] = ProgrammedPort(fam, h)
    return p


def _read_family(fam: int, rs: Ruleset, ports: dict, unnamed: list[Entry], only: set[str] | None) -> None:
    nat = rs.tables.get("nat")
    nat_chains = nat.chains if nat is not None else {}
    for name in nat_chains:
        if (h := chain_hash_of(name)) is not None and name.startswith(SERVICE_CHAIN_PREFIXES):
            _port_for(ports, fam, h).chains.append(name)
    _read_entries(fam, nat_chains, ports)
    _read_verdicts(fam, rs, ports, unnamed)
    _read_service_chains(fam, nat_chains, ports, only)


def _read_entries(fam: int, nat_chains: dict, ports: dict) -> None:
    """Entry rules: jumps from KUBE-SERVICES / KUBE-NODEPORTS into a Service's chains."""
    for cname in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        chain = nat_chains.get(cname)
        if chain is None:
            continue
        for raw in chain.raw:
            f = _fields(raw.text)
            target = f.get("-j") or f.get("-g") or ""
            target_hash = chain_hash_of(target)
            if target_hash is None or not target.startswith(SERVICE_CHAIN_PREFIXES):
                continue
            port = _port(f.get("--dport"))
            if port is None:
                continue
            p = _port_for(ports, fam, target_hash)
            comment = f.get("--comment", "")
            proto = f.get("-p")
            p.spn = p.spn or _spn(comment)
            p.protocol = p.protocol or proto
            dst = _addr(f.get("-d"))
            kind = entry_point_kind(cname, target, comment, dst)
            if kind is None:
                continue  # the localhost-NodePort twin of the next rule
            if kind == "NodePort":
                dst = None
            p.entries.append(Entry(kind, dst, port, proto, target, comment, Evidence(f"{chain.source}:{raw.line}", raw.text)))


def _read_verdicts(fam: int, rs: Ruleset, ports: dict, unnamed: list[Entry]) -> None:
    """Filter verdicts: "has no endpoints" REJECT, "has no local endpoints" DROP, health-check ACCEPT."""
    filt = rs.tables.get("filter")
    for cname in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"):
        chain = filt.chains.get(cname) if filt is not None else None
        if chain is None:
            continue
        for raw in chain.raw:
            f = _fields(raw.text)
            verdict = f.get("-j", "")
            port = _port(f.get("--dport"))
            if verdict not in ("REJECT", "DROP", "ACCEPT") or port is None:
                continue
            comment = f.get("--comment", "")
            proto = f.get("-p")
            dst = _addr(f.get("-d"))
            if cname == "KUBE-NODEPORTS":
                if verdict != "ACCEPT":
                    continue
                kind = "HealthCheckNodePort"
            elif f.get("--dst-type") == "LOCAL" and dst is None:
                kind = "NodePort"
            else:
                kind = "ExternalIP/LoadBalancerIP"
            e = Entry(kind, dst, port, proto, verdict, comment, Evidence(f"{chain.source}:{raw.line}", raw.text))
            spn = _spn(comment)
            if spn and kind != "HealthCheckNodePort":  # kube-proxy writes those -p tcp even for a UDP port
                p = _port_for(ports, fam, service_chain_hash(spn, proto or "tcp"))
                p.spn = p.spn or spn
                p.protocol = p.protocol or proto
                p.verdicts.append(e)
            else:
                unnamed.append(e)


def _read_service_chains(fam: int, nat_chains: dict, ports: dict, only: set[str] | None) -> None:
    """Each Service port's own chains: endpoints (cluster and local), jumps, source ranges, external policy."""
    for (f_, h), p in ports.items():
        if f_ != fam or not p.chains or (only is not None and h not in only):
            continue
        svc = nat_chains.get("KUBE-SVC-" + h)
        svl = nat_chains.get("KUBE-SVL-" + h) or nat_chains.get("KUBE-XLB-" + h)
        if svc is not None:
            p.cluster = _chain_endpoints(svc, nat_chains, p)
        if svl is not None:
            p.local = _chain_endpoints(svl, nat_chains, p)
        for prefix in ("KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-"):
            ch = nat_chains.get(prefix + h)
            if ch is not None:
                p.jumps[ch.name] = {t for _, text in ch.texts() for t in [_target_of(text)] if t}
        fw = nat_chains.get("KUBE-FW-" + h)
        fw_source = fw.source if fw is not None else ""
        for raw in fw.raw if fw is not None else ():
            f = _fields(raw.text)
            target = f.get("-j") or f.get("-g") or ""
            if "-s" in f and chain_hash_of(target) == h:
                p.source_ranges.append((f["-s"], Evidence(f"{fw_source}:{raw.line}", raw.text)))
        p.external_policy = _external_policy(nat_chains, h)


_CONDITIONS = frozenset(("-s", "-d", "-i", "-o", "--dport", "--sport", "--every", "--mark", "--src-type", "--dst-type"))


def _target_of(text: str) -> str | None:
    toks = rule_tokens(text)
    return _value(toks, "-j") or _value(toks, "-g")


def _value(toks: list[str], name: str) -> str | None:
    try:
        return toks[toks.index(name) + 1]
    except (ValueError, IndexError):
        return None


def _outside_quotes(text: str) -> str | None:
    """The rule without its one quoted comment (kube-proxy's usual shape), or None when it is not that simple."""
    q = text.count('"')
    if q == 0:
        return text
    if q != 2 or "\\" in text:
        return None
    head, _, rest = text.partition('"')
    return head + rest.partition('"')[2]





def _chain_endpoints(chain: Chain, nat_chains: dict, p: ProgrammedPort) -> list[ChainEndpoint]:
    """The endpoints a SVC/SVL chain sends new connections to, with each one's share: rule i's
    ``--probability`` applies to what the rules before it left (the kernel's quantised value).

    Shares are floats: the check compares them with 1/n to 1e-6, and Fractions cost 5 s on a 10k-Service
    node (the tracer keeps exact Fractions). Rules are read from their text outside the quoted comment
    (kube-proxy's shape), by tokens otherwise: 100k endpoint rules, ~1 s saved."""
    out: list[ChainEndpoint] = []
    remaining: float | None = 1.0
    for line, text in chain.texts():
        bare = _outside_quotes(text)
        toks = bare.split() if bare is not None else None
        if toks is not None and len(toks) > 3 and toks[-2] in ("-j", "-g"):  # a jump with no target options
            target = toks[-1]
            affinity = "--rcheck" in toks or "--update" in toks
            conditional = not _CONDITIONS.isdisjoint(toks)
            prob = _value(toks, "--probability") if "--probability" in toks else None
            seconds = _value(toks, "--seconds") if affinity else None
        else:
            toks = rule_tokens(text)
            target = _value(toks, "-j") or _value(toks, "-g") or ""
            affinity = "--rcheck" in toks or "--update" in toks
            conditional = not _CONDITIONS.isdisjoint(toks)
            prob = _value(toks, "--probability")
            seconds = _value(toks, "--seconds")
        if not target.startswith("KUBE-SEP-"):
            if target in ("KUBE-MARK-DROP", "DROP", "REJECT") and not conditional:
                remaining = 0.0  # the old KUBE-XLB "no local endpoints" drop: nothing continues
            continue
        ev = Evidence(f"{chain.source}:{line}", text)
        if affinity:
            # session affinity: only clients seen before take this rule
            if p.affinity is None:
                p.affinity = (int(seconds or 0), ev)
            continue
        share: float | None
        if remaining is None or conditional:
            share, remaining = None, None
            if conditional:
                p.notes.append(f"{chain.name}: the rule to {target} has conditions; shares not computed ({ev.location})")
        elif prob is not None:
            share = remaining * (math.floor(float(prob) * 2147483648.0 + 0.5) / 2147483648.0)  # kernel_probability
            remaining -= share
        else:
            share, remaining = remaining, 0.0
        out.append(ChainEndpoint(_dnat_of(nat_chains.get(target), p), target, share, ev))
    return out


def _dnat_of(sep: Chain | None, p: ProgrammedPort) -> str:
    if sep is None:
        return "?"
    dest = "?"
    lines, indices = sep.loaded_lines()
    for i in indices:  # the rule lines as loaded, without building RawRules (100k endpoint chains)
        text = lines[i]
        if " -j DNAT" not in text:
            continue
        # the DNAT rule's options follow its comment: the last --to-destination is the option
        at = text.rfind(" --to-destination ")
        if at < 0:
            continue
        dest = text[at + 18:].split(None, 1)[0]
        if " --set" in text and p.affinity is None:
            if text.startswith("["):
                text = text[text.index("]") + 1:].lstrip()
            p.affinity = (0, Evidence(f"{sep.source}:{i + 1}", text.rstrip("\r")))
    return dest


def _external_policy(nat_chains: dict, h: str) -> tuple[str, Evidence] | None:
    xlb = nat_chains.get("KUBE-XLB-" + h)
    if xlb is not None:
        return ("Local", Evidence(f"{xlb.source}:{xlb.line}", f"chain {xlb.name}"))
    ext = nat_chains.get("KUBE-EXT-" + h)
    if ext is None:
        return None
    for raw in ext.raw:
        f = _fields(raw.text)
        target = f.get("-j") or f.get("-g") or ""
        ev = Evidence(f"{ext.source}:{raw.line}", raw.text)
        if target.startswith("KUBE-SVL-") or f.get("--src-type") == "LOCAL" or ("-s" in f and target.startswith("KUBE-SVC-")):
            return ("Local", ev)
        if target == "KUBE-MARK-MASQ" and not any(k in f for k in ("-s", "!-s", "--src-type")):
            return ("Cluster", ev)
    return None
