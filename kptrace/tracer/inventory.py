"""What a dump holds, counted: tables, chains, rules, Service ports and endpoints (for ``kptrace parse``)."""

from __future__ import annotations

from kptrace.model.dataplane import Dataplane
from kptrace.model.kube import SERVICE_CHAIN_PREFIXES, chain_hash_of

__all__ = ["inventory"]


def inventory(dp: Dataplane) -> dict:
    families = []
    for fam, rs in sorted(dp.rulesets.items()):
        if not rs.tables and (dp.ipvs is not None or dp.nft is not None):
            continue  # IPVS or nftables input only: shown below
        tables = {name: {"chains": len(t.chains), "rules": sum(len(c) for c in t.chains.values())}
                  for name, t in rs.tables.items()}
        nat = rs.tables.get("nat")
        hashes: set[str] = set()
        endpoints = 0
        names: dict[str, str] = {}
        if nat is not None:
            for cname in nat.chains:
                if (h := chain_hash_of(cname)) is not None and cname.startswith(SERVICE_CHAIN_PREFIXES):
                    hashes.add(h)
                elif cname.startswith("KUBE-SEP-"):
                    endpoints += 1
            ks = nat.chains.get("KUBE-SERVICES")
            for r in ks.rules if ks is not None else ():
                h = chain_hash_of(r.target.name) if r.target else None
                c = r.comment
                if h and c and h not in names:
                    names[h] = c.split(" ", 1)[0]
        rejects = 0
        filt = rs.tables.get("filter")
        for cname in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"):
            ch = filt.chains.get(cname) if filt else None
            rejects += sum(1 for raw in (ch.raw if ch else ()) if "has no endpoints" in raw.text)
        families.append({
            "family": fam,
            "sources": list(rs.sources),
            "tables": tables,
            "chains": rs.chain_count,
            "rules": rs.rule_count,
            "service_ports": len(hashes),
            "service_names": sorted(names.values()),
            "endpoint_chains": endpoints,
            "no_endpoint_rejects": rejects,
            "layout": _layout(rs),
        })
    out: dict = {"families": families, "mode": dp.mode}
    if dp.ipvs is not None:
        servers = [rs for _, rs in dp.ipvs.iter_real_servers()]
        out["ipvs"] = {"source": dp.ipvs.source, "variant": dp.ipvs.variant, "virtual_services": len(dp.ipvs),
                       "real_servers": len(servers), "weight_zero": sum(1 for r in servers if r.weight == 0),
                       "without_real_servers": sum(1 for vs in dp.ipvs if not vs.real_servers),
                       "schedulers": sorted({vs.scheduler for vs in dp.ipvs if vs.scheduler}), "truncated": dp.ipvs.truncated}
    if dp.nft is not None:
        out["nft"] = _nft_inventory(dp.nft)
        out["nft"]["hooks"] = _hooks(dp)
    if dp.ipsets is not None:
        out["ipsets"] = {"source": dp.ipsets.source, "sets": {s.name: {"type": s.type, "members": len(s.members),
                                                                       "truncated": s.truncated} for s in dp.ipsets}}
    return out


def _layout(rs) -> str:
    nat = rs.tables.get("nat")
    if nat is None:
        return "no nat table"
    names = nat.chains
    if any(n.startswith(("KUBE-EXT-", "KUBE-SVL-")) for n in names):
        return "kube-proxy iptables, current layout (KUBE-EXT/KUBE-SVL, ~1.24+)"
    if any(n.startswith("KUBE-SVC-") for n in names):
        return "kube-proxy iptables, older layout (masquerade rules in KUBE-SERVICES)"
    if "KUBE-SERVICES" in names:
        return "kube-proxy iptables (no Services with endpoints)"
    return "no kube-proxy chains"


def _nft_inventory(nft) -> dict:
    """Tables (chains, rules, sets, maps, elements), the base chains at each hook in the order the kernel runs
    them, and kube-proxy's Service ports and layout."""
    from kptrace.model.programmed_nft import read_nft

    tables = []
    for (family, name), t in nft.tables.items():
        sets = [x for x in t.sets.values() if not x.is_map]
        maps = [x for x in t.sets.values() if x.is_map]
        tables.append({"family": family, "name": name, "source": t.source, "chains": len(t.chains),
                       "base_chains": sum(1 for c in t.chains.values() if c.is_base),
                       "rules": sum(len(c) for c in t.chains.values()), "sets": len(sets), "maps": len(maps),
                       "elements": sum(len(x) for x in t.sets.values())})
    ports: dict = {}
    read_nft(nft, ports, {})
    kp = [t for (f, n), t in nft.tables.items() if n == "kube-proxy"]
    layout = None
    if kp:
        chains = {c for t in kp for c in t.chains}
        set_names = {x for t in kp for x in t.sets}
        if "mark-for-masquerade" in chains:
            layout = "kube-proxy nftables, classic layout (mark-for-masquerade chain, endpoint chains; 1.31-1.35)"
        elif "hairpin-connections" in set_names or any(c.startswith("service-") for c in chains):
            layout = "kube-proxy nftables, 1.36+ layout (inline masquerade mark, dnat maps, hairpin-connections set)"
        else:
            layout = "kube-proxy nftables (no Services with endpoints)"
    return {"sources": list(nft.sources), "tables": tables, "layout": layout,
            "service_ports": len(ports),
            "with_endpoints": sum(1 for p in ports.values() if p.cluster or p.local),
            "service_names": sorted({p.spn for p in ports.values() if p.spn})}


_HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


def _hooks(dp: Dataplane) -> dict[str, list[dict]]:
    """Per family and hook, the base chains the tracer runs, in the kernel's order: nft tables' and
    iptables-nft's (from an iptables-save given with the ruleset) together, as on the node."""
    from kptrace.tracer.defaults import tracer_for

    out: dict[str, list[dict]] = {}
    for fam in sorted(dp.rulesets):
        t = tracer_for(dp, fam)
        for hook in _HOOKS:
            rows = []
            for prio, _n, table, chain, _nat in t.hook_slots(hook):
                if " " in table and dp.nft is not None:  # an nft table: "ip kube-proxy"
                    family, name = table.split(" ", 1)
                    nft_chain = dp.nft.chain(family, name, chain)
                    policy = nft_chain.policy if nft_chain is not None else None
                else:
                    c = dp.rulesets[fam].chain(table, chain)
                    policy = c.policy if c is not None else None
                    table = f"{'ip' if fam == 4 else 'ip6'} {table} (iptables)"
                rows.append({"table": table, "chain": chain, "priority": prio, "policy": (policy or "accept").lower()})
            if rows:
                out[f"IPv{fam} {hook.lower()}"] = rows
    return out
