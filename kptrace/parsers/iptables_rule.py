"""The rule parser: one iptables rule's text (``-A CHAIN [options]``, as iptables-save writes it) into a
:class:`~kptrace.model.rules.Rule`. The iptables-save reader and the listing reader (which turns each listing
line into this text first) both use it, each with its own way of saying where a problem is.

Grammar of a rule's text::

    spec      := ( ["!"] base-option | "-m" MODULE (["!"] option)* | ("-j"|"-g") TARGET option* )*

Which module takes which options, and how many values each takes, is data (``grammars/iptables.toml``).
"""

from __future__ import annotations

from typing import Any

from kptrace.errors import Diagnostic
from kptrace.model.addr import is_uint
from kptrace.model.rules import Chain, Match, Option, RawRule, Rule, Target
from kptrace.parsers.grammar import Grammar, ModuleGrammar
from kptrace.parsers.paste import PasteMap
from kptrace.parsers.tokens import fast_tokens, tokenize, unterminated_quote
from kptrace.parsers.values import HINTS, check_value

__all__ = ["RuleParser"]

# The parser builds its NamedTuples with tuple.__new__: NamedTuple's own __new__ is a Python function,
# and its call was a tenth of a first trace's time (benchmarks/run.py).
_new = tuple.__new__


class RuleParser:
    """Turns a rule's text into a :class:`Rule`; diagnostics go to a shared list."""

    def __init__(self, grammar: Grammar, source: str, diagnostics: list[Diagnostic]) -> None:
        self.g = grammar
        self.source = source
        self.diagnostics = diagnostics
        # Check addresses while parsing: on for `kptrace parse` (every rule, every problem reported);
        # off for the rules a trace parses on first use, whose addresses the tracer reads anyway and
        # reports, as an assumed non-match, if they are bad.
        self.validate = False
        self._seen: set[tuple[int, int, str]] = set()
        self.line_map: PasteMap | None = None  # a pasted text's (kptrace/parsers/paste.py): positions go back to the original's

    def problem(self, severity: str, message: str, raw: RawRule, text: str, token_index: int | None, hint: str = "") -> None:
        col, length = 0, 0
        if token_index is not None:
            toks = tokenize(text)
            if token_index < len(toks):
                _, col, length = toks[token_index]
            else:
                col, length = len(text) + 1, 1
        d = Diagnostic(severity, message, self.source, raw.line, col, text, length, hint)
        if self.line_map is not None:
            d = self.line_map.restore(d)
        if (raw.line, col, message) not in self._seen:  # a rule parsed again reports once
            self._seen.add((raw.line, col, message))
            self.diagnostics.append(d)

    def _take(self, toks: list[str], at: int, arity: int | str, raw: RawRule, text: str) -> tuple[tuple[str, ...], int]:
        """The values of the option at ``toks[at - 1]`` and the index after them."""
        n = len(toks)
        if arity == 1 and at < n:  # by far the most common case
            return (toks[at],), at + 1
        if arity == "rest" or arity == -1:
            j = at
            if arity == "rest" and j < n and toks[j] not in _STRUCTURE:
                j += 1  # the first value is the value, whatever it starts with: `--comment "-x"` (quotes are gone here)
            while j < n:
                t = toks[j]
                if t == "!" or (len(t) > 1 and t[0] == "-" and not is_uint(t[1])):
                    break
                j += 1
            vals = toks[at:j]
            return ((" ".join(vals),) if arity == "rest" else tuple(vals)), j
        end = at + int(arity)
        if end > n:
            self.problem("error", f"option {toks[at - 1]} needs {arity} value{'s' if arity != 1 else ''}", raw, text, at - 1,
                         "the rule ends too early; is the line cut off?")
            return tuple(toks[at:n]), n
        return tuple(toks[at:end]), end

    def parse(self, chain: Chain, number: int, raw: RawRule) -> Rule:
        """Rule ``number`` of ``chain`` from its line ``raw``; problems go to the diagnostics."""
        # Long on purpose: one flat loop, no helper calls and no closures. It runs for every rule a trace
        # touches for the first time, and cell variables made it 3x slower (benchmarks/).
        text = raw.text
        toks = fast_tokens(text)
        if toks is None:
            spans = tokenize(text)
            toks = [t for t, _, _ in spans]
            col = unterminated_quote(text)
            if col is not None:
                self.problem("warning", "a quote that nothing closes: iptables-restore reads the rest of the line into this "
                             "value, so what follows it is not part of the rule", raw, text,
                             next(k for k, (_, c, _) in enumerate(spans) if c == col),
                             "the kernel holds the rule without those options (iptables-save prints the value over two lines); "
                             "close the quote if they were meant")
        g = self.g
        base_grammar = g.base
        base_canon = base_grammar.canon.get
        base_arity = base_grammar.options
        match_grammars = g.matches
        take = self._take
        base: list[Option] = []
        matches: list[Match] = []
        module: ModuleGrammar | None = None
        module_name = ""
        module_opts: list[Option] = []
        module_known = True
        target_grammar: ModuleGrammar | None = None
        target_name = ""
        target_goto = False
        target_opts: list[Option] = []
        proto = ""
        negate = False
        n = len(toks)
        # toks[0:2] is "-A CHAIN" (or "-I CHAIN [N]"): skip it.
        i = 2
        if n > 2 and toks[0] == "-I" and is_uint(toks[2]):
            i = 3
        while i < n:
            t = toks[i]
            if module is not None:
                # Most tokens are an option of the match just opened taking one value: take it here.
                name = module.canon.get(t)
                if name is not None and module.options[name] == 1 and i + 1 < n and toks[i + 1] != "!":
                    module_opts.append(_new(Option, (name, (toks[i + 1],), negate)))
                    negate = False
                    i += 2
                    continue
            if t == "!":
                negate = True
                i += 1
                continue
            if target_name:
                # Everything after the target belongs to the target.
                if t in ("-j", "--jump", "-g", "--goto"):
                    self.problem("error", f"multiple -j flags not allowed ({target_name}, then {' '.join(toks[i:i + 2])})",
                                 raw, text, i, "a rule has one target: iptables-restore refuses this line")
                name = target_grammar.canon.get(t) if target_grammar is not None else None
                if name is not None and target_grammar is not None:
                    vals, i = take(toks, i + 1, target_grammar.options[name], raw, text)
                    target_opts.append(_new(Option, (name, vals, negate)))
                else:
                    if target_grammar is not None or not t.startswith("-"):
                        self.problem("warning", f"unknown option {t!r} for target {target_name}", raw, text, i,
                                     "kept as written; a decision that rests on it is marked assumed")
                    vals, i = take(toks, i + 1, -1, raw, text)
                    target_opts.append(_new(Option, (t, vals, negate)))
                negate = False
                continue
            if t == "-m" or t == "--match":
                if module_name:
                    matches.append(_new(Match, (module_name, tuple(module_opts), module_known)))
                if i + 1 >= n:
                    self.problem("error", "-m needs a module name", raw, text, i)
                    module_name = ""
                    break
                module_name = toks[i + 1]
                module_opts = []
                module = match_grammars.get(module_name)
                module_known = module is not None
                if not module_known:
                    self.problem("warning", f"unknown match module {module_name!r}", raw, text, i + 1,
                                 "kept as written; a decision that rests on it is marked assumed")
                i += 2
                continue
            if t == "-j" or t == "-g" or t == "--jump" or t == "--goto":
                if module_name:
                    matches.append(_new(Match, (module_name, tuple(module_opts), module_known)))
                    module_name, module = "", None
                if i + 1 >= n:
                    self.problem("error", f"{t} needs a target", raw, text, i)
                    break
                target_name = toks[i + 1]
                target_goto = t == "-g" or t == "--goto"
                target_grammar = g.targets.get(target_name)
                if negate:
                    self.problem("error", "a target cannot be negated", raw, text, i - 1)
                    negate = False
                i += 2
                continue
            bname = base_canon(t)
            if bname is not None:
                # Base options may stand between "-m tcp" and "--dport" (kube-proxy writes
                # "-m tcp -p tcp -d IP --dport 80"): they do not end the match's options.
                at = i + 1
                arity = base_arity[bname]
                if arity == 1 and at < n:
                    vals, i = (toks[at],), at + 1
                else:
                    vals, i = take(toks, at, arity, raw, text)
                if bname == "-p" and vals:
                    proto = vals[0].lower()
                if bname != "-c":  # iptables-restore's "-c PKTS BYTES" is counters, not a match
                    base.append(_new(Option, (bname, vals, negate)))
                negate = False
                continue
            if t.startswith("--"):
                name = module.canon.get(t) if module is not None else None
                if name is not None and module is not None:
                    arity = module.options[name]
                    if arity == 1 and i + 1 < n:
                        vals, i = (toks[i + 1],), i + 2
                    else:
                        vals, i = take(toks, i + 1, arity, raw, text)
                elif module_name and not module_known:
                    vals, i = take(toks, i + 1, -1, raw, text)
                    name = t
                else:
                    implicit = match_grammars.get(proto)
                    iname = implicit.canonical(t) if implicit is not None and implicit.implicit else None
                    if iname is not None and implicit is not None and module_name != proto:
                        # "-p tcp --dport 80" without "-m tcp": iptables loads the protocol's module implicitly.
                        if module_name:
                            matches.append(_new(Match, (module_name, tuple(module_opts), module_known)))
                        module, module_name, module_known, module_opts = implicit, proto, True, []
                        vals, i = take(toks, i + 1, implicit.options[iname], raw, text)
                        name = iname
                    else:
                        where = f"match {module_name!r}" if module_name else "this rule (no -m before it)"
                        self.problem("warning" if module_name else "error", f"unknown option {t!r} for {where}", raw, text, i,
                                     f"{module_name} takes {', '.join(module.options)}" if module is not None and module.options else
                                     "a match option must follow its -m MODULE")
                        vals, i = take(toks, i + 1, -1, raw, text)
                        name = t
                # Old iptables wrote negation after the option name: "--mark ! 0x4000".
                if vals and vals[0] == "!" and (len(vals) == 1 or i < n):
                    negate = True
                    vals, i = take(toks, i - len(vals) + 1, module.options.get(name, 1) if module is not None else 1, raw, text)
                if module_name:
                    module_opts.append(_new(Option, (name, vals, negate)))
                negate = False
                continue
            if t.startswith("-") and len(t) > 1:  # a mistyped option ("-dd"): said once, its value taken with it
                import difflib

                near = difflib.get_close_matches(t, [*base_arity, *_STRUCTURE], n=1, cutoff=0.6)
                self.problem("error", f"unknown option {t!r}", raw, text, i,
                             f"did you mean {near[0]}?" if near else "iptables' own options are -s -d -p -i -o -m -j -g")
                i += 2 if i + 1 < n and not toks[i + 1].startswith("-") else 1
                continue
            self.problem("error", f"unexpected {t!r}", raw, text, i,
                         "options start with - or --; is a value missing its option, or a comment not quoted?")
            i += 1
        if module_name:
            matches.append(_new(Match, (module_name, tuple(module_opts), module_known)))
        if negate:
            self.problem("error", "'!' at the end of the rule negates nothing", raw, text, n - 1)
        target = _new(Target, (target_name, tuple(target_opts), target_goto)) if target_name else None
        if self.validate:
            self._check_values(toks, base, matches, target, target_grammar, raw, text)
        return _new(Rule, (chain.table, chain.name, number, tuple(base), tuple(matches), target, text, self.source, raw.line, raw.counters, False))


    def _check_values(self, toks: list[str], base, matches, target, target_grammar, raw: RawRule, text: str) -> None:
        """Each option value of a type the grammar names (``types``) is checked the way iptables checks it."""
        g = self.g
        groups: list[tuple[ModuleGrammar | None, Any]] = [(g.base, base)]
        groups.extend((g.matches.get(m.module), m.options) for m in matches)
        if target is not None:
            groups.append((target_grammar, target.options))
        needs = REQUIRED_OPTIONS.get(target.name) if target is not None else None
        if target is not None and needs is not None and not any(o.name in needs for o in target.options):
            at = next((i for i, t in enumerate(toks) if t == target.name and i and toks[i - 1] in ("-j", "--jump", "-g", "--goto")), None)
            self.problem("error", f"{target.name}: option {' or '.join(needs)} must be specified", raw, text, at,
                         "iptables-restore refuses this target without it; was the rule cut?")
        for grammar, options in groups:
            types = grammar.types if grammar is not None else None
            if not types:
                continue
            for o in options:
                kind = types.get(o.name)
                if kind is None:
                    continue
                if not o.args:
                    continue  # "needs 1 value" is said already
                problem = check_value(kind, o.args[0])
                if problem:
                    at = _value_index(toks, o)
                    self.problem("error", f"{o.name}: {problem}", raw, text, at, HINTS.get(kind, ""))


def _value_index(toks: list[str], o: Option) -> int | None:
    """The token index of option ``o``'s value (it has one: only values are checked), for the caret."""
    for i, t in enumerate(toks):
        if t == o.name and i + 1 < len(toks) and toks[i + 1] == o.args[0]:
            return i + 1
    # An alias spelling (--to for --to-destination), or "! " between: the value's own token.
    return next((i for i, t in enumerate(toks) if t == o.args[0]), None)


#: targets iptables refuses without one of these options (DNAT: option "--to-destination" must be specified)
REQUIRED_OPTIONS = {"DNAT": ("--to-destination",), "SNAT": ("--to-source",),
                    "MARK": ("--set-xmark", "--set-mark", "--and-mark", "--or-mark", "--xor-mark")}

#: tokens that always start a new part of a rule, never a value
_STRUCTURE = {"!", "-m", "--match", "-j", "--jump", "-g", "--goto", "-s", "-d", "-p", "-i", "-o"}
