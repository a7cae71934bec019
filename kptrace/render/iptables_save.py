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
