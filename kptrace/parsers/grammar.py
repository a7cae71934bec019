"""Load the grammar data in ``grammars/`` (shipped inside the wheel as ``kptrace/grammars``)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Grammar", "ModuleGrammar", "grammar_path", "iptables_grammar", "names_table"]


def grammar_path(name: str) -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "grammars" / name, here.parent / "grammars" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"grammar data {name} not found (looked in {here / 'grammars'} and {here.parent / 'grammars'})")


@dataclass(frozen=True, slots=True)
class ModuleGrammar:
    name: str
    options: dict[str, int | str]  # canonical option -> arity (0, 1, 2, "rest")
    aliases: dict[str, str]
    implicit: bool = False
    #: every spelling -> canonical name: one dict lookup per token on the parser's hot path
    canon: dict[str, str] = None  # type: ignore[assignment]
    #: canonical option -> value type (kptrace/parsers/values.py), checked when rules are validated
    types: dict[str, str] = None  # type: ignore[assignment]

    def canonical(self, option: str) -> str | None:
        return self.canon.get(option)


@dataclass(frozen=True, slots=True)
class Grammar:
    base: ModuleGrammar
    matches: dict[str, ModuleGrammar]
    targets: dict[str, ModuleGrammar]


def _module(name: str, data: dict) -> ModuleGrammar:
    options = dict(data.get("options", {}))
    aliases = dict(data.get("aliases", {}))
    canon = {**aliases, **{k: k for k in options}}
    return ModuleGrammar(name, options, aliases, bool(data.get("implicit", False)), canon, dict(data.get("types", {})))


@functools.cache
def names_table() -> dict:
    """``grammars/names.toml`` (services, protocols, ICMP types by name), read once per process."""
    with open(grammar_path("names.toml"), "rb") as f:
        return tomllib.load(f)


@functools.cache
def iptables_grammar() -> Grammar:
    with open(grammar_path("iptables.toml"), "rb") as f:
        data = tomllib.load(f)
    return Grammar(
        base=_module("", data["base"]),
        matches={k: _module(k, v) for k, v in data.get("match", {}).items()},
        targets={k: _module(k, v) for k, v in data.get("target", {}).items()},
    )
