"""iptables targets compiled to actions: ``action(state, hook) -> (verdict, note, stops the table)``.

DNAT, SNAT, MASQUERADE, REDIRECT rewrite the state; MARK and CONNMARK set marks; CT --notrack takes the
connection out of conntrack; targets that change nothing a trace follows let the walk go on. Rules with the
same target share one action (kube-proxy writes the same few targets 100,000 times).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kptrace.model.addr import format_addr, format_endpoint, parse_addr
from kptrace.model.rules import Rule
from kptrace.tracer.state import TraceState

if TYPE_CHECKING:
    from kptrace.tracer.engine import Tracer

__all__ = ["IptablesActions", "nat_range"]

# Targets that change nothing the trace follows and let the walk go on.
_CONTINUE_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "NFACCT", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "TCPMSS",
                     "CHECKSUM", "AUDIT", "SECMARK", "CONNSECMARK", "SET", "IDLETIMER", "LED", "RATEEST", "SYNPROXY"}
_NAT_TARGETS = {"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"}


class IptablesActions:
    """The actions of one tracer's iptables rules, cached by target."""

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self._cache: dict[tuple, Any] = {}

    def compile(self, rule: Rule):
        """The action of a rule with a target that is not a chain (Tracer._compile_rule asks only for those)."""
        tgt = rule.target
        assert tgt is not None
        if tgt.name == "REDIRECT":  # depends on this tracer's node addresses
            return self._uncached(rule)
        key = (tgt, rule.table, rule.chain if tgt.name in _NAT_TARGETS else "")
        action = self._cache.get(key)
        if action is None:
            action = self._cache[key] = self._uncached(rule)
        return action

    def _uncached(self, rule: Rule):
        """The rule's target as a function of the state, its options read once.

        Returns ``action(state, hook) -> (verdict, note, stop)``: verdict "" lets the walk go on,
        RETURN leaves the chain, ACCEPT/DROP/REJECT/INCOMPLETE end the table's walk (``stop``).
        """
        tgt = rule.target
        assert tgt is not None
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
            ops = mark_ops(tgt)

            def mark(st, hook):
                before = st.mark
                st.mark = run_mark_ops(before, ops)
                return "", f"mark {before:#x} -> {st.mark:#x}", False
            return mark
        if name == "CONNMARK":
            apply = compile_connmark(tgt)  # values read here: a bad one is "not understood" (assumed), not a crash

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
            return self._nat(rule)
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

    def _nat(self, rule: Rule):
        tgt = rule.target
        assert tgt is not None
        name = tgt.name
        family = self.tracer.family
        if name == "DNAT":
            o = tgt.get("--to-destination")
            if o is None:
                return lambda st, hook: ("ACCEPT", "DNAT (no --to-destination)", True)
            addr, port, extra = nat_range(o.value, family)

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
                elif self.tracer.node_ips:
                    st.dst = min(self.tracer.node_ips)
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
            addr, port, extra = nat_range(o.value, family) if o else (None, None, "")

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
                egress = self.tracer.egress_address(st.dst)
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


def nat_range(value: str, family: int) -> tuple[int | None, int | None, str]:
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


def mark_value(text: str) -> tuple[int, int | None]:
    v, _, m = text.partition("/")
    return int(v, 0), (int(m, 0) if m else None)


def mark_ops(tgt) -> list[tuple[int, int]]:
    """xt_MARK applies mark = (mark & ~mask) ^ value; iptables maps each option onto (value, mask)."""
    ops = []
    for o in tgt.options:
        v, m = mark_value(o.value) if o.args else (0, None)
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


def run_mark_ops(mark: int, ops: list[tuple[int, int]]) -> int:
    for value, mask in ops:
        mark = (mark & ~mask & 0xFFFFFFFF) ^ value
    return mark


def compile_connmark(tgt):
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
        def save(s: TraceState) -> None:
            s.ctmark = ((s.ctmark & ~ctmask) ^ (s.mark & nfmask)) & 0xFFFFFFFF
        return save
    if tgt.get("--restore-mark") is not None:
        def restore(s: TraceState) -> None:
            s.mark = ((s.mark & ~nfmask) ^ (s.ctmark & ctmask)) & 0xFFFFFFFF
        return restore
    ops = mark_ops(tgt)

    def set_ctmark(s: TraceState) -> None:
        s.ctmark = run_mark_ops(s.ctmark, ops)
    return set_ctmark
