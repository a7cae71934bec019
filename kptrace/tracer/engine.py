"""Walk a packet through the netfilter hooks the way the kernel does, branching at random rules.

Hook order (net/netfilter, include/uapi/linux/netfilter_ipv4.h priorities):

* arriving (pod, external): PREROUTING (raw, mangle, nat) -> routing on the possibly DNATed
  destination -> INPUT (mangle, filter, security, nat) for a node address, else
  FORWARD (mangle, filter, security) -> POSTROUTING (mangle, nat);
* locally generated (node): OUTPUT (raw, mangle, nat, filter, security) -> routing ->
  POSTROUTING (mangle, nat); a packet for a node address then loops back through
  PREROUTING (raw, mangle) and INPUT (mangle, filter, security). The nat table is not consulted again
  there: conntrack already holds the connection's NAT decision for both directions.

The nat table sees the first packet of a connection only, which is the packet traced here; DNAT,
SNAT, MASQUERADE and REDIRECT end the nat table's walk for that hook. ``-j CT --notrack`` in raw
takes the connection out of conntrack, so nat is skipped altogether.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from fractions import Fraction

from kptrace.errors import InputError, KptraceError
from kptrace.model.addr import Cidr, format_addr, format_endpoint, parse_addr, parse_cidr
from kptrace.model.rules import BUILTIN_CHAINS, Chain, Rule, Ruleset
from kptrace.tracer.matchers import Assumed, Check, Coin, Fork, compile_base, compile_match
from kptrace.tracer.packet import PROTOCOLS, Origin, Packet
from kptrace.tracer.result import Branch, Outcome, Step, Trace

__all__ = ["Tracer"]

_new = tuple.__new__  # Steps are NamedTuples; tuple.__new__ skips their Python-level __new__ on the hot path
_LOOPBACK4 = parse_cidr("127.0.0.0/8")
_MULTICAST4 = parse_cidr("224.0.0.0/4")
_MULTICAST6 = parse_cidr("ff00::/8")
_LOOPBACK6 = parse_addr("::1")[1]

# Targets that change nothing the trace follows and let the walk go on.
_CONTINUE_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "NFACCT", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "TCPMSS",
                     "CHECKSUM", "AUDIT", "SECMARK", "CONNSECMARK", "SET", "IDLETIMER", "LED", "RATEEST", "SYNPROXY"}
_NAT_TARGETS = {"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"}
#: iptables' tables as base chains (include/uapi/linux/netfilter_ipv4.h; nat's depends on the hook)
_IPTABLES_PRIORITY = {"raw": -300, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
_INF = float("inf")
_IPVS_LOCAL_IN = 98  # IPVS at LOCAL_IN: NF_IP_PRI_NAT_SRC - 2, between filter INPUT and nat INPUT
_INDEX_THRESHOLD = 32  # chains shorter than this are scanned; longer ones get a destination index
#: Nested jumps and gotos followed before a walk is cut as a loop. The kernel refuses loops at load, and
#: kptrace refuses them too (unless --lenient); no real ruleset nests more than a dozen chains.
_MAX_DEPTH = 64
#: Rules one table's walk may evaluate for one packet before kptrace gives up with a clear message. Branches
#: that rejoin are merged (:meth:`Tracer._call`), so only random rules whose branches never rejoin can get
#: here: a 10k-Service trace evaluates about a hundred rules.
_MAX_RULE_VISITS = 1_000_000
#: Longest rule path kptrace follows for one packet in one table (kube-proxy's are under 20).
_MAX_PATH = 100_000
#: Path counts saturate here: chains that are entered twice on every path (a jump, a RETURN, and the same
#: jump again) multiply their callers' path counts, and the exact count has no use past this.
PATHS_CAP = 1 << 62


class _St:
    """The state of one branch of the walk. Copied when a random rule splits the walk."""

    __slots__ = ("src", "dst", "sport", "dport", "proto_num", "mark", "ctmark", "prob", "path", "assumptions", "dnat",
                 "snat", "masq", "notrack", "recent", "verdict", "reason", "iif", "oif", "orig", "nat_done", "npaths",
                 "pinned")

    def copy(self) -> "_St":
        n = _St.__new__(_St)
        n.src, n.dst, n.sport, n.dport, n.proto_num = self.src, self.dst, self.sport, self.dport, self.proto_num
        n.mark, n.ctmark, n.prob, n.dnat, n.snat, n.masq = self.mark, self.ctmark, self.prob, self.dnat, self.snat, self.masq
        n.notrack, n.recent, n.verdict, n.reason = self.notrack, self.recent, self.verdict, self.reason
        n.iif, n.oif, n.orig, n.npaths, n.pinned = self.iif, self.oif, self.orig, self.npaths, self.pinned
        n.path = list(self.path)
        n.assumptions = list(self.assumptions)
        n.nat_done = set(self.nat_done)
        return n

    def ctstates(self) -> set[str]:
        if self.notrack:
            return {"UNTRACKED"}
        s = {"NEW"}
        if self.dnat is not None:
            s.add("DNAT")
        if self.snat is not None:
            s.add("SNAT")
        return s

    def ct_tuple(self, field: str) -> int:
        o_src, o_dst, o_sport, o_dport = self.orig
        return {
            "origsrc": o_src, "origdst": o_dst, "replsrc": self.dst, "repldst": self.src,
            "origsrcport": o_sport, "origdstport": o_dport, "replsrcport": self.dport, "repldstport": self.sport,
        }[field]

    def recent_set(self, name: str) -> None:
        self.recent = self.recent | {name}

    def recent_remove(self, name: str) -> None:
        self.recent = self.recent - {name}


class _Ctx:
    __slots__ = ("tracer", "hook")

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.hook = ""

    def is_local(self, addr: int):
        return self.tracer.is_local(addr)

    def is_multicast(self, addr: int) -> bool:
        return (_MULTICAST4 if self.tracer.family == 4 else _MULTICAST6).contains(addr)

    def ipset_lookup(self, name: str, flags: str, st: _St):
        return self.tracer.ipset_lookup(name, flags, st)


@dataclass(slots=True)
class _CompiledRule:
    rule: Rule
    checks: tuple[Check, ...]
    jump: str | None = None  # the user chain this rule jumps or goes to, if its target is one
    error: str = ""
    #: the target, with its options read once: action(state, hook) -> (verdict, note, stops the table)
    action: object = None
    goto: bool = False  # `-g` / nft `goto`: when the chain ends, return to the caller's caller


class _CompiledChain:
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
        self.rules: list[_CompiledRule | None] = [None] * n
        self.index: dict[int, list[int]] | None = None
        self.wild: list[int] = []
        self._cache: dict[int, list[int]] = {}
        self._srcs: dict[int, int | None] = {}  # rule -> the plain "-s host" its text requires (passes_over)
        self._has_text = isinstance(chain, Chain)  # iptables text to read ahead of parsing
        self._nft_text = not self._has_text and hasattr(chain, "text_at")  # an nft chain's text (None for nft -j)
        if n < _INDEX_THRESHOLD or not self._has_text:  # nft chains are scanned: their long lists are hashed maps
            self.wild = range(n)
        else:
            index: dict[int, list[int]] = {}
            for i in range(n):
                dst = _plain_dst(chain.text_at(i))
                if dst is None:
                    self.wild.append(i)
                else:
                    index.setdefault(dst, []).append(i)
            self.index = index

    def rule(self, i: int) -> _CompiledRule:
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
            other = srcs[i] = _plain_addr(self.chain.text_at(i), " -s ")
        elif self._nft_text:
            other = srcs[i] = _nft_plain_saddr(self.chain.text_at(i))
        else:
            return False
        return other is not None and other != src

    def candidates(self, dst: int) -> list[int] | range:
        if self.index is None:
            return self.wild  # every rule
        c = self._cache.get(dst)
        if c is None:
            hits = self.index.get(dst)
            c = sorted(hits + self.wild) if hits else self.wild
            if len(self._cache) < 4096:
                self._cache[dst] = c
        return c


def _nft_plain_saddr(text: str | None) -> int | None:
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


def _plain_dst(text: str) -> int | None:
    return _plain_addr(text, " -d ")


def _plain_addr(text: str, opt: str) -> int | None:
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


class Tracer:
    """Traces packets through one address family's ruleset. Compiled chains are cached across traces."""

    #: Walk a base chain once for states that differ only in their destination where that cannot change the
    #: walk (:meth:`_shared_walks`); off only in tests that compare the shared walks with separate ones.
    share_walks = True

    def __init__(self, ruleset: Ruleset, node_ips: tuple[str, ...] = (), *, assumed_local: tuple[str, ...] = (),
                 affinity: frozenset[str] = frozenset(), remote: tuple[Cidr, ...] = (), routes: tuple[dict, ...] = (),
                 interfaces: dict[str, list[str]] | None = None, ipvs=None, ipsets=None, nft=None) -> None:
        self.ruleset = ruleset
        self.ipvs = ipvs  # IPVSTable: virtual services the node balances (IPVS mode)
        self.ipsets = ipsets  # IPSets: what -m set reads
        self._set_matchers: dict = {}
        # kube-ipvs0 holds every virtual service address: they are the node's own (addrtype LOCAL)
        self.vips = {parse_addr(vs.address)[1] for vs in (ipvs or ()) if vs.address and (":" in vs.address) == (ruleset.family == 6)}
        self.family = ruleset.family
        self.node_ips = {parse_addr(a)[1] for a in node_ips if parse_addr(a)[0] == self.family}
        self.node_ips_given = bool(node_ips)
        self.assumed_local = {parse_addr(a)[1] for a in assumed_local if parse_addr(a)[0] == self.family}
        self.affinity = affinity
        self.remote = remote  # networks known not to hold node addresses (the pod CIDR)
        self._routes = _route_table(routes, self.family)
        self._interfaces = {dev: [parse_cidr(a) for a in addrs if parse_cidr(a).version == self.family]
                            for dev, addrs in (interfaces or {}).items()}
        self._compiled: dict[tuple[str, str], _CompiledChain] = {}
        self._actions: dict[tuple, object] = {}  # target actions, shared by the rules with the same target
        self._dst_sensitive: dict[tuple[str, str], bool] = {}
        self._out_iface: str | None = None
        self._ctx = _Ctx(self)
        # nftables: this family's tables (ip or ip6, and inet), keyed "FAMILY NAME" beside iptables' "nat", "filter"...
        self._nft = nft
        self._nft_tables: dict = {}
        if nft is not None:
            fam = "ip" if self.family == 4 else "ip6"
            self._nft_tables = {f"{t.family} {t.name}": t for t in nft.tables.values() if t.family in (fam, "inet")}
        self._nft_compiler = None
        self._slots: dict[str, list[tuple[int, int, str, str, bool]]] = {}
        # Per table walk (_table): the chains entered with each packet state (_call), and the rules left to evaluate.
        self._seen_calls: dict[tuple, object] = {}
        self._budget = _MAX_RULE_VISITS

    # ------------------------------------------------------------ addresses

    def is_local(self, addr: int):
        if self.family == 4 and _LOOPBACK4.contains(addr) or self.family == 6 and addr == _LOOPBACK6:
            return True
        if addr in self.node_ips or addr in self.vips:
            return True
        if self.node_ips_given:
            return False
        if any(c.contains(addr) for c in self.remote) and addr not in self.assumed_local:
            return False
        if addr in self.assumed_local:
            return Assumed(True, f"{format_addr(self.family, addr)} assumed to be a node address (give --node-ip)")
        return Assumed(False, f"{format_addr(self.family, addr)} assumed not to be a node address (give --node-ip)")

    def ipset_lookup(self, name: str, flags: str, st: "_St"):
        if self.ipsets is None:
            return Assumed(False, f"ipset {name} contents not given: assumed no match (give --ipset)")
        m = self._set_matchers.get(name)
        if m is None:
            ipset = self.ipsets.get(name)
            if ipset is None:
                return Assumed(False, f"ipset {name} is not in the ipset input: assumed no match")
            from kptrace.tracer.ipsets import SetMatcher

            m = self._set_matchers[name] = SetMatcher(ipset)
        proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(st.proto_num, "tcp")
        hit = m.match(flags, src=(self.family, st.src), dst=(self.family, st.dst), sport=st.sport, dport=st.dport, proto=proto)
        if not hit and m.set.truncated:
            return Assumed(False, f"ipset {name} is listed only in part (truncated): no match assumed")
        return hit

    def _ipvs(self, states: list["_St"], hook: str, finals: list["_St"]) -> tuple[list["_St"], list["_St"]]:
        """IPVS: a new connection to a virtual service goes to one of its real servers (LOCAL_IN after filter
        INPUT, LOCAL_OUT after nat OUTPUT; ip_vs_core.c). Returns (balanced states, the others)."""
        if self.ipvs is None:
            return [], states
        from kptrace.tracer.ipvs import choose

        out, rest = [], []
        for st in states:
            proto = {6: "TCP", 17: "UDP", 132: "SCTP"}.get(st.proto_num, "TCP")
            vs = self.ipvs.by_fwmark(st.mark, self.family) if st.mark else None
            vs = vs or self.ipvs.virtual(proto, format_addr(self.family, st.dst), st.dport)
            if vs is None:
                rest.append(st)
                continue
            src_text = format_addr(self.family, st.src)
            choices = choose(vs, src_text, st.sport)
            loc = vs.location
            if getattr(self.ipvs, "truncated", False):
                # An elided or fragmentary listing (a paste): the real servers shown may not be all of them.
                st.assumptions.append(f"the IPVS listing is partial: real servers of {vs.endpoint} may be missing "
                                      f"(give the whole `ipvsadm -Ln` output)")
            if not choices:
                st.path.append(_new(Step, (hook, "ipvs", vs.endpoint, None, vs.text or vs.endpoint, loc.source, loc.line, None,
                                           "virtual service with no real server taking connections", False)))
                st.verdict, st.reason = "REJECT", f"IPVS: {vs.endpoint} has no real servers (weight > 0): connections fail"
                finals.append(st)
                continue
            for c in choices:
                n = st.copy() if len(choices) > 1 else st
                num, den = n.prob
                n.prob = (num * c.probability.numerator, den * c.probability.denominator)
                rs = c.server
                rs_family, rs_addr = parse_addr(rs.address) if rs.address is not None else (self.family, None)
                if rs_family != self.family:
                    # An IPv6 real server behind an IPv4 virtual service (IPVS tunnelling can): this trace, of
                    # one family, does not follow it there.
                    n.assumptions.append(f"real server {rs.endpoint} is IPv{rs_family} behind the IPv{self.family} virtual "
                                         f"service {vs.endpoint}: where it goes from there is not traced")
                    n.dnat = rs.endpoint
                elif rs_addr is not None and rs.port is not None:
                    n.dst, n.dport = rs_addr, rs.port
                    n.dnat = format_endpoint(self.family, n.dst, n.dport)
                persist = f", persistent {vs.persistent} s" if vs.persistent else ""
                note = f"{vs.scheduler or '?'} -> {rs.endpoint} weight {rs.weight}{persist}: {c.note}"
                n.path.append(_new(Step, (hook, "ipvs", vs.endpoint, vs.real_servers.index(rs) + 1, rs.text or rs.endpoint, rs.location.source,
                                          rs.location.line, c.probability if len(choices) > 1 else None, note, False)))
                if c.approximate:
                    n.assumptions.append(f"IPVS {vs.endpoint}: {c.note}")
                if rs.forward not in (None, "Masq"):
                    n.assumptions.append(f"IPVS {vs.endpoint} forwards to {rs.endpoint} by {rs.forward}, not NAT: "
                                         "the destination address is not rewritten on the wire")
                out.append(n)
        return out, rest

    def egress_address(self, dst: int) -> tuple[str, str] | None:
        """The address MASQUERADE gives a packet to ``dst``: that of the interface the node's routes send it
        out of, in the next hop's subnet when it has one there (the kernel's inet_select_addr), else its first.
        None without routes (no bundle)."""
        best = None
        for cidr, dev, gateway in self._routes:
            if cidr.contains(dst) and (best is None or cidr.prefixlen > best[0].prefixlen):
                best = (cidr, dev, gateway)
        if best is None:
            return None
        _, dev, gateway = best
        addrs = self._interfaces.get(dev) or []
        if not addrs:
            return None
        hop = gateway if gateway is not None else dst
        chosen = next((a for a in addrs if a.contains(hop)), addrs[0])
        # the interface address itself, not its network: kept as the host part of the "addr/len" we read
        return dev, format_addr(self.family, chosen.host_address)

    # ------------------------------------------------------------ compiling

    def hook_slots(self, hook: str) -> list[tuple[int, int, str, str, bool]]:
        """The base chains that run at ``hook``, in the kernel's order: ``(priority, n, table, chain, is_nat)``.

        iptables' tables are base chains at their standard priorities (which is how iptables-nft registers
        them: raw -300, mangle -150, nat -100 (PREROUTING, OUTPUT) / 100 (INPUT, POSTROUTING), filter 0,
        security 50); nft tables declare theirs. At one priority iptables' come first (made by the CNI or the
        runtime after kube-proxy's table, they were registered later).
        """
        slots = self._slots.get(hook)
        if slots is None:
            slots = []
            for tname, table in self.ruleset.tables.items():
                if hook in BUILTIN_CHAINS.get(tname, ()) and hook in table.chains:
                    prio = _IPTABLES_PRIORITY[tname] if tname != "nat" else (-100 if hook in ("PREROUTING", "OUTPUT") else 100)
                    slots.append((prio, len(slots), tname, hook, tname == "nat"))
            slots.sort()
            if self._nft is not None:  # already in the kernel's order (NftRuleset.base_chains)
                fam = "ip" if self.family == 4 else "ip6"
                slots.extend((c.priority, 0, f"{c.family} {c.table}", c.name, c.type == "nat")
                             for c in self._nft.base_chains(hook.lower(), (fam, "inet"))
                             if c.type in ("filter", "nat", "route") and c.priority is not None)
                slots.sort(key=lambda slot: slot[0])  # stable: iptables' first at one priority, nft's kept in order
            self._slots[hook] = slots
        return slots

    def compiled(self, table: str, name: str) -> _CompiledChain | None:
        key = (table, name)
        cc = self._compiled.get(key)
        if cc is None:
            nft_table = self._nft_tables.get(table)
            chain = nft_table.chains.get(name) if nft_table is not None else self.ruleset.chain(table, name)
            if chain is None:
                return None
            cc = _CompiledChain(chain, self._compile_rule)
            self._compiled[key] = cc
        return cc

    def _nft_rules(self):
        """The nft rule compiler (tracer/nft.py), made on first use: an iptables trace never imports it."""
        if self._nft_compiler is None:
            from kptrace.tracer.nft import NftCompiler

            self._nft_compiler = NftCompiler(self, self._nft_tables)
        return self._nft_compiler

    def _compile_rule(self, rule: Rule) -> _CompiledRule:
        if not isinstance(rule, Rule):  # an nft rule (model/nft.py)
            checks, action = self._nft_rules().compile(rule, f"{rule.family} {rule.table}")
            return _CompiledRule(rule, tuple(checks), None, "", action)
        jump = None
        tgt = rule.target
        if tgt is not None and tgt.name not in ("ACCEPT", "DROP", "RETURN"):
            table = self.ruleset.tables.get(rule.table)
            if table is not None and tgt.name in table.chains:
                jump = tgt.name
        try:
            checks = compile_base(rule, self.family)
            for m in rule.matches:
                checks.extend(compile_match(m, self.family))
        except (ValueError, AttributeError, IndexError) as e:
            reason = f"rule not understood ({e}); assumed not to match"
            return _CompiledRule(rule, (lambda st, ctx: Assumed(False, reason),), None, str(e))
        action = None
        if tgt is not None and jump is None:
            try:
                action = self._compile_action(rule)
            except (ValueError, IndexError) as e:
                reason = f"target of {rule.location} not understood ({e}); assumed to let the packet continue"

                def action(st, hook, reason=reason):
                    st.assumptions.append(reason)
                    return "", "", False
        return _CompiledRule(rule, tuple(checks), jump, "", action, bool(tgt is not None and tgt.goto))

    # ------------------------------------------------------------ tracing

    def trace(self, packet: Packet) -> Trace:
        v, src = parse_addr(packet.src)
        v2, dst = parse_addr(packet.dst)
        if v != self.family or v2 != self.family:
            raise KptraceError(f"packet {packet} is not IPv{self.family}")
        st = _St()
        st.src, st.dst, st.sport, st.dport = src, dst, packet.sport, packet.dport
        st.proto_num = PROTOCOLS.get(packet.proto, 6)
        st.mark = st.ctmark = 0
        st.prob = (1, 1)  # numerator, denominator: multiplied without normalising; a Fraction at the end
        st.path, st.assumptions = [], []
        st.dnat = st.snat = None
        st.masq = st.notrack = False
        st.recent = self.affinity
        st.verdict, st.reason = None, ""
        st.iif = packet.in_iface if packet.origin is not Origin.NODE else None
        st.oif = None
        self._out_iface = packet.out_iface
        st.orig = (src, dst, packet.sport, packet.dport)
        st.nat_done = set()
        st.npaths = 1
        st.pinned = None  # (rule, value, share) while an nft numgen's branch is evaluated (tracer/nft.py)

        finals: list[_St] = []
        if packet.origin is Origin.NODE:
            self._after_output(self._hook([st], "OUTPUT"), finals)
        else:
            self._after_prerouting(self._hook([st], "PREROUTING"), finals)
        return Trace(packet, self._outcomes(finals), tuple(self.ruleset.notes))

    def _route_local(self, st: _St) -> bool:
        local = self.is_local(st.dst)
        if isinstance(local, Assumed):
            st.assumptions.append(local.reason)
            return local.value
        return local

    @staticmethod
    def _settle(states: list[_St], finals: list[_St], reason: str | None = None) -> list[_St]:
        """Move states with a verdict to ``finals`` (with ``reason`` as an ACCEPT's, if given); return the rest."""
        rest = []
        for s in states:
            if s.verdict:
                finals.append(s)
            elif reason is not None:
                s.verdict, s.reason = "ACCEPT", reason
                finals.append(s)
            else:
                rest.append(s)
        return rest

    def _after_prerouting(self, states: list[_St], finals: list[_St]) -> None:
        states = self._settle(states, finals)
        local = [s for s in states if self._route_local(s)]
        forward = [s for s in states if s not in local] if local else states
        for s in forward:
            s.oif = self._out_iface
        if local:
            local = self._settle(self._hook(local, "INPUT", hi=_IPVS_LOCAL_IN - 1), finals)
            balanced, local = self._ipvs(local, "INPUT", finals)
            if balanced:
                self._settle(self._hook(balanced, "POSTROUTING"), finals, "sent by IPVS to a real server")
            self._settle(self._hook(local, "INPUT", lo=_IPVS_LOCAL_IN), finals, "delivered to a local socket (INPUT)")
        if forward:
            forward = self._settle(self._hook(forward, "FORWARD"), finals)
            self._settle(self._hook(forward, "POSTROUTING"), finals, "forwarded out of the node")

    def _after_output(self, states: list[_St], finals: list[_St]) -> None:
        states = self._settle(states, finals)
        balanced, states = self._ipvs(states, "OUTPUT", finals)
        for s in balanced:
            s.oif = self._out_iface
        if balanced:
            self._settle(self._hook(balanced, "POSTROUTING"), finals, "sent by IPVS to a real server")
        local, remote = [], []
        for s in states:
            if self._route_local(s):
                s.oif = "lo"
                local.append(s)
            else:
                s.oif = self._out_iface
                remote.append(s)
        if remote:
            self._settle(self._hook(remote, "POSTROUTING"), finals, "sent out of the node")
        if local:
            # Looped back: the receive side runs PREROUTING and INPUT, without nat (already decided).
            looped = self._settle(self._hook(local, "POSTROUTING"), finals)
            for s in looped:
                s.iif = "lo"
            looped = self._settle(self._hook(looped, "PREROUTING", nat=False), finals)
            self._settle(self._hook(looped, "INPUT", nat=False), finals, "delivered to a local socket (INPUT)")

    def _hook(self, states: list[_St], hook: str, *, lo: float = -_INF, hi: float = _INF, nat: bool = True) -> list[_St]:
        """Run the base chains at ``hook`` with priorities in ``lo..hi`` (all tables, iptables' and nft's) in order.

        A nat chain sees only a connection's first packet, and only until one of the nat chains at this hook
        has set its mapping (nf_nat_inet_fn); ``accept`` ends only the base chain it is in; drop/reject end all.
        """
        manips_run: set[str] = set()
        for prio, _, table, chain, is_nat in self.hook_slots(hook):
            if not lo <= prio <= hi or (is_nat and not nat):
                continue
            manip = ("dst" if hook in ("PREROUTING", "OUTPUT") else "src") if is_nat else None
            nxt: list[_St] = []
            todo: list[_St] = []
            for s in states:
                if s.verdict or (manip is not None and (manip in s.nat_done or s.notrack)):
                    nxt.append(s)
                else:
                    todo.append(s)
            if manip is not None:
                manips_run.add(manip)
            if len(todo) > 1 and self.share_walks and (table in self._nft_tables or not self._reads_dst(table, chain)):
                nxt.extend(self._shared_walks(todo, table, chain, hook))
            else:
                for s in todo:
                    nxt.extend(self._table(s, table, chain, hook))
            states = nxt
        for manip in manips_run:  # no chain set a mapping: the kernel binds a null one, and nat is not asked again
            for s in states:
                s.nat_done.add(manip)
        return states

    # ------------------------------------------------------------ sharing walks between branches

    def _shared_walks(self, states: list[_St], table: str, top: str, hook: str) -> list[_St]:
        """Walk ``table`` once for each group of states that differ only in their destination.

        After a Service's DNAT, its n endpoints' branches go through FORWARD and POSTROUTING with the
        same source, marks and conntrack state; when no rule those walks can reach looks at the
        destination (:meth:`_reads_dst`), the walks are identical, so one is walked and its effects are
        applied to the others (benchmarks/: a 10-endpoint trace through read chains 0.94 -> 0.76 ms).
        """
        nft = self._nft_rules() if table in self._nft_tables else None
        groups: dict[tuple, list[_St]] = {}
        for s in states:
            key = (s.src, s.sport, s.proto_num, s.mark, s.ctmark, s.dnat is None, s.snat, s.masq, s.recent,
                   s.iif, s.oif, frozenset(s.nat_done))
            if nft is not None:
                key += (s.pinned, s.orig, s.notrack)
            groups.setdefault(key, []).append(s)
        out: list[_St] = []
        for members in groups.values():
            rep = members[0]
            path_len, assumptions_len, prob = len(rep.path), len(rep.assumptions), rep.prob
            if nft is None:
                results = self._table(rep, table, top, hook)
                others = members[1:]
            else:
                # nft rules are not analysed ahead: the walk records each decision that reads the destination,
                # and a state that takes them all the same way shares it (tracer/nft.py, NftCompiler.replay).
                record: list = []
                nft.recorder, nft.tainted = record, False
                try:
                    results = self._table(rep, table, top, hook)
                finally:
                    nft.recorder = None
                if nft.tainted:
                    others = []
                    for other in members[1:]:
                        out.extend(self._table(other, table, top, hook))
                else:
                    others = []
                    for other in members[1:]:
                        if nft.replay(record, other):
                            others.append(other)
                        else:
                            out.extend(self._table(other, table, top, hook))
            out.extend(results)
            for other in others:
                for r in results:
                    # The usual walk does not branch: then the other state itself takes the effects.
                    n = other if len(results) == 1 else other.copy()
                    n.path.extend(r.path[path_len:])
                    n.assumptions.extend(r.assumptions[assumptions_len:])
                    if r.prob != prob:
                        (on, od), (rn, rd), (pn, pd) = other.prob, r.prob, prob
                        n.prob = (on * rn * pd, od * rd * pn)
                    n.src, n.sport, n.mark, n.ctmark = r.src, r.sport, r.mark, r.ctmark
                    n.snat, n.masq, n.notrack, n.recent = r.snat, r.masq, r.notrack, r.recent
                    n.verdict, n.reason = r.verdict, r.reason
                    n.nat_done = set(r.nat_done)
                    n.pinned = r.pinned
                    out.append(n)
        return out

    def _reads_dst(self, table: str, hook: str) -> bool:
        """Whether any rule reachable from ``table``/``hook`` reads or rewrites the destination."""
        key = (table, hook)
        known = self._dst_sensitive.get(key)
        if known is None and table in self._nft_tables:
            known = self._dst_sensitive[key] = True  # nft: not analysed; each state walks on its own
        if known is None:
            known = False
            if self.compiled(table, hook) is None:
                self._dst_sensitive[key] = False  # no such table or chain: nothing to walk
                return False
            seen: set[str] = set()
            todo = [hook]
            while todo and not known:
                name = todo.pop()
                if name in seen:
                    continue
                seen.add(name)
                cc = self.compiled(table, name)
                if cc is None:
                    known = True  # a missing chain: be careful
                    break
                for i in range(len(cc.rules)):
                    cr = cc.rule(i)
                    if _rule_reads_dst(cr.rule):
                        known = True
                        break
                    if cr.jump is not None:
                        todo.append(cr.jump)
            self._dst_sensitive[key] = known
        return known

    def _table(self, st: _St, table: str, base: str, hook: str) -> list[_St]:
        """Walk one base chain (an iptables table's built-in chain for ``hook``, or an nft base chain); return
        the states that leave it."""
        top = self.compiled(table, base)
        if top is None:
            return [st]
        policy = (top.chain.policy or "ACCEPT").upper()
        if not top.rules and policy == "ACCEPT":
            # An empty built-in chain: only its policy applies (most of mangle and raw on a node).
            st.path.append(Step(hook, table, base, None, f":{base} ACCEPT", top.chain.source, top.chain.line, note="policy ACCEPT"))
            return [st]
        self._ctx.hook = hook
        self._seen_calls = {}
        self._budget = _MAX_RULE_VISITS
        out: list[_St] = []
        for s, stopped in self._walk(st, table, hook, base, 0, 0):
            if not stopped:
                # Fell off the built-in chain (or RETURN, or a goto'd chain ended): its policy applies.
                chain = top.chain
                s.path.append(Step(hook, table, base, None, f":{base} {policy}", chain.source, chain.line, note=f"policy {policy}"))
                if policy == "DROP":
                    s.verdict, s.reason = "DROP", f"policy DROP of {table}/{base}"
            out.append(s)
        return out

    def _call(self, s: _St, table: str, hook: str, name: str, depth: int) -> list[tuple[_St, bool]]:
        """Walk chain ``name`` for a jump or goto; the same chain entered again with the same packet state
        reuses the first walk's exits, so rules that branch into a chain and rejoin it (``-m statistic
        -j NEXT`` then ``-j NEXT``, over and over) cost one walk per chain, not one per path."""
        key = (name, _state_key(s))
        seen = self._seen_calls.get(key)
        if seen is None:
            path_len, prob, npaths = len(s.path), s.prob, s.npaths
            exits = self._walk(s, table, hook, name, 0, depth)
            # Kept for a later entry with the same state. A stopped exit is never changed again within this
            # table's walk, so it is kept as it is; one that falls back into the caller is changed there, so a
            # copy is kept (about one a chain: a trace's cost grows by a few percent, benchmarks/run.py).
            self._seen_calls[key] = (path_len, prob, npaths, [(e if stopped else e.copy(), stopped) for e, stopped in exits])
            return exits
        # Entered before with this very state (its assumptions too): the same exits, after this state's path.
        path_len, prob, npaths, exits = seen
        scale = Fraction(*s.prob) / Fraction(*prob)  # normalised: unreduced products would double in size per level
        out = []
        for e, stopped in exits:
            if len(s.path) + len(e.path) - path_len > _MAX_PATH:
                raise InputError(
                    f"one path through {table}/{hook} is longer than {_MAX_PATH:,} rules: chains that return and are "
                    f"jumped to again (here {name}) make a packet's path grow exponentially; the kernel would spend "
                    f"as long on it", hint="this is not a ruleset a kube-proxy writes; check how it was made")
            n = e.copy()
            n.path = s.path + e.path[path_len:]
            p = Fraction(*e.prob) * scale
            n.prob = (p.numerator, p.denominator)
            n.npaths = min(e.npaths // npaths * s.npaths, PATHS_CAP)
            out.append((n, stopped))
        return out

    def _walk(self, st: _St, table: str, hook: str, cname: str, start: int, depth: int) -> list[tuple[_St, bool]]:
        """Walk chain ``cname`` from rule ``start``: the states that leave it, each with ``stopped`` (a verdict,
        a NAT or ACCEPT ended the table's walk) or not (it fell off the chain or RETURNed)."""
        cc = self._compiled.get((table, cname)) or self.compiled(table, cname)
        if cc is None:
            # A jump to a chain that is not in the input (partial dump): stop and say where.
            st.verdict = "INCOMPLETE"
            st.reason = f"continues in {table}/{cname}, which is not in this input"
            return [(st, True)]
        ctx = self._ctx
        exits: list[tuple[_St, bool]] = []
        # Work items: (state, next rule index) within this chain; a random rule adds one.
        work: list[tuple[_St, int]] = [(st, start)]
        while work:
            s, start = work.pop()
            cands = cc.candidates(s.dst)
            pos = bisect_left(cands, start) if start else 0
            n = len(cands)
            left = False  # the state left this chain (an exit, or a call whose exits were handled)
            while pos < n:
                ri = cands[pos]
                pos += 1
                cr = cc.rules[ri]
                if cr is None:
                    if cc.passes_over(ri, s.src):
                        continue
                    cr = cc.rule(ri)
                self._budget -= 1
                if self._budget < 0:
                    raise InputError(
                        f"the trace evaluated more than {_MAX_RULE_VISITS:,} rules in {table}/{hook}: the rules branch too much "
                        f"to follow every path (last in {cname})",
                        hint="random rules whose branches never rejoin multiply the paths; trace a more specific packet "
                             "(--src, --sport) or report the ruleset")
                coin = None
                matched = True
                forked = False
                for check in cr.checks:
                    r = check(s, ctx)
                    if r is True:
                        continue
                    if r is False:
                        matched = False
                        break
                    tr = type(r)
                    if tr is Coin:
                        coin = r if coin is None else Coin.of(coin.p * r.p)
                        continue
                    if tr is Fork:
                        # nft numgen: one state per value, 1/n each, this rule evaluated again with it pinned.
                        n0, d0 = s.prob
                        share = Fraction(1, r.n)
                        for k in range(r.n):
                            alt = s.copy() if k else s
                            alt.prob = (n0, d0 * r.n)
                            alt.pinned = (r.key, r.offset + k, share)
                            work.append((alt, ri))
                        matched, forked = False, True
                        break
                    # Assumed
                    s.assumptions.append(r.reason)
                    if not r.value:
                        matched = False
                        break
                if not matched:
                    if forked:
                        left = True  # the copies carry on from this rule
                        break
                    continue
                branch_p = None
                pinned = s.pinned
                if pinned is not None:
                    branch_p = pinned[2]
                if coin is not None:
                    branch_p = coin.p
                    alt = s.copy()
                    n0, d0 = s.prob
                    alt.prob = (n0 * coin.qn, d0 * coin.qd)
                    work.append((alt, ri + 1))
                    s.prob = (n0 * coin.pn, d0 * coin.pd)
                rule = cr.rule
                name = cr.jump
                goto = cr.goto
                step_note = ""
                if name is None:
                    if cr.action is None:  # no target: the rule only counts (or marks nothing)
                        s.path.append(_new(Step, (hook, table, rule.chain, rule.number, rule.text, rule.source, rule.line, branch_p, "", rule.synthetic)))
                        continue
                    verdict, step_note, stop = cr.action(s, hook)
                    if pinned is not None:
                        s.pinned = None  # the numgen's value served this rule only
                    if verdict == "NOMATCH":  # an nft map without an element for this packet: the rule does not apply
                        continue
                    if verdict == "JUMP" or verdict == "GOTO":
                        name, goto = step_note, verdict == "GOTO"
                        # Say where a verdict map sent the packet; a plain `jump X` says it itself.
                        step_note = "" if rule.text.endswith(f" {name}") else f"{verdict.lower()} {name}"
                if name is not None:
                    s.path.append(_new(Step, (hook, table, rule.chain, rule.number, rule.text, rule.source, rule.line, branch_p, step_note, rule.synthetic)))
                    if depth >= _MAX_DEPTH:
                        # The kernel refuses rulesets with jump loops (ELOOP) and nests at most a few dozen chains;
                        # kptrace refuses loops at load, so this is a loop let through by --lenient.
                        s.verdict, s.reason = "INCOMPLETE", f"more than {_MAX_DEPTH} nested jumps at {table}/{name}: a jump loop"
                        exits.append((s, True))
                    else:
                        for e, stopped in _merged(self._call(s, table, hook, name, depth + 1)):
                            if stopped or goto:
                                exits.append((e, stopped))  # a goto'd chain that ends returns to our caller
                            else:
                                work.append((e, ri + 1))
                    left = True
                    break
                s.path.append(_new(Step, (hook, table, rule.chain, rule.number, rule.text, rule.source, rule.line, branch_p, step_note, rule.synthetic)))
                if verdict == "RETURN":
                    break
                if stop:
                    if verdict in ("DROP", "REJECT", "INCOMPLETE"):
                        s.verdict = verdict
                        s.reason = s.reason or f"{verdict} by {table}/{cname} rule {rule.number}"
                    exits.append((s, True))
                    left = True
                    break
            if not left:
                exits.append((s, False))  # fell off the end of the chain, or RETURN
        return exits

    def _compile_action(self, rule: Rule):
        tgt = rule.target
        if tgt.name == "REDIRECT":  # depends on this tracer's node addresses
            return self._compile_action_uncached(rule)
        key = (tgt, rule.table, rule.chain if tgt.name in _NAT_TARGETS else "")
        action = self._actions.get(key)
        if action is None:
            action = self._actions[key] = self._compile_action_uncached(rule)
        return action

    def _compile_action_uncached(self, rule: Rule):
        """The rule's target as a function of the state, its options read once.

        Returns ``action(state, hook) -> (verdict, note, stop)``: verdict "" lets the walk go on,
        RETURN leaves the chain, ACCEPT/DROP/REJECT/INCOMPLETE end the table's walk (``stop``).
        """
        tgt = rule.target
        name = tgt.name
        table = rule.table
        const = {
            "ACCEPT": ("ACCEPT", "", True),
            "DROP": ("DROP", "", True),
            "RETURN": ("RETURN", "", False),
        }
        if name in const:
            result = const[name]
            return lambda st, hook: result
        if name == "REJECT":
            o = tgt.get("--reject-with")
            result = ("REJECT", f"reject with {o.value}" if o else "", True)
            return lambda st, hook: result
        if name == "MARK":
            ops = _mark_ops(tgt)

            def mark(st, hook):
                before = st.mark
                st.mark = _run_mark_ops(before, ops)
                return "", f"mark {before:#x} -> {st.mark:#x}", False
            return mark
        if name == "CONNMARK":
            apply = _compile_connmark(tgt)  # values read here: a bad one is "not understood" (assumed), not a crash

            def connmark(st, hook):
                before = (st.mark, st.ctmark)
                apply(st)
                return "", f"mark {before[0]:#x} -> {st.mark:#x}, ctmark {before[1]:#x} -> {st.ctmark:#x}", False
            return connmark
        if name in _NAT_TARGETS:
            if table != "nat":
                reason = f"{name} outside the nat table ({table}/{rule.chain}) is invalid; ignored"

                def invalid(st, hook):
                    st.assumptions.append(reason)
                    return "", "", False
                return invalid
            return self._compile_nat(rule)
        if name == "NOTRACK" or (name == "CT" and tgt.get("--notrack") is not None):
            def notrack(st, hook):
                st.notrack = True
                return "", "connection not tracked: nat is skipped", False
            return notrack
        if name == "CT" or name in _CONTINUE_TARGETS:
            return lambda st, hook: ("", "", False)
        if name in ("QUEUE", "NFQUEUE", "TPROXY"):
            reason = (f"{name}: handed to a userspace program; assumed it accepts" if name != "TPROXY"
                      else "TPROXY: transparent proxying not modelled; assumed delivered locally")

            def queued(st, hook):
                st.assumptions.append(reason)
                return "ACCEPT", "queued to userspace" if name != "TPROXY" else "", True
            return queued
        # A name that is neither a chain of this table nor an extension kptrace knows.
        if name.startswith("KUBE-") or not name.isupper() or "-" in name or "_" in name:
            reason = f"continues in {table}/{name}, which is not in this input"

            def missing(st, hook):
                st.reason = reason
                return "INCOMPLETE", f"jump to missing chain {name}", True
            return missing
        reason = f"target {name} not modelled; assumed to let the packet continue"

        def unknown(st, hook):
            st.assumptions.append(reason)
            return "", "", False
        return unknown

    def _compile_nat(self, rule: Rule):
        tgt = rule.target
        name = tgt.name
        family = self.family
        if name == "DNAT":
            o = tgt.get("--to-destination")
            if o is None:
                return lambda st, hook: ("ACCEPT", "DNAT (no --to-destination)", True)
            addr, port, extra = _nat_range(o.value, family)

            def dnat(st, hook):
                if addr is not None:
                    st.dst = addr
                if port is not None:
                    st.dport = port
                st.dnat = format_endpoint(family, st.dst, st.dport)
                st.nat_done.add("dst")  # later nat chains at this hook (an nft table's) are not asked (nf_nat_inet_fn)
                return "ACCEPT", f"DNAT to {st.dnat}{extra}", True
            return dnat
        if name == "REDIRECT":
            o = tgt.get("--to-ports")
            to_port = int(o.value.split("-")[0].split(":")[0]) if o is not None else None
            loopback = parse_addr("127.0.0.1" if family == 4 else "::1")[1]

            def redirect(st, hook):
                if hook == "OUTPUT":
                    st.dst = loopback
                elif self.node_ips:
                    st.dst = min(self.node_ips)
                    st.assumptions.append("REDIRECT: the input interface's address taken as the first node address")
                else:
                    st.assumptions.append("REDIRECT: the input interface's address is unknown (give --node-ip)")
                if to_port is not None:
                    st.dport = to_port
                st.dnat = format_endpoint(family, st.dst, st.dport)
                st.nat_done.add("dst")
                return "ACCEPT", f"REDIRECT to {st.dnat}", True
            return redirect
        if name == "SNAT":
            o = tgt.get("--to-source")
            addr, port, extra = _nat_range(o.value, family) if o else (None, None, "")

            def snat(st, hook):
                if addr is not None:
                    st.src = addr
                if port is not None:
                    st.sport = port
                st.snat = format_addr(family, st.src)
                st.nat_done.add("src")
                return "ACCEPT", f"SNAT to {st.snat}{extra}", True
            return snat
        if name == "MASQUERADE":
            def masquerade(st, hook):
                st.masq = True
                st.nat_done.add("src")
                egress = self.egress_address(st.dst)
                if egress is None:
                    st.snat = "MASQUERADE"
                    return "ACCEPT", "MASQUERADE (source becomes the egress interface's address)", True
                dev, addr = egress
                st.snat = addr
                return "ACCEPT", f"MASQUERADE to {addr} ({dev}'s address, by the node's routes)", True
            return masquerade
        reason = f"{name} not modelled"

        def other(st, hook):
            st.assumptions.append(reason)
            return "ACCEPT", name, True
        return other


# What a rule may read of the destination: -d, dst ports, addrtype --dst-type, reply tuples, sets,
# and any module kptrace does not know; targets that rewrite it.
_DST_OPTIONS = {"--dport", "--dports", "--ports", "--dst-type", "--ctreplsrc", "--ctreplsrcport", "--dst-range",
                "--match-set", "--vaddr", "--vport"}
_DST_SAFE_MODULES = {"comment", "nfacct", "mark", "connmark", "conntrack", "state", "statistic", "recent", "tcp", "udp",
                     "sctp", "udplite", "dccp", "multiport", "addrtype", "limit", "icmp", "icmp6", "ipv6-icmp", "physdev",
                     "iprange", "pkttype", "owner", "socket", "mac", "hashlimit", "connlimit", "rpfilter"}


def _rule_reads_dst(rule: Rule) -> bool:
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


def _route_table(routes: tuple[dict, ...], family: int) -> list[tuple[Cidr, str, int | None]]:
    """``ip -j route`` entries of one family as (destination, device, gateway)."""
    table = []
    for r in routes:
        dst = r.get("dst", "")
        dev = r.get("dev")
        if not dev or r.get("type") in ("blackhole", "unreachable", "prohibit"):
            continue
        try:
            cidr = parse_cidr(("0.0.0.0/0" if family == 4 else "::/0") if dst == "default" else dst)
        except ValueError:
            continue
        if cidr.version != family:
            continue
        gw = r.get("gateway")
        try:
            gateway = parse_addr(gw)[1] if gw else None
        except ValueError:
            gateway = None
        table.append((cidr, dev, gateway))
    return table


def _nat_range(value: str, family: int) -> tuple[int | None, int | None, str]:
    """``a[-b][:p[-q]]`` or ``[v6][-[v6]][:p[-q]]`` -> first address, first port, and a note for ranges."""
    note = ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif family == 6 and value.count(":") > 1:
        host, port_s = value, ""
    else:
        host, _, port_s = value.partition(":")
    addr = None
    if host:
        first, _, last = host.partition("-")
        addr = parse_addr(first.strip("[]"))[1]
        if last and last != first:
            note += f" (range {host}: the kernel picks one per connection; the first shown)"
    port = None
    if port_s:
        p1, _, p2 = port_s.partition("-")
        port = int(p1)
        if p2 and p2 != p1:
            note += f" (ports {port_s})"
    return addr, port, note


def _mark_value(text: str) -> tuple[int, int | None]:
    v, _, m = text.partition("/")
    return int(v, 0), (int(m, 0) if m else None)


def _mark_ops(tgt) -> list[tuple[int, int]]:
    """xt_MARK applies mark = (mark & ~mask) ^ value; iptables maps each option onto (value, mask)."""
    ops = []
    for o in tgt.options:
        v, m = _mark_value(o.value) if o.args else (0, None)
        if o.name == "--set-xmark":
            ops.append((v, 0xFFFFFFFF if m is None else m))
        elif o.name == "--set-mark":
            ops.append((v, 0xFFFFFFFF if m is None else (v | m)))
        elif o.name == "--or-mark":
            ops.append((v, v))
        elif o.name == "--xor-mark":
            ops.append((v, 0))
        elif o.name == "--and-mark":
            ops.append((0, ~v & 0xFFFFFFFF))
    return ops


def _run_mark_ops(mark: int, ops: list[tuple[int, int]]) -> int:
    for value, mask in ops:
        mark = (mark & ~mask & 0xFFFFFFFF) ^ value
    return mark


def _compile_connmark(tgt):
    """CONNMARK's options read once: a function that applies them to a state."""
    nfmask = ctmask = 0xFFFFFFFF
    m = tgt.get("--mask")
    if m is not None:
        nfmask = ctmask = int(m.value, 0)
    if tgt.get("--nfmask") is not None:
        nfmask = int(tgt.get("--nfmask").value, 0)
    if tgt.get("--ctmask") is not None:
        ctmask = int(tgt.get("--ctmask").value, 0)
    if tgt.get("--save-mark") is not None:
        def save(s: _St) -> None:
            s.ctmark = ((s.ctmark & ~ctmask) ^ (s.mark & nfmask)) & 0xFFFFFFFF
        return save
    if tgt.get("--restore-mark") is not None:
        def restore(s: _St) -> None:
            s.mark = ((s.mark & ~nfmask) ^ (s.ctmark & ctmask)) & 0xFFFFFFFF
        return restore
    ops = _mark_ops(tgt)

    def set_ctmark(s: _St) -> None:
        s.ctmark = _run_mark_ops(s.ctmark, ops)
    return set_ctmark


def _state_key(s: _St) -> tuple:
    """Everything about a state that a rule can read or an outcome shows, except its path and probability."""
    return (s.src, s.dst, s.sport, s.dport, s.proto_num, s.mark, s.ctmark, s.dnat, s.snat, s.masq, s.notrack, s.recent,
            s.verdict, s.reason, s.iif, s.oif, frozenset(s.nat_done), tuple(s.assumptions))


def _merged(exits: list[tuple[_St, bool]]) -> list[tuple[_St, bool]]:
    """Exits of one chain whose states are identical become one, their probabilities added (exactly) and
    their paths counted; the most likely path is kept."""
    if len(exits) < 2:
        return exits
    groups: dict[tuple, list[_St]] = {}
    for e, stopped in exits:
        groups.setdefault((_state_key(e), stopped), []).append(e)
    if len(groups) == len(exits):
        return exits
    out = []
    for (_, stopped), members in groups.items():
        if len(members) > 1:
            total = sum((Fraction(*m.prob) for m in members), Fraction(0))
            best = max(members, key=lambda m: Fraction(*m.prob)).copy()  # the members may be kept by _call
            best.npaths = min(sum(m.npaths for m in members), PATHS_CAP)
            best.prob = (total.numerator, total.denominator)
            out.append((best, stopped))
        else:
            out.append((members[0], stopped))
    return out


def _outcome_key(s: _St, family: int) -> tuple:
    return (s.verdict, s.dnat, s.snat, s.masq, s.mark, s.reason, format_endpoint(family, s.dst, s.dport))


def _merge(states: list[_St], family: int, delivery_of) -> tuple[Outcome, ...]:
    groups: dict[tuple, list[_St]] = {}
    for s in states:
        s.prob = Fraction(*s.prob)
        groups.setdefault(_outcome_key(s, family), []).append(s)
    outcomes = []
    for key, members in groups.items():
        if len(members) > 1:
            members.sort(key=lambda s: -float(s.prob))
        s0 = members[0]
        assumptions: list[str] = []
        for m in members:
            for a in m.assumptions:
                if a not in assumptions:
                    assumptions.append(a)
        outcomes.append(Outcome(
            probability=_exact_sum([m.prob for m in members]),
            verdict=s0.verdict,
            dst=format_endpoint(family, s0.dst, s0.dport),
            src=s0.snat if s0.snat else format_addr(family, s0.src),
            dnat=s0.dnat,
            snat=s0.snat,
            masquerade=s0.masq,
            mark=s0.mark,
            delivery=delivery_of(s0),
            reason=s0.reason,
            branches=tuple(Branch(m.prob, tuple(m.path)) for m in members),
            assumptions=tuple(assumptions),
            paths=sum(m.npaths for m in members),
            recent=frozenset(s0.recent),
        ))
    outcomes.sort(key=lambda o: (-float(o.probability), o.dst))
    total = _exact_sum([o.probability for o in outcomes])
    if total != 1:
        raise AssertionError(f"outcome probabilities sum to {total}, not 1")
    return tuple(outcomes)


def _exact_sum(ps: list[Fraction]) -> Fraction:
    """Sum of fractions over their least common denominator: one normalisation instead of one per
    addition (the kernel's probabilities all have power-of-two denominators)."""
    if len(ps) == 1:
        return ps[0]
    den = math.lcm(*(p.denominator for p in ps))
    return Fraction(sum(p.numerator * (den // p.denominator) for p in ps), den)


def _delivery(s: _St) -> str:
    if s.verdict in ("DROP", "REJECT", "INCOMPLETE"):
        return "none"
    return "local" if "INPUT" in s.reason else "forward"


Tracer._outcomes = lambda self, finals: _merge(finals, self.family, _delivery)  # type: ignore[attr-defined]
