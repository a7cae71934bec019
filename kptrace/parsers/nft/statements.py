"""The statement half of the rule reader: a rule is statements (a match, a verdict map, a mangle, a verdict,
NAT, counter, log, limit, set update, notrack, xt) and a comment. :func:`read_tokens` reads one rule in full
and turns the problems' token indexes into columns; :func:`kptrace.parsers.nft.shapes.read_statements` is
the entry point (by shape when it can, else this).

A new statement is one method here and a line in :meth:`StatementReader.statement`, with its keyword in
``grammars/nft.toml`` if it ends a statement that cannot be read (``resync``).
"""

from __future__ import annotations

from typing import Any

from kptrace.model.nft import (
    AnonSet,
    Binop,
    Counter,
    Limit,
    Log,
    Mangle,
    Match,
    Nat,
    Notrack,
    SetUpdate,
    Unknown,
    Value,
    Vmap,
    Xt,
    selector_name,
)
from kptrace.parsers.nft.atoms import canonical_atom, parse_seconds, to_expr, tokenize, unquote
from kptrace.parsers.nft.expressions import ExpressionReader, Unreadable
from kptrace.parsers.nft.grammar import nft_grammar

__all__ = ["StatementReader", "problem_columns", "read_tokens"]

_new = tuple.__new__  # faster than the NamedTuples' own __new__ (see atoms.py)

_RELOPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">",
           "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}


class StatementReader(ExpressionReader):
    """Reads the statements of one rule from its tokens."""

    __slots__ = ()

    def statements(self) -> tuple[list, str | None]:
        out: list = []
        comment = None
        while self.i < self.n:
            t = self.t[self.i]
            if t == "comment":
                if self.i + 1 >= self.n:
                    self.problems.append((self.i, "error", "comment needs a string", 'write comment "text"'))
                    self.i += 1
                    continue
                comment = unquote(self.t[self.i + 1])
                self.i += 2
                continue
            start = self.i
            try:
                out.append(self.statement())
            except Unreadable as e:
                self.problems.append((e.index, e.severity, e.message, e.hint))
                self.i = self.resync(max(start + 1, e.index if e.severity == "error" else start + 1))
                out.append(_new(Unknown, (" ".join(self.t[start:self.i]), e.message)))
            if self.i == start:  # never loop without progress
                self.i += 1
        return out, comment

    def statement(self) -> Any:
        t = self.t[self.i]
        g = self.g
        if t in g.verdicts:
            return self.verdict()
        if t in g.nat_kinds:
            return self.nat()
        if t == "counter":
            return self.counter()
        if t in g.set_ops and self.peek(1)[:1] == "@":
            return self.set_update()
        if t == "log":
            return self.log()
        if t == "limit":
            return self.limit()
        if t == "notrack":
            self.i += 1
            return _new(Notrack, ("notrack",))
        if t == "xt":
            self.i += 1
            kind = self.take("match or target")
            name = unquote(self.take("an extension name"))
            return _new(Xt, (kind, name))
        if t in g.selector_starts:
            return self.selector_statement()
        raise Unreadable(self.i, f"{t!r} is not a statement kptrace models", "warning",
                   "kept as written; a decision that rests on it is marked assumed")

    def selector_statement(self) -> Any:
        left = self.expr()
        nxt = self.peek()
        if nxt == "vmap":
            self.i += 1
            return _new(Vmap, (left, self.mapping()))
        if nxt == "set":
            self.i += 1
            return _new(Mangle, (left, self.value_expr(left)))
        op = _RELOPS.get(nxt)
        if op is not None:
            self.i += 1
        if self.i >= self.n:
            raise Unreadable(self.i, f"{selector_name(left) or 'this selector'} needs a value to compare with",
                       hint="is the line cut off?")
        right = self.rhs(left)
        if op is None:
            if self.peek() == "/":  # tcp flags syn / syn,ack: (flags & mask) == value
                self.i += 1
                mask = self.rhs(left)
                return _new(Match, (_new(Binop, ("&", left, mask)), "==", right))
            op = "in" if type(right) is Value and selector_name(left) in self.g.bitmask else "=="
        if type(right) is AnonSet and len(right.elements) == 1 and type(right.elements[0]) is not tuple:
            right = to_expr(right.elements[0])  # nft stores a one-element anonymous set as the element
        return _new(Match, (left, op, right))

    # -- keyword statements

    def nat(self) -> Nat:
        g = self.g
        kind = self.t[self.i]
        self.i += 1
        family = None
        flags: list[str] = []
        addr = port = map_key = None
        if kind in ("dnat", "snat"):
            if self.peek() in ("ip", "ip6") and self.peek(1) in ("to", "addr", "prefix"):
                family = self.t[self.i]
                self.i += 1
            if self.peek() == "addr":
                self.i += 1
                self.expect(".")
                self.expect("port")
            elif self.peek() == "prefix":
                self.i += 1
                flags.append("prefix")
            self.expect("to")
            if self.is_selector(self.i):
                map_key = self.expr()
                self.expect("map")
                addr = self.mapping()
            else:
                addr, port = self.nat_target(self.take("an address"))
        elif self.peek() == "to":
            self.i += 1
            addr, port = self.nat_target(self.take("a port (:PORT)"))
        while self.peek() in g.nat_flags or (self.peek() == "," and self.peek(1) in g.nat_flags):
            if self.t[self.i] != ",":
                flags.append(self.t[self.i])
            self.i += 1
        if family is None and kind in ("dnat", "snat") and self.family in ("ip", "ip6"):
            family = self.family
        order = g.nat_flags
        flags.sort(key=lambda f: order.index(f) if f in order else len(order))
        return _new(Nat, (kind, family, addr, port, tuple(flags), map_key))

    def nat_target(self, tok: str) -> tuple[Any, Any]:
        if tok in ("{", "}", ",", ";", "(", ")") or tok.endswith(":") and tok.count(":") == 1:
            raise Unreadable(self.i - 1, f"expected an address or :port, found {tok!r}")
        if tok[:1] == "[":
            host, _, rest = tok[1:].partition("]")
            port = rest[1:] if rest[:1] == ":" else ""
            return to_expr(canonical_atom(host)), (to_expr(canonical_atom(port)) if port else None)
        if tok[:1] == ":":
            return None, to_expr(canonical_atom(tok[1:]))
        if tok.count(":") == 1:
            host, _, port = tok.partition(":")
            return to_expr(canonical_atom(host)), to_expr(canonical_atom(port))
        return to_expr(canonical_atom(tok)), None

    def counter(self) -> Any:
        self.i += 1
        if self.peek() == "packets":
            self.i += 1
            packets = self.integer("a packet count")
            self.expect("bytes")
            return _new(Counter, (packets, self.integer("a byte count")))
        if self.peek() == "name":
            raise Unreadable(self.i - 1, "named counters are not modelled", "warning")
        return _new(Counter, (None, None))

    def set_update(self) -> SetUpdate:
        op = self.t[self.i]
        name = unquote(self.t[self.i + 1][1:])
        self.i += 2
        self.expect("{")
        key = self.expr()
        timeout = None
        while self.peek() in ("timeout", "expires", "counter"):
            word = self.t[self.i]
            self.i += 1
            if word == "timeout":
                tok = self.take("a timeout")
                timeout = parse_seconds(tok)
                if timeout is None:
                    raise Unreadable(self.i - 1, f"{tok!r} is not a time (10s, 3h, 1h30m)")
            elif word == "expires":
                self.i += 1
        self.expect("}")
        return _new(SetUpdate, (op, name, key, timeout))

    def log(self) -> Log:
        self.i += 1
        prefix = level = None
        options = []
        while self.peek() in self.g.log_options:
            word = self.t[self.i]
            self.i += 1
            value = self.take(f"a value for {word}")
            if word == "prefix":
                prefix = unquote(value)
            elif word == "level":
                level = value
            else:
                while self.peek() == ",":
                    self.i += 1
                    value += "," + self.take("a flag")
                options.append((word, value))
        return _new(Log, (prefix, level, tuple(options)))

    def limit(self) -> Limit:
        self.i += 1
        self.expect("rate")
        over = False
        if self.peek() == "over":
            over = True
            self.i += 1
        tok = self.take("a rate (10/second)")
        unit = "packets"
        if "/" in tok:
            rate_s, _, per = tok.partition("/")
        else:
            rate_s = tok
            unit_per = self.take("a rate unit (mbytes/second)")
            unit, _, per = unit_per.partition("/")
        try:
            rate = int(rate_s)
        except ValueError:
            raise Unreadable(self.i - 1, f"{rate_s!r} is not a rate") from None
        burst = None
        if self.peek() == "burst":
            self.i += 1
            burst = self.integer("a burst")
            if self.peek() in ("packets", "bytes", "kbytes", "mbytes"):
                self.i += 1
        default = self.g.limit_default_burst.get("packets" if unit == "packets" else "bytes")
        if burst == default:
            burst = None
        return _new(Limit, (rate, per, burst, unit, over))


def read_tokens(text: str, toks: list[str], family: str) -> tuple[list, str | None, list]:
    """One rule read in full from its tokens: statements, comment and problems as
    ``(column, length, severity, message, hint)``."""
    r = StatementReader(toks, family, nft_grammar())
    stmts, comment = r.statements()
    return stmts, comment, problem_columns(text, r.problems) if r.problems else []


def problem_columns(text: str, problems: list, shift: int = 0, end: int | None = None) -> list:
    """Problems found at token indexes of ``text`` -> ``(column, length, severity, message, hint)``; ``shift``
    is added to each column (``text`` cut out of a longer line), a problem past the last token is at ``end``
    (default: just after ``text``)."""
    cols = tokenize(text)
    out = []
    for idx, sev, msg, hint in problems:
        if idx < len(cols):
            col, length = cols[idx][1] + shift, len(cols[idx][0])
        else:
            col, length = (len(text) + 1 if end is None else end), 1
        out.append((col, length, sev, msg, hint))
    return out
