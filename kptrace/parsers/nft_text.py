"""Parse nftables text: knftables transaction text (kube-proxy's) and ``nft list ruleset`` / ``nft list
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

Speed: a 10k-Service ruleset has ~350,000 lines. Load reads each line once and files a rule line
under its chain and an element line under its set (about 1 us a line, see :func:`_Loader.run`);
a rule's statements are read when it is first used (:meth:`NftChain.rule_at`), a set's elements when
the set is first used. The reader for statements is hand-written (a tokenizer by ``str.split`` and a
recursive-descent reader, ~20 us a rule): pyparsing reads about 1,000 lines a second, so it only
*diagnoses* a declaration the fast reader refuses (:func:`declaration_grammar`), where its position and
"expected ..." message become the diagnostic.

Bad input is reported, never a traceback: a listing cut mid-block (the unclosed blocks, with where
they opened), elided lines (``...``), chains or rules pasted without their table (read into a
placeholder table, with a note), shell prompts pasted with the output, iptables-nft's ``# Warning:``
lines. The hint always says what to run on the node.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from kptrace.model.addr import is_uint
from kptrace.errors import Diagnostic, ParseError
from kptrace.model.nft import (
    PROTOCOL_SELECTORS, selector_name, AnonMap, AnonSet, Binop, Concat, Counter, Ct, Fib, Hash, Limit, Log, Lookup, Mangle, Match, Meta, Nat,
    NftChain, NftRule, NftRuleset, NftSet, NftTable, Notrack, Numgen, Payload, Prefix, Range, SetRef, SetUpdate,
    Unknown, Value, Verdict, Vmap, Xt, UNLOADABLE,
)
from kptrace.parsers.grammar import grammar_path

__all__ = [
    "NftGrammar", "canonical_atom", "declaration_grammar", "element_order", "nft_grammar", "parse_all_rules", "parse_nft_text",
    "parse_seconds", "read_elements", "read_statements", "tokenize",
]

_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: a tenth of a rule's parse


# ---------------------------------------------------------------- grammar data


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


# ---------------------------------------------------------------- tokens and atoms

_TOKEN = re.compile(r'"[^"\n]*"?|[{},;()]|[^\s{},;()"]+')
_SPLIT_CHARS = "{},;()"
_HANDLE = re.compile(r"#\s*handle\s+(\d+)\s*$")
_TIME = re.compile(r"(\d+)(ms|d|h|m|s)")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF:.")


def tokenize(text: str) -> list[tuple[str, int]]:
    """Split a statement into ``(token, column)`` (1-based); quoted strings keep their quotes.

    >>> [t for t, _ in tokenize('ip daddr { 1.1.1.1, 2.2.2.2 } comment "a b"')]
    ['ip', 'daddr', '{', '1.1.1.1', ',', '2.2.2.2', '}', 'comment', '"a b"']
    """
    return [(m.group(0), m.start() + 1) for m in _TOKEN.finditer(text)]


def _tokens(text: str) -> list[str]:
    """The tokens of :func:`tokenize` without columns, by str.split when there are no quotes (~5x faster)."""
    if '"' in text:
        return _TOKEN.findall(text)
    for ch in _SPLIT_CHARS:
        if ch in text:
            text = text.replace(ch, f" {ch} ")
    return text.split()


def _unquote(tok: str) -> str:
    if tok[:1] == '"':
        return tok[1:-1] if len(tok) > 1 and tok[-1] == '"' else tok[1:]
    return tok


def _strip_comment(text: str) -> tuple[str, int | None]:
    """Cut a ``# ...`` comment (outside quotes) off a line; a ``# handle N`` comment gives the handle."""
    if '"' not in text:
        k = text.find("#")
    else:
        k = -1
        inq = False
        for j, ch in enumerate(text):
            if ch == '"':
                inq = not inq
            elif ch == "#" and not inq:
                k = j
                break
    if k < 0:
        return text, None
    m = _HANDLE.match(text, k)
    return text[:k].rstrip(), (int(m.group(1)) if m else None)


def _v6(tok: str) -> str:
    try:
        return ipaddress.IPv6Address(tok).compressed
    except ValueError:
        return tok


def _numberish(s: str) -> bool:
    return bool(s) and any(is_uint(c) for c in s) and all(c in _HEXDIGITS for c in s)


def canonical_atom(tok: str) -> Any:
    """One literal in canonical spelling: a string, or a :class:`Prefix` / :class:`Range`.

    >>> canonical_atom("0x00004000"), canonical_atom('"eth0"'), canonical_atom("10.0.0.1/32")
    ('16384', 'eth0', '10.0.0.1')
    >>> canonical_atom("10.0.0.0-10.0.0.255"), canonical_atom("2001:db8:0:0::1")
    (Prefix(addr='10.0.0.0', length=24), '2001:db8::1')
    """
    if not tok:
        return tok
    c0 = tok[0]
    if c0 == '"':
        return _unquote(tok)
    if not (is_uint(c0) or c0 == ":" or (c0 in _HEXDIGITS and ":" in tok)):
        return tok
    if is_uint(tok):
        return tok if len(tok) == 1 or c0 != "0" else str(int(tok))
    if tok[:2] in ("0x", "0X"):
        try:
            return str(int(tok, 16))
        except ValueError:
            return tok
    if "/" in tok:
        addr, _, length = tok.partition("/")
        if is_uint(length):
            v6 = ":" in addr
            if v6:
                addr = _v6(addr)
            n = int(length)
            if n == (128 if v6 else 32):
                return addr
            try:  # nft stores the network: 10.1.2.3/8 is 10.0.0.0/8
                net = ipaddress.ip_network(f"{addr}/{n}", strict=False)
                addr = str(net.network_address)
            except ValueError:
                pass
            return _new(Prefix, (addr, n))
        return tok
    if "-" in tok:
        lo, _, hi = tok.partition("-")
        if _numberish(lo) and _numberish(hi) and "-" not in hi:
            lo_c, hi_c = canonical_atom(lo), canonical_atom(hi)
            if type(lo_c) is str and type(hi_c) is str:
                return _range(lo_c, hi_c)
        return tok
    if ":" in tok and all(c in _HEXDIGITS for c in tok):
        return _v6(tok)
    return tok


def _range(lo: str, hi: str) -> Any:
    """A range of addresses that is exactly one prefix is that prefix (nft prints it so)."""
    if ("." in lo or ":" in lo) and ("." in hi or ":" in hi):
        try:
            nets = list(ipaddress.summarize_address_range(ipaddress.ip_address(lo), ipaddress.ip_address(hi)))
        except (ValueError, TypeError):
            return _new(Range, (lo, hi))
        if len(nets) == 1:
            n = nets[0]
            if n.prefixlen == n.max_prefixlen:
                return str(n.network_address)
            return _new(Prefix, (str(n.network_address), n.prefixlen))
    return _new(Range, (lo, hi))


def element_order(key: Any) -> tuple:
    """A sort key for set elements: numbers by value, then strings, then prefixes and ranges. Anonymous
    sets and maps keep their elements in this order (they are sets: nft prints them in its own order)."""
    t = type(key)
    if t is str:
        return (0, int(key), "") if is_uint(key) else (1, 0, key)
    if t is tuple:
        return (3, 0, "", tuple(element_order(k) for k in key))
    return (2, 0, repr(key))


def _pair_order(pair: tuple) -> tuple:
    return element_order(pair[0])


def parse_seconds(text: str) -> float | None:
    """``3h`` -> 10800, ``1h30m`` -> 5400, ``10800s``, ``500ms`` -> 0.5, ``42`` -> 42 (None: not a time)."""
    if is_uint(text):
        return int(text)
    total = 0.0
    pos = 0
    for m in _TIME.finditer(text):
        if m.start() != pos:
            return None
        n = int(m.group(1))
        total += {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)] * n
        pos = m.end()
    if pos != len(text) or not text:
        return None
    return int(total) if float(total).is_integer() else total


def _to_expr(atom: Any) -> Any:
    return _new(Value, (atom,)) if type(atom) is str else atom


# ---------------------------------------------------------------- statements


class _Bad(Exception):
    """A statement cannot be read: ``index`` is the token where reading stopped."""

    def __init__(self, index: int, message: str, severity: str = "error", hint: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.severity = severity
        self.hint = hint


_RELOPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">",
           "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}
_BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^", "<<": "<<", "lshift": "<<",
           ">>": ">>", "rshift": ">>"}
_ELEM_EXTRAS = frozenset({"comment", "timeout", "expires", "counter", "packets", "bytes"})


class _StatementReader:
    """Reads the statements of one rule from its tokens (recursive descent, one token of look-ahead)."""

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
            raise _Bad(self.i, f"expected {what}, the rule ends here", hint="is the line cut off?")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, word: str) -> None:
        if self.peek() != word:
            found = self.peek()
            raise _Bad(self.i, f"expected {word!r}" + (f", found {found!r}" if found else ", the rule ends here"))
        self.i += 1

    def integer(self, what: str) -> int:
        tok = self.take(what)
        try:
            return int(tok, 0)
        except ValueError:
            raise _Bad(self.i - 1, f"expected {what}, found {tok!r}") from None

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

    # -- rule

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
                comment = _unquote(self.t[self.i + 1])
                self.i += 2
                continue
            start = self.i
            try:
                out.append(self.statement())
            except _Bad as e:
                self.problems.append((e.index, e.severity, e.message, e.hint))
                self.i = self.resync(max(start + 1, e.index if e.severity == "error" else start + 1))
                out.append(_new(Unknown, (" ".join(self.t[start:self.i]), e.message)))
            if self.i == start:  # never loop without progress
                self.i += 1
        return out, comment

    def resync(self, j: int) -> int:
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
            name = _unquote(self.take("an extension name"))
            return _new(Xt, (kind, name))
        if t in g.selector_starts:
            return self.selector_statement()
        raise _Bad(self.i, f"{t!r} is not a statement kptrace models", "warning",
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
            raise _Bad(self.i, f"{selector_name(left) or 'this selector'} needs a value to compare with",
                       hint="is the line cut off?")
        right = self.rhs(left)
        if op is None:
            if self.peek() == "/":  # tcp flags syn / syn,ack: (flags & mask) == value
                self.i += 1
                mask = self.rhs(left)
                return _new(Match, (_new(Binop, ("&", left, mask)), "==", right))
            op = "in" if type(right) is Value and selector_name(left) in self.g.bitmask else "=="
        if type(right) is AnonSet and len(right.elements) == 1 and type(right.elements[0]) is not tuple:
            right = _to_expr(right.elements[0])  # nft stores a one-element anonymous set as the element
        return _new(Match, (left, op, right))

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
            parts = []
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
            raise _Bad(i + 1 if nxt else i, f"{t} {nxt} is not modelled" if nxt else f"{t} needs a field",
                       "warning" if nxt else "error", "kept as written; a decision that rests on it is marked assumed")
        if t == "meta":
            if nxt not in g.meta_keys:
                raise _Bad(i + 1, f"unknown meta key {nxt!r}" if nxt else "meta needs a key",
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
                raise _Bad(self.i - 1, f"unexpected fib {' . '.join(flags)} {result}", "warning")
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
        raise _Bad(i, f"expected a selector (ip daddr, meta mark, ct state, ...), found {t!r}" if t else
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
            raise _Bad(self.i - 1, f"ct {key} is not modelled", "warning",
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
            return _new(SetRef, (_unquote(t[1:]),))
        if t == "{":
            return self.set_literal(None)
        raise _Bad(self.i, "expected a map (@name or { key : value, ... })" + (f", found {t!r}" if t else ""))

    def rhs(self, left: Any) -> Any:
        t = self.peek()
        if not t:
            raise _Bad(self.i, "expected a value, the rule ends here", hint="is the line cut off?")
        if t == "{":
            return self.set_literal(left)
        if t[:1] == "@":
            self.i += 1
            return _new(SetRef, (_unquote(t[1:]),))
        if t in ("}", ",", ";", ")"):
            raise _Bad(self.i, f"expected a value, found {t!r}")
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
            items = [_to_expr(atom)]
            while self.peek() == ".":
                self.i += 1
                items.append(_to_expr(canonical_atom(self.take("a value"))))
            return _new(Concat, (tuple(items),))
        return _to_expr(atom)

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
                raise _Bad(start, "'{' is not closed", hint="is the line cut off?")
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
                raise _Bad(start, "a map with elements that have no value", hint="map elements are KEY : VALUE")
            return _new(AnonMap, (tuple(sorted(pairs, key=_pair_order)),))
        return _new(AnonSet, (tuple(sorted(keys, key=element_order)),))

    def element_key(self, left: Any) -> Any:
        tok = self.take("an element")
        if tok in ("{", "}", ",", ":"):
            raise _Bad(self.i - 1, f"expected an element, found {tok!r}")
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
            out.append((word, _unquote(self.take(f"a value for {word}"))))
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

    # -- keyword statements

    def verdict(self) -> Verdict:
        t = self.t[self.i]
        self.i += 1
        if t == "jump" or t == "goto":
            return _new(Verdict, (t, _unquote(self.take("a chain name")), None))
        if t == "reject":
            if self.peek() != "with":
                return _new(Verdict, ("reject", None, None))
            self.i += 1
            proto = self.take("icmp, icmpv6, icmpx or tcp")
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
            raise _Bad(self.i - 1, f"expected an address or :port, found {tok!r}")
        if tok[:1] == "[":
            host, _, rest = tok[1:].partition("]")
            port = rest[1:] if rest[:1] == ":" else ""
            return _to_expr(canonical_atom(host)), (_to_expr(canonical_atom(port)) if port else None)
        if tok[:1] == ":":
            return None, _to_expr(canonical_atom(tok[1:]))
        if tok.count(":") == 1:
            host, _, port = tok.partition(":")
            return _to_expr(canonical_atom(host)), _to_expr(canonical_atom(port))
        return _to_expr(canonical_atom(tok)), None

    def counter(self) -> Any:
        self.i += 1
        if self.peek() == "packets":
            self.i += 1
            packets = self.integer("a packet count")
            self.expect("bytes")
            return _new(Counter, (packets, self.integer("a byte count")))
        if self.peek() == "name":
            raise _Bad(self.i - 1, "named counters are not modelled", "warning")
        return _new(Counter, (None, None))

    def set_update(self) -> SetUpdate:
        op = self.t[self.i]
        name = _unquote(self.t[self.i + 1][1:])
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
                    raise _Bad(self.i - 1, f"{tok!r} is not a time (10s, 3h, 1h30m)")
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
                prefix = _unquote(value)
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
            raise _Bad(self.i - 1, f"{rate_s!r} is not a rate") from None
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


def read_statements(text: str, family: str = "ip") -> tuple[list, str | None, list]:
    """The statements and comment of one rule, and problems as ``(column, severity, message, hint)``.

    >>> stmts, comment, problems = read_statements('ct state new jump firewall-check comment "x"')
    >>> stmts, comment
    ([Match(left=Ct(key='state', direction=None), op='in', right=Value(text='new')), Verdict(kind='jump', target='firewall-check', reject_with=None)], 'x')
    """
    if '"' not in text and "(" not in text and "255.255.255." not in text and "\x00" not in text:
        shaped = _by_shape(text, family)
        if shaped is not None:
            return shaped
    return _read_tokens(text, _tokens(text), family)


def _read_tokens(text: str, toks: list[str], family: str) -> tuple[list, str | None, list]:
    r = _StatementReader(toks, family, nft_grammar())
    stmts, comment = r.statements()
    problems = []
    if r.problems:
        cols = tokenize(text)
        for idx, sev, msg, hint in r.problems:
            if idx < len(cols):
                col, length = cols[idx][1], len(cols[idx][0])
            else:
                col, length = len(text) + 1, 1
            problems.append((col, length, sev, msg, hint))
    return stmts, comment, problems


# ---------------------------------------------------------------- rules by shape
#
# kube-proxy writes tens of thousands of rules that differ only in addresses and chain names
# (`ip saddr 10.0.1.5 jump mark-for-masquerade`, `meta l4proto tcp dnat to 10.0.1.5:8080`, `numgen random
# mod 10 vmap { 0 : goto endpoint-..., ... }`, 1.37's `dnat ip addr . port to numgen random mod 10 map { 0 :
# 10.0.1.5 . 8080, ... }`); reading them (a trace reads a Service's ~22, a full parse all) is most of
# a rule's cost. A rule's *shape* is its text with each IPv4 address token replaced by a stand-in address
# and each jump/goto target by a stand-in name (one stand-in per distinct value, numbered in order). The
# reader treats every IPv4 address token alike (canonical_atom leaves it as it is) and takes a target
# as it is, so a shape is read once, by the reader, into a builder (:func:`_builder`) that makes any
# rule of that shape from its values: the same statements, with anonymous sets and maps sorted again
# (their order follows the values). Read in full instead: rules with quotes, groups `( a | b )`, value
# lists at the top level (`ip daddr 10.0.0.1,10.0.0.2`, joined into one value), `queue` (options
# joined), any stand-in already in the text, and shapes whose reading has problems (each rule gets its
# own diagnostics). tests/test_nft_shapes.py checks both ways agree on every nft text fixture, both
# benchmark layouts and edge cases.
# A shape's first rule is read in full; its second makes the builder (~10 rules' worth); the rest use it.
# Speed (CPU time, one rule's statements): a Service chain's `ip daddr A tcp dport 80 ip saddr != CIDR jump
# mark-for-masquerade` 35 -> 11 us, `dnat to A:PORT` 15 -> 7 us, 1.37's DNAT map of 10 endpoints 73 -> 30 us;
# every rule of benchmarks/gen_nft.py's 10k Services (chain.rules of each chain): classic layout, 222,023
# rules, 9.6 -> 6.2 s (with the cyclic GC paused: 4.8 -> 2.7 s); 1.37 layout, 12,022 rules, 1.67 -> 0.58 s.

_SEP = r"\s{},;()"  # what ends a token (_tokens)
# A jump/goto target: the token after `jump `/`goto ` (those words a token of their own). The words come
# first and the look-behind after them, so that the regex engine skips to a "j" or a "g" (~4x faster).
_NAME_SLOT = re.compile(rf"(jump |goto )(?<![^{_SEP}].....)([^{_SEP}]+)")
# An IPv4 address token, or the address of a `to ADDR:PORT` token. The reader takes any such token as it
# is (canonical_atom), whatever its digits, so these need not be valid addresses; a digit first, as above.
_ADDR_SLOT = re.compile(rf"([0-9](?<![^{_SEP}][0-9])[0-9]{{0,2}}\.[0-9]{{1,3}}\.[0-9]{{1,3}}\.[0-9]{{1,3}})"
                        rf"(?=[{_SEP}]|$|:[0-9]+(?:[{_SEP}]|$))")
_SET_BODY = re.compile(r"\{[^{}]*\}")
_SHAPE_ADDR = "255.255.255.%d"  # stand-ins: addresses the reader takes as any other
_SHAPE_NAME = "\x00%d"
_SHAPE_MAX = 4096  # shapes kept (kube-proxy's rulesets have a few dozen)
_shapes: dict = {}  # (family, shape) -> False (seen once) | builder | _IN_FULL
_IN_FULL = "read in full"


def _by_shape(text: str, family: str) -> tuple[list, str | None, list] | None:
    """A rule's statements, comment and (no) problems from its shape's builder; None: read it in full."""
    if "," in text and "," in _SET_BODY.sub("", text):
        return None  # a value list at the top level is joined into one value
    values: list[str] = []
    index: dict[str, int] = {}
    pieces: list[str] = []
    names = _NAME_SLOT.split(text) if "jump " in text or "goto " in text else (text,)
    for j, part in enumerate(names):
        if j % 3 == 1:  # "jump " or "goto "
            pieces.append(part)
            continue
        if j % 3 == 2:  # its target
            k = index.get(part)
            if k is None:
                k = index[part] = len(values)
                values.append(part)
            pieces.append(_SHAPE_NAME % k)
            continue
        addrs = _ADDR_SLOT.split(part)
        pieces.append(addrs[0])
        for q in range(1, len(addrs), 2):
            value = addrs[q]
            if addrs[q + 1][:1] == ":":  # ADDR:PORT is read as an address only after `to` (nat_target)
                before = addrs[q - 1]
                if not before.endswith("to ") or len(before) > 3 and before[-4] not in " \t\n{},;()":
                    pieces.append(value)
                    pieces.append(addrs[q + 1])
                    continue
            k = index.get(value)
            if k is None:
                k = index[value] = len(values)
                values.append(value)
            pieces.append(_SHAPE_ADDR % k)
            pieces.append(addrs[q + 1])
    if not values or len(values) > 255:
        return None  # nothing stood in for (the reader is as fast), or too many
    key = (family, "".join(pieces))
    build = _shapes.get(key)
    if build is None:  # a shape seen for the first time: the rule is read in full (a builder costs ~10 rules)
        if len(_shapes) < _SHAPE_MAX:
            _shapes[key] = False
        return None
    if build is False:  # seen before: now it pays to make its builder
        build = None
        toks = _tokens(key[1])
        if "queue" not in toks:
            stmts, comment, problems = _read_tokens(key[1], toks, family)
            if not problems:
                build = _builder(stmts, comment, len(values))
        build = _shapes[key] = build or _IN_FULL
    if build is _IN_FULL:  # this shape reads with problems: each rule of it is read in full, for its own
        return None
    return build(values)


def _builder(stmts: list, comment: str | None, count: int):
    """A function ``values -> (statements, comment, [])`` that makes the statements of a shape with its
    stand-ins replaced by the values (one Python expression, compiled once per shape: a rule of a known
    shape then costs one call, not a walk over its statements)."""
    stand = {_SHAPE_ADDR % k: k for k in range(count)}
    stand.update({_SHAPE_NAME % k: k for k in range(count)})
    consts: dict[str, Any] = {"_new": _new, "_eo": element_order, "_po": _pair_order}

    def const(x: Any) -> str:
        name = f"c{len(consts)}"
        consts[name] = x
        return name

    def code(x: Any) -> str | None:  # None: x holds no stand-in (used as it is)
        t = type(x)
        if t is str:
            k = stand.get(x)
            return None if k is None else f"v[{k}]"
        if not isinstance(x, tuple):
            return None
        items = [code(i) for i in x]
        if all(i is None for i in items):
            return None
        inner = "(" + "".join(f"{c if c is not None else const(i)}, " for c, i in zip(items, x)) + ")"
        if t is tuple:
            return inner
        if t is AnonSet:
            return f"_new({const(AnonSet)}, (tuple(sorted({items[0]}, key=_eo)),))"
        if t is AnonMap:
            if all(code(k) is None for k, _ in x.pairs):  # its order is its keys', which stand for nothing
                return f"_new({const(AnonMap)}, ({items[0]},))"
            return f"_new({const(AnonMap)}, (tuple(sorted({items[0]}, key=_po)),))"
        return f"_new({const(t)}, {inner})"

    body = ", ".join(code(x) or const(x) for x in stmts)
    comment_code = code(comment) if comment is not None else None
    src = f"lambda v: ([{body}], {comment_code or const(comment)}, [])"
    return eval(src, consts)  # noqa: S307 - kptrace's own expression text, built above from parsed values


def read_elements(text: str, family: str = "ip") -> tuple[list, list]:
    """The elements of ``{ ... }`` (or the bare list inside it): ``[(key, value, extras)]``, and problems
    as in :func:`read_statements`. Keys and values as in :class:`NftSet`.

    >>> read_elements('{ 10.0.0.1 . tcp . 80 : goto svc, 10.0.0.2 . tcp . 80 comment "x" : drop }')[0]
    [(('10.0.0.1', 'tcp', '80'), Verdict(kind='goto', target='svc', reject_with=None), []), (('10.0.0.2', 'tcp', '80'), Verdict(kind='drop', target=None, reject_with=None), [('comment', 'x')])]
    """
    body = text.strip()
    if body[:1] == "{":
        body = body[1:]
        if body.rstrip().endswith("}"):
            body = body.rstrip()[:-1]
    fast = _fast_elements(body)
    if fast is not None:
        return fast, []
    toks = _tokens(body)
    r = _StatementReader(toks, family, nft_grammar())
    out = []
    problems = []
    while r.i < r.n:
        t = r.t[r.i]
        if t == "," or t == "}":
            r.i += 1
            continue
        if t in ("...", "…"):
            problems.append((r.i, "warning", "elements elided ('...'): the list is incomplete", _HINT_FULL))
            r.i += 1
            continue
        start = r.i
        try:
            key = r.element_key(None)
            extras = r.element_extras()
            value = None
            if r.peek() == ":":
                r.i += 1
                value = r.element_value()
                extras += r.element_extras()
            if r.i < r.n and r.t[r.i] not in (",", "}"):
                raise _Bad(r.i, f"unexpected {r.t[r.i]!r} in an element", hint="elements are separated by commas")
            out.append((key, value, extras))
        except _Bad as e:
            problems.append((e.index, e.severity, e.message, e.hint))
            r.i = max(start + 1, e.index)
            while r.i < r.n and r.t[r.i] != ",":
                r.i += 1
    if problems:
        cols = tokenize(body)
        shift = len(text) - len(text.lstrip()) + (1 if text.strip()[:1] == "{" else 0)
        fixed = []
        for idx, sev, msg, hint in problems:
            col, length = (cols[idx][1] + shift, len(cols[idx][0])) if idx < len(cols) else (len(text) + 1, 1)
            fixed.append((col, length, sev, msg, hint))
        problems = fixed
    return out, problems


_VERDICT_WORDS = frozenset({"accept", "drop", "continue", "return"})


def _fast_elements(body: str) -> list | None:
    """Elements by str.split for the common shapes (no quotes, no extras): ~3 us an element instead of ~15."""
    if '"' in body or "{" in body or "..." in body or "…" in body:
        return None
    out = []
    for item in body.split(","):
        key_text, colon, value_text = item.partition(" : ")
        if not colon and ":" in item and item.strip().endswith(":"):
            return None
        parts = key_text.split()
        if not parts:
            if colon:
                return None
            continue
        if len(parts) == 1:
            key = canonical_atom(parts[0])
        else:
            if len(parts) % 2 == 0 or any(parts[j] != "." for j in range(1, len(parts), 2)):
                return None  # extras (timeout 3h) or a shape for the full reader
            key = tuple(canonical_atom(p) for p in parts[::2])
        value = None
        if colon:
            vparts = value_text.split()
            if not vparts:
                return None
            v0 = vparts[0]
            if v0 in ("goto", "jump"):
                if len(vparts) != 2:
                    return None
                value = _new(Verdict, (v0, vparts[1], None))
            elif v0 in _VERDICT_WORDS and len(vparts) == 1:
                value = _new(Verdict, (v0, None, None))
            elif len(vparts) % 2 == 1 and all(vparts[j] == "." for j in range(1, len(vparts), 2)):
                if v0 in ("reject", "queue"):
                    return None
                value = tuple(canonical_atom(p) for p in vparts[::2])
            else:
                return None
        out.append((key, value, ()))
    return out


# ---------------------------------------------------------------- declarations (pyparsing)


@functools.cache
def declaration_grammar(kind: str):
    """The pyparsing grammar of a declaration: ``table_spec``, ``chain_spec``, ``set_spec`` (the inside of
    ``{ ...; ... }`` or one property line of a block), ``command`` (a knftables command's head) or
    ``header`` (a listing's ``table``/``chain``/``set``/``map`` line). Used to say where and why a
    declaration the fast reader refused is wrong (:func:`_diagnose`)."""
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
    hook = pp.one_of(sorted(g.hooks), as_keyword=True).set_name("a hook (prerouting, input, forward, output, postrouting, ingress)")
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
        return verb - objs - pp.Optional(family) - pp.Optional(name) - pp.Optional(name) - pp.Regex(r".*").set_name("the rest")
    if kind == "header":
        head = (kw("table") - pp.Optional(family) - name) | ((kw("chain") | kw("set") | kw("map")) - name)
        return head - pp.Literal("{") - pp.Regex(r".*")
    raise ValueError(f"no grammar for declaration kind {kind!r}")


def _diagnose(kind: str, text: str) -> tuple[int, int, str] | None:
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


# ---------------------------------------------------------------- load

_PROMPT = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?(?:[\w.-]+@[\w.-]+(?::[^\s$#]*)?\s*)?[$#]\s*(?:sudo\s+(?:-\S+\s+)*)?"
                     r"(?:nft|iptables|ip6tables|iptables-nft|iptables-save|kubectl|cat|ssh|crictl|docker)\b")
_PROMPT_ALONE = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?[\w.-]+@[\w.-]+(?::\S*)?\s*[$#](?:\s|$)")
#: The start of the message of a diagnostic that reports a bug in kptrace (the fuzz tests look for it).
INTERNAL = "kptrace could not read this (a bug in kptrace)"
_UNLOADABLE = re.compile(re.escape(UNLOADABLE) + r" \(([^)]*)\): (add rule .*)$")
_IPTABLES_SAVE = re.compile(r"^(?:\*(?:nat|filter|mangle|raw|security)\s*$|:[A-Z][\w-]* (?:ACCEPT|DROP|-) \[|-A [\w-]+ )", re.M)
_ELISION = frozenset({"...", "…", "[...]", "[…]", "<snip>", "[snip]", "(...)"})
_CHAIN_PROPS = ("type ", "policy ", "comment ", "devices ", "device ")
_CHAIN_PROP_WORDS = frozenset(p.strip() for p in _CHAIN_PROPS)
_HINT_FULL = "run `nft list ruleset > ruleset.nft` on the node and pass the whole file"
_FAMILY_GUESS_V6 = re.compile(r"\bip6 (?:saddr|daddr)\b")

_POSITIONAL = ("position ", "handle ", "index ")
_VERBS = frozenset({"add", "create", "insert", "replace", "delete", "destroy", "flush", "reset", "list"})
_BLOCK_HEADS = frozenset({"table", "chain", "set", "map"})

# block kinds on the stack
_TABLE, _CHAIN, _SET, _OBJECT = "table", "chain", "set", "object"


class _Reader:
    """What the lazily read parts of a ruleset need later: the input's lines and where to report."""

    __slots__ = ("lines", "source", "diagnostics", "g", "_seen")

    def __init__(self, lines: list[str], source: str, diagnostics: list, g: NftGrammar) -> None:
        self.lines = lines
        self.source = source
        self.diagnostics = diagnostics
        self.g = g
        self._seen: set = set()

    def entry(self, entry: Any) -> tuple[int, str, int, int | None]:
        """(line, text, column of text, handle) of a rule entry (see _Loader for the three forms)."""
        if type(entry) is int:
            if entry >= 0:  # a knftables "add rule FAMILY TABLE CHAIN text" line
                line = self.lines[entry]
                text = line.split(" ", 5)[5]
                text, handle = _strip_comment(text) if "#" in text else (text, None)
                return entry + 1, text.rstrip(), len(line) - len(line.split(" ", 5)[5]) + 1, handle
            i = ~entry  # a rule line of a listing
            line = self.lines[i]
            text = line.strip()
            col = line.find(text[:1]) + 1 if text else 1
            handle = None
            if "#" in text:
                text, handle = _strip_comment(text)
            return i + 1, text, col, handle
        return entry

    def text(self, entry: Any) -> tuple[int, str]:
        line, text, _, _ = self.entry(entry)
        return line, text

    def handle(self, entry: Any) -> int | None:
        return self.entry(entry)[3]

    def report(self, severity: str, message: str, line: int, col: int, length: int, hint: str = "") -> None:
        key = (line, col, message)
        if key in self._seen:  # a rule parsed again reports once
            return
        self._seen.add(key)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.diagnostics.append(Diagnostic(severity, message, self.source, line, col, text, length, hint))

    def parse(self, chain: NftChain, number: int, entry: Any) -> NftRule:
        line, text, col, handle = self.entry(entry)
        try:
            stmts, comment, problems = read_statements(text, chain.family)
        except Exception as e:  # a bug in kptrace: keep the rule (as Unknown) and say so, never a traceback
            stmts, comment = [_new(Unknown, (text, f"internal error: {e!r}"))], None
            problems = [(1, len(text), "error", f"{INTERNAL}: {type(e).__name__}: {e}", "please report this input")]
        for pcol, length, sev, msg, hint in problems:
            if "\n" in text:  # a rule joined from several lines: find the line of the spot
                before = text[:pcol - 1]
                nl = before.count("\n")
                self.report(sev, msg, line + nl, pcol - (before.rfind("\n") + 1), length, hint)
            else:
                self.report(sev, msg, line, col + pcol - 1, length, hint)
        counters = None
        for s in stmts:
            if type(s) is Counter and s.packets is not None:
                counters = (s.packets, s.bytes)
                break
        return _new(NftRule, (chain.family, chain.table, chain.name, number, tuple(stmts), text, self.source, line,
                              handle, counters, comment))

    def elements(self, nset: NftSet, line: int, payload: Any, op: str = "add") -> list:
        col = 1
        if type(payload) is tuple:  # (column, text)
            col, payload = payload
        try:
            out, problems = read_elements(payload, nset.family)
        except Exception as e:  # a bug in kptrace: say so, never a traceback
            out, problems = [], [(1, 1, "error", f"{INTERNAL}: {type(e).__name__}: {e}", "please report this input")]
        for pcol, length, sev, msg, hint in problems:
            before = payload[:pcol - 1]
            nl = before.count("\n")
            self.report(sev, msg, line + nl, (col + pcol - 1) if not nl else pcol - (before.rfind("\n") + 1), length, hint)
        is_map = nset.is_map
        if op == "add" and any((v is None) == is_map for _, v, _ in out):
            self.report("error", f"{'map' if is_map else 'set'} {nset.name}: elements "
                        + ("without a value (KEY : VALUE)" if is_map else "with a value (a set has keys only)"),
                        line, col, 1, "the elements that do not fit are skipped")
            out = [e for e in out if (e[1] is None) != is_map]
        return out


class _Loader:
    """One pass over the lines: blocks and commands build tables, chains and sets; rule and element
    lines are filed, not read.

    A chain's rule entries are one of: an int ``i >= 0`` (line ``i`` is ``add rule FAMILY TABLE CHAIN
    text``), an int ``~i`` (line ``i`` is a rule line of a listing) or a tuple ``(line, text, column,
    handle)`` (anything else: a rule joined from several lines, one of several rules on a line, an
    inserted rule). Ints keep the load to about a microsecond a line.
    """

    def __init__(self, text: str, source: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.text = text
        self.lines = text.split("\n")
        self.source = source
        self.g = nft_grammar()
        self.rs = NftRuleset(sources=[source])
        self.diags = self.rs.diagnostics
        self.reader = _Reader(self.lines, source, self.diags, self.g)
        self.stack: list[tuple[str, Any, int, int]] = []  # (kind, object, line, col) of open blocks
        self.fragment_table: NftTable | None = None
        self.fragment_count = 0
        self.bad_lines = 0  # lines that are no nft statement: many near the start means this is no nft input
        self.notes: dict[str, None] = {}

    # -- where we are: the innermost open table, chain or set

    @property
    def table(self) -> NftTable | None:
        for kind, obj, _, _ in reversed(self.stack):
            if kind is _TABLE:
                return obj
        return None

    @property
    def chain(self) -> NftChain | None:
        return self.stack[-1][1] if self.stack and self.stack[-1][0] is _CHAIN else None

    @property
    def set(self) -> NftSet | None:
        return self.stack[-1][1] if self.stack and self.stack[-1][0] is _SET else None

    # -- reporting

    def diag(self, severity: str, message: str, line: int, col: int = 0, length: int = 0, hint: str = "") -> None:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.diags.append(Diagnostic(severity, message, self.source, line, col, text, length, hint))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes[text] = None
            self.rs.notes.append(text)

    # -- objects

    def get_table(self, family: str, name: str, line: int, *, declared: bool = True) -> NftTable:
        key = (family, name)
        t = self.rs.tables.get(key)
        if t is None:
            t = NftTable(family, name, source=self.source, line=line)
            self.rs.tables[key] = t
            if not declared:
                self.diag("warning", f"table {family} {name} is used before it is added", line, 0, 0,
                          f"nft -f needs `add table {family} {name}` first; kptrace creates it")
        return t

    def get_chain(self, t: NftTable, name: str, line: int, *, declared: bool) -> NftChain:
        c = t.chains.get(name)
        if c is None:
            c = NftChain(name, t.name, t.family, source=self.source, line=line, declared=declared, reader=self.reader)
            t.chains[name] = c
        elif declared and not c.declared:
            c.declared = True
            c.line = line
        return c

    def get_set(self, t: NftTable, name: str, line: int, *, declared: bool, is_map: bool = False) -> NftSet:
        s = t.sets.get(name)
        if s is None:
            s = NftSet(name, t.name, t.family, source=self.source, line=line, declared=declared, reader=self.reader,
                       data_type=("?",) if is_map and not declared else None)
            t.sets[name] = s
        elif declared and not s.declared:
            s.declared = True
            s.line = line
        return s

    # -- the main loop

    def run(self) -> NftRuleset:
        lines = self.lines
        tables = self.rs.tables
        families = self.g.families
        chain_props = _CHAIN_PROPS
        elision = _ELISION
        positional = _POSITIONAL
        n = len(lines)
        i = 0
        in_chain = False  # inside a chain block of a listing
        in_table = False  # inside a table block, outside its chains and sets
        top = True  # at the top level (where knftables commands are)
        entries: list = []  # the open chain's entries
        last_key: tuple = ()
        last_chains: dict = {}
        last_sets: dict = {}
        rule_prefix = ""  # "add rule FAMILY TABLE " of the last rule line, whose table is last_key's
        # The fast paths below take ~99% of a big input's lines (~1 us each); everything else goes to
        # statement(). The state they need is kept in locals and refreshed after each statement().
        while i < n:
            line = lines[i]
            if in_chain:
                s = line.strip()
                if not s:
                    i += 1
                    continue
                c0 = s[0]
                if c0 != "}" and c0 != "#" and c0 != '"' and ";" not in s and not s.startswith(chain_props) and \
                        ("{" not in s or s.count("{") == s.count("}")) and s not in elision:
                    entries.append(~i)
                    i += 1
                    continue
                if s == "}":
                    self.close_block(i, line.find("}") + 1)
                    i += 1
                else:
                    i = self.statement(i)
            elif in_table:
                s = line.strip()
                if not s:
                    i += 1
                    continue
                if s[:6] == "chain " and '"' not in s and s.count("{") == 1:
                    head, _, after = s.partition("{")
                    after = after.strip()
                    name = head[6:].strip()
                    if name and " " not in name and (not after or _HANDLE.match(after)):
                        c = self.get_chain(self.stack[-1][1], name, i + 1, declared=True)
                        if after:
                            c.handle = int(_HANDLE.match(after).group(1))
                        self.stack.append((_CHAIN, c, i + 1, line.find("c") + 1))
                        in_chain, in_table, entries = True, False, c._entries
                        i += 1
                        continue
                i = self.statement(i)
            elif top and line[:4] == "add ":
                kind = line[4:8]
                if rule_prefix and line.startswith(rule_prefix):
                    # "add rule ip kube-proxy " again (almost every rule line): find the chain name without
                    # splitting the line, whose rule text is cut out only when the rule is read
                    k = len(rule_prefix)
                    sp = line.find(" ", k)
                    c = last_chains.get(line[k:sp]) if sp > 0 else None
                    if c is not None and not line.startswith(positional, sp + 1) and \
                            ("{" not in line or line.count("{") == line.count("}")) and sp + 1 < len(line):
                        c._entries.append(i)
                        i += 1
                        continue
                if kind == "rule":
                    parts = line.split(" ", 5)
                    if len(parts) == 6:
                        key = (parts[2], parts[3])
                        if key != last_key:
                            t = tables.get(key)
                            last_key, last_chains, last_sets = (key, t.chains, t.sets) if t is not None else ((), {}, {})
                            rule_prefix = ""
                        rest = parts[5]
                        c = last_chains.get(parts[4])
                        if c is not None and rest and not rest.startswith(positional) and \
                                ("{" not in rest or rest.count("{") == rest.count("}")):
                            c._entries.append(i)
                            rule_prefix = f"add rule {parts[2]} {parts[3]} "
                            i += 1
                            continue
                elif kind == "chai" and "{" not in line and "#" not in line:
                    parts = line.split()
                    if len(parts) == 5 and parts[1] == "chain" and parts[2] in families and parts[4][0] != '"':
                        key = (parts[2], parts[3])
                        if key != last_key:
                            t = tables.get(key)
                            last_key, last_chains, last_sets = (key, t.chains, t.sets) if t is not None else ((), {}, {})
                            rule_prefix = ""
                        if last_key:
                            t = tables[key]
                            name = parts[4]
                            c = last_chains.get(name)
                            if c is None:
                                last_chains[name] = NftChain(name, t.name, t.family, source=self.source, line=i + 1,
                                                             reader=self.reader)
                            elif not c.declared:
                                c.declared = True
                                c.line = i + 1
                            i += 1
                            continue
                elif kind == "elem":
                    parts = line.split(" ", 5)
                    if len(parts) == 6:
                        key = (parts[2], parts[3])
                        if key != last_key:
                            t = tables.get(key)
                            last_key, last_chains, last_sets = (key, t.chains, t.sets) if t is not None else ((), {}, {})
                            rule_prefix = ""
                        s_ = last_sets.get(parts[4])
                        rest = parts[5]
                        if s_ is not None and rest[:1] == "{" and rest.rstrip()[-1:] == "}" and rest.count("{") == 1:
                            s_._chunks.append(("add", i + 1, (len(line) - len(rest) + 1, rest)))
                            s_._elements = None
                            i += 1
                            continue
                i = self.statement(i)
            elif top and (not line or line[0] == "#" and not line.startswith(("# kptrace", "# Warning"))):
                i += 1  # blank lines and comments between commands (kube-proxy's "# ns/svc" headers)
                continue
            else:
                i = self.statement(i)
                if self.bad_lines > 20 and self.bad_lines * 2 > i:
                    self.diag("error", "most lines so far are no nftables statements: stopped reading", i, 0, 0,
                              "expected the output of `nft list ruleset` (or `nft -j list ruleset`); is this another "
                              "command's output?")
                    break
            stack = self.stack
            top = not stack
            in_chain = bool(stack) and stack[-1][0] is _CHAIN
            in_table = bool(stack) and stack[-1][0] is _TABLE
            entries = stack[-1][1]._entries if in_chain else []
            last_key = ()
            rule_prefix = ""
        self.finish()
        return self.rs

    # -- one statement (the slow path)

    def gather(self, i: int, text: str) -> tuple[str, int]:
        """``text`` (from line ``i``) with the following lines while its braces are open or it ends with
        a backslash; returns the text and the last line index used."""
        j = i
        depth = _depth(text)
        if depth <= 0 and not text.endswith("\\"):
            return text, i
        parts = [text]
        lines = self.lines
        n = len(lines)
        while (depth > 0 or parts[-1].endswith("\\")) and j + 1 < n:
            nxt = lines[j + 1]
            if _starts_statement(nxt):
                break  # an unclosed "{" does not swallow the commands after it: reported where it is
            j += 1
            if parts[-1].endswith("\\"):
                parts[-1] = parts[-1][:-1] + " " + nxt.strip()
            else:
                parts.append(nxt)
            depth += _depth(nxt)
        return "\n".join(parts), j

    def gather_elements(self, i: int, s: str, col: int) -> tuple[str | None, int]:
        """A set block's ``elements = { ... }`` over its lines. A line ``}`` indented less than the
        ``elements`` line closes the set, not the list: lines were elided or cut (said, and read as
        far as they go). None: not this shape (left to pieces())."""
        lines = self.lines
        depth = _depth(s)
        parts = [s]
        j = i
        indent = col - 1
        while depth > 0 and j + 1 < len(lines):
            nxt = lines[j + 1]
            st = nxt.strip()
            if _starts_statement(nxt) or (st == "}" and len(nxt) - len(nxt.lstrip()) < indent):
                self.diag("warning", "the element list is not closed: lines elided or cut here?", j + 2,
                          len(nxt) - len(nxt.lstrip()) + 1, len(st), _HINT_FULL)
                self.note(f"{self.source}: an element list is incomplete (line {i + 1})")
                parts.append("}")
                return "\n".join(parts), j
            parts.append(nxt)
            depth += _depth(nxt)
            j += 1
        text = "\n".join(parts)
        if depth != 0 or not text.endswith("}"):
            return None, i
        return text, j

    def statement(self, i: int) -> int:
        """Read the statement(s) starting at line ``i``; returns the next line index."""
        line = self.lines[i]
        s = line.strip()
        if not s:
            return i + 1
        if s[0] == "#" or s.startswith("//"):
            self.comment_line(i, s)
            return i + 1
        if s in _ELISION or (s.endswith("...") and len(s.split()) <= 2 and not s.startswith(("add", "table"))):
            self.diag("warning", "lines elided here ('...'): the input is incomplete", i + 1, line.find(s[0]) + 1, len(s),
                      _HINT_FULL)
            self.note(f"{self.source}: lines are elided (line {i + 1}): what is not shown is not traced")
            return i + 1
        if _PROMPT.match(s) or _PROMPT_ALONE.match(s):
            self.diag("note", "a shell prompt line, skipped", i + 1, line.find(s[0]) + 1, len(s),
                      "pass the command's output only (`nft list ruleset > ruleset.nft` on the node)")
            self.note(f"{self.source}: shell prompt lines skipped")
            return i + 1
        col = line.find(s[0]) + 1
        if not self.stack and s.split(None, 1)[0] in _VERBS:
            text, last = self.gather(i, s)
            body, _ = _strip_comment(text) if "#" in text else (text, None)
            self.command(i, col, body.strip())
            return last + 1
        if self.stack and self.stack[-1][0] is _SET and s.startswith("elements"):
            # a wrapped element list (10,000 lines for a big map): gathered by line, not by character
            text, last = self.gather_elements(i, s, col)
            if text is not None:
                self.set_prop(i + 1, col, text)
                return last + 1
        return self.pieces(i, col, s) + 1

    def comment_line(self, i: int, s: str) -> None:
        m = _UNLOADABLE.match(s)
        if m and not self.stack:
            self.note(f"{self.source}: rules nft cannot load, written as comments by kptrace, are read")
            self.command(i, s.find(m.group(2)) + 1, m.group(2))
            return
        m = re.match(r"#\s*Warning:\s*table\s+(\S+)\s+(\S+)\s+is managed by iptables-nft", s)
        if m:
            self.note(f"table {m.group(1)} {m.group(2)} is managed by iptables-nft: matches nft cannot show are "
                      "`xt` expressions (kept, marked assumed); its iptables-save output is the faithful form")
        elif _PROMPT.match(s):
            self.diag("note", "a shell prompt line, skipped", i + 1, 1, len(s),
                      "pass the command's output only (`nft list ruleset > ruleset.nft` on the node)")
            self.note(f"{self.source}: shell prompt lines skipped")

    def pieces(self, i: int, col: int, text: str) -> int:
        """Split ``text`` (line ``i`` from column ``col``) at top-level ``;``, block openings and closings,
        and read each piece; a piece whose braces are still open at the end of the line takes the next
        lines (a wrapped element list, a rule with a multi-line set). Returns the last line index used."""
        start = 0
        depth = 0
        inq = False
        j = 0
        last = i
        heads = _BLOCK_HEADS | self.g.object_kinds
        while True:
            n = len(text)
            while j < n:
                ch = text[j]
                if ch == '"':
                    inq = not inq
                elif inq:
                    pass
                elif ch == "#":
                    nl = text.find("\n", j)
                    end = n if nl < 0 else nl
                    piece = text[start:j]
                    handle = _HANDLE.match(text, j)
                    if piece.strip():
                        self.piece(i, col, text, start, piece, handle=int(handle.group(1)) if handle else None)
                    elif handle and self.stack and hasattr(self.stack[-1][1], "handle"):
                        self.stack[-1][1].handle = int(handle.group(1))  # "chain x { # handle 3"
                    start = j = end
                    continue
                elif ch == "{":
                    k = self.stack[-1][0] if self.stack else None
                    head = text[start:j].strip()
                    if k in (None, _TABLE) and head and depth == 0 and head.split()[0] in heads:
                        self.open_block(i, col, text, start, head)
                        start = j + 1
                    else:
                        depth += 1
                elif ch == "}":
                    if depth > 0:
                        depth -= 1
                    else:
                        piece = text[start:j]
                        if piece.strip():
                            self.piece(i, col, text, start, piece)
                        nl = text.rfind("\n", 0, j)
                        self.close_block(i + text.count("\n", 0, j), (col + j) if nl < 0 else j - nl)
                        start = j + 1
                elif (ch == ";" or ch == "\n") and depth == 0:
                    piece = text[start:j]
                    if piece.strip():
                        self.piece(i, col, text, start, piece)
                    start = j + 1
                j += 1
            if (depth > 0 or inq) and last + 1 < len(self.lines) and not _starts_statement(self.lines[last + 1]):
                last += 1
                text += "\n" + self.lines[last]
                inq = False if inq else inq
                continue
            break
        piece = text[start:]
        if piece.strip():
            self.piece(i, col, text, start, piece)
        return last

    def piece(self, i: int, col: int, text: str, start: int, piece: str, handle: int | None = None) -> None:
        line = i + 1 + text.count("\n", 0, start)
        lead = len(piece) - len(piece.lstrip())
        pcol = (col + start + lead) if line == i + 1 else (start - text.rfind("\n", 0, start) + lead)
        p = piece.strip()
        kind = self.stack[-1][0] if self.stack else None
        if kind is _CHAIN:
            self.chain_piece(line, pcol, p, handle)
        elif kind is _SET:
            self.set_prop(line, pcol, p)
        elif kind is _TABLE:
            self.table_prop(line, pcol, p)
        elif kind is _OBJECT:
            obj = self.stack[-1][1]
            obj[2].append(p)
        else:
            self.top_piece(line, pcol, p, handle)

    # -- blocks (listing form)

    def open_block(self, i: int, col: int, text: str, start: int, head: str) -> None:
        line = i + 1 + text.count("\n", 0, start)
        toks = _tokens(head)
        word = toks[0]
        kind = self.stack[-1][0] if self.stack else None
        if word == "table":
            if kind is not None:
                self.diag("error", "a table inside a block", line, col, len(head), "is a '}' missing before it?")
            family, name = (toks[1], toks[2]) if len(toks) >= 3 and toks[1] in self.g.families else \
                (self.g.default_family, toks[1] if len(toks) > 1 else "")
            if not name or len(toks) > 3:
                self.bad_declaration("header", head + " {", line, col)
                if not name:
                    name = "?"
            t = self.get_table(family, _unquote(name), line)
            self.stack.append((_TABLE, t, line, col))
            return
        name = _unquote(toks[1]) if len(toks) > 1 else ""
        if not name:
            self.bad_declaration("header", head + " {", line, col)
            name = "?"
        if kind is None:
            t = self.placeholder(line, col, head, chain=name if word == "chain" else None)
            self.stack.append((_TABLE, t, line, 0))
        t = self.table
        if word == "chain":
            c = self.get_chain(t, name, line, declared=True)
            self.stack.append((_CHAIN, c, line, col))
        elif word in ("set", "map"):
            s = self.get_set(t, name, line, declared=True)
            if word == "map" and s.data_type is None:
                s.data_type = ("?",)
            self.stack.append((_SET, s, line, col))
        else:
            obj = (word, name, [], line)
            t.objects.append(obj)
            self.note(f"{t.family} {t.name}: {word} {name} is kept but not modelled")
            self.stack.append((_OBJECT, obj, line, col))

    def close_block(self, i: int, col: int) -> None:
        if not self.stack:
            self.diag("error", "'}' closes no block", i + 1, col, 1, "is a '{' missing, or the input's start cut off?")
            return
        kind, obj, _, _ = self.stack.pop()
        if self.stack and self.stack[-1][0] is _TABLE and self.stack[-1][3] == 0 and kind is not _TABLE:
            # the end of a chain pasted without its table: leave its placeholder table too
            self.stack.pop()

    def placeholder(self, line: int, col: int, head: str, chain: str | None) -> NftTable:
        """The made-up table for chains or rules pasted without their table (one per pasted listing:
        a chain name seen again starts another, as when two nodes' chains are pasted one after the other)."""
        t = self.fragment_table
        if t is None or (chain is not None and chain in t.chains and len(t.chains[chain])):
            self.fragment_count += 1
            family = "ip6" if _FAMILY_GUESS_V6.search(self.text) and not re.search(r"\bip (?:saddr|daddr)\b", self.text) \
                else "ip"
            name = "fragment" if self.fragment_count == 1 else f"fragment-{self.fragment_count}"
            t = self.get_table(family, name, line)
            t.placeholder = True
            self.fragment_table = t
            what = f"chain {chain}" if chain else "rules"
            again = f" (chain {chain} appears again: another listing pasted after the first?)" if self.fragment_count > 1 else ""
            self.diag("warning", f"{what} without a table: read into placeholder table {family} {name}{again}",
                      line, col, len(head), _HINT_FULL + " (or `nft list table FAMILY NAME`)")
            self.note(f"{self.source}: {what if chain is None else 'chains'} pasted without their table are read into "
                      f"placeholder table {family} {name}{again}; their base chains, hooks and policies are unknown")
        return t

    def chain_piece(self, line: int, col: int, p: str, handle: int | None) -> None:
        c = self.chain
        word = p.split(None, 1)[0]
        if word in _CHAIN_PROP_WORDS:
            self.chain_prop(c, line, col, p)
            return
        if p in _ELISION:
            self.diag("warning", "rules elided here ('...'): the chain is incomplete", line, col, len(p), _HINT_FULL)
            self.note(f"{self.source}: rules are elided (line {line}): what is not shown is not traced")
            return
        c._entries.append((line, p, col, handle))
        c._changed()

    def chain_prop(self, c: NftChain, line: int, col: int, p: str) -> bool:
        toks = _tokens(p)
        g = self.g
        try:
            w = toks[0]
            if w == "type":
                j = 1
                c.type = toks[j]
                if toks[j + 1] != "hook":
                    raise IndexError
                c.hook = toks[j + 2]
                j += 3
                if toks[j] == "device":
                    c.device = _unquote(toks[j + 1])
                    j += 2
                if toks[j] != "priority":
                    raise IndexError
                prio = self.priority(c.family, toks[j + 1:])
                if prio is None or c.type not in g.chain_types or c.hook not in g.hooks:
                    raise IndexError
                c.priority = prio
                if c.policy is None:
                    c.policy = "accept"
            elif w == "policy":
                if toks[1] not in g.policies:
                    raise IndexError
                c.policy = toks[1]
            elif w == "comment":
                c.comment = _unquote(toks[1])
            elif w in ("devices", "device"):
                c.device = ",".join(_unquote(x) for x in toks[2:] if x not in "{},=") or None
            else:
                raise IndexError
            return True
        except IndexError:
            self.bad_declaration("chain_spec", p, line, col)
            return False

    def priority(self, family: str, toks: list[str]) -> int | None:
        if not toks:
            return None
        t0 = toks[0]
        try:
            if len(toks) == 1 and (t0.lstrip("+-").isdigit()):
                return int(t0)
            base = self.g.priority(family, t0)
            if base is None:
                return None
            if len(toks) == 1:
                return base
            if len(toks) == 3 and toks[1] in "+-" and is_uint(toks[2]):
                return base + int(toks[2]) if toks[1] == "+" else base - int(toks[2])
            if len(toks) == 2 and toks[1][:1] in "+-" and is_uint(toks[1][1:]):
                return base + int(toks[1])
        except ValueError:
            return None
        return None

    def set_prop(self, line: int, col: int, p: str, s: NftSet | None = None) -> None:
        if s is None:
            s = self.set
        g = self.g
        word = p.split(None, 1)[0]
        rest = p[len(word):].strip()
        ok = True
        if word == "type":
            key, _, data = rest.partition(" : ")
            s.key_type = tuple(x.strip() for x in key.split(" . ") if x.strip())
            s.data_type = tuple(x.strip() for x in data.split(" . ")) if data else (None if s.data_type in (None, ("?",)) and not data else s.data_type)
            if data == "" and s.data_type == ("?",):
                ok = False
            ok = ok and bool(s.key_type) and all(x.replace("_", "").isalnum() for x in s.key_type + (s.data_type or ()))
            unknown = [x for x in s.key_type + (s.data_type or ()) if x not in g.set_types]
            if ok and unknown:
                self.diag("warning", f"unknown set type {unknown[0]!r}", line, col + p.find(unknown[0]), len(unknown[0]),
                          "its elements are read as plain strings")
        elif word == "typeof":
            s.typeof = rest
            key, _, data = rest.partition(" : ")
            s.key_type = tuple(self.typeof_type(x.strip()) for x in key.split(" . "))
            if data:
                s.data_type = tuple(self.typeof_type(x.strip()) for x in data.split(" . "))
            elif s.data_type == ("?",):
                ok = False
        elif word == "flags":
            flags = tuple(sorted(f.strip() for f in rest.split(",") if f.strip()))
            s.flags = flags
            ok = bool(flags) and all(f in g.set_flags for f in flags)
        elif word in ("timeout", "gc-interval"):
            v = parse_seconds(rest)
            if v is None:
                ok = False
            elif word == "timeout":
                s.timeout = v
            else:
                s.extra += (("gc-interval", rest),)
        elif word == "size":
            ok = is_uint(rest)
            if ok:
                s.size = int(rest)
        elif word == "comment":
            s.comment = _unquote(rest)
        elif word == "elements":
            body = rest.lstrip("=").strip()
            s._chunks.append(("add", line, (col + len(p) - len(body), body)))
            s._elements = None
            ok = body.startswith("{")
        elif word in g.set_kept:
            s.extra += ((word, rest),)
        else:
            ok = False
        if not ok:
            self.bad_declaration("set_spec", p, line, col)

    def typeof_type(self, expr: str) -> str:
        e = " ".join(expr.split())
        if e.startswith(("numgen", "jhash", "symhash")):
            return "integer"
        if e.split()[0] in self.g.unqualified:
            e = "meta " + e
        return self.g.typeof.get(e, e)

    def table_prop(self, line: int, col: int, p: str, t: NftTable | None = None) -> None:
        if t is None:
            t = self.table
        word = p.split(None, 1)[0]
        rest = p[len(word):].strip()
        if word == "comment":
            t.comment = _unquote(rest)
        elif word == "flags":
            t.flags = tuple(f.strip() for f in rest.split(",") if f.strip())
        elif p in _ELISION:
            self.diag("warning", "lines elided here ('...'): the table is incomplete", line, col, len(p), _HINT_FULL)
            self.note(f"{self.source}: lines are elided (line {line}): what is not shown is not traced")
        elif word in self.g.selector_starts or word in self.g.verdicts or word == "counter":
            # a rule directly in a table block: a chain's header is missing
            self.diag("error", "a rule outside a chain", line, col, len(word), "is a `chain NAME {` line missing?")
        else:
            self.bad_declaration("table_spec", p, line, col)

    def top_piece(self, line: int, col: int, p: str, handle: int | None) -> None:
        toks = p.split()
        w = toks[0]
        if w in ("define", "include", "redefine", "undefine"):
            self.diag("warning", f"`{w}` is not supported: the line is skipped", line, col, len(w),
                      "pass the ruleset as nft prints it (`nft list ruleset`), where variables are expanded")
            return
        if w in self.g.selector_starts or w in self.g.verdicts or w in self.g.nat_kinds or w == "counter":
            t = self.placeholder(line, col, p, chain=None)
            c = self.get_chain(t, "fragment", line, declared=False)
            c._entries.append((line, p, col, handle))
            c._changed()
            self.note(f"{self.source}: rules pasted without their chain are read into chain {t.family} {t.name} fragment")
            return
        if w == "}":
            self.close_block(line - 1, col)
            return
        self.diag("error", f"not an nft statement: {w!r}", line, col, len(w),
                  "expected `table ...`, `add ...` (knftables) or the output of `nft list ruleset`")
        self.bad_lines += 1

    _WHAT = {"chain_spec": ("chain", "type, policy, comment, devices"),
             "set_spec": ("set", "type, typeof, flags, timeout, size, comment, elements, policy, auto-merge, gc-interval"),
             "table_spec": ("table", "comment, flags, chain, set, map"), "header": ("block", "table, chain, set, map")}

    def bad_declaration(self, kind: str, p: str, line: int, col: int) -> None:
        """Report a declaration the fast reader refused, where and why the pyparsing grammar says."""
        what, known = self._WHAT.get(kind, ("declaration", ""))
        word = p.split()[0] if p.split() else p
        res = _diagnose(kind, p)
        if res is None:
            self.diag("error", f"cannot read this {what} declaration", line, col, len(word))
            return
        pcol, length, msg = res
        if pcol == 1 and msg.startswith("expected end of text"):
            self.diag("error", f"unknown {what} property {word!r}", line, col, len(word), f"{what} properties are {known}")
            return
        if word == "flags" and kind == "set_spec":
            for f in p[5:].split(","):
                if f.strip() and f.strip() not in self.g.set_flags:
                    self.diag("error", f"unknown set flag {f.strip()!r}", line, col + p.find(f.strip(), 5), len(f.strip()),
                              "set flags are " + ", ".join(sorted(self.g.set_flags)))
                    return
        self.diag("error", msg, line, col + pcol - 1, length)

    # -- commands (knftables form)

    def command(self, i: int, col: int, text: str) -> None:
        line = i + 1
        toks = _tokens(text)
        g = self.g
        verb = toks[0]
        obj = toks[1] if len(toks) > 1 else ""
        if verb == "list":
            self.diag("note", "an `nft list` command, skipped", line, col, len(text.split("\n")[0]),
                      "pass the command's output, not the command")
            return
        if obj == "ruleset":
            if verb in ("flush", "delete", "destroy"):
                self.rs.tables.clear()
                self.fragment_table = None
            return
        j = 2
        family = g.default_family
        if j < len(toks) and toks[j] in g.families:
            family = toks[j]
            j += 1
        if obj not in ("table", "chain", "rule", "set", "map", "element") and obj not in g.object_kinds:
            res = _diagnose("command", text)
            self.diag("error", res[2] if res else f"unknown command {verb} {obj}", line, col + (res[0] - 1 if res else 0),
                      res[1] if res else len(verb), "knftables lines are add|delete|flush table|chain|rule|set|map|element ...")
            return
        if j >= len(toks):
            self.diag("error", f"`{verb} {obj}` needs a table name", line, col + len(text), 1,
                      f"write {verb} {obj} FAMILY TABLE ...")
            return
        tname = _unquote(toks[j])
        j += 1
        if obj == "table":
            if verb in ("delete", "destroy"):
                self.rs.tables.pop((family, tname), None)
                return
            t = self.get_table(family, tname, line)
            if verb == "flush":
                for c in t.chains.values():
                    c._entries.clear()
                    c._changed()
                return
            if j < len(toks) and toks[j] == "{":
                self.table_spec(t, line, col, text, text.index("{"))
            return
        t = self.rs.tables.get((family, tname))
        if t is None:
            if verb in ("delete", "destroy", "flush"):
                if verb == "delete":
                    self.diag("warning", f"table {family} {tname} is not in this input", line, col, len(text.split()[0]),
                              "a partial sync applied to a ruleset kptrace has not seen; the command is skipped")
                return
            t = self.get_table(family, tname, line, declared=False)
        name = _unquote(toks[j]) if j < len(toks) and toks[j] not in ("{", "handle") else ""
        if obj == "chain":
            self.chain_command(verb, t, name, toks, j, line, col, text)
        elif obj in ("set", "map"):
            self.set_command(verb, obj, t, name, line, col, text)
        elif obj == "element":
            self.element_command(verb, t, name, line, col, text)
        elif obj == "rule":
            self.rule_command(verb, t, name, toks, j + 1, line, col, text)
        else:
            if verb in ("add", "create"):
                t.objects.append((obj, name, [text], line))
                self.note(f"{t.family} {t.name}: {obj} {name} is kept but not modelled")

    def table_spec(self, t: NftTable, line: int, col: int, text: str, brace: int) -> None:
        body = text[brace + 1:].rsplit("}", 1)[0]
        for part in _split_semis(body):
            p = part.strip()
            if p:
                self.table_prop(line, col + brace + 1 + body.find(p), p, t)

    def chain_command(self, verb: str, t: NftTable, name: str, toks: list[str], j: int, line: int, col: int, text: str) -> None:
        if not name:
            if verb in ("delete", "destroy") and "handle" in toks:
                self.diag("warning", "`delete chain ... handle N`: handles of this input are unknown, skipped", line, col,
                          len(text.split("\n")[0]), "kube-proxy deletes chains by name")
                return
            self.diag("error", f"`{verb} chain` needs a chain name", line, col + len(text), 1)
            return
        if verb in ("delete", "destroy"):
            c = t.chains.pop(name, None)
            if c is None and verb == "delete":
                self.diag("warning", f"chain {name} is not in this input", line, col, len(text), "the delete is skipped")
            return
        if verb == "flush":
            c = t.chains.get(name)
            if c is not None:
                c._entries.clear()
                c._changed()
            return
        c = self.get_chain(t, name, line, declared=True)
        if "{" in text:
            brace = text.index("{")
            body = text[brace + 1:].rsplit("}", 1)[0]
            for part in _split_semis(body):
                p = part.strip()
                if p:
                    self.chain_prop(c, line, col + brace + 1 + body.find(p), p)

    def set_command(self, verb: str, obj: str, t: NftTable, name: str, line: int, col: int, text: str) -> None:
        if verb in ("delete", "destroy"):
            t.sets.pop(name, None)
            return
        if verb in ("flush", "reset"):
            s = t.sets.get(name)
            if s is not None:
                s._chunks.append(("flush", line, ""))
                s._changed()
            return
        s = self.get_set(t, name, line, declared=True)
        if obj == "map" and s.data_type is None:
            s.data_type = ("?",)
        if "{" not in text:
            self.diag("error", f"`{verb} {obj} {name}` needs its declaration", line, col + len(text), 1,
                      f"write {verb} {obj} FAMILY TABLE NAME {{ type ... ; }}")
            return
        brace = text.index("{")
        body = text[brace + 1:].rstrip()
        if body.endswith("}"):
            body = body[:-1]
        pos = 0
        for part in _split_semis(body):
            p = part.strip()
            if p:
                off = body.find(p, pos)
                pos = off + len(p)
                self.set_prop(line + text.count("\n", 0, brace + 1 + off), col + brace + 1 + off, p, s)
        if s.data_type == ("?",):
            self.diag("error", f"map {name} has no type", line, col, len(text.split()[0]), "write type KEY : DATA")

    def element_command(self, verb: str, t: NftTable, name: str, line: int, col: int, text: str) -> None:
        if "{" not in text:
            self.diag("error", f"`{verb} element` needs {{ elements }}", line, col + len(text), 1)
            return
        brace = text.index("{")
        s = t.sets.get(name)
        if s is None:
            if verb in ("delete", "destroy"):
                return
            s = self.get_set(t, name, line, declared=False)
        op = "delete" if verb in ("delete", "destroy") else "add"
        s._chunks.append((op, line, (col + brace, text[brace:])))
        s._changed()

    def rule_command(self, verb: str, t: NftTable, cname: str, toks: list[str], j: int, line: int, col: int, text: str) -> None:
        if not cname:
            self.diag("error", f"`{verb} rule` needs a chain name", line, col + len(text), 1)
            return
        c = t.chains.get(cname)
        if c is None:
            if verb in ("delete", "destroy", "replace"):
                return
            c = self.get_chain(t, cname, line, declared=False)
        # the rule text starts after "VERB rule [FAMILY] TABLE CHAIN [position N | handle N | index N]"
        where = None
        if j + 1 < len(toks) and toks[j] in ("position", "handle", "index") and is_uint(toks[j + 1]):
            where = (toks[j], int(toks[j + 1]))
            j += 2
        body = _after_tokens(text, j)
        bcol = col + (len(text) - len(body))
        if verb in ("delete", "destroy", "replace"):
            if where is None or where[0] != "handle":
                self.diag("error", f"`{verb} rule` needs `handle N`", line, col, len(text.split("\n")[0]))
                return
            k = self.find_handle(c, where[1])
            if k is None:
                self.diag("warning", f"`{verb} rule ... handle {where[1]}`: no rule of chain {cname} has that handle in "
                          "this input", line, col, len(text.split("\n")[0]),
                          "handles are known only from `nft -a list ruleset` or nft -j; the command is skipped")
                return
            if verb == "replace":
                c._entries[k] = (line, body, bcol, where[1])
            else:
                del c._entries[k]
            c._changed()
            return
        entry = (line, body, bcol, None)
        if where is None:
            if verb == "insert":
                c._entries.insert(0, entry)
            else:
                c._entries.append(entry)
        elif where[0] == "index":
            k = min(where[1], len(c._entries))
            c._entries.insert(k if verb == "insert" else k + 1, entry)
        else:
            k = self.find_handle(c, where[1])
            if k is None:
                self.diag("warning", f"`{verb} rule ... {where[0]} {where[1]}`: no rule of chain {cname} has that handle in "
                          "this input; the rule is added at the end", line, col, len(text.split("\n")[0]))
                c._entries.append(entry)
            else:
                c._entries.insert(k if verb == "insert" else k + 1, entry)
        c._changed()

    def find_handle(self, c: NftChain, handle: int) -> int | None:
        return c.index_of_handle(handle)

    # -- the end

    def finish(self) -> None:
        if self.stack:
            last_line = len(self.lines)
            while last_line > 1 and not self.lines[last_line - 1].strip():
                last_line -= 1
            cut_mid_line = not self.text.endswith("\n")
            inner = self.stack[-1]
            if cut_mid_line and inner[0] is _CHAIN and inner[1]._entries:
                e = inner[1]._entries[-1]
                if self.reader.entry(e)[0] == last_line:
                    inner[1]._entries.pop()
                    inner[1]._changed()
                    self.diag("warning", "the last line is cut off: it is not read", last_line, 1,
                              len(self.lines[last_line - 1]), _HINT_FULL)
            opened = ", ".join(f"{k} {self.block_name(k, o)} (line {ln})" for k, o, ln, c in self.stack if c or k is not _TABLE)
            for kind, obj, ln, c in reversed(self.stack):
                if kind is _TABLE and c == 0:
                    continue  # a placeholder table: there was no "{" to close
                self.diag("error", f"{kind} {self.block_name(kind, obj)} is not closed: the input ends inside it",
                          ln, c, len(kind), "the listing looks cut off; " + _HINT_FULL +
                          ", or pass --lenient to read what is complete")
            self.note(f"{self.source}: the input ends inside {opened}: read what is complete")
        for t in self.rs.tables.values():
            for s in t.sets.values():
                if not s.declared and s._chunks:
                    self.diag("warning", f"elements for set {s.name}, which this input does not add", s.line, 0, 0,
                              f"nft -f needs `add set|map {t.family} {t.name} {s.name} {{ type ...; }}` first; its type is unknown")
                if s.data_type == ("?",):
                    s.data_type = ("verdict",) if any("goto" in str(p) or "jump" in str(p) or "drop" in str(p)
                                                      for _, _, p in s._chunks) else None
            for c in t.chains.values():
                if not c.declared and not t.placeholder:
                    self.diag("warning", f"rules for chain {c.name}, which this input does not add", c.line, 0, 0,
                              f"nft -f needs `add chain {t.family} {t.name} {c.name}` first; kptrace creates it")

    @staticmethod
    def block_name(kind: str, obj: Any) -> str:
        if kind is _TABLE:
            return f"{obj.family} {obj.name}"
        if kind is _OBJECT:
            return obj[1]
        return obj.name


_STATEMENT_STARTS = ("table ", "chain ", "set ", "map ", "add ", "delete ", "flush ", "insert ", "replace ", "create ",
                     "destroy ")


def _starts_statement(line: str) -> bool:
    """A line that starts a new block or command: it never continues an open "{" of the line before."""
    return line.lstrip().startswith(_STATEMENT_STARTS)


def _depth(text: str) -> int:
    """Braces opened minus closed, outside quotes and comments."""
    if '"' not in text and "#" not in text:
        return text.count("{") - text.count("}")
    d = 0
    inq = False
    for ch in text:
        if ch == '"':
            inq = not inq
        elif inq:
            continue
        elif ch == "#":
            break
        elif ch == "{":
            d += 1
        elif ch == "}":
            d -= 1
    return d


def _split_semis(body: str) -> list[str]:
    """Split a declaration's body at ``;`` and line ends outside quotes and braces."""
    if '"' not in body and "{" not in body:
        return body.replace("\n", ";").split(";")
    out = []
    start = 0
    depth = 0
    inq = False
    for j, ch in enumerate(body):
        if ch == '"':
            inq = not inq
        elif inq:
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif (ch == ";" or ch == "\n") and depth == 0:
            out.append(body[start:j])
            start = j + 1
    out.append(body[start:])
    return out


def _after_tokens(text: str, k: int) -> str:
    """``text`` after its first ``k`` tokens."""
    pos = 0
    for _ in range(k):
        m = _TOKEN.search(text, pos)
        if m is None:
            return ""
        pos = m.end()
    return text[pos:].strip()


def parse_nft_text(text: str, source: str, *, lenient: bool = False) -> NftRuleset:
    """Read nftables text: knftables transaction text, ``nft list ruleset``/``nft list table`` output
    (``-a`` handles, counters, comments), or a fragment of one. Rules are read on first use.

    Raises :class:`ParseError` when the input has errors (an unclosed block, a line that is no nft
    statement, a bad declaration) unless ``lenient``; warnings and notes are in ``.diagnostics``.

    >>> rs = parse_nft_text("add table ip t\\nadd chain ip t c\\nadd rule ip t c ip daddr 10.0.0.1 drop\\n", "x.nft")
    >>> rs.chain("ip", "t", "c").rule_at(0).exprs
    (Match(left=Payload(protocol='ip', field='daddr'), op='==', right=Value(text='10.0.0.1')), Verdict(kind='drop', target=None, reject_with=None))
    """
    if _IPTABLES_SAVE.search(text, 0, 8192):
        m = _IPTABLES_SAVE.search(text, 0, 8192)
        line = text.count("\n", 0, m.start()) + 1
        bad = text.split("\n")[line - 1]
        raise ParseError([Diagnostic("error", "this is iptables-save output, not an nftables ruleset", source, line, 1, bad,
                                     len(bad.strip()), "pass it as an iptables dump; for the nft ruleset run "
                                     "`nft list ruleset` (or `nft -j list ruleset`) on the node")])
    loader = _Loader(text, source)
    # The load makes ~100k long-lived objects (chains, entry lists) and no reference cycles; with the
    # cyclic GC on, its collections walk them again and again: 20% of a 10k-Service load (0.74 -> 0.59 s).
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        rs = loader.run()
    except RecursionError:  # pragma: no cover - a pathological nesting depth
        raise ParseError([Diagnostic("error", "the input nests too deeply to read", source, 0, 0, "", 0, _HINT_FULL)]) from None
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
            s.elements
            if s.is_vmap:
                for k, v in s.elements:
                    if type(v) is Verdict and v.kind in ("jump", "goto") and v.target not in t.chains:
                        diags.append(Diagnostic("warning", f"element of {s.name} jumps to chain {v.target!r}, which is not in "
                                                "this input", s.source, s.line, 0, "", 0,
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
        diags.append(Diagnostic("warning", f"{st.kind} to chain {st.target!r}, which is not in this input", r.source, r.line,
                                col, text, len(st.target), "a partial input? a trace stops there and says so"))
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
