"""The pyparsing grammar of declarations (table, chain and set properties, a knftables command's head, a
listing's block header). It is off the load's path: the loader reads declarations by hand and asks
:func:`diagnose` only where it refuses one, so that the diagnostic says where and what was expected."""

from __future__ import annotations

import functools
import re
from typing import Any

from kptrace.parsers.nft.grammar import nft_grammar

__all__ = ["declaration_grammar", "diagnose"]


@functools.cache
def declaration_grammar(kind: str) -> Any:
    """The pyparsing grammar of a declaration: ``table_spec``, ``chain_spec``, ``set_spec`` (the inside of
    ``{ ...; ... }`` or one property line of a block), ``command`` (a knftables command's head) or
    ``header`` (a listing's ``table``/``chain``/``set``/``map`` line). Used to say where and why a
    declaration the fast reader refused is wrong (:func:`diagnose`)."""
    import pyparsing as pp

    g = nft_grammar()
    kw = functools.partial(pp.Keyword, ident_chars=pp.identbodychars + "-")
    name = pp.Regex(r'"[^"]*"|[A-Za-z_][A-Za-z0-9_./\\-]*').set_name("a name")
    string = pp.Regex(r'"[^"]*"|\S+').set_name("a string")
    family = pp.one_of(sorted(g.families), as_keyword=True).set_name("a family (ip, ip6, inet, arp, bridge, netdev)")
    integer = pp.Regex(r"[+-]?\d+").set_name("a number")
    names = sorted(set(g.priorities["default"]) | set(g.priorities["bridge"]))
    prio_name = pp.one_of(names, as_keyword=True).set_name("a priority (" + ", ".join(names) + ")")
    prio = (prio_name + pp.Optional(pp.one_of("+ -") - pp.Regex(r"\d+").set_name("an offset"))) | integer
    prio.set_name("a priority (a number or " + ", ".join(names) + ")")
    time = pp.Regex(r"(\d+(ms|d|h|m|s))+|\d+").set_name("a time (10s, 3h, 1h30m)")
    ctype = pp.one_of(sorted(g.chain_types), as_keyword=True).set_name("a chain type (filter, nat, route)")
    hook = pp.one_of(sorted(g.hooks), as_keyword=True).set_name(
        "a hook (prerouting, input, forward, output, postrouting, ingress)")
    policy = pp.one_of(sorted(g.policies), as_keyword=True).set_name("a policy (accept, drop)")
    word = pp.Regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]*").set_name("a word")
    listing = pp.Suppress("{") - pp.Optional(pp.DelimitedList(string)) - pp.Suppress("}")
    chain_prop = ((kw("type") - ctype - kw("hook") - hook - pp.Optional(kw("device") - string) - kw("priority") - prio)
                  | (kw("policy") - policy) | (kw("comment") - string)
                  | (kw("devices") - pp.Suppress("=") - (listing | string)))
    set_type = pp.DelimitedList(word, ".").set_name("a type (ipv4_addr, inet_service, ...)")
    set_prop = ((kw("type") - set_type - pp.Optional(pp.Suppress(":") - set_type))
                | (kw("typeof") - pp.Regex(r"[^;{}]+").set_name("a typeof expression"))
                | (kw("flags") - pp.DelimitedList(pp.one_of(sorted(g.set_flags), as_keyword=True).set_name(
                    "a set flag (" + ", ".join(sorted(g.set_flags)) + ")")))
                | (kw("timeout") - time) | (kw("gc-interval") - time) | (kw("size") - integer)
                | (kw("policy") - word) | kw("auto-merge") | (kw("comment") - string) | kw("counter")
                | (kw("elements") - pp.Suppress("=") - pp.Regex(r"\{.*", re.S).set_name("{ elements }")))
    table_prop = (kw("comment") - string) | (kw("flags") - pp.DelimitedList(word))
    props = {"table_spec": table_prop, "chain_spec": chain_prop, "set_spec": set_prop}
    if kind in props:
        p = props[kind]
        semi = pp.Suppress(";")
        return pp.Optional(pp.Suppress("{")) + pp.Optional(pp.DelimitedList(pp.Optional(p), semi) + pp.Optional(semi)) \
            + pp.Optional(pp.Suppress("}")) + pp.StringEnd()
    if kind == "command":
        verb = pp.one_of("add create insert replace delete destroy flush reset", as_keyword=True).set_name(
            "a command (add, create, insert, replace, delete, destroy, flush)")
        objs = pp.one_of("table chain rule set map element flowtable counter quota ruleset", as_keyword=True).set_name(
            "an object (table, chain, rule, set, map, element)")
        rest = pp.Regex(r".*").set_name("the rest")
        return verb - objs - pp.Optional(family) - pp.Optional(name) - pp.Optional(name) - rest
    if kind == "header":
        head = (kw("table") - pp.Optional(family) - name) | ((kw("chain") | kw("set") | kw("map")) - name)
        return head - pp.Literal("{") - pp.Regex(r".*")
    raise ValueError(f"no grammar for declaration kind {kind!r}")


def diagnose(kind: str, text: str) -> tuple[int, int, str] | None:
    """Where and why the declaration grammar refuses ``text``: (column, length, message); None if it accepts it."""
    import pyparsing as pp

    try:
        declaration_grammar(kind).parse_string(text, parse_all=True)
    except pp.ParseBaseException as e:
        loc = e.loc
        m = re.compile(r"\S+").match(text, loc) if loc < len(text) else None
        found = m.group(0) if m else ""
        msg = e.msg
        if msg.startswith("Expected "):
            msg = "expected " + msg[len("Expected "):]
        if found:
            msg += f", found {found!r}"
        return loc + 1, (m.end() - loc) if m else 1, msg
    return None

