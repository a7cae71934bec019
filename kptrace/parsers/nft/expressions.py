"""The expression half of the rule reader: a cursor over one rule's tokens, and selectors (``ip daddr``,
``meta mark``, ``ct state``, ``fib``, ``numgen``, hashes), binary operations, concatenations, values, anonymous
sets and maps, set elements and verdicts (a map's values). The statement half, :mod:`.statements`, builds
on it; :mod:`.elements` uses it for set elements.

A new selector is a row of ``grammars/nft.toml`` (payload fields, meta and ct keys) when it reads like the
others, else a branch of :meth:`ExpressionReader.primary`.
"""

from __future__ import annotations

from typing import Any

from kptrace.model.addr import is_uint
from kptrace.model.nft import (
    PROTOCOL_SELECTORS,
    AnonMap,
    AnonSet,
    Binop,
    Concat,
    Ct,
    Fib,
    Hash,
    Lookup,
    Meta,
    Numgen,
    Payload,
    SetRef,
    Value,
    Verdict,
    selector_name,
)
from kptrace.parsers.nft.atoms import canonical_atom, element_order, pair_order, to_expr, unquote
from kptrace.parsers.nft.grammar import NftGrammar

__all__ = ["ExpressionReader", "Unreadable"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)


class Unreadable(Exception):
    """A statement cannot be read: ``index`` is the token where reading stopped."""

    def __init__(self, index: int, message: str, severity: str = "error", hint: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.severity = severity
        self.hint = hint


_BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^", "<<": "<<", "lshift": "<<",
           ">>": ">>", "rshift": ">>"}
_ELEM_EXTRAS = frozenset({"comment", "timeout", "expires", "counter", "packets", "bytes"})


class ExpressionReader:
    """Reads expressions from one rule's tokens (recursive descent, one token of look-ahead). ``i`` is the
    cursor; a token that cannot be read raises :class:`Unreadable` with its index."""

    __slots__ = ("t", "i", "n", "g", "family", "problems")

    def __init__(self, toks: list[str], family: str, g: NftGrammar) -> None:
        self.t = toks
        self.i = 0
        self.n = len(toks)
        self.g = g
        self.family = family
        self.problems: list[tuple[int, str, str, str]] = []  # (token index, severity, message, hint)

    # -- helpers

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.t[j] if j < self.n else ""

    def take(self, what: str) -> str:
        if self.i >= self.n:
            raise Unreadable(self.i, f"expected {what}, the rule ends here", hint="is the line cut off?")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, word: str) -> None:
        if self.peek() != word:
            found = self.peek()
            raise Unreadable(self.i, f"expected {word!r}" + (f", found {found!r}" if found else ", the rule ends here"))
        self.i += 1

    def integer(self, what: str) -> int:
        tok = self.take(what)
        try:
            return int(tok, 0)
        except ValueError:
            raise Unreadable(self.i - 1, f"expected {what}, found {tok!r}") from None

    def is_selector(self, j: int) -> bool:
        t = self.t[j] if j < self.n else ""
        if t not in self.g.selector_starts:
            return False
        nxt = self.t[j + 1] if j + 1 < self.n else ""
        fields = self.g.payload.get(t)
        if fields is not None:
            return nxt in fields
        if t == "meta":
            return nxt in self.g.meta_keys
        if t == "ct":
            return nxt in self.g.ct_keys or nxt in self.g.ct_directions
        return True

    def resync(self, j: int) -> int:
        """The index of the next token at ``j`` or after it, outside braces, where a statement can start."""
        depth = 0
        resync = self.g.resync
        while j < self.n:
            t = self.t[j]
            if t == "{":
                depth += 1
            elif t == "}":
                depth = max(0, depth - 1)
            elif depth == 0 and t in resync:
                return j
            j += 1
        return j

    # -- expressions

    def expr(self) -> Any:
        first = self.binop_expr()
        if self.peek() != ".":
            return first
        items = [first]
        while self.peek() == ".":
            self.i += 1
            items.append(self.binop_expr())
        return _new(Concat, (tuple(items),))

    def binop_expr(self) -> Any:
        e = self.primary()
        while True:
            op = _BINOPS.get(self.peek())
            if op is None:
                return e
            self.i += 1
            e = _new(Binop, (op, e, self.operand(e)))

    def operand(self, left: Any) -> Any:
        if self.is_selector(self.i):
            return self.primary()
        if self.peek() == "(":
            self.i += 1
            parts: list[str] = []
            while self.i < self.n and self.t[self.i] != ")":
                parts.extend(p for p in self.t[self.i].split("|") if p)
                self.i += 1
            self.expect(")")
            return _new(Value, (",".join(sorted(parts)),))
        return self.rhs(left)

    def primary(self) -> Any:
        i = self.i
        t = self.t[i] if i < self.n else ""
        g = self.g
        fields = g.payload.get(t)
        nxt = self.t[i + 1] if i + 1 < self.n else ""
        if fields is not None:
            if nxt in fields:
                self.i = i + 2
                return _new(Payload, (t, nxt))
            raise Unreadable(i + 1 if nxt else i, f"{t} {nxt} is not modelled" if nxt else f"{t} needs a field",
                       "warning" if nxt else "error", "kept as written; a decision that rests on it is marked assumed")
        if t == "meta":
            if nxt not in g.meta_keys:
                raise Unreadable(i + 1, f"unknown meta key {nxt!r}" if nxt else "meta needs a key",
                           hint="meta keys include l4proto, nfproto, mark, iifname, oifname, skuid (grammars/nft.toml)")
            self.i = i + 2
            return _new(Meta, (nxt,))
        if t in g.unqualified:
            self.i = i + 1
            return _new(Meta, (t,))
        if t == "ct":
            return self.ct()
        if t == "fib":
            self.i = i + 1
            flags = [self.take("a fib flag (saddr, daddr, mark, iif, oif)")]
            while self.peek() == "." and self.peek(1) in g.fib_flags:
                self.i += 1
                flags.append(self.t[self.i])
                self.i += 1
            result = self.take("a fib result (type, oif, oifname)")
            if flags[0] not in g.fib_flags or result not in g.fib_results:
                raise Unreadable(self.i - 1, f"unexpected fib {' . '.join(flags)} {result}", "warning")
            return _new(Fib, (tuple(flags), result))
        if t == "numgen":
            self.i = i + 1
            mode = self.take("random or inc")
            self.expect("mod")
            mod = self.integer("a modulus")
            offset = 0
            if self.peek() == "offset":
                self.i += 1
                offset = self.integer("an offset")
            return _new(Numgen, (mode, mod, offset))
        if t in ("jhash", "symhash"):
            self.i = i + 1
            inner = self.expr() if t == "jhash" else None
            self.expect("mod")
            mod = self.integer("a modulus")
            seed = None
            offset = 0
            while self.peek() in ("seed", "offset"):
                word = self.t[self.i]
                self.i += 1
                if word == "seed":
                    seed = self.integer("a seed")
                else:
                    offset = self.integer("an offset")
            return _new(Hash, (t, inner, mod, seed, offset))
        raise Unreadable(i, f"expected a selector (ip daddr, meta mark, ct state, ...), found {t!r}" if t else
                   "expected a selector, the rule ends here", "warning" if t else "error")

    def ct(self) -> Any:
        g = self.g
        self.i += 1
        direction = None
        if self.peek() in g.ct_directions:
            direction = self.t[self.i]
            self.i += 1
        key = self.take("a ct key (state, status, mark, ...)")
        if direction is not None and key in ("ip", "ip6"):
            key = f"{key} {self.take('saddr or daddr')}"
        elif key not in g.ct_keys:
            raise Unreadable(self.i - 1, f"ct {key} is not modelled", "warning",
                       "kept as written; a decision that rests on it is marked assumed")
        return _new(Ct, (key, direction))

    # -- values

    def value_expr(self, left: Any) -> Any:
        if self.is_selector(self.i):
            e = self.expr()
            if self.peek() == "map":
                self.i += 1
                e = _new(Lookup, (e, self.mapping()))
            return e
        v = self.rhs(left)
        while _BINOPS.get(self.peek()):
            op = _BINOPS[self.t[self.i]]
            self.i += 1
            v = _new(Binop, (op, v, self.operand(left)))
        return v

    def mapping(self) -> Any:
        t = self.peek()
        if t[:1] == "@":
            self.i += 1
            return _new(SetRef, (unquote(t[1:]),))
        if t == "{":
            return self.set_literal(None)
        raise Unreadable(self.i, "expected a map (@name or { key : value, ... })" + (f", found {t!r}" if t else ""))

    def rhs(self, left: Any) -> Any:
        t = self.peek()
        if not t:
            raise Unreadable(self.i, "expected a value, the rule ends here", hint="is the line cut off?")
        if t == "{":
            return self.set_literal(left)
        if t[:1] == "@":
            self.i += 1
            return _new(SetRef, (unquote(t[1:]),))
        if t in ("}", ",", ";", ")"):
            raise Unreadable(self.i, f"expected a value, found {t!r}")
        self.i += 1
        if self.peek() == ",":  # a flag list: ct state established,related
            parts = [canonical_atom(t)]
            while self.peek() == "," and self.i + 1 < self.n:
                self.i += 1
                parts.append(canonical_atom(self.t[self.i]))
                self.i += 1
            return _new(Value, (",".join(sorted(str(p) for p in parts)),))
        atom = self.atom(t, left)
        if self.peek() == "." and self.i + 1 < self.n and self.t[self.i + 1] not in self.g.selector_starts:
            items = [to_expr(atom)]
            while self.peek() == ".":
                self.i += 1
                items.append(to_expr(canonical_atom(self.take("a value"))))
            return _new(Concat, (tuple(items),))
        return to_expr(atom)

    def atom(self, tok: str, left: Any) -> Any:
        a = canonical_atom(tok)
        if type(a) is str and is_uint(a) and selector_name(left) in PROTOCOL_SELECTORS:
            return self.g.protocol_names.get(a, a)
        return a

    def set_literal(self, left: Any) -> Any:
        start = self.i
        self.i += 1
        keys: list = []
        pairs: list = []
        is_map = False
        while True:
            t = self.peek()
            if not t:
                raise Unreadable(start, "'{' is not closed", hint="is the line cut off?")
            if t == "}":
                self.i += 1
                break
            if t == ",":
                self.i += 1
                continue
            key = self.element_key(left)
            self.element_extras()
            if self.peek() == ":":
                self.i += 1
                is_map = True
                pairs.append((key, self.element_value()))
                self.element_extras()
            else:
                keys.append(key)
                pairs.append((key, None))
        if is_map:
            if keys:
                raise Unreadable(start, "a map with elements that have no value", hint="map elements are KEY : VALUE")
            return _new(AnonMap, (tuple(sorted(pairs, key=pair_order)),))
        return _new(AnonSet, (tuple(sorted(keys, key=element_order)),))

    def element_key(self, left: Any) -> Any:
        tok = self.take("an element")
        if tok in ("{", "}", ",", ":"):
            raise Unreadable(self.i - 1, f"expected an element, found {tok!r}")
        first = self.atom(tok, left)
        if self.peek() != ".":
            return first
        parts = [first]
        while self.peek() == ".":
            self.i += 1
            parts.append(canonical_atom(self.take("a value")))
        return tuple(parts)

    def element_extras(self) -> list:
        out = []
        while self.peek() in _ELEM_EXTRAS:
            word = self.t[self.i]
            self.i += 1
            if word == "counter":
                continue
            out.append((word, unquote(self.take(f"a value for {word}"))))
        return out

    def element_value(self) -> Any:
        t = self.peek()
        if t in self.g.verdicts:
            return self.verdict()
        first = canonical_atom(self.take("a value"))
        parts = [first]
        while self.peek() == ".":
            self.i += 1
            parts.append(canonical_atom(self.take("a value")))
        return tuple(parts)

    # -- verdicts: statements, and the values of verdict maps

    def verdict(self) -> Verdict:
        t = self.t[self.i]
        self.i += 1
        if t == "jump" or t == "goto":
            return _new(Verdict, (t, unquote(self.take("a chain name")), None))
        if t == "reject":
            if self.peek() != "with":
                return _new(Verdict, ("reject", None, None))
            self.i += 1
            proto = self.take("icmp, icmpv6, icmpx or tcp")
            how: str | None
            if proto == "tcp":
                self.expect("reset")
                how = "tcp reset"
            else:
                if self.peek() == "type":
                    self.i += 1
                how = f"{proto} {self.take('an icmp code')}"
            if how == self.g.reject_default.get(self.family):
                how = None
            return _new(Verdict, ("reject", None, how))
        if t == "queue":
            j = self.resync(self.i)
            opts = " ".join(self.t[self.i:j]) or None
            self.i = j
            return _new(Verdict, ("queue", opts, None))
        return _new(Verdict, (t, None, None))
