"""Load the grammar data in ``grammars/`` (shipped inside the wheel as ``kptrace/grammars``)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Grammar", "ModuleGrammar", "grammar_path", "iptables_grammar"]


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

    def canonical(self, option: str) -> str | None:
        if option in self.options:
            return option
        return self.aliases.get(option)


@dataclass(frozen=True, slots=True)
class Grammar:
    base: ModuleGrammar
    matches: dict[str, ModuleGrammar]
    targets: dict[str, ModuleGrammar]


def _module(name: str, data: dict) -> ModuleGrammar:
    return ModuleGrammar(name, dict(data.get("options", {})), dict(data.get("aliases", {})), bool(data.get("implicit", False)))


@functools.cache
def iptables_grammar() -> Grammar:
    with open(grammar_path("iptables.toml"), "rb") as f:
        data = tomllib.load(f)
    return Grammar(
        base=_module("", data["base"]),
        matches={k: _module(k, v) for k, v in data.get("match", {}).items()},
        targets={k: _module(k, v) for k, v in data.get("target", {}).items()},
    )
