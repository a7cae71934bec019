"""Chains compiled for the walk: each rule's checks and action compiled on first use, and what can be read
from a rule's text without parsing it (a long chain's destination index, kube-proxy's hairpin rules passed over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kptrace.model.addr import parse_addr
from kptrace.model.rules import Chain, Rule
from kptrace.tracer.matchers import Check

__all__ = ["INDEX_THRESHOLD", "CompiledChain", "CompiledRule", "nft_plain_saddr", "plain_addr", "plain_dst",
           "reaches_dst", "rule_reads_dst"]

INDEX_THRESHOLD = 32  # chains shorter than this are scanned; longer ones get a destination index


@dataclass(slots=True)
class CompiledRule:
    rule: Any  # a Rule, or an nft rule (model/nft.py)
    checks: tuple[Check, ...]
    jump: str | None = None  # the user chain this rule jumps or goes to, if its target is one
    error: str = ""
    #: the target, with its options read once: action(state, hook) -> (verdict, note, stops the table)
    action: object = None
    goto: bool = False  # `-g` / nft `goto`: when the chain ends, return to the caller's caller


class CompiledChain:
    """A chain's rules compiled on first use, with a destination index for long chains.

    The index is built from the rules' text, not from parsed rules: a 10k-Service KUBE-SERVICES has
    20,000 rules, and parsing them all to find each one's ``-d`` costs a second, where reading the
    ``-d`` out of the text costs 20 ms (benchmarks/). A rule the text scan is unsure of is a
    wildcard (always tried), so the index can only narrow, never skip a rule that could match.
    """

    __slots__ = ("chain", "rules", "index", "wild", "_cache", "_compile", "_srcs", "_has_text", "_nft_text")

    def __init__(self, chain: Chain, compile_rule) -> None:
        self.chain = chain
        self._compile = compile_rule
        n = len(chain)
        self.rules: list[CompiledRule | None] = [None] * n
        self.index: dict[int, list[int]] | None = None
        self.wild: list[int] | range = range(n)
        self._cache: dict[int, list[int] | range] = {}
        self._srcs: dict[int, int | None] = {}  # rule -> the plain "-s host" its text requires (passes_over)
        self._has_text = isinstance(chain, Chain)  # iptables text to read ahead of parsing
        self._nft_text = not self._has_text and hasattr(chain, "text_at")  # an nft chain's text (None for nft -j)
        # short chains, and nft chains, are scanned (nft's long lists are hashed maps); long ones are indexed
        if n >= INDEX_THRESHOLD and self._has_text:
            index: dict[int, list[int]] = {}
            wild: list[int] = []
            for i in range(n):
                dst = plain_dst(chain.text_at(i))
                if dst is None:
                    wild.append(i)
                else:
                    index.setdefault(dst, []).append(i)
            self.wild = wild
            self.index = index

    def rule(self, i: int) -> CompiledRule:
        cr = self.rules[i]
        if cr is None:
            cr = self.rules[i] = self._compile(self.chain.rule_at(i))
        return cr

    def passes_over(self, i: int, src: int) -> bool:
        """Whether rule ``i``, not yet compiled, cannot match a packet from ``src``: its text says
        ``-s OTHER_HOST``. Such a rule is left unparsed (every KUBE-SEP chain's hairpin rule is one)."""
        srcs = self._srcs
        if i in srcs:
            other = srcs[i]
        elif self._has_text:
            other = srcs[i] = plain_addr(self.chain.text_at(i), " -s ")
        elif self._nft_text:
            other = srcs[i] = nft_plain_saddr(self.chain.text_at(i))
        else:
            return False
        return other is not None and other != src

    def candidates(self, dst: int) -> list[int] | range:
        if self.index is None:
            return self.wild  # every rule
        c = self._cache.get(dst)
        if c is None:
            hits = self.index.get(dst)
            c = sorted([*hits, *self.wild]) if hits else self.wild
            if len(self._cache) < 4096:
                self._cache[dst] = c
        return c


def nft_plain_saddr(text: str | None) -> int | None:
    """The host address an nft rule begins by requiring (``ip saddr 10.0.0.1 ...``, kube-proxy's hairpin rule in
    every endpoint chain), read from its text; None when it does not begin so plainly. A rule that requires
    another source cannot match, whatever follows: the walk passes over it unparsed (benchmarks/run.py:
    a 10-endpoint first trace of the classic layout parses 12 rules instead of 22)."""
    if text is None or not text.startswith(("ip saddr ", "ip6 saddr ")):
        return None
    start = text.index(" saddr ") + 7
    end = text.find(" ", start)
    if end < 0:
        return None
    try:
        v, addr = parse_addr(text[start:end])
    except ValueError:
        return None
    if (v == 4) != text.startswith("ip "):
        return None
    return addr


def plain_dst(text: str) -> int | None:
    return plain_addr(text, " -d ")


def plain_addr(text: str, opt: str) -> int | None:
    """The host address of a rule's un-negated ``-d`` (or ``-s``), read from its text; None when there
    is none or the text is not plain enough to be sure (a quoted comment containing " -d ", a network)."""
    pos = text.find(opt)
    if pos < 0 or text.find(opt, pos + 4) >= 0:
        return None
    if text[pos - 1] == "!":
        return None
    if text[pos - 1] == "!" or text.count('"', 0, pos) % 2:
        return None
    end = text.find(" ", pos + 4)
    value = text[pos + 4:] if end < 0 else text[pos + 4:end]
    host, _, plen = value.partition("/")
    if plen and plen not in ("32", "128"):
        return None
    try:
        v, addr = parse_addr(host)
    except ValueError:
        return None
    if plen and (plen == "32") != (v == 4):
        return None
    return addr


# What a rule may read of the destination: -d, dst ports, addrtype --dst-type, reply tuples, sets,
# and any module kptrace does not know; targets that rewrite it.
_DST_OPTIONS = {"--dport", "--dports", "--ports", "--dst-type", "--ctreplsrc", "--ctreplsrcport", "--dst-range",
                "--match-set", "--vaddr", "--vport"}
_DST_SAFE_MODULES = {"comment", "nfacct", "mark", "connmark", "conntrack", "state", "statistic", "recent", "tcp", "udp",
                     "sctp", "udplite", "dccp", "multiport", "addrtype", "limit", "icmp", "icmp6", "ipv6-icmp", "physdev",
                     "iprange", "pkttype", "owner", "socket", "mac", "hashlimit", "connlimit", "rpfilter"}


def rule_reads_dst(rule: Rule) -> bool:
    if any(o.name == "-d" for o in rule.base):
        return True
    for m in rule.matches:
        if m.module not in _DST_SAFE_MODULES:
            return True
        if m.module == "hashlimit" or m.module == "connlimit":
            return True
        if any(o.name in _DST_OPTIONS for o in m.options):
            return True
    tgt = rule.target
    return tgt is not None and tgt.name in ("DNAT", "REDIRECT", "NETMAP", "TPROXY")


def reaches_dst(compiled, table: str, hook: str) -> bool:
    """Whether any rule reachable from chain ``hook`` of ``table`` reads or rewrites the destination
    (``compiled(table, name)``: the tracer's compiled chains); a missing chain counts as one that does."""
    if compiled(table, hook) is None:
        return False  # no such table or chain: nothing to walk
    seen: set[str] = set()
    todo = [hook]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        cc = compiled(table, name)
        if cc is None:
            return True  # a missing chain: be careful
        for i in range(len(cc.rules)):
            cr = cc.rule(i)
            if rule_reads_dst(cr.rule):
                return True
            if cr.jump is not None:
                todo.append(cr.jump)
    return False
