"""Reading a listing whole: its structure, its family and tables, the chains of the model, the rule parser
that reports at the listing's line and column, and the notes on what the listing could not say."""

from __future__ import annotations

from kptrace.errors import Diagnostic, ParseError
from kptrace.model.rules import BUILTIN_CHAINS, Chain, RawRule, Rule, Ruleset, Table
from kptrace.parsers.grammar import iptables_grammar
from kptrace.parsers.iptables_rule import RuleParser
from kptrace.parsers.iptables_save import ParseResult
from kptrace.parsers.listing.grammar import ListingGrammar, listing_grammar
from kptrace.parsers.listing.structure import read_family, read_forms, read_structure
from kptrace.parsers.listing.tables import assign_tables
from kptrace.parsers.listing.translate import Listing, ListingLines
from kptrace.parsers.paste import PasteMap, clean_paste
from kptrace.parsers.tokens import tokenize

__all__ = ["EAGER_RULES", "ListingDiagnostics", "ListingResult", "ListingRuleParser", "parse_iptables_list"]

#: Listings with at most this many rules are read whole at load (see the package's docstring).
EAGER_RULES = 5000
#: the chains a Service's dispatch rules in KUBE-SERVICES and KUBE-NODEPORTS jump to
_SERVICE_TARGETS = ("KUBE-SVC-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-", "KUBE-XLB-")


class ListingRuleParser(RuleParser):
    """The iptables-save rule parser, reporting at the listing's line and column; it also notices rules
    a listing seems to have lost something of."""

    def __init__(self, listing: Listing) -> None:
        super().__init__(iptables_grammar(), listing.source, listing.diagnostics)
        self.listing = listing

    def problem(self, severity: str, message: str, raw: RawRule, text: str, token_index: int | None, hint: str = "") -> None:
        lst = self.listing
        # The unknown match kptrace writes for text it cannot read, and names kept as written, are
        # already reported where the listing shows them.
        if "'?'" in message or "'--text'" in message:
            return
        if any(repr(v) in message or repr(v + "/32") in message or repr(v + "/128") in message for v in lst.unresolved_values):
            return
        i = raw.line - 1
        col, length = lst.locate(i, text, token_index)
        key = (raw.line, col, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.diagnostics.append(Diagnostic(severity, message, self.source, raw.line, col, lst.lines[i].rstrip(), length, hint))

    def parse(self, chain: Chain, number: int, raw: RawRule) -> Rule:
        rule = super().parse(chain, number, raw)
        self._check(chain, number, rule)
        return rule

    def _check(self, chain: Chain, number: int, rule: Rule) -> None:
        """Notice what a listing lost (rules written by a newer iptables than the one that listed them
        print without the matches the older one cannot show)."""
        lst = self.listing
        block = lst.owner[rule.line - 1]
        if block is None or block.kind != "L":
            return
        tgt = rule.target
        if tgt is None or any(m.module == "?" for m in rule.matches):
            return  # what kptrace could not read is reported already
        if (chain.name in ("KUBE-SERVICES", "KUBE-NODEPORTS") and tgt.name.startswith(_SERVICE_TARGETS)
                and any(o.name == "-p" and not o.negated and o.value in ("tcp", "udp", "sctp") for o in rule.base)
                and not any(m.module in ("tcp", "udp", "sctp", "multiport") and m.options for m in rule.matches)):
            self._lossy(rule, f"this rule sends {next(o.value for o in rule.base if o.name == '-p')} to {tgt.name} with no port: kube-proxy always "
                              "writes one (--dport) here, so the listing lost it",
                        "an iptables older than the one that wrote the rules cannot print them whole; a trace sends every port "
                        "to this Service: take `iptables-save` (or the listing) with the node's own iptables")
            return
        if (tgt.name in ("RETURN", "ACCEPT", "DROP", "REJECT") and not rule.base
                and all(m.module == "comment" for m in rule.matches) and number < len(chain)):
            hidden = ("" if block.layout is not None and block.layout.via is not None
                      else " or an interface (-i/-o, which a listing without -v does not show)")
            after = len(chain) - number
            self._lossy(rule, f"this rule matches every packet, so {'the rule' if after == 1 else f'the {after} rules'} after it "
                              f"in {chain.name} {'is' if after == 1 else 'are'} never reached",
                        f"the listing may have lost a match{hidden}: an iptables older than the one that wrote the rules prints "
                        "them without what it cannot show; take `iptables-save` (or the listing with -v) with the node's own iptables")

    def _lossy(self, rule: Rule, message: str, hint: str) -> None:
        key = (rule.line, 0, message)
        if key in self._seen:
            return
        self._seen.add(key)
        lst = self.listing
        line = lst.lines[rule.line - 1].rstrip()
        self.diagnostics.append(Diagnostic("warning", message, self.source, rule.line, 0, line, 0, hint))
        lst.lossy += 1


class ListingDiagnostics(list):
    """A listing's diagnostics. One that quotes a rule as iptables-save writes it (``kptrace parse``'s
    check of jump targets, :func:`parse_all_rules`, builds its own from the rule's text) is moved to the
    listing's line and column as it is added."""

    listing: "Listing | None" = None
    line_map: PasteMap | None = None  # a pasted text's: positions go back to the original's

    def append(self, d: Diagnostic) -> None:
        lst = self.listing
        if lst is not None and d.source == lst.source and 0 < d.line <= len(lst.lines) and d.col:
            i = d.line - 1
            block = lst.owner[i]
            line = lst.lines[i].rstrip()
            if block is not None and block.kind == "L" and d.text != line:
                starts = [col for _, col, _ in tokenize(d.text)]
                if d.col in starts:
                    col, length = lst.locate(i, d.text, starts.index(d.col))
                    d = Diagnostic(d.severity, d.message, d.source, d.line, col, line, length, d.hint)
        if self.line_map is not None:
            d = self.line_map.restore(d)
        super().append(d)


class ListingResult(ParseResult):
    """A :class:`~kptrace.parsers.iptables_save.ParseResult` of a listing, plus the listing forms it holds
    (``"-L -n -v"``, ``"-S"``, ...)."""

    __slots__ = ("forms",)

    def __init__(self, ruleset: Ruleset, diagnostics: list[Diagnostic], lenient: bool, forms: tuple[str, ...]) -> None:
        super().__init__(ruleset, diagnostics, lenient)
        self.forms = forms


def parse_iptables_list(text: str, source: str = "<listing>", *, lenient: bool = False, family: int | None = None,
                        grammar: ListingGrammar | None = None) -> ListingResult:
    """Read an ``iptables -L`` / ``ip6tables -L`` listing or ``iptables -S`` output (any of their forms,
    one chain or many, one table or several) into a ruleset, as :func:`parse_iptables_save` reads a dump.

    Errors (a line that is no part of a listing, a rule line without the chain's columns) raise
    :class:`ParseError` unless ``lenient``; names that cannot be resolved, text no phrase reads, and
    what the listing seems to have lost are warnings; the tables read from chain names are notes.

    >>> r = parse_iptables_list('''Chain KUBE-SVC-X (1 references)
    ... target     prot opt source               destination
    ... KUBE-SEP-Y  all  --  0.0.0.0/0            0.0.0.0/0            /* ns/web:http */ statistic mode random probability 0.50000000000
    ... ''', "listing.txt")
    >>> rule = r.ruleset.chain("nat", "KUBE-SVC-X").rules[0]
    >>> rule.text
    '-A KUBE-SVC-X -m comment --comment "ns/web:http" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-Y'
    >>> rule.location, r.ruleset.notes[0]
    ('listing.txt:3', 'listing.txt lines 1-3 (KUBE-SVC-X): no table given; read as nat: kube-proxy keeps KUBE-SVC-X in nat')
    """
    g = grammar or listing_grammar()
    # Fences, quote markers, colour codes and elisions go (kptrace/parsers/paste.py); the prompts and command
    # lines stay: this reader reads them (`iptables -t nat -L` says the table).
    paste = clean_paste(text, source, keep_commands=True)
    text = paste.text
    diags = ListingDiagnostics()
    lst = Listing(text, source, g, diags)
    lst.elided = frozenset(n - 1 for n in paste.elisions)  # blanked elision lines: they do not end a chain
    diags.listing = lst
    diags.line_map = paste.line_map
    read_structure(lst)
    lst.family = family or read_family(lst)
    rs = Ruleset(family=lst.family, sources=[source], diagnostics=diags)
    parser = ListingRuleParser(lst)
    lines = ListingLines(lst)
    assign_tables(lst)
    parse = parser.parse
    for b in lst.blocks:
        table = b.table
        assert table is not None  # assign_tables gave every chain its table
        t = rs.tables.get(table)
        if t is None:
            t = rs.tables[table] = Table(table, {}, source, b.line + 1)
        if b.name in t.chains:
            lst.problem("warning", f"chain {b.name} of table {table} is listed twice; the first listing is used", b.line, 1,
                        len(lst.lines[b.line]), "two listings of one chain pasted together?")
            continue
        builtin = b.name in BUILTIN_CHAINS[table]
        c = Chain(b.name, table, policy=(b.policy or "ACCEPT") if builtin else None, source=source, line=b.line + 1,
                  declared=True, lines=lines, parse=parse, counters=b.counters if builtin else None, indices=b.rules)
        t.chains[b.name] = c
        if b.policy and not builtin:
            lst.problem("warning", f"chain {b.name} has a policy but is not a built-in chain of {b.table}", b.line, 1,
                        len(lst.lines[b.line]))
    n_rules = sum(len(b.rules) for b in lst.blocks)
    if n_rules <= EAGER_RULES:
        for t in rs.tables.values():
            for c in t.chains.values():
                c.rules  # noqa: B018 -- read now: every problem and note is known at load
    _notes(lst, rs)
    rs.notes[:0] = [*paste.notes, *paste.elision_notes("rules")]
    read_forms(lst)
    result = ListingResult(rs, diags, lenient, tuple(sorted(lst.forms)))
    if not lenient and result.errors:
        raise ParseError(diags)
    return result


def _notes(lst: Listing, rs: Ruleset) -> None:
    notes = list(lst.notes)
    if any(b.kind == "L" and b.layout is not None and b.layout.via is None for b in lst.blocks):
        notes.append(f"{lst.source}: a listing without -v has no interface columns: a rule that matches -i/-o reads "
                     "as matching every interface (take `iptables -L -n -v` to see them)")
    if lst.rounded:
        notes.append(f"{lst.source}: counters are rounded (K, M, G: thousands, millions, billions); take the listing with -x for exact ones")
    if lst.names_read:
        shown = ", ".join(f"{k}={v}" for k, v in list(lst.names_read.items())[:8])
        more = len(lst.names_read) - 8
        notes.append(f"{lst.source}: the listing was taken without -n; names read with kptrace's fixed tables: {shown}"
                     + (f" and {more} more" if more > 0 else ""))
    if lst.lossy:
        notes.append(f"{lst.source}: {lst.lossy} rule{'s look' if lst.lossy != 1 else ' looks'} incomplete (see the warnings): "
                     "traces through them may not be what the node does")
    for t in rs.tables.values():
        present = [c for c in BUILTIN_CHAINS[t.name] if c in t.chains]
        missing = [c for c in BUILTIN_CHAINS[t.name] if c not in t.chains]
        if present and missing:
            notes.append(f"{lst.source}: table {t.name} is listed without its built-in chain{'s' * (len(missing) > 1)} "
                         f"{', '.join(missing)}: a trace passes {'them' if len(missing) > 1 else 'it'} as if empty")
    rs.notes.extend(notes)
