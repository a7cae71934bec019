"""nftables rules compiled to the engine's checks and actions: one tracer for iptables and nftables.

An nft rule is a list of expressions (kptrace/model/nft.py). Its matches become checks with the same
contract as the iptables matchers (``check(state, ctx) -> True | False | Coin | Assumed``), its statements
one action (``action(state, hook) -> (verdict, note, stop)``), so the engine walks nft base chains exactly
as it walks iptables' built-in chains (tracer/engine.py). Two things iptables has no need of:

* ``numgen random mod N`` (kube-proxy's endpoint choice) splits the walk N ways, 1/N each: the check
  returns a :class:`Fork`, the engine re-evaluates the rule once per value with the value pinned on the
  state (``pinned``), and the action reads it;
* verdict maps (``vmap @service-ips``) jump to a chain chosen by the packet: the action returns
  ``("JUMP" | "GOTO", chain, False)``, or ``("NOMATCH", ...)`` when the map has no element for it
  (the kernel then skips the rule).

Values are compared in the model's canonical spelling (addresses as ``format_addr`` prints them, ports
and marks as decimal text, ``tcp``/``udp``/``sctp``), which is the spelling set and map elements are kept in.
"""

from __future__ import annotations

from typing import Any

from kptrace.model.addr import format_addr, format_endpoint, parse_addr
from kptrace.model.nft import (
    AnonMap,
    AnonSet,
    Binop,
    Concat,
    Counter,
    Ct,
    Fib,
    Limit,
    Log,
    Mangle,
    Match,
    Meta,
    Nat,
    Notrack,
    Numgen,
    Payload,
    Prefix,
    Range,
    SetRef,
    SetUpdate,
    Unknown,
    Value,
    Verdict,
    Vmap,
    Xt,
)
from kptrace.tracer.matchers import Assumed, Fork
from kptrace.tracer.nft_exprs import as_number, contains, numgens, reads_dst, taints
from kptrace.tracer.packet import PROTOCOLS

__all__ = ["Fork", "NftCompiler", "pod_cidr_nft"]

_PROTO_NAMES = {num: name for name, num in reversed(PROTOCOLS.items())}  # number -> nft's name (first spelling wins)
_L4_FIELDS = {"tcp", "udp", "sctp", "th", "udplite", "dccp"}


class _Unknowable(Exception):
    """A value the input cannot tell (an interface name not given, a module not modelled)."""

    def __init__(self, reason: str, value: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.value = reason, value


class NftCompiler:
    """Compiles the rules of one family's nft tables for one tracer."""

    def __init__(self, tracer, tables: dict[str, Any]) -> None:
        self.tracer = tracer
        self.family = tracer.family
        self.tables = tables  # table key ("ip kube-proxy") -> NftTable
        # While the engine walks one of several states that differ only in their destination (the n endpoints
        # of a Service after DNAT, in FORWARD and POSTROUTING), every decision that reads the destination is
        # recorded here, so that the others can be checked against it instead of walked (replay()).
        self.recorder: list | None = None
        self.tainted = False  # a rule read the destination in a way replay() cannot check

    # ------------------------------------------------------------ sharing walks between destinations

    def replay(self, record: list, st) -> bool:
        """Whether state ``st`` takes every recorded destination-reading decision the way the recorded walk
        did: then its walk is that walk (the states differ in nothing else), and need not be done again."""
        for entry in record:
            kind = entry[0]
            if kind == 0:  # a match
                _, table_key, m, rule_key, result = entry
                if self._compare(table_key, m, st, rule_key) != result:
                    return False
            elif kind == 1:  # a verdict map's lookup
                _, table_key, e, rule_key, result = entry
                if self._vmap_get(table_key, e, st, rule_key) != result:
                    return False
            elif self.tracer.egress_address(st.dst) != entry[1]:  # masquerade's address
                return False
        return True

    def _taint(self, st, ctx) -> bool:
        """First check of a rule that reads the destination in a way replay() cannot repeat (a DNAT, a fib
        daddr): while a walk is recorded, it cannot stand for the others."""
        if self.recorder is not None:
            self.tainted = True
        return True

    def _compare_recorded(self, table_key: str, m: Match, st, rule_key: int):
        r = self._compare(table_key, m, st, rule_key)
        rec = self.recorder
        if rec is not None:
            rec.append((0, table_key, m, rule_key, r))
        return r

    def _vmap_get(self, table_key: str, e: Vmap, st, rule_key: int):
        """The verdict map's element for the packet, None for none, or the reason its key is unknown."""
        try:
            key = self._value(e.key, st, rule_key)
        except _Unknowable as u:
            return u
        return self._map_get(table_key, e.mapping, key)

    # ------------------------------------------------------------ values of the packet

    def _value(self, e, st, rule_key: int):
        """The packet's value of expression ``e``, in the canonical spelling (or an int for marks)."""
        t = type(e)
        if t is Payload:
            proto, field = e.protocol, e.field
            if proto in ("ip", "ip6"):
                if (proto == "ip") != (self.family == 4):
                    return None
                if field == "saddr":
                    return format_addr(self.family, st.src)
                if field == "daddr":
                    return format_addr(self.family, st.dst)
                raise _Unknowable(f"{proto} {field} is not modelled")
            if proto in _L4_FIELDS:
                if proto != "th" and _PROTO_NAMES.get(st.proto_num) != proto:
                    return None  # `tcp dport` on a UDP packet: no match
                if field == "dport":
                    return str(st.dport)
                if field == "sport":
                    return str(st.sport)
            raise _Unknowable(f"{proto} {field} is not modelled")
        if t is Meta:
            key = e.key
            if key == "l4proto":
                return _PROTO_NAMES.get(st.proto_num, str(st.proto_num))
            if key == "nfproto":
                return "ipv4" if self.family == 4 else "ipv6"
            if key == "mark":
                return st.mark
            if key in ("iifname", "oifname"):
                v = st.iif if key == "iifname" else st.oif
                if v is None:
                    raise _Unknowable(f"{key} is unknown (give --{'in' if key == 'iifname' else 'out'}-iface)")
                return v
            raise _Unknowable(f"meta {key} is not modelled")
        if t is Ct:
            if e.key == "state":
                return {x.lower() for x in st.ctstates()}
            if e.key == "status":
                out = set()
                if st.dnat is not None:
                    out.add("dnat")
                if st.snat is not None or st.masq:
                    out.add("snat")
                return out
            if e.key == "mark":
                return st.ctmark
            raise _Unknowable(f"ct {e.key} is not modelled")
        if t is Fib:
            if e.result == "type" and e.flags and e.flags[0] in ("saddr", "daddr"):
                local = self.tracer.is_local(st.src if e.flags[0] == "saddr" else st.dst)
                if isinstance(local, Assumed):
                    st.assumptions.append(local.reason)
                    local = local.value
                return "local" if local else "unicast"
            raise _Unknowable(f"fib {' . '.join(e.flags)} {e.result} is not modelled")
        if t is Binop:
            left = self._value(e.left, st, rule_key)
            right = int(e.right.text, 0) if type(e.right) is Value else self._value(e.right, st, rule_key)
            if left is None:
                return None
            left = int(left)
            return {"&": left & right, "|": left | right, "^": left ^ right,
                    "<<": (left << right) & 0xFFFFFFFF, ">>": left >> right}.get(e.op, left)
        if t is Concat:
            items = tuple(self._value(i, st, rule_key) for i in e.items)
            return None if any(i is None for i in items) else tuple(str(i) for i in items)
        if t is Numgen:
            pinned = st.pinned
            if pinned is None or pinned[0] != rule_key:
                raise _Unknowable("numgen not pinned")  # cannot happen: the Fork check runs first
            return str(pinned[1])
        if t is Value:
            return e.text
        raise _Unknowable(f"{type(e).__name__} is not modelled")

    # ------------------------------------------------------------ sets and comparisons

    def _set(self, table_key: str, name: str):
        table = self.tables.get(table_key)
        return table.sets.get(name) if table is not None else None

    def _in_set(self, table_key: str, ref: SetRef, value, st) -> bool | Assumed:
        s = self._set(table_key, ref.name)
        if s is None:
            return Assumed(False, f"set @{ref.name} is not in the input: assumed no match")
        if getattr(s, "flags", None) and ("dynamic" in s.flags or "timeout" in s.flags) and ref.name.startswith("affinity-"):
            # Session affinity: the set holds the clients pinned to one endpoint (updated from the packet path).
            return ref.name in st.recent
        if value is None:
            return False
        if s.interval:
            return any(contains(k, value) for k, _ in s.elements)
        return value in s

    def _compare(self, table_key: str, m: Match, st, rule_key: int):
        try:
            left = self._value(m.left, st, rule_key)
        except _Unknowable as u:
            return Assumed(u.value, f"{u.reason}: assumed {'a match' if u.value else 'no match'}")
        right, op = m.right, m.op
        if op == "in" or isinstance(left, set):  # a bit test: ct state new, ct status dnat
            wanted = {v.text for v in (right.elements if type(right) is AnonSet else (right,)) if type(v) is Value}
            bit = bool(left & wanted) if isinstance(left, set) else False
            return (not bit) if op == "!=" else bit
        rt = type(right)
        hit: bool | Assumed
        if rt is SetRef:
            hit = self._in_set(table_key, right, left, st)
            if isinstance(hit, Assumed):
                return hit
        elif rt is AnonSet:
            hit = left is not None and any(contains(el, left) for el in right.elements)
        elif rt is Prefix or rt is Range:
            hit = left is not None and contains(right, left)
        elif rt is Value:
            if left is None:
                hit = False
            elif isinstance(left, int):
                r = int(right.text, 0)
                hit = {"==": left == r, "!=": left != r, "<": left < r, ">": left > r, "<=": left <= r, ">=": left >= r}.get(op, False)
                return hit
            elif op in ("<", ">", "<=", ">="):
                a, b = as_number(left), as_number(right.text)
                return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
            else:
                hit = left == right.text
        else:
            return Assumed(False, f"a comparison with {rt.__name__} is not modelled: assumed no match")
        if left is None:
            return False  # a field the packet does not have (tcp dport of a UDP packet) matches neither way
        return (not hit) if op == "!=" else hit

    # ------------------------------------------------------------ rules

    def compile(self, rule, table_key: str):
        """``(checks, action)`` for one NftRule; ``action`` is None for a rule without statements."""
        rule_key = id(rule)
        self._refuse_bad_values(rule, table_key)
        checks: list = []
        statements: list = []
        fork = None
        if taints(rule.exprs):
            checks.append(self._taint)
        for e in rule.exprs:
            t = type(e)
            if t is Match:
                if reads_dst(e.left):
                    checks.append(lambda st, ctx, m=e: self._compare_recorded(table_key, m, st, rule_key))
                else:
                    checks.append(lambda st, ctx, m=e: self._compare(table_key, m, st, rule_key))
            elif t is Xt and e.kind == "match" and e.name == "comment":
                continue  # a comment matches every packet (nft -j shows iptables' -m comment as an xt match)
            elif t is Xt and e.kind == "match":
                # iptables-nft's compat match, which nft cannot show: its outcome is unknown here (the same
                # table's iptables-save output says what it is: give it with --dump).
                reason = (f"xt match {e.name} at {rule.location} cannot be read from nft output: assumed no match "
                          f"(give the node's iptables-save output too)")
                checks.append(lambda st, ctx, r=reason: Assumed(False, r))
            elif t in (Counter, Log):
                continue
            elif t is Limit:
                statements.append(("limit", e))
            else:
                statements.append(("stmt", e))
            for sub in numgens(e):
                fork = Fork(rule_key, sub.mod, sub.offset)
        if fork is not None:
            # Last, after the matches: only a packet that reaches the numgen splits.
            checks.append(lambda st, ctx, f=fork: True if st.pinned is not None and st.pinned[0] == f.key else f)
        if not statements:
            return checks, None
        return checks, self._action(statements, table_key, rule_key, rule)

    def _refuse_bad_values(self, rule, table_key: str) -> None:
        """A rule nft would refuse (an address out of range, a port over 65535, ...) is an input error where a
        trace reaches it (``kptrace parse`` checks every rule: model/nft_values.py)."""
        from kptrace.model.nft_values import rule_has_problems, rule_problems

        if not rule_has_problems(rule):
            return
        t = self.tables.get(table_key)
        chain = t.chains.get(rule.chain) if t is not None else None
        lines = getattr(getattr(chain, "_reader", None), "lines", None)
        text = lines[rule.line - 1] if lines and 0 < rule.line <= len(lines) else None
        from kptrace.errors import ParseError

        raise ParseError(rule_problems(rule, text))

    def _action(self, statements, table_key: str, rule_key: int, rule):
        def run(st, hook):
            notes = []
            for kind, e in statements:
                t = type(e)
                if kind == "limit":
                    st.assumptions.append(f"rate limit at {rule.location} assumed not exceeded")
                    continue
                if t is Verdict:
                    k = e.kind
                    if k == "accept":
                        return "ACCEPT", "; ".join(notes), True
                    if k == "drop":
                        return "DROP", "; ".join(notes), True
                    if k == "reject":
                        return "REJECT", f"reject with {e.reject_with}" if e.reject_with else "reject", True
                    if k == "return":
                        return "RETURN", "", False
                    if k in ("jump", "goto"):
                        return k.upper(), e.target, False
                    if k == "continue":
                        continue
                    st.assumptions.append(f"verdict {k} at {rule.location} not modelled")
                    return "ACCEPT", k, True
                if t is Vmap:
                    got = self._vmap_verdict(table_key, e, st, rule_key, rule)
                    if got is not None:
                        return got
                    continue
                if t is Mangle:
                    self._mangle(e, st, rule_key, rule, notes)
                    continue
                if t is SetUpdate:
                    if e.set.startswith("affinity-"):
                        st.recent = st.recent | {e.set}
                        notes.append(f"client added to @{e.set}")
                    continue
                if t is Nat:
                    return self._nat(e, st, hook, table_key, rule_key, notes)
                if t is Notrack:
                    st.notrack = True
                    continue
                if t is Xt:
                    st.assumptions.append(f"xt {e.kind} {e.name} at {rule.location} cannot be read from nft output: assumed "
                                          f"to change nothing (give the node's iptables-save output too)")
                    continue
                if t is Unknown:
                    st.assumptions.append(f"{e.text} at {rule.location} is not modelled: assumed to change nothing")
                    continue
            return "", "; ".join(notes), False
        return run

    def _vmap_verdict(self, table_key: str, e: Vmap, st, rule_key: int, rule) -> tuple | None:
        """A verdict map's verdict for the packet (recorded while a shared walk is recorded), or None when its
        element changes nothing here."""
        v = self._vmap_get(table_key, e, st, rule_key)
        if self.recorder is not None and reads_dst(e.key):
            self.recorder.append((1, table_key, e, rule_key, v))
        if type(v) is _Unknowable:
            st.assumptions.append(f"{v.reason} at {rule.location}: assumed no element")
            return "NOMATCH", "", False
        if not isinstance(v, Verdict):
            return "NOMATCH", "", False  # no element: the kernel skips the rule
        if v.kind in ("jump", "goto"):
            return v.kind.upper(), v.target, False
        if v.kind == "accept":
            return "ACCEPT", "vmap: accept", True
        if v.kind == "drop":
            return "DROP", "vmap: drop", True
        if v.kind == "reject":
            return "REJECT", "vmap: reject", True
        if v.kind == "return":
            return "RETURN", "", False
        return None

    def _mangle(self, e: Mangle, st, rule_key: int, rule, notes: list) -> None:
        """``meta mark set ...`` / ``ct mark set ...``."""
        key = e.key
        try:
            value = self._value(e.value, st, rule_key)
            value = int(value, 0) if isinstance(value, str) else value
        except (_Unknowable, ValueError) as u:
            st.assumptions.append(f"value of a mark at {rule.location} not understood ({u}): left as it was")
            return
        if type(key) is Meta and key.key == "mark":
            before = st.mark
            st.mark = value & 0xFFFFFFFF
            notes.append(f"mark {before:#x} -> {st.mark:#x}")
        elif type(key) is Ct and key.key == "mark":
            st.ctmark = value & 0xFFFFFFFF
            notes.append(f"ct mark -> {st.ctmark:#x}")
        else:
            st.assumptions.append(f"{e} at {rule.location} not modelled")

    def _map_get(self, table_key: str, mapping, key):
        if key is None:
            return None
        if type(mapping) is AnonMap:
            return mapping.get(key)
        if type(mapping) is SetRef:
            s = self._set(table_key, mapping.name)
            if s is None:
                return None
            if s.interval:
                for k, v in s.elements:
                    if contains(k, key):
                        return v
                return None
            return s.lookup(key)
        return None

    def _nat(self, e: Nat, st, hook: str, table_key: str, rule_key: int, notes: list):
        family = self.family
        pre = ("; ".join(notes) + "; ") if notes else ""
        if e.kind == "masquerade":
            st.masq = True
            st.nat_done.add("src")
            egress = self.tracer.egress_address(st.dst)
            if self.recorder is not None:
                self.recorder.append((2, egress))
            if egress is None:
                st.snat = "MASQUERADE"
                return "ACCEPT", pre + "masquerade (source becomes the egress interface's address)", True
            dev, addr = egress
            st.snat = addr
            return "ACCEPT", pre + f"masquerade to {addr} ({dev}'s address)", True
        addr = port = None
        try:
            if e.map_key is not None:
                key = self._value(e.map_key, st, rule_key)
                v = self._map_get(table_key, e.addr if type(e.addr) in (AnonMap, SetRef) else e.port, key)
                if v is None:
                    return "NOMATCH", "", False
                if isinstance(v, tuple):
                    addr, port = v[0], (v[1] if len(v) > 1 else None)
                else:
                    addr = v
            else:
                addr = self._value(e.addr, st, rule_key) if e.addr is not None else None
                port = self._value(e.port, st, rule_key) if e.port is not None else None
        except _Unknowable as u:
            st.assumptions.append(f"{e.kind} at {u.reason}: its address is unknown")
            return "ACCEPT", pre + e.kind, True
        if e.kind in ("dnat", "redirect"):
            if e.kind == "redirect":  # to the node itself: loopback from OUTPUT, else the input interface's address
                if hook == "OUTPUT":
                    addr = "127.0.0.1" if family == 4 else "::1"
                elif self.tracer.node_ips:
                    addr = format_addr(family, min(self.tracer.node_ips))
                else:
                    addr = None
                    st.assumptions.append("redirect: the input interface's address is unknown (give --node-ip)")
            if addr is not None:
                st.dst = parse_addr(str(addr))[1]
            if port is not None:
                st.dport = int(port)
            st.dnat = format_endpoint(family, st.dst, st.dport)
            st.nat_done.add("dst")
            return "ACCEPT", pre + f"{e.kind} to {st.dnat}", True
        if e.kind == "snat":
            if addr is not None:
                st.src = parse_addr(str(addr))[1]
            if port is not None:
                st.sport = int(port)
            st.snat = format_addr(family, st.src)
            st.nat_done.add("src")
            return "ACCEPT", pre + f"snat to {st.snat}", True
        st.assumptions.append(f"{e.kind} not modelled")
        return "ACCEPT", pre + e.kind, True


def pod_cidr_nft(nft, family: int):
    """The pod CIDR kube-proxy's nft rules reveal: ``ip saddr != CIDR`` next to a masquerade mark."""
    from kptrace.model.addr import parse_cidr

    fam = "ip" if family == 4 else "ip6"
    for (tfam, _name), table in nft.tables.items():
        if tfam != fam:
            continue
        for chain_name in ("services",) + tuple(c for c in table.chains if c.startswith("service-"))[:50]:
            chain = table.chains.get(chain_name)
            if chain is None:
                continue
            for rule in chain.rules:
                for e in rule.exprs:
                    if type(e) is Match and e.op == "!=" and type(e.right) is Prefix and type(e.left) is Payload \
                            and e.left.field == "saddr":
                        return parse_cidr(f"{e.right.addr}/{e.right.length}")
    return None


