"""knftables commands, one a line (kube-proxy's transaction text): ``add|create|insert|replace|delete|destroy|
flush|reset`` of a ``table``, ``chain``, ``set``/``map``, ``element`` or ``rule``, with the ``{ ... }`` of a
declaration read by :mod:`.properties`. Rules and elements are filed, not read (:mod:`.entries`). The
loader's fast path takes the common ``add rule`` / ``add element`` / ``add chain`` lines itself; these
methods get the rest."""

from __future__ import annotations

from kptrace.model.addr import is_uint
from kptrace.model.nft import NftTable
from kptrace.parsers.nft.atoms import after_tokens, tokens, unquote
from kptrace.parsers.nft.declarations import diagnose
from kptrace.parsers.nft.lines import split_semis
from kptrace.parsers.nft.properties import PropertyReader

__all__ = ["CommandReader"]


class CommandReader(PropertyReader):
    """Reads knftables commands."""

    def command(self, i: int, col: int, text: str) -> None:
        line = i + 1
        toks = tokens(text)
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
            res = diagnose("command", text)
            self.diag("error", res[2] if res else f"unknown command {verb} {obj}", line,
                      col + (res[0] - 1 if res else 0), res[1] if res else len(verb),
                      "knftables lines are add|delete|flush table|chain|rule|set|map|element ...")
            return
        if j >= len(toks):
            self.diag("error", f"`{verb} {obj}` needs a table name", line, col + len(text), 1,
                      f"write {verb} {obj} FAMILY TABLE ...")
            return
        tname = unquote(toks[j])
        j += 1
        if obj == "table":
            if verb in ("delete", "destroy"):
                self.rs.tables.pop((family, tname), None)
                return
            table = self.get_table(family, tname, line)
            if verb == "flush":
                for c in table.chains.values():
                    c._entries.clear()
                    c._changed()
                return
            if j < len(toks) and toks[j] == "{":
                self.table_spec(table, line, col, text, text.index("{"))
            return
        t = self.rs.tables.get((family, tname))
        if t is None:
            if verb in ("delete", "destroy", "flush"):
                if verb == "delete":
                    self.diag("warning", f"table {family} {tname} is not in this input", line, col,
                              len(text.split()[0]),
                              "a partial sync applied to a ruleset kptrace has not seen; the command is skipped")
                return
            t = self.get_table(family, tname, line, declared=False)
        name = unquote(toks[j]) if j < len(toks) and toks[j] not in ("{", "handle") else ""
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
        for part in split_semis(body):
            p = part.strip()
            if p:
                self.table_prop(line, col + brace + 1 + body.find(p), p, t)

    def chain_command(self, verb: str, t: NftTable, name: str, toks: list[str], j: int, line: int, col: int,
                      text: str) -> None:
        if not name:
            if verb in ("delete", "destroy") and "handle" in toks:
                self.diag("warning", "`delete chain ... handle N`: handles of this input are unknown, skipped", line,
                          col, len(text.split("\n")[0]), "kube-proxy deletes chains by name")
                return
            self.diag("error", f"`{verb} chain` needs a chain name", line, col + len(text), 1)
            return
        if verb in ("delete", "destroy"):
            c = t.chains.pop(name, None)
            if c is None and verb == "delete":
                self.diag("warning", f"chain {name} is not in this input", line, col, len(text),
                          "the delete is skipped")
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
            for part in split_semis(body):
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
        for part in split_semis(body):
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

    def rule_command(self, verb: str, t: NftTable, cname: str, toks: list[str], j: int, line: int, col: int,
                     text: str) -> None:
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
        body = after_tokens(text, j)
        bcol = col + (len(text) - len(body))
        if verb in ("delete", "destroy", "replace"):
            if where is None or where[0] != "handle":
                self.diag("error", f"`{verb} rule` needs `handle N`", line, col, len(text.split("\n")[0]))
                return
            k = c.index_of_handle(where[1])
            if k is None:
                self.diag("warning", f"`{verb} rule ... handle {where[1]}`: no rule of chain {cname} has that "
                          "handle in this input", line, col, len(text.split("\n")[0]),
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
            k = c.index_of_handle(where[1])
            if k is None:
                self.diag("warning", f"`{verb} rule ... {where[0]} {where[1]}`: no rule of chain {cname} has that "
                          "handle in this input; the rule is added at the end", line, col, len(text.split("\n")[0]))
                c._entries.append(entry)
            else:
                c._entries.insert(k if verb == "insert" else k + 1, entry)
        c._changed()
