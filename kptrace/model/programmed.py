"""What a node's kube-proxy programmed for each Service port, as values: the entry points, the "no
endpoints" verdicts, the endpoints of the cluster- and local-policy chains with their shares, source
ranges, session affinity and traffic policy, each with the rule or map element that says so.

The readers fill them from either mode's rules (``checks/programmed.py`` for iptables,
``model/programmed_nft.py`` for kube-proxy's nftables table); drift compares them with the API and
``svc`` shows them, so both modes are compared and shown by one code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["ChainEndpoint", "Entry", "Evidence", "Programmed", "ProgrammedPort"]


# Evidence, Entry and ChainEndpoint are NamedTuples (as immutable as frozen dataclasses): a 10k-Service
# node makes ~200k of them, and frozen dataclasses' __init__ cost ~0.4 s of the check.


class Evidence(NamedTuple):
    location: str  # file:line
    text: str  # the rule as written

    def __str__(self) -> str:
        return f"{self.location}: {self.text}"


class Entry(NamedTuple):
    """A rule that catches a Service port's traffic: a nat jump to its chains, or a filter verdict."""

    kind: str  # ClusterIP | ExternalIP | LoadBalancerIP | ExternalIP/LoadBalancerIP | NodePort | HealthCheckNodePort
    address: str | None  # None for NodePorts (any local address)
    port: int
    protocol: str | None
    target: str  # the chain jumped to, or REJECT / DROP / ACCEPT
    comment: str
    evidence: Evidence


class ChainEndpoint(NamedTuple):
    address: str  # ip:port from the KUBE-SEP chain's DNAT, "?" when the chain is not in the input
    chain: str  # KUBE-SEP-...
    share: float | None  # of the new connections entering the SVC/SVL chain; None when not computable
    evidence: Evidence  # the SVC/SVL rule that jumps to it


@dataclass(slots=True)
class ProgrammedPort:
    family: int
    hash: str
    spn: str | None = None
    protocol: str | None = None
    chains: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)  # nat jumps into the Service's chains
    verdicts: list[Entry] = field(default_factory=list)  # filter REJECT / DROP / health-check ACCEPT
    cluster: list[ChainEndpoint] | None = None  # KUBE-SVC-…; None: no such chain
    local: list[ChainEndpoint] | None = None  # KUBE-SVL-… (or the old KUBE-XLB-…)
    source_ranges: list[tuple[str, Evidence]] = field(default_factory=list)
    affinity: tuple[int, Evidence] | None = None
    external_policy: tuple[str, Evidence] | None = None
    jumps: dict[str, set[str]] = field(default_factory=dict)  # EXT/FW/XLB chain -> the chains it jumps to
    notes: list[str] = field(default_factory=list)
    #: the cluster- and local-policy chains' names when they are not KUBE-SVC-/KUBE-SVL- + hash (nftables mode)
    cluster_chain: str | None = None
    local_chain: str | None = None

    @property
    def cluster_name(self) -> str:
        return self.cluster_chain or "KUBE-SVC-" + self.hash

    @property
    def local_name(self) -> str:
        return self.local_chain or "KUBE-SVL-" + self.hash

    @property
    def name(self) -> str:
        return self.spn or f"? (hash {self.hash})"

    def reachable(self) -> set[str]:
        """The Service's chains some entry rule leads to (directly or through EXT/FW). kube-proxy leaves
        chains of an earlier sync in place for a while in large clusters; those lead nowhere and are
        not what the node does."""
        seen: set[str] = set()
        todo = [x.target for x in self.entries]
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            todo.extend(self.jumps.get(c, ()))
        return seen

    def live(self) -> "ProgrammedPort":
        """This port with the SVC/SVL chains no entry rule reaches left out (noted)."""
        r = self.reachable()
        h = self.hash
        cluster = self.cluster if self.cluster_name in r else None
        local = self.local if ({self.local_name, "KUBE-XLB-" + h} & r) else None
        if cluster is self.cluster and local is self.local:
            return self
        from dataclasses import replace

        dead = [c for c, keep in ((self.cluster_name, cluster), (self.local_name, local)) if c in self.chains and keep is None]
        notes = self.notes + [f"{', '.join(dead)}: left from an earlier sync (no entry rule leads there); not compared"] if dead else self.notes
        return replace(self, cluster=cluster, local=local, notes=notes)


@dataclass(slots=True)
class Programmed:
    """Per family: the ports by hash, and the filter verdicts no comment names (matched by address later)."""

    ports: dict[tuple[int, str], ProgrammedPort]
    unnamed_verdicts: dict[int, list[Entry]]
