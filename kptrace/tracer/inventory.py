"""What a dump holds, counted: tables, chains, rules, Service ports and endpoints (for ``kptrace parse``)."""

from __future__ import annotations

from kptrace.model.dataplane import Dataplane
from kptrace.model.kube import SERVICE_CHAIN_PREFIXES, chain_hash_of

__all__ = ["inventory"]


def inventory(dp: Dataplane) -> dict:
    families = []
    for fam, rs in sorted(dp.rulesets.items()):
        if not rs.tables and dp.ipvs is not None:
            continue  # IPVS input only: shown below
        tables = {name: {"chains": len(t.chains), "rules": sum(len(c) for c in t.chains.values())}
                  for name, t in rs.tables.items()}
        nat = rs.tables.get("nat")
        hashes: set[str] = set()
        endpoints = 0
        names: dict[str, str] = {}
        if nat is not None:
            for cname in nat.chains:
                if cname.startswith(SERVICE_CHAIN_PREFIXES):
                    hashes.add(chain_hash_of(cname))
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
