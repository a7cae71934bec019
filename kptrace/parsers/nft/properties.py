"""Declarations' properties, in either form: a chain's ``type filter hook input priority 0; policy drop``,
a set's ``type``/``typeof``/``flags``/``timeout``/``elements = { ... }``, a table's ``comment``/``flags``.
Read by hand (fast); a property that does not read is reported where and why the pyparsing grammar
(:mod:`.declarations`) says."""

from __future__ import annotations

from kptrace.model.addr import is_uint
from kptrace.model.nft import NftChain, NftSet, NftTable
from kptrace.parsers.nft.atoms import parse_seconds, tokens, unquote
from kptrace.parsers.nft.declarations import diagnose
from kptrace.parsers.nft.lines import ELISION, HINT_FULL
from kptrace.parsers.nft.state import LoadState

__all__ = ["PropertyReader"]

# declaration kind -> (what it declares, its properties), for "unknown ... property" messages
_WHAT = {"chain_spec": ("chain", "type, policy, comment, devices"),
         "set_spec": ("set", "type, typeof, flags, timeout, size, comment, elements, policy, auto-merge, gc-interval"),
         "table_spec": ("table", "comment, flags, chain, set, map"), "header": ("block", "table, chain, set, map")}


class PropertyReader(LoadState):
    """Reads the properties of chains, sets and tables."""

    def chain_prop(self, c: NftChain, line: int, col: int, p: str) -> bool:
        toks = tokens(p)
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
                    c.device = unquote(toks[j + 1])
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
                c.comment = unquote(toks[1])
            elif w in ("devices", "device"):
                c.device = ",".join(unquote(x) for x in toks[2:] if x not in "{},=") or None
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
            if data:
                s.data_type = tuple(x.strip() for x in data.split(" . "))
            elif s.data_type == ("?",):  # a map declared without its data type: read as a set
                s.data_type = None
            ok = ok and bool(s.key_type) and all(x.replace("_", "").isalnum() for x in s.key_type + (s.data_type or ()))
            unknown = [x for x in s.key_type + (s.data_type or ()) if x not in g.set_types]
            if ok and unknown:
                self.diag("warning", f"unknown set type {unknown[0]!r}", line, col + p.find(unknown[0]),
                          len(unknown[0]), "its elements are read as plain strings")
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
            s.comment = unquote(rest)
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
            t.comment = unquote(rest)
        elif word == "flags":
            t.flags = tuple(f.strip() for f in rest.split(",") if f.strip())
        elif p in ELISION:
            self.diag("warning", "lines elided here ('...'): the table is incomplete", line, col, len(p), HINT_FULL)
            self.note(f"{self.source}: lines are elided (line {line}): what is not shown is not traced")
        elif word in self.g.selector_starts or word in self.g.verdicts or word == "counter":
            # a rule directly in a table block: a chain's header is missing
            self.diag("error", "a rule outside a chain", line, col, len(word), "is a `chain NAME {` line missing?")
        else:
            self.bad_declaration("table_spec", p, line, col)

    def bad_declaration(self, kind: str, p: str, line: int, col: int) -> None:
        """Report a declaration the fast reader refused, where and why the pyparsing grammar says."""
        what, known = _WHAT.get(kind, ("declaration", ""))
        word = p.split()[0] if p.split() else p
        res = diagnose(kind, p)
        if res is None:
            self.diag("error", f"cannot read this {what} declaration", line, col, len(word))
            return
        pcol, length, msg = res
        if pcol == 1 and msg.startswith("expected end of text"):
            self.diag("error", f"unknown {what} property {word!r}", line, col, len(word),
                      f"{what} properties are {known}")
            return
        if word == "flags" and kind == "set_spec":
            for f in p[5:].split(","):
                if f.strip() and f.strip() not in self.g.set_flags:
                    self.diag("error", f"unknown set flag {f.strip()!r}", line, col + p.find(f.strip(), 5),
                              len(f.strip()), "set flags are " + ", ".join(sorted(self.g.set_flags)))
                    return
        self.diag("error", msg, line, col + pcol - 1, length)

