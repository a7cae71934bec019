"""Check every rule of a loaded dump, fast, so that every command refuses what ``kptrace parse`` refuses.

Rules are parsed lazily (a trace reads a few hundred of a dump's 434,000), so without this pass a
broken rule that a trace never reaches would go unnoticed by ``packet`` and ``svc`` while ``parse``
refuses the file. Parsing every rule costs ~10 s on a 10k-Service dump; instead each rule line is first
matched against the shapes kube-proxy writes (:data:`_KUBE_SHAPE`: a regex that accepts only valid
values: octets to 255, prefixes to /32, ports to 65535, probabilities in 0-1), and only a line that
does not fit is parsed and validated in full, by the same parser ``kptrace parse`` uses. The regex is
strict, never loose: a line it accepts would parse without a problem. (benchmarks/run.py: +0.3 s on
the 434,062-line dump, whose load stays under 0.25 x the reference.)

The same pass reads each rule's jump or goto target and refuses a **loop** reachable from a built-in
chain, as the kernel does (iptables-nft-restore: ``RULE_APPEND failed (Too many links)``; legacy's
``mark_source_chains``). A loop no built-in chain reaches is loaded by both, so it is only a warning.
"""

from __future__ import annotations

import re

from kptrace.errors import Diagnostic
from kptrace.model.rules import BUILTIN_CHAINS, Ruleset
from kptrace.parsers.iptables_rule import REQUIRED_OPTIONS
from kptrace.parsers.values import HINTS, check_value

__all__ = ["check_rules", "find_loops"]

_OCT = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IP4 = rf"{_OCT}\.{_OCT}\.{_OCT}\.{_OCT}"
_IP6 = r"[0-9a-fA-F:.]*:[0-9a-fA-F:.]*"  # loose here; every IPv6 value is checked by ipaddress afterwards
_PLEN4 = r"(?:3[0-2]|[12]?\d)"
_PLEN6 = r"(?:12[0-8]|1[01]\d|[1-9]?\d)"
_ADDR = rf"(?:{_IP4}(?:/{_PLEN4})?|{_IP6}(?:/{_PLEN6})?)"
_PORT = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}|0)"
_PROB = r"(?:0(?:\.\d+)?|1(?:\.0+)?|\.\d+)"
_HEX = r"(?:0x[0-9a-fA-F]{1,8}|\d{1,9})"
_CHAIN = r"[A-Za-z0-9_.:-]+"
# Alternatives that share a prefix are written once ("-m (?:comment|tcp|...)", "-j (?:DNAT|ACCEPT|...)"): the
# regex engine then reads the prefix once instead of once per alternative (the same lines accepted, the same
# targets; the 323,022 rule lines of benchmarks/run.py's node: 0.58 -> 0.48 s CPU).
_MATCH = "|".join((
    "-m (?:" + "|".join((
        r'comment --comment (?:"[^"\\]*"|[^\s"\'\\!-][^\s"\'\\]*)',
        rf"(?:tcp|udp|sctp)(?: (?:! )?--[ds]port {_PORT}(?::{_PORT})?)?",
        rf"statistic --mode random --probability {_PROB}",
        r"addrtype (?:! )?--(?:src|dst)-type LOCAL",
        rf"mark (?:! )?--mark {_HEX}(?:/{_HEX})?",
        r"conntrack --ctstate (?:INVALID|NEW|ESTABLISHED|RELATED|DNAT|SNAT)(?:,(?:INVALID|NEW|ESTABLISHED|RELATED|DNAT|SNAT))*",
    )) + ")",
    rf"(?:! )?-[sd] {_ADDR}",
    r"-p (?:tcp|udp|sctp)",
))
_TARGET = "|".join((
    "-j (?:" + "|".join((
        rf"DNAT --to-destination (?:{_IP4}|\[{_IP6}\]):{_PORT}",
        r"ACCEPT|DROP|RETURN",
        r"MASQUERADE(?: --random-fully)?",
        rf"MARK --(?:set-xmark|or-mark|xor-mark) {_HEX}(?:/{_HEX})?",
        r"REJECT --reject-with (?:icmp-port-unreachable|icmp6-port-unreachable|icmp-host-unreachable|tcp-reset)",
    )) + ")",
    rf"-[jg] (?P<chain>{_CHAIN})",
))
#: The rule lines kube-proxy writes, as iptables-save prints them, with valid values only.
_KUBE_SHAPE = re.compile(rf"-A {_CHAIN}(?: (?:{_MATCH}))*(?: (?:{_TARGET}))?")
_V6_VALUES = re.compile(rf" -[sd] ({_IP6}(?:/{_PLEN6})?)(?= |$)| --to-destination (\[{_IP6}\]:\S+)")
_BUILTIN_TARGETS = {"ACCEPT", "DROP", "RETURN", "QUEUE"}
_NEEDS_OPTIONS = frozenset(REQUIRED_OPTIONS)  # targets iptables refuses without their options


def check_rules(rs: Ruleset, *, values: bool = True) -> None:
    """Validate every rule of ``rs`` (``values``) and look for jump loops; problems go to ``rs.diagnostics``.

    A line that does not fit kube-proxy's shapes is parsed by its chain's own parser with validation on,
    which reports exactly what ``kptrace parse`` reports, at the same position (listings too).
    """
    diags = rs.diagnostics
    shape = _KUBE_SHAPE.fullmatch
    v6_seen: dict[str, str | None] | None = {} if values and rs.family == 6 else None
    for table in rs.tables.values():
        edges: dict[str, set[str]] = {}  # chain -> the chains it jumps or goes to
        chain_names = table.chains
        for chain in table.chains.values():
            if not len(chain):
                continue
            targets = edges[chain.name] = set()
            parser = chain.rule_parser
            # The chain's line indices, read directly: chain.texts() builds a list per chain, and a
            # 10k-Service dump has 111,000 chains (this loop: 1.3 s -> 0.5 s).
            lines, indices = chain.loaded_lines()
            for i, idx in enumerate(indices):
                text = lines[idx]
                if text[0] == "[":
                    text = text[text.index("]") + 1:].lstrip()
                m = shape(text) if values else None
                if m is not None and m.group("chain") in _NEEDS_OPTIONS:
                    m = None  # "-j DNAT" alone fits the jump alternative: the parser says what it lacks
                if m is not None:
                    target = m.group("chain")
                    if target is not None:
                        targets.add(target)
                    if v6_seen is not None and ":" in text:
                        diags.extend(_v6_problems(idx + 1, text, chain.source, v6_seen))
                    continue
                if values and parser is not None and hasattr(parser, "validate"):
                    parser.validate = True
                    try:
                        rule = chain.parse_rule(i + 1, chain.raw[i])
                    finally:
                        parser.validate = False
                    tg = rule.target
                    target = tg.name if tg is not None else None
                else:
                    target = _target_of(text)
                if target is not None:
                    targets.add(target)
        for name, targets in edges.items():
            edges[name] = {t for t in targets if t in chain_names}  # (not intersection_update: it copies the dict each time)
        diags.extend(find_loops(table, edges))


def _target_of(text: str) -> str | None:
    """The chain a rule's text jumps or goes to (the last -j/-g; a comment never holds ' -j ' in kube-proxy's)."""
    at = max(text.rfind(" -j "), text.rfind(" -g "), text.rfind(" --jump "), text.rfind(" --goto "))
    if at < 0:
        return None
    rest = text[at:].split()
    return rest[1] if len(rest) > 1 else None


def _v6_problems(line: int, text: str, source: str, seen: dict[str, str | None]) -> list[Diagnostic]:
    """The shape regex reads IPv6 addresses loosely: each distinct one of a line it accepted is checked here,
    by the parser's own value check (100k endpoints: ~0.2 s)."""
    out = []
    for m in _V6_VALUES.finditer(text):
        group = 1 if m.group(1) else 2
        value = m.group(group)
        kind = "address" if group == 1 else "nat-range"
        if value not in seen:
            seen[value] = check_value(kind, value)
        problem = seen[value]
        if problem:
            option = m.group(0).split()[0]
            out.append(Diagnostic("error", f"{option}: {problem}", source, line, m.start(group) + 1, text, len(value),
                                  HINTS[kind]))
    return out


def _may_loop(edges: dict[str, set[str]]) -> set[str]:
    """The chains that lead into a loop (empty: there is none).

    Most rulesets have no loop, and proving it is on every load's path. Chains are taken away a level at a
    time, with set operations: first those whose jumps all end in chains that jump nowhere (100,000 KUBE-SEP
    chains at once), then those whose jumps end in chains already taken, and so on; what is left leads into a
    loop. kube-proxy's chains are five levels deep (10k Services: 0.05 s, where Kahn's sort in Python took
    0.4 s, benchmarks/run.py); a ruleset nested deeper than 32 levels finishes with Kahn's sort.
    """
    left = {n: ts for n, ts in edges.items() if ts}
    done = set(edges) - set(left)
    done.update(t for ts in left.values() for t in ts if t not in edges)
    for _ in range(32):
        taken = [n for n, ts in left.items() if ts <= done]
        if not taken:
            return set(left)
        done.update(taken)
        for n in taken:
            del left[n]
    indegree: dict[str, int] = dict.fromkeys(left, 0)
    for targets in left.values():
        for t in targets:
            if t in indegree:
                indegree[t] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    while ready:
        for t in left[ready.pop()]:
            if t in indegree:
                indegree[t] -= 1
                if indegree[t] == 0:
                    ready.append(t)
    return {n for n, d in indegree.items() if d > 0}


def find_loops(table, edges: dict[str, set[str]]) -> list[Diagnostic]:
    """Jump/goto loops: an error when a built-in chain reaches the loop (the kernel refuses the ruleset),
    a warning otherwise. Each loop is reported once, at the rule that closes it, as ``A -> B -> A``."""
    cyclic = _may_loop(edges)
    if not cyclic:
        return []
    builtin = set(BUILTIN_CHAINS.get(table.name, ()))
    reachable: set[str] = set()
    todo = [c for c in edges if c in builtin]
    while todo:
        c = todo.pop()
        if c in reachable:
            continue
        reachable.add(c)
        todo.extend(edges.get(c, ()))
    edges = {n: {t for t in ts if t in cyclic} for n, ts in edges.items() if n in cyclic}
    out: list[Diagnostic] = []
    state: dict[str, int] = {}  # 1 on the DFS stack, 2 done
    reported: set[frozenset[str]] = set()
    for root in sorted(edges, key=lambda c: (c not in builtin, c)):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(edges.get(root, ()))))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            target = next(it, None)
            if target is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            s = state.get(target)
            if s == 1:
                cycle = path[path.index(target):] + [target]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    out.append(_loop_diagnostic(table, node, target, cycle, target in reachable))
            elif s is None:
                state[target] = 1
                path.append(target)
                stack.append((target, iter(sorted(edges.get(target, ())))))
    return out


def _loop_diagnostic(table, node: str, target: str, cycle: list[str], reached: bool) -> Diagnostic:
    chain = table.chains[node]
    line, text = next(((ln, t) for ln, t in chain.texts() if _target_of(t) == target), (chain.line, ""))
    col = text.rfind(f" {target}") + 2 if text else 0
    where = " -> ".join(cycle)
    if reached:
        return Diagnostic("error", f"jump loop in table {table.name}: {where}", chain.source, line, col, text, len(target),
                          "the kernel refuses a ruleset whose chains jump back to themselves "
                          "(iptables-restore: Too many links); kptrace refuses it too")
    return Diagnostic("warning", f"jump loop in table {table.name}: {where} (no built-in chain reaches it)",
                      chain.source, line, col, text, len(target),
                      "the kernel loads a loop that no packet can enter; a trace never reaches it")
