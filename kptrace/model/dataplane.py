"""A node's data plane as kptrace holds it: one ruleset per address family, and the node's addresses."""

from __future__ import annotations

from dataclasses import dataclass, field

from kptrace.errors import Diagnostic
from kptrace.model.addr import parse_addr
from kptrace.model.rules import Ruleset

__all__ = ["Dataplane"]


@dataclass(slots=True)
class Dataplane:
    rulesets: dict[int, Ruleset]  # 4 -> iptables, 6 -> ip6tables
    node_ips: tuple[str, ...] = ()
    #: from a node bundle: ``ip -j route`` entries and interface -> ["addr/prefixlen", ...]; they decide
    #: the address MASQUERADE picks (the egress interface's). Empty: MASQUERADE stays a word.
    routes: tuple[dict, ...] = ()
    interfaces: dict[str, list[str]] = field(default_factory=dict)
    #: Derived, per-process caches (compiled chains, tracers): never part of the value.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def ruleset(self, family: int) -> Ruleset | None:
        return self.rulesets.get(family)

    def node_ips_of(self, family: int) -> tuple[str, ...]:
        return tuple(a for a in self.node_ips if parse_addr(a)[0] == family)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [d for rs in self.rulesets.values() for d in rs.diagnostics]

    @property
    def sources(self) -> list[str]:
        return [s for rs in self.rulesets.values() for s in rs.sources]

    @property
    def notes(self) -> list[str]:
        return [n for rs in self.rulesets.values() for n in rs.notes]
