"""What the fast path (:mod:`.scan`) could not read: later ends of a comment that may hold " */", then the
pyparsing grammar of the same phrases, which also says where a text goes wrong and what it expected there.
pyparsing is imported only when a text needs it."""

from __future__ import annotations

import re
from typing import Any

from kptrace.parsers.listing.grammar import ListingGrammar, Module, Phrase
from kptrace.parsers.listing.scan import Hit, Scan, comment_at, scan_text

__all__ = ["pp_grammar", "pp_scan", "scan_with_fallbacks"]

_new = tuple.__new__


def scan_with_fallbacks(text: str, g: ListingGrammar, target: Module | None) -> Scan:
    """:func:`scan_text`, trying later ends of comments that may contain " */" when the first reading
    stops short; then the pyparsing grammar; the result reads as much of the text as either could."""
    first = scan_text(text, g, target)
    if first.fail is None:
        return first
    ends: dict[int, int] = {}
    tried = 0
    best = first
    while tried < 8:
        longer = [h for h in best.hits if h.phrase is not None and h.module is not None and h.module.name == "comment"
                  and text.find(" */", h.end - 2) >= 0 and comment_at(text, h.start, h.end - 1) is not None]
        if not longer:
            break
        h = longer[-1]
        ends[h.start] = h.end - 1
        again = scan_text(text, g, target, dict(ends))
        tried += 1
        if again.fail is None:
            return again
        if best.fail is not None and again.fail > best.fail:
            best = again
    pp_hits = pp_scan(text, g, target)
    if isinstance(pp_hits, list):
        return Scan(pp_hits, None)
    return best


def pp_grammar(g: ListingGrammar, target: Module | None) -> Any:
    """The pyparsing grammar of a rule's text for rules with ``target``: the same phrases as the fast
    path, as pyparsing expressions (``Or`` takes the longest of two modules with the same head, as the
    fast path does)."""
    key = target.name if target is not None else ""
    cached = g.pp_cache.get(key)
    if cached is not None:
        return cached
    import pyparsing as pp

    phrase = _PhraseExpressions(g)
    comment = g.matches.get("comment")
    alternatives = []
    for mod in g.matches.values():
        if mod is comment:
            continue
        follow = pp.MatchFirst([phrase(mod, ph) for ph in mod.phrases]) if mod.phrases else None
        if mod.head is not None:
            e = phrase(mod, mod.head, opens=True) + (pp.ZeroOrMore(follow) if follow is not None else pp.Empty())
        else:
            e = pp.MatchFirst([phrase(mod, ph, opens=True) for ph in mod.phrases]) + (pp.ZeroOrMore(follow) if follow is not None else pp.Empty())
        alternatives.append(e.set_name(mod.name))
    if comment is not None:
        rx = pp.Regex(_COMMENT.pattern).set_name("/* comment */")

        def comment_action(s: str, loc: int, toks: Any) -> list[Hit]:
            m = _COMMENT.match(s, loc)
            assert m is not None and comment is not None  # the Regex just matched there
            return [Hit(comment, comment.head, {"comment": m.group("comment")}, loc, m.end(), False, True, False)]

        alternatives.insert(0, rx.set_parse_action(comment_action))
    matches = pp.ZeroOrMore(pp.Or(alternatives))
    tail: Any = pp.Empty()
    if target is not None and target.phrases:
        tail = pp.ZeroOrMore(pp.MatchFirst([phrase(target, ph, in_target=True) for ph in target.phrases]))
    grammar = (matches + tail + pp.StringEnd()).set_name("rule text")
    g.pp_cache[key] = grammar
    return grammar


_COMMENT = re.compile(r"/\* (?P<comment>.*?) \*/(?=\s|$)")


class _PhraseExpressions:
    """Builds a phrase's pyparsing expression from its pieces; a call is one phrase."""

    def __init__(self, g: ListingGrammar) -> None:
        import pyparsing as pp

        self.pp = pp
        self.end_of_word = pp.FollowedBy(pp.White() | pp.StringEnd()).set_name("end of word")
        # A phrase whose first word no other phrase starts with commits to itself once that word is read
        # (pyparsing's "-"), so an error lands on the spot: "probability" without its number.
        self.firsts: dict[str | None, int] = {}
        for mod in (*g.matches.values(), *g.targets.values()):
            for ph in (*([mod.head] if mod.head else ()), *mod.phrases):
                lit = next((rx for kind, rx, _ in ph.pieces if kind == "lit"), None)
                self.firsts[lit] = self.firsts.get(lit, 0) + 1

    def __call__(self, mod: Module, ph: Phrase, *, opens: bool = False, in_target: bool = False) -> Any:
        pp = self.pp
        parts: list[Any] = []
        commit_after = None
        for i, (kind, rx, name) in enumerate(ph.pieces):
            e = pp.Regex(rx)
            if kind == "ws":
                following = next((p for p in ph.pieces[i + 1:] if p[0] != "ws"), None)
                if following is None or following[0] == "neg":
                    said = "white space"
                elif following[0] == "val":
                    said = f"<{ph.types[following[2]]}>"
                else:
                    said = repr(following[1].replace("\\", ""))
                parts.append(e.leave_whitespace().suppress().set_name(said))
                continue
            if parts:
                e = e.leave_whitespace()
            if kind == "val":
                e = e.set_name(f"<{ph.types[name]}>")
            elif kind == "neg":
                e = pp.Opt(e).set_name("!")
            else:
                following = ph.pieces[i + 1][0] if i + 1 < len(ph.pieces) else "end"
                if following in ("ws", "end"):
                    # a word ends here: "ctorigdst" is not the start of "ctorigdstport"
                    e = pp.Regex(rx + r"(?=\s|$)")
                    if parts:
                        e = e.leave_whitespace()
                e = e.set_name(repr(rx.replace("\\", "")))
                if commit_after is None and self.firsts.get(rx) == 1 and len(ph.pieces) > i + 1:
                    commit_after = len(parts) + 1
            parts.append(e)
        if commit_after is not None and commit_after < len(parts):
            whole = pp.And(parts[:commit_after]) - pp.And([*parts[commit_after:], self.end_of_word])
        else:
            whole = pp.And([*parts, self.end_of_word])
        whole = whole.set_name(repr(ph.pattern))

        def action(s: str, loc: int, toks: Any) -> list[Hit]:
            # The phrase's regular expression is its pieces in a row: matching it again at the
            # phrase's start gives the values and the end, as the fast path has them.
            m = ph.regex.match(s, loc)
            assert m is not None  # the pieces just matched there
            neg = ph.negatable and m.group("neg") is not None
            return [_new(Hit, (mod, ph, m.groupdict(), loc, m.end(), neg, opens, in_target))]

        return whole.set_parse_action(action)


def pp_scan(text: str, g: ListingGrammar, target: Module | None) -> list[Hit] | tuple[int, str]:
    """The pyparsing grammar's reading of ``text``: the phrases, or where it stopped and what it expected."""
    import pyparsing as pp

    try:
        result = pp_grammar(g, target).parse_string(text, parse_all=True)
    except pp.ParseBaseException as e:
        return e.loc, str(e.msg)
    hits = []
    head_negated = False
    for h in result:
        if not isinstance(h, Hit):
            continue
        if h.opens:
            head_negated = h.negated if h.module is not None and h.phrase is h.module.head else False
        elif not h.target and h.phrase is not None and not h.phrase.negatable and head_negated:
            h = h._replace(negated=True)  # "! recent: CHECK": the head's "!" is the check's
        hits.append(h)
    return hits
