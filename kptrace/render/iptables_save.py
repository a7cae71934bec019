"""Write rules back in ``iptables-save`` form (base options, then each match, then the target).

Used for the parser's round-trip property: ``parse(format(parse(x))) == parse(x)``, and for real
``iptables-save`` output, ``format(parse(line)) == line``.
"""

from __future__ import annotations

from kptrace.model.rules import Option, Rule

__all__ = ["format_rule"]

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,=+[]@%^~")


def _quote(value: str, *, always: bool = False) -> str:
    if not always and value and all(c in _SAFE for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _option(o: Option, *, comment: bool = False) -> str:
    parts = ["!"] if o.negated else []
    parts.append(o.name)
    parts.extend(_quote(a, always=comment) for a in o.args)
    return " ".join(parts)


def format_rule(rule: Rule) -> str:
    out = [f"-A {rule.chain}"]
    out.extend(_option(o) for o in rule.base)
    for m in rule.matches:
        out.append(f"-m {m.module}")
        out.extend(_option(o, comment=(m.module == "comment" and o.name == "--comment")) for o in m.options)
    if rule.target is not None:
        out.append(("-g " if rule.target.goto else "-j ") + rule.target.name)
        out.extend(_option(o) for o in rule.target.options)
    return " ".join(out)


def format_ruleset(rs, *, extra_chains: dict[str, set[str]] | None = None) -> str:
    """The whole ruleset as input ``iptables-restore`` accepts: every table with its built-in chains
    (and their policies), its user chains, then its rules in canonical form. kube-proxy's restore input
    becomes loadable this way: built-in chains and kptrace's assumed jumps are written out, comments
    are quoted. ``extra_chains`` (table -> names) declares chains the rules jump to but the input lacks.
    """
    from kptrace.model.rules import BUILTIN_CHAINS

    out = []
    for tname, table in rs.tables.items():
        out.append(f"*{tname}")
        declared = []
        for b in BUILTIN_CHAINS[tname]:
            chain = table.chains.get(b)
            policy = (chain.policy if chain is not None and chain.policy else "ACCEPT")
            out.append(f":{b} {policy} [0:0]")
            declared.append(b)
        for name in table.chains:
            if name not in declared:
                out.append(f":{name} - [0:0]")
        for name in sorted((extra_chains or {}).get(tname, ())):
            if name not in table.chains:
                out.append(f":{name} - [0:0]")
        for chain in table.chains.values():
            for rule in chain.rules:
                out.append(format_rule(rule))
        out.append("COMMIT")
    return "\n".join(out) + "\n"
