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

from bisect import bisect_left
from fractions import Fraction

from kptrace.errors import InputError, KptraceError
from kptrace.model.addr import Cidr, format_addr, parse_addr, parse_cidr
from kptrace.model.rules import BUILTIN_CHAINS, Rule, Ruleset
from kptrace.tracer.actions import IptablesActions
from kptrace.tracer.chains import CompiledChain, CompiledRule, reaches_dst
from kptrace.tracer.matchers import Assumed, Coin, Fork, compile_base, compile_match
from kptrace.tracer.outcomes import delivery, merge_outcomes
from kptrace.tracer.packet import PROTOCOLS, Origin, Packet
from kptrace.tracer.result import Step, Trace
from kptrace.tracer.routing import Routing
from kptrace.tracer.state import PATHS_CAP, MatchContext, TraceState, merged_exits, state_key

__all__ = ["Tracer"]

_new = tuple.__new__  # Steps are NamedTuples; tuple.__new__ skips their Python-level __new__ on the hot path
_LOOPBACK4 = parse_cidr("127.0.0.0/8")
_LOOPBACK6 = parse_addr("::1")[1]

#: iptables' tables as base chains (include/uapi/linux/netfilter_ipv4.h; nat's depends on the hook)
_IPTABLES_PRIORITY = {"raw": -300, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
_INF = float("inf")
_IPVS_LOCAL_IN = 98  # IPVS at LOCAL_IN: NF_IP_PRI_NAT_SRC - 2, between filter INPUT and nat INPUT
#: Nested jumps and gotos followed before a walk is cut as a loop. The kernel refuses loops at load, and
#: kptrace refuses them too (unless --lenient); no real ruleset nests more than a dozen chains.
_MAX_DEPTH = 64
#: Rules one table's walk may evaluate for one packet before kptrace gives up with a clear message. Branches
#: that rejoin are merged (:meth:`Tracer._call`), so only random rules whose branches never rejoin can get
#: here: a 10k-Service trace evaluates about a hundred rules.
_MAX_RULE_VISITS = 1_000_000
#: Longest rule path kptrace follows for one packet in one table (kube-proxy's are under 20).
_MAX_PATH = 100_000
#: What a walk does after a rule (Tracer._act), and a check that split the walk (Tracer._odd_check)
_CONTINUE, _LEFT, _RETURN, _FORKED = object(), object(), object(), object()


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
        self.set_matchers: dict = {}  # ipset name -> SetMatcher (tracer/ipsets.py)
        # kube-ipvs0 holds every virtual service address: they are the node's own (addrtype LOCAL)
        self.vips = {parse_addr(vs.address)[1] for vs in (ipvs or ()) if vs.address and (":" in vs.address) == (ruleset.family == 6)}
        self.family = ruleset.family
        self.node_ips = {parse_addr(a)[1] for a in node_ips if parse_addr(a)[0] == self.family}
        self.node_ips_given = bool(node_ips)
        self.assumed_local = {parse_addr(a)[1] for a in assumed_local if parse_addr(a)[0] == self.family}
        self.affinity = affinity
        self.remote = remote  # networks known not to hold node addresses (the pod CIDR)
        self._routing = Routing(self.family, routes, interfaces or {})
        self._compiled: dict[tuple[str, str], CompiledChain] = {}
        self._actions = IptablesActions(self)  # target actions, shared by the rules with the same target
        self._dst_sensitive: dict[tuple[str, str], bool] = {}
        self._out_iface: str | None = None
        self._ctx = MatchContext(self)
        # nftables: this family's tables (ip or ip6, and inet), keyed "FAMILY NAME" beside iptables' "nat", "filter"...
        self._nft = nft
        self._nft_tables: dict = {}
        if nft is not None:
            fam = "ip" if self.family == 4 else "ip6"
            self._nft_tables = {f"{t.family} {t.name}": t for t in nft.tables.values() if t.family in (fam, "inet")}
        self._nft_compiler = None
        self._slots: dict[str, list[tuple[int, int, str, str, bool]]] = {}
        # Per table walk (_table): the chains entered with each packet state (_call), and the rules left to evaluate.
        self._seen_calls: dict[tuple, tuple] = {}
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

    def ipset_lookup(self, name: str, flags: str, st: TraceState):
        """What ``-m set --match-set NAME FLAGS`` says of the packet (tracer/ipsets.py)."""
        from kptrace.tracer.ipsets import lookup

        return lookup(self, name, flags, st)

    def _ipvs(self, states: list[TraceState], hook: str, finals: list[TraceState]) -> tuple[list[TraceState], list[TraceState]]:
        """IPVS: a new connection to a virtual service goes to one of its real servers (tracer/ipvs.py)."""
        if self.ipvs is None:
            return [], states
        from kptrace.tracer.ipvs import balance

        return balance(self, states, hook, finals)

    def egress_address(self, dst: int) -> tuple[str, str] | None:
        """The address MASQUERADE gives a packet to ``dst`` (tracer/routing.py); None without routes."""
        return self._routing.egress_address(dst)

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

    def compiled(self, table: str, name: str) -> CompiledChain | None:
        key = (table, name)
        cc = self._compiled.get(key)
        if cc is None:
            nft_table = self._nft_tables.get(table)
            chain = nft_table.chains.get(name) if nft_table is not None else self.ruleset.chain(table, name)
            if chain is None:
                return None
            cc = CompiledChain(chain, self._compile_rule)
            self._compiled[key] = cc
        return cc

    def _nft_rules(self):
        """The nft rule compiler (tracer/nft.py), made on first use: an iptables trace never imports it."""
        if self._nft_compiler is None:
            from kptrace.tracer.nft import NftCompiler

            self._nft_compiler = NftCompiler(self, self._nft_tables)
        return self._nft_compiler

    def _compile_rule(self, rule: Rule) -> CompiledRule:
        if not isinstance(rule, Rule):  # an nft rule (model/nft.py)
            checks, action = self._nft_rules().compile(rule, f"{rule.family} {rule.table}")
            return CompiledRule(rule, tuple(checks), None, "", action)
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
            return CompiledRule(rule, (lambda st, ctx: Assumed(False, reason),), None, str(e))
        action = None
        if tgt is not None and jump is None:
            try:
                action = self._actions.compile(rule)
            except (ValueError, IndexError) as e:
                reason = f"target of {rule.location} not understood ({e}); assumed to let the packet continue"

                def action(st, hook, reason=reason):
                    st.assumptions.append(reason)
                    return "", "", False
        return CompiledRule(rule, tuple(checks), jump, "", action, bool(tgt is not None and tgt.goto))

    # ------------------------------------------------------------ tracing

    def trace(self, packet: Packet) -> Trace:
        v, src = parse_addr(packet.src)
        v2, dst = parse_addr(packet.dst)
        if v != self.family or v2 != self.family:
            raise KptraceError(f"packet {packet} is not IPv{self.family}")
        st = TraceState()
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

        finals: list[TraceState] = []
        if packet.origin is Origin.NODE:
            self._after_output(self._hook([st], "OUTPUT"), finals)
        else:
            self._after_prerouting(self._hook([st], "PREROUTING"), finals)
        return Trace(packet, merge_outcomes(finals, self.family, delivery), tuple(self.ruleset.notes))

    def _route_local(self, st: TraceState) -> bool:
        local = self.is_local(st.dst)
        if isinstance(local, Assumed):
            st.assumptions.append(local.reason)
            return local.value
        return local

    @staticmethod
    def _settle(states: list[TraceState], finals: list[TraceState], reason: str | None = None) -> list[TraceState]:
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

    def _after_prerouting(self, states: list[TraceState], finals: list[TraceState]) -> None:
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

    def _after_output(self, states: list[TraceState], finals: list[TraceState]) -> None:
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

    def _hook(self, states: list[TraceState], hook: str, *, lo: float = -_INF, hi: float = _INF, nat: bool = True) -> list[TraceState]:
        """Run the base chains at ``hook`` with priorities in ``lo..hi`` (all tables, iptables' and nft's) in order.

        A nat chain sees only a connection's first packet, and only until one of the nat chains at this hook
        has set its mapping (nf_nat_inet_fn); ``accept`` ends only the base chain it is in; drop/reject end all.
        """
        manips_run: set[str] = set()
        for prio, _, table, chain, is_nat in self.hook_slots(hook):
            if not lo <= prio <= hi or (is_nat and not nat):
                continue
            manip = ("dst" if hook in ("PREROUTING", "OUTPUT") else "src") if is_nat else None
            nxt: list[TraceState] = []
            todo: list[TraceState] = []
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

    def _shared_walks(self, states: list[TraceState], table: str, top: str, hook: str) -> list[TraceState]:
        """Walk ``table`` once for each group of states that differ only in their destination.

        After a Service's DNAT, its n endpoints' branches go through FORWARD and POSTROUTING with the
        same source, marks and conntrack state; when no rule those walks can reach looks at the
        destination (:meth:`_reads_dst`), the walks are identical, so one is walked and its effects are
        applied to the others (benchmarks/: a 10-endpoint trace through read chains 0.94 -> 0.76 ms).
        """
        nft = self._nft_rules() if table in self._nft_tables else None
        groups: dict[tuple, list[TraceState]] = {}
        for s in states:
            key: tuple = (s.src, s.sport, s.proto_num, s.mark, s.ctmark, s.dnat is None, s.snat, s.masq, s.recent,
                          s.iif, s.oif, frozenset(s.nat_done))
            if nft is not None:
                key += (s.pinned, s.orig, s.notrack)
            groups.setdefault(key, []).append(s)
        out: list[TraceState] = []
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
        """Whether any rule reachable from ``table``/``hook`` reads or rewrites the destination (nft: not analysed
        ahead; its walks are shared by recording, :meth:`_shared_walks`)."""
        key = (table, hook)
        known = self._dst_sensitive.get(key)
        if known is None:
            known = self._dst_sensitive[key] = table in self._nft_tables or reaches_dst(self.compiled, table, hook)
        return known

    def _table(self, st: TraceState, table: str, base: str, hook: str) -> list[TraceState]:
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
        out: list[TraceState] = []
        for s, stopped in self._walk(st, table, hook, base, 0, 0):
            if not stopped:
                # Fell off the built-in chain (or RETURN, or a goto'd chain ended): its policy applies.
                chain = top.chain
                s.path.append(Step(hook, table, base, None, f":{base} {policy}", chain.source, chain.line, note=f"policy {policy}"))
                if policy == "DROP":
                    s.verdict, s.reason = "DROP", f"policy DROP of {table}/{base}"
            out.append(s)
        return out

    def _call(self, s: TraceState, table: str, hook: str, name: str, depth: int) -> list[tuple[TraceState, bool]]:
        """Walk chain ``name`` for a jump or goto; the same chain entered again with the same packet state
        reuses the first walk's exits, so rules that branch into a chain and rejoin it (``-m statistic
        -j NEXT`` then ``-j NEXT``, over and over) cost one walk per chain, not one per path."""
        key = (name, state_key(s))
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

    def _walk(self, st: TraceState, table: str, hook: str, cname: str, start: int, depth: int) -> list[tuple[TraceState, bool]]:
        """Walk chain ``cname`` from rule ``start``: the states that leave it, each with ``stopped`` (a verdict,
        a NAT or ACCEPT ended the table's walk) or not (it fell off the chain or RETURNed).

        The walk's three parts: this loop finds the next rule a state reaches, the checks decide whether it
        matches (inline for True/False, :meth:`_odd_check` for a random rule, an nft numgen or an assumption),
        and :meth:`_act` does what a matching rule does. The check loop stays inline: it runs for every rule a
        trace visits, where a call each would be the costliest place for one (split so, a 10k-Service iptables
        trace took 0.396 ms against 0.391 ms before the split: best of 3, CPU time, same session)."""
        cc = self._compiled.get((table, cname)) or self.compiled(table, cname)
        if cc is None:
            # A jump to a chain that is not in the input (partial dump): stop and say where.
            st.verdict = "INCOMPLETE"
            st.reason = f"continues in {table}/{cname}, which is not in this input"
            return [(st, True)]
        ctx = self._ctx
        exits: list[tuple[TraceState, bool]] = []
        # Work items: (state, next rule index) within this chain; a random rule adds one.
        work: list[tuple[TraceState, int]] = [(st, start)]
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
                coin: Coin | None = None
                matched: object = True
                for check in cr.checks:
                    r = check(s, ctx)
                    if r is True:
                        continue
                    if r is False:
                        matched = False
                        break
                    coin, matched = self._odd_check(r, s, ri, coin, work)
                    if matched is not True:
                        break
                if matched is not True:
                    if matched is _FORKED:
                        left = True  # the copies carry on from this rule
                        break
                    continue
                done = self._act(cr, s, ri, coin, work, exits, table, hook, cname, depth)
                if done is _CONTINUE:
                    continue
                left = done is _LEFT
                break
            if not left:
                exits.append((s, False))  # fell off the end of the chain, or RETURN
        return exits

    @staticmethod
    def _odd_check(r, s: TraceState, ri: int, coin: Coin | None, work: list) -> tuple[Coin | None, object]:
        """A check that said more than yes or no: a random rule's :class:`Coin` (the rule matches with its
        probability), an nft numgen's :class:`Fork` (one state per value, 1/n each, the rule evaluated again with
        the value pinned), or an :class:`Assumed` answer (kept among the state's assumptions). Returns the coin so
        far and True (go on), False (no match) or _FORKED."""
        tr = type(r)
        if tr is Coin:
            return (r if coin is None else Coin.of(coin.p * r.p)), True
        if tr is Fork:
            n0, d0 = s.prob
            share = Fraction(1, r.n)
            for k in range(r.n):
                alt = s.copy() if k else s
                alt.prob = (n0, d0 * r.n)
                alt.pinned = (r.key, r.offset + k, share)
                work.append((alt, ri))
            return coin, _FORKED
        s.assumptions.append(r.reason)  # Assumed
        return coin, bool(r.value)

    def _act(self, cr: CompiledRule, s: TraceState, ri: int, coin: Coin | None, work: list,
             exits: list[tuple[TraceState, bool]], table: str, hook: str, cname: str, depth: int) -> object:
        """What matching rule ``cr`` does to state ``s``: its random split, its step on the path, its jump (the
        called chain's exits handled here) or its target. Returns _CONTINUE (the walk goes on to the next rule),
        _LEFT (the state left the chain: an exit or a call) or _RETURN (it returns to the caller)."""
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
        verdict, stop = "", False
        if name is None:
            if cr.action is None:  # no target: the rule only counts (or marks nothing)
                s.path.append(_new(Step, (hook, table, rule.chain, rule.number, rule.text, rule.source, rule.line, branch_p, "",
                                          rule.synthetic)))
                return _CONTINUE
            verdict, step_note, stop = cr.action(s, hook)  # type: ignore[operator]  # (CompiledRule.action: a callable)
            if pinned is not None:
                s.pinned = None  # the numgen's value served this rule only
            if verdict == "NOMATCH":  # an nft map without an element for this packet: the rule does not apply
                return _CONTINUE
            if verdict == "JUMP" or verdict == "GOTO":
                name, goto = step_note, verdict == "GOTO"
                # Say where a verdict map sent the packet; a plain `jump X` says it itself.
                step_note = "" if rule.text.endswith(f" {name}") else f"{verdict.lower()} {name}"
        s.path.append(_new(Step, (hook, table, rule.chain, rule.number, rule.text, rule.source, rule.line, branch_p, step_note,
                                  rule.synthetic)))
        if name is not None:
            if depth >= _MAX_DEPTH:
                # The kernel refuses rulesets with jump loops (ELOOP) and nests at most a few dozen chains;
                # kptrace refuses loops at load, so this is a loop let through by --lenient.
                s.verdict, s.reason = "INCOMPLETE", f"more than {_MAX_DEPTH} nested jumps at {table}/{name}: a jump loop"
                exits.append((s, True))
            else:
                for e, stopped in merged_exits(self._call(s, table, hook, name, depth + 1)):
                    if stopped or goto:
                        exits.append((e, stopped))  # a goto'd chain that ends returns to our caller
                    else:
                        work.append((e, ri + 1))
            return _LEFT
        if verdict == "RETURN":
            return _RETURN
        if stop:
            if verdict in ("DROP", "REJECT", "INCOMPLETE"):
                s.verdict = verdict
                s.reason = s.reason or f"{verdict} by {table}/{cname} rule {rule.number}"
            exits.append((s, True))
            return _LEFT
        return _CONTINUE
