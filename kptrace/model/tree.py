"""What a ruleset of tables of chains of rules answers the same way in iptables and nftables mode."""

from __future__ import annotations

from typing import Any, Generic, Iterator, Mapping, TypeVar

__all__ = ["TableTree"]

R = TypeVar("R")


class TableTree(Generic[R]):
    """A ruleset's rules in order and its counts, for :class:`~kptrace.model.rules.Ruleset` (rules of type
    ``Rule``) and :class:`~kptrace.model.nft.objects.NftRuleset` (``NftRule``): each has ``tables``, whose
    ``chains`` hold the rules."""

    __slots__ = ()
    tables: Mapping[Any, Any]

    def iter_rules(self) -> Iterator[R]:
        for t in self.tables.values():
            for c in t.chains.values():
                yield from c.rules

    @property
    def rule_count(self) -> int:
        return sum(len(c) for t in self.tables.values() for c in t.chains.values())

    @property
    def chain_count(self) -> int:
        return sum(len(t.chains) for t in self.tables.values())
