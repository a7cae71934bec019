"""Read nftables text: knftables transaction text (kube-proxy's) and ``nft list ruleset`` / ``nft list
table`` text, with or without ``-a`` handles, counters and comments, in any family.

Grammar (BNF; the line's first tokens decide its kind; keywords, fields and named priorities are
data in ``grammars/nft.toml``)::

    input      := (command | block | comment | blank)*
    command    := VERB OBJECT [FAMILY] TABLE [NAME] [spec | elements | rule]        one a line
    VERB       := add | create | insert | replace | delete | destroy | flush | reset
    OBJECT     := table | chain | rule | set | map | element | flowtable | counter | quota | ruleset
    block      := "table" [FAMILY] NAME "{" (table_prop | chain_block | set_block | object)* "}"
    chain_block:= "chain" NAME "{" (chain_prop | rule)* "}"
    set_block  := ("set" | "map") NAME "{" set_prop* "}"
    chain_prop := "type" TYPE "hook" HOOK ["device" NAME] "priority" PRIO ";" ["policy" POLICY ";"]
                | "comment" STRING | "devices" "=" "{" NAME ("," NAME)* "}"
    set_prop   := "type" TYPE ("." TYPE)* [":" TYPE ("." TYPE)*] | "typeof" EXPR [":" EXPR]
                | "flags" FLAG ("," FLAG)* | "timeout" TIME | "size" INT | "comment" STRING
                | "elements" "=" "{" element ("," element)* "}" | "policy" WORD | "auto-merge" | ...
    PRIO       := INT | NAME [("+" | "-") INT]                  raw mangle dstnat filter security srcnat
    rule       := statement* ["comment" STRING]  ["# handle" INT]
    statement  := selector ["==" | "!=" | "<" | ">" | "<=" | ">="] value ["/" value]  (a match)
                | selector "vmap" mapping | selector "set" value_expr
                | verdict | nat | counter | log | limit | notrack | xt | set_update
    selector   := primary (("&" | "|" | "^" | "<<" | ">>") value)* ("." selector)*
    primary    := PROTO FIELD | ["meta"] METAKEY | "ct" [DIR] CTKEY | "fib" FLAG ("." FLAG)* RESULT
                | "numgen" MODE "mod" INT ["offset" INT] | "jhash" selector "mod" INT ... | "symhash" ...
    value      := "@" NAME | "{" element ("," element)* "}" | ATOM ("," ATOM)* | ATOM ("." ATOM)*
    element    := ATOM ("." ATOM)* [extras] [":" (verdict | ATOM ("." ATOM)*)]
    nat        := ("dnat" | "snat") [FAMILY] ["addr" "." "port"] "to" (target | selector "map" mapping) [flags]
                | ("masquerade" | "redirect") ["to" ":" PORT] [flags]
    verdict    := accept | drop | continue | return | (jump | goto) NAME | reject ["with" ...] | queue ...
    set_update := ("add" | "update" | "delete") "@" NAME "{" selector ["timeout" TIME] "}"

The load (:mod:`.loader`) reads each line once and files a rule line under its chain and an element
line under its set, at about 1 us a line; a rule's statements are read when it is first used
(:meth:`NftChain.rule_at`, through :mod:`.entries`, :mod:`.shapes` and :mod:`.statements`), a set's elements
when the set is first used (:mod:`.elements`). The readers are hand-written (a tokenizer by ``str.split``
and a recursive-descent reader, ~20 us a rule): pyparsing reads about 1,000 lines a second, so it only
*diagnoses* a declaration the fast reader refuses (:mod:`.declarations`), where its position and
"expected ..." message become the diagnostic.

Bad input is reported, never a traceback: a listing cut mid-block (the unclosed blocks, with where
they opened), elided lines (``...``), chains or rules pasted without their table (read into a
placeholder table, with a note), shell prompts pasted with the output, iptables-nft's ``# Warning:``
lines. The hint always says what to run on the node.
"""

from __future__ import annotations

import gc
from typing import Any

from kptrace.errors import Diagnostic, ParseError
from kptrace.model.nft import Match, Nat, NftRule, NftRuleset, NftTable, SetRef, SetUpdate, Verdict, Vmap
from kptrace.parsers.nft.lines import HINT_FULL, IPTABLES_SAVE
from kptrace.parsers.nft.loader import Loader

__all__ = ["parse_all_rules", "parse_nft_text"]


def parse_nft_text(text: str, source: str, *, lenient: bool = False) -> NftRuleset:
    """Read nftables text: knftables transaction text, ``nft list ruleset``/``nft list table`` output
    (``-a`` handles, counters, comments), or a fragment of one. Rules are read on first use.

    Raises :class:`ParseError` when the input has errors (an unclosed block, a line that is no nft
    statement, a bad declaration) unless ``lenient``; warnings and notes are in ``.diagnostics``.

    >>> rs = parse_nft_text("add table ip t\\nadd chain ip t c\\nadd rule ip t c ip daddr 10.0.0.1 drop\\n", "x.nft")
    >>> rule = rs.chain("ip", "t", "c").rule_at(0)
    >>> rule.exprs[0]
    Match(left=Payload(protocol='ip', field='daddr'), op='==', right=Value(text='10.0.0.1'))
    >>> rule.exprs[1]
    Verdict(kind='drop', target=None, reject_with=None)
    """
    m = IPTABLES_SAVE.search(text, 0, 8192)
    if m is not None:
        line = text.count("\n", 0, m.start()) + 1
        bad = text.split("\n")[line - 1]
        raise ParseError([Diagnostic("error", "this is iptables-save output, not an nftables ruleset", source, line, 1,
                                     bad, len(bad.strip()), "pass it as an iptables dump; for the nft ruleset run "
                                     "`nft list ruleset` (or `nft -j list ruleset`) on the node")])
    loader = Loader(text, source)
    # The load makes ~100k long-lived objects (chains, entry lists) and no reference cycles; with the
    # cyclic GC on, its collections walk them again and again: 20% of a 10k-Service load (0.74 -> 0.59 s).
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        rs = loader.run()
    except RecursionError:  # pragma: no cover - a pathological nesting depth
        too_deep = Diagnostic("error", "the input nests too deeply to read", source, 0, 0, "", 0, HINT_FULL)
        raise ParseError([too_deep]) from None
    finally:
        if gc_was_on:
            gc.enable()
    if not rs.tables and not any(d.severity == "error" for d in rs.diagnostics):
        rs.diagnostics.append(Diagnostic("error", "no nftables table, chain or rule in this input", source, 1, 0,
                                         loader.lines[0] if loader.lines else "", 0,
                                         "expected the output of `nft list ruleset` (or `nft -j list ruleset`)"))
    if not lenient and any(d.severity == "error" for d in rs.diagnostics):
        raise ParseError(rs.diagnostics)
    return rs


def parse_all_rules(ruleset: NftRuleset) -> list[Diagnostic]:
    """Read every rule and set element now (``kptrace parse``), so that diagnostics are complete; check
    jump/goto targets and set references. Returns the ruleset's diagnostics."""
    diags = ruleset.diagnostics
    for t in ruleset.tables.values():
        for s in t.sets.values():
            s._changed()
            elements = s.elements  # read again now: their problems are reported
            if s.is_vmap:
                for _, v in elements:
                    if type(v) is Verdict and v.kind in ("jump", "goto") and v.target not in t.chains:
                        diags.append(Diagnostic("warning", f"element of {s.name} jumps to chain {v.target!r}, which is "
                                                "not in this input", s.source, s.line, 0, "", 0,
                                                "a partial input? a trace stops there and says so"))
        for c in t.chains.values():
            lines = getattr(c._reader, "lines", None)
            for r in c.rules:
                for st in r.exprs:
                    _check_refs(st, r, t, diags, lines)
            c._changed()  # parsed to check, not kept: a 10k-Service ruleset's rules would hold ~500 MB
    return diags


def _check_refs(st: Any, r: NftRule, t: NftTable, diags: list, lines: list[str] | None) -> None:
    ty = type(st)
    text = lines[r.line - 1] if lines and 0 < r.line <= len(lines) else r.text
    if ty is Verdict and st.kind in ("jump", "goto") and st.target not in t.chains:
        col = text.find(" " + st.target) + 2 if (" " + st.target) in text else 0
        diags.append(Diagnostic("warning", f"{st.kind} to chain {st.target!r}, which is not in this input", r.source,
                                r.line, col, text, len(st.target), "a partial input? a trace stops there and says so"))
    refs = []
    if ty is Match and type(st.right) is SetRef:
        refs.append(st.right.name)
    elif ty is Vmap and type(st.mapping) is SetRef:
        refs.append(st.mapping.name)
    elif ty is SetUpdate:
        refs.append(st.set)
    elif ty is Nat and type(st.addr) is SetRef:
        refs.append(st.addr.name)
    for name in refs:
        if name not in t.sets:
            col = text.find("@" + name) + 1
            diags.append(Diagnostic("warning", f"set {name!r} is not in this input", r.source, r.line, col, text,
                                    len(name) + 1, "a lookup in a missing set matches nothing; a trace says so"))
