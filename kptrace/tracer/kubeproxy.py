"""What kube-proxy's rules imply beyond their text: the jumps from built-in chains that its restore
input leaves out, and the pod CIDR its masquerade rules reveal."""

from __future__ import annotations

import itertools

from kptrace.model.addr import Cidr, parse_cidr
from kptrace.model.rules import BUILTIN_CHAINS, Ruleset

__all__ = ["STANDARD_JUMPS", "add_standard_jumps", "pod_cidr"]

# kube-proxy's iptablesJumpChains (pkg/proxy/iptables/proxier.go), each inserted at the top of the
# built-in chain, so in a chain they read in this order; plus INPUT/OUTPUT -> KUBE-FIREWALL.
_NEW = "-m conntrack --ctstate NEW "
STANDARD_JUMPS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "nat": {
        "PREROUTING": (("KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),),
        "OUTPUT": (("KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),),
        "POSTROUTING": (("KUBE-POSTROUTING", '-m comment --comment "kubernetes postrouting rules"'),),
    },
    "filter": {
        "INPUT": (
            ("KUBE-PROXY-FIREWALL", _NEW + '-m comment --comment "kubernetes load balancer firewall"'),
            ("KUBE-NODEPORTS", '-m comment --comment "kubernetes health check service ports"'),
            ("KUBE-EXTERNAL-SERVICES", _NEW + '-m comment --comment "kubernetes externally-visible service portals"'),
            ("KUBE-FIREWALL", ""),
        ),
        "FORWARD": (
            ("KUBE-PROXY-FIREWALL", _NEW + '-m comment --comment "kubernetes load balancer firewall"'),
            ("KUBE-FORWARD", '-m comment --comment "kubernetes forwarding rules"'),
            ("KUBE-SERVICES", _NEW + '-m comment --comment "kubernetes service portals"'),
            ("KUBE-EXTERNAL-SERVICES", _NEW + '-m comment --comment "kubernetes externally-visible service portals"'),
        ),
        "OUTPUT": (
            ("KUBE-PROXY-FIREWALL", _NEW + '-m comment --comment "kubernetes load balancer firewall"'),
            ("KUBE-SERVICES", _NEW + '-m comment --comment "kubernetes service portals"'),
            ("KUBE-FIREWALL", ""),
        ),
    },
}

SYNTHETIC_SOURCE = "<assumed: kube-proxy's standard jumps>"


def add_standard_jumps(rs: Ruleset, make_chain) -> list[str]:
    """Supply kube-proxy's jumps from built-in chains where the input has no built-in chains at all
    (kube-proxy's restore input, a grep of KUBE-* rules). Returns notes saying what was assumed.

    ``make_chain(table, name, rule_texts, source)`` builds a chain (the parser's job).
    """
    notes = []
    for tname, hooks in STANDARD_JUMPS.items():
        t = rs.tables.get(tname)
        if t is None:
            continue
        if any(b in t.chains for b in BUILTIN_CHAINS[tname]):
            continue  # the input has built-in chains: trust them as they are
        added = []
        for hook, jumps in hooks.items():
            texts = [f"-A {hook} {extra + ' ' if extra else ''}-j {target}".replace("  ", " ")
                     for target, extra in jumps if target in t.chains]
            if texts:
                t.chains[hook] = make_chain(tname, hook, texts, SYNTHETIC_SOURCE)
                added.append(f"{hook} -> {', '.join(target for target, _ in jumps if target in t.chains)}")
        if added:
            notes.append(f"{tname}: the input has no built-in chains; assumed kube-proxy's standard jumps ({'; '.join(added)})")
    return notes


def pod_cidr(rs: Ruleset) -> Cidr | None:
    """The cluster's pod CIDR as kube-proxy's masquerade rules reveal it (``! -s CIDR -j KUBE-MARK-MASQ``),
    or the eTP Local short-circuit (``-s CIDR -j KUBE-SVC-...``). Looks at the first few Service
    chains only: every one of them says the same."""
    t = rs.tables.get("nat")
    if t is None:
        return None
    chains = itertools.chain(
        (t.chains[c] for c in ("KUBE-SERVICES",) if c in t.chains),
        itertools.islice((c for n, c in t.chains.items() if n.startswith(("KUBE-SVC-", "KUBE-EXT-", "KUBE-XLB-"))), 200),
    )
    for chain in chains:
        for raw in chain.raw[:3] if chain.name != "KUBE-SERVICES" else chain.raw:
            text = raw.text
            if "KUBE-MARK-MASQ" in text and "! -s " in text:
                value = text.split("! -s ", 1)[1].split(None, 1)[0]
            elif " -s " in text and ("-j KUBE-SVC-" in text) and "! -s" not in text:
                value = text.split(" -s ", 1)[1].split(None, 1)[0]
            else:
                continue
            try:
                cidr = parse_cidr(value)
            except ValueError:
                continue
            if cidr.version == rs.family and not cidr.is_host:
                return cidr
    return None


def masquerade_reason(outcome) -> tuple[object | None, str]:
    """The step that asked for masquerading and why, in kube-proxy's terms.

    kube-proxy marks a connection for masquerade (KUBE-MARK-MASQ) when its source is outside the pod
    CIDR (ClusterIP from a node or outside), when it comes in through an external destination (NodePort,
    external IP, LB IP with eTP Cluster), when the source is a node address (eTP Local), or when a pod
    reaches itself through the Service (hairpin).
    """
    step = outcome.masquerade_step
    if step is None:
        return None, "SNAT/MASQUERADE rule" if outcome.masquerade or outcome.snat else ""
    text = step.text
    if step.note.startswith("MASQUERADE") and "@hairpin-connections" in text:
        return step, "hairpin: the endpoint connects to itself through the Service"
    if "saddr != " in text:  # nftables mode: `ip saddr != 10.0.0.0/8 jump mark-for-masquerade`
        cidr = text.split("saddr != ", 1)[1].split()[0]
        return step, f"source outside the pod CIDR {cidr}"
    if step.chain.startswith("endpoint-") and "saddr " in text:
        return step, "hairpin: the endpoint connects to itself through the Service"
    if "fib saddr type local" in text:
        return step, "source is a node address"
    if step.chain.startswith(("external-", "firewall-")):
        return step, "external destination (NodePort / external IP / LoadBalancer, eTP Cluster)"
    if "! -s " in text:
        cidr = text.split("! -s ", 1)[1].split()[0]
        return step, f"source outside the pod CIDR {cidr}"
    if step.chain.startswith("KUBE-SEP-") and " -s " in text:
        return step, "hairpin: the endpoint connects to itself through the Service"
    if "--src-type LOCAL" in text:
        return step, "source is a node address"
    if step.chain.startswith(("KUBE-EXT-", "KUBE-XLB-", "KUBE-FW-")) or step.chain == "KUBE-NODEPORTS":
        return step, "external destination (NodePort / external IP / LoadBalancer, eTP Cluster)"
    if "masqueradeAll" in text or ("-j KUBE-MARK-MASQ" in text and " -s " not in text and step.chain.startswith("KUBE-SVC-")):
        return step, "every connection (masqueradeAll, or no local-traffic detector)"
    return step, "KUBE-MARK-MASQ"
