"""The grammar data of nftables text and JSON: keywords, payload fields, meta and ct keys, named priorities,
statement words, set types (``grammars/nft.toml``). Every reader of the ``nft`` package takes its words
from :func:`nft_grammar`; a new keyword is a line of that file, not a branch here."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass

from kptrace.parsers.grammar import grammar_path

__all__ = ["NftGrammar", "nft_grammar"]



@dataclass(frozen=True, slots=True)
class NftGrammar:
    families: frozenset
    default_family: str
    hooks: frozenset
    chain_types: frozenset
    policies: frozenset
    priorities: dict  # "default" | "bridge" -> {name: int}
    payload: dict  # protocol -> frozenset of fields
    meta_keys: frozenset
    unqualified: frozenset
    ct_keys: frozenset
    ct_directions: frozenset
    fib_flags: frozenset
    fib_results: frozenset
    bitmask: frozenset  # "ct state", "tcp flags", ...
    string: frozenset  # "meta iifname", ...
    protocol_names: dict
    reject_default: dict
    limit_default_burst: dict
    verdicts: frozenset
    nat_kinds: frozenset
    nat_flags: tuple
    set_ops: frozenset
    resync: frozenset
    log_options: frozenset
    set_types: dict
    typeof: dict
    set_flags: frozenset
    set_kept: frozenset
    object_kinds: frozenset
    selector_starts: frozenset

    def priority(self, family: str, name: str) -> int | None:
        table = self.priorities["bridge" if family == "bridge" else "default"]
        return table.get(name)


@functools.cache
def nft_grammar() -> NftGrammar:
    """The grammar data of ``grammars/nft.toml``.

    >>> nft_grammar().priority("ip", "dstnat"), nft_grammar().priority("bridge", "dstnat")
    (-100, -300)
    """
    with open(grammar_path("nft.toml"), "rb") as f:
        d = tomllib.load(f)
    payload = {k: frozenset(v) for k, v in d["payload"].items()}
    unqualified = frozenset(d["meta"]["unqualified"])
    st = d["statements"]
    return NftGrammar(
        families=frozenset(d["families"]), default_family=d["default_family"], hooks=frozenset(d["hooks"]),
        chain_types=frozenset(d["chain_types"]), policies=frozenset(d["policies"]), priorities=d["priority"],
        payload=payload, meta_keys=frozenset(d["meta"]["keys"]), unqualified=unqualified,
        ct_keys=frozenset(d["ct"]["keys"]), ct_directions=frozenset(d["ct"]["directions"]),
        fib_flags=frozenset(d["fib"]["flags"]), fib_results=frozenset(d["fib"]["results"]),
        bitmask=frozenset(d["values"]["bitmask"]), string=frozenset(d["values"]["string"]),
        protocol_names={str(k): v for k, v in d["protocol_names"].items()}, reject_default=d["reject_default"],
        limit_default_burst=d["limit_default_burst"], verdicts=frozenset(st["verdicts"]),
        nat_kinds=frozenset(st["nat"]), nat_flags=tuple(st["nat_flags"]), set_ops=frozenset(st["set_ops"]),
        resync=frozenset(st["resync"]), log_options=frozenset(st["log_options"]), set_types=d["set_types"],
        typeof=d["typeof"], set_flags=frozenset(d["set_declaration"]["flags"]),
        set_kept=frozenset(d["set_declaration"]["kept"]), object_kinds=frozenset(d["objects"]["kinds"]),
        selector_starts=frozenset(payload) | unqualified | {"meta", "ct", "fib", "numgen", "jhash", "symhash"},
    )
