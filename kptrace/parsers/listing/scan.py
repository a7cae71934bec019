"""The fast path of reading a rule's text (the part of a listing's rule line after the address columns):
phrases found by their first characters, read by their regular expressions."""

from __future__ import annotations

from typing import NamedTuple

from kptrace.parsers.listing.grammar import ListingGrammar, Module, Phrase

__all__ = ["Hit", "Scan", "candidates", "comment_at", "extend_match", "scan_text", "skip_space", "target_only"]

_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: most of a small tuple's cost


class Hit(NamedTuple):
    """One phrase read from a rule's text: positions are offsets in that text."""

    module: Module | None  # None: text nobody reads
    phrase: Phrase | None
    groups: dict
    start: int
    end: int
    negated: bool
    opens: bool  # starts a new match (a head, or a phrase of a module without one)
    target: bool  # a phrase of the target


def skip_space(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def comment_at(text: str, pos: int, min_end: int = 0) -> tuple[int, int] | None:
    """``(end of the comment text, end of the phrase)`` for ``/* TEXT */`` at ``pos``: the first " */"
    that ends a word (a comment may contain " */"; :func:`scan_text` tries later ones if the rest fails)."""
    if not text.startswith("/* ", pos):
        return None
    at = max(pos + 2, min_end)
    while True:
        end = text.find(" */", at)
        if end < 0:
            return None
        stop = end + 3
        if stop == len(text) or text[stop].isspace():
            return end, stop
        at = end + 1


class Scan(NamedTuple):
    hits: list[Hit]
    fail: int | None  # where reading stopped, None when the whole text was read


def candidates(index: dict[str, tuple[Phrase, ...]], loose: tuple[Phrase, ...], text: str, pos: int) -> list[Phrase]:
    """The phrases of one module that may start at ``pos``: those whose first characters are there
    ("!" aside), then those that start with a value."""
    q = pos
    if text[q] == "!":
        q += 1
        while q < len(text) and text[q] == " ":
            q += 1
    out: list[Phrase] = []
    for k in (4, 3, 2, 1):
        found = index.get(text[q:q + k])
        if found:
            out.extend(found)
    if loose:
        out.extend(loose)
    return out


def scan_text(text: str, g: ListingGrammar, target: Module | None, comment_ends: dict[int, int] | None = None) -> Scan:
    """Read ``text`` (the part of a rule line after the address columns) into phrases: the fast path.

    Each match opens with its head (or, for a module without one, any of its phrases), found by its
    first characters; its phrases follow greedily; of two modules that open alike (limit and
    hashlimit both print "limit:"), the one that reads further wins. After the matches come the
    target's phrases. Comments are read by hand: they are most of a kube-proxy rule's text.
    """
    hits: list[Hit] = []
    n = len(text)
    pos = 0
    while pos < n and text[pos] == " ":
        pos += 1
    in_target = False
    comment = g.matches.get("comment")
    openers = g.openers
    while pos < n:
        if not in_target:
            if text.startswith("/* ", pos) and comment is not None:
                found = comment_at(text, pos, comment_ends.get(pos, 0) if comment_ends else 0)
                if found is not None:
                    hits.append(_new(Hit, (comment, comment.head, {"comment": text[pos + 3:found[0]]}, pos, found[1], False, True, False)))
                    pos = found[1]
                    while pos < n and text[pos] == " ":
                        pos += 1
                    continue
            q = pos
            if text[q] == "!":
                q += 1
                while q < n and text[q] == " ":
                    q += 1
            best: tuple[int, list[Hit]] | None = None
            for k in (4, 3, 2, 1):
                for mod, ph in openers[k].get(text[q:q + k], ()):
                    m = ph.regex.match(text, pos)
                    if m is None:
                        continue
                    neg = ph.negatable and m.group("neg") is not None
                    chunk = [Hit(mod, ph, m.groupdict(), pos, m.end(), neg, True, False)]
                    end = extend_match(text, m.end(), mod, neg if mod.head is not None else False, chunk)
                    if best is None or end > best[0]:
                        best = (end, chunk)
            if best is not None:
                hits.extend(best[1])
                pos = best[0]
                while pos < n and text[pos] == " ":
                    pos += 1
                continue
        if target is not None:
            for ph in candidates(target.follow, target.loose, text, pos):
                m = ph.regex.match(text, pos)
                if m is not None:
                    hits.append(_new(Hit, (target, ph, m.groupdict(), pos, m.end(), ph.negatable and m.group("neg") is not None, False, True)))
                    in_target = True
                    pos = m.end()
                    while pos < n and text[pos] == " ":
                        pos += 1
                    break
            else:
                return _new(Scan, (hits, pos))
            continue
        return _new(Scan, (hits, pos))
    return _new(Scan, (hits, None))


def extend_match(text: str, pos: int, mod: Module, head_negated: bool, chunk: list[Hit]) -> int:
    """Add the phrases of ``mod`` that follow at ``pos`` to ``chunk``; the end of the last one."""
    end = pos
    n = len(text)
    while pos < n and text[pos] == " ":
        pos += 1
    while pos < n:
        for ph in candidates(mod.follow, mod.loose, text, pos):
            m = ph.regex.match(text, pos)
            if m is not None:
                neg = m.group("neg") is not None if ph.negatable else head_negated
                chunk.append(_new(Hit, (mod, ph, m.groupdict(), pos, m.end(), neg, False, False)))
                end = pos = m.end()
                while pos < n and text[pos] == " ":
                    pos += 1
                break
        else:
            break
    return end


def target_only(text: str, at: int, target: Module) -> list[Hit] | None:
    """The target's phrases reading ``text`` from ``at`` to its end, or None."""
    hits = []
    pos = skip_space(text, at)
    while pos < len(text):
        for ph in candidates(target.follow, target.loose, text, pos):
            m = ph.regex.match(text, pos)
            if m is not None:
                neg = m.group("neg") is not None if ph.negatable else False
                hits.append(Hit(target, ph, m.groupdict(), pos, m.end(), neg, False, True))
                pos = skip_space(text, m.end())
                break
        else:
            return None
    return hits
