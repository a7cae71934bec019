"""A node's data plane as kptrace holds it: one ruleset per address family, and the node's addresses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kptrace.errors import Diagnostic
from kptrace.model.addr import parse_addr
from kptrace.model.rules import Ruleset

if TYPE_CHECKING:  # model/nft.py is imported only when an nft input is read (it is large)
    from kptrace.model.ipvs import IPSets, IPVSTable
    from kptrace.model.nft import NftRuleset

__all__ = ["Dataplane"]


@dataclass(slots=True)
class Dataplane:
    rulesets: dict[int, Ruleset]  # 4 -> iptables, 6 -> ip6tables
    node_ips: tuple[str, ...] = ()
    #: from a node bundle: ``ip -j route`` entries and interface -> ["addr/prefixlen", ...]; they decide
    #: the address MASQUERADE picks (the egress interface's). Empty: MASQUERADE stays a word.
    routes: tuple[dict, ...] = ()
    interfaces: dict[str, list[str]] = field(default_factory=dict)
    #: IPVS mode: the virtual services (an IPVSTable) and the ipsets (IPSets) of the node, when given.
    ipvs: IPVSTable | None = None
    ipsets: IPSets | None = None
    #: nftables: every nft table of the node (an NftRuleset: kube-proxy's, a CNI's, firewalld's), when given
    nft: NftRuleset | None = None
    #: Derived, per-process caches (compiled chains, tracers): never part of the value.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def ruleset(self, family: int) -> Ruleset | None:
        return self.rulesets.get(family)

    def node_ips_of(self, family: int) -> tuple[str, ...]:
        if not self.node_ips:
            return tuple(a for a in self.nft_node_ips if parse_addr(a)[0] == family)
        return tuple(a for a in self.node_ips if parse_addr(a)[0] == family)

    @property
    def nft_node_ips(self) -> tuple[str, ...]:
        """The node's addresses as kube-proxy's nftables tables list them (the ``nodeport-ips`` sets: the
        addresses NodePorts are accepted on): used when no node address was given."""
        if self.nft is None:
            return ()
        cached = self.cache.get("nft-node-ips")
        if cached is None:
            out = []
            for (family, name), t in self.nft.tables.items():
                s = t.sets.get("nodeport-ips") if name == "kube-proxy" and family in ("ip", "ip6") else None
                for key, _ in (s.elements if s is not None else ()):
                    if isinstance(key, str):
                        try:
                            parse_addr(key)
                        except ValueError:
                            continue
                        out.append(key)
            cached = self.cache["nft-node-ips"] = tuple(out)
        return cached

    @property
    def mode(self) -> str:
        """``ipvs`` when the input has IPVS virtual services or kube-proxy's IPVS-mode rules, else ``iptables``."""
        if self.ipvs is not None and len(self.ipvs):
            return "ipvs"
        if self.nft is not None and any(name == "kube-proxy" for _, name in self.nft.tables):
            return "nftables"
        for rs in self.rulesets.values():
            nat = rs.tables.get("nat")
            if nat is not None and any(n in nat.chains for n in ("KUBE-LOAD-BALANCER", "KUBE-NODE-PORT")) \
                    and not any(n.startswith("KUBE-SVC-") for n in nat.chains):
                return "ipvs"
        return "iptables"

    @property
    def diagnostics(self) -> list[Diagnostic]:
        out = [d for rs in self.rulesets.values() for d in rs.diagnostics]
        for extra in (self.ipvs, self.ipsets, self.nft):
            out.extend(getattr(extra, "diagnostics", ()) or ())
        return out

    @property
    def sources(self) -> list[str]:
        out = [s for rs in self.rulesets.values() for s in rs.sources]
        out.extend(x.source for x in (self.ipvs, self.ipsets) if x is not None)
        out.extend(self.nft.sources if self.nft is not None else ())
        return list(dict.fromkeys(out))

    @property
    def notes(self) -> list[str]:
        out = [n for rs in self.rulesets.values() for n in rs.notes]
        if not self.node_ips and self.nft_node_ips:
            out.append(f"the node's address{'es' if len(self.nft_node_ips) > 1 else ''} from kube-proxy's nodeport-ips set: "
                       f"{', '.join(self.nft_node_ips)} (give --node-ip to say otherwise)")
        for extra in (self.ipvs, self.ipsets, self.nft):
            out.extend(getattr(extra, "notes", ()) or ())
        return out
