"""Synthetic kube-proxy nftables rulesets of any size, for parse-speed measurements and tests.

    python3 tests/cases/nft/make_big.py --services 10000 --endpoints 10 --layout old --form knftables > big.nft

``layout``: ``old`` (up to 1.35: a ``numgen ... vmap`` of ``goto endpoint-...`` chains, ``jump
mark-for-masquerade``) or ``new`` (1.36-1.37: inline mark, ``dnat ip addr . port to numgen ... map``,
``hairpin-connections``). ``form``: ``knftables`` (kube-proxy's transaction text, one command a line)
or ``listing`` (``nft list ruleset`` layout: nested blocks, wrapped element lists). The rules are
shaped as kube-proxy writes them (see src/kube-proxy-1.37-ipv4.nft and the upstream fixtures); only
the size is made up. Every 10th Service is a NodePort; every 20th has session affinity (old layout).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys

HEAD = """add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
"""
OLD_HEAD = """add chain ip kube-proxy mark-for-masquerade
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
"""
NEW_HEAD = """add set ip kube-proxy hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service ; comment "service hairpin connections" ; }
add rule ip kube-proxy masquerading mark and 0x4000 != 0 mark set mark xor 0x4000 masquerade fully-random
add rule ip kube-proxy masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != 10.0.0.0/8 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"
"""


def _hash(name: str) -> str:
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]


def knftables_lines(services: int, endpoints: int, layout: str) -> list[str]:
    """kube-proxy's transaction text for ``services`` Services of ``endpoints`` endpoints each."""
    out = HEAD.splitlines() + (OLD_HEAD if layout == "old" else NEW_HEAD).splitlines()
    T = "ip kube-proxy"
    for s in range(services):
        ns, name = f"ns{s % 97}", f"svc{s}"
        base = f"{ns}/{name}/tcp/p80"
        svc = f"service-{_hash(base)}-{base}"
        cip = f"172.{30 + s // 65025}.{s // 255 % 255}.{s % 255 + 1}"
        eps = [f"10.{(s * endpoints + e) // 65025 % 255 + 1}.{(s * endpoints + e) // 255 % 255}.{(s * endpoints + e) % 255 + 1}"
               for e in range(endpoints)]
        out.append(f"add chain {T} {svc}")
        if layout == "old" or s % 20 == 0:
            chains = []
            for ep in eps:
                ebase = f"{base}__{ep}/8080"
                chains.append(f"endpoint-{_hash(ebase)}-{ebase}")
            if layout == "old":
                out.append(f"add rule {T} {svc} ip daddr {cip} ip saddr != 10.0.0.0/8 jump mark-for-masquerade")
            if s % 20 == 0:
                for ch in chains:
                    out.append(f"add set {T} affinity-{ch[9:]} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}")
                    out.append(f"add rule {T} {svc} ip saddr @affinity-{ch[9:]} goto {ch}")
            vmap = " , ".join(f"{i} : goto {ch}" for i, ch in enumerate(chains))
            out.append(f"add rule {T} {svc} numgen random mod {len(chains)} vmap {{ {vmap} }}")
            for ep, ch in zip(eps, chains):
                out.append(f"add chain {T} {ch}")
                if layout == "old":
                    out.append(f"add rule {T} {ch} ip saddr {ep} jump mark-for-masquerade")
                if s % 20 == 0:
                    out.append(f"add rule {T} {ch} update @affinity-{ch[9:]} {{ ip saddr }}")
                out.append(f"add rule {T} {ch} meta l4proto tcp dnat to {ep}:8080")
        else:
            m = " , ".join(f"{i} : {ep} . 8080" for i, ep in enumerate(eps))
            out.append(f"add rule {T} {svc} meta l4proto tcp dnat ip addr . port to numgen random mod {len(eps)} map {{ {m} }}")
        if layout == "new":
            for ep in eps:
                out.append(f"add element {T} hairpin-connections {{ {ep} . {ep} . tcp . 8080 }}")
        out.append(f"add element {T} cluster-ips {{ {cip} }}")
        out.append(f"add element {T} service-ips {{ {cip} . tcp . 80 : goto {svc} }}")
        if s % 10 == 0:
            ext = f"external-{_hash(base)}-{base}"
            out.append(f"add chain {T} {ext}")
            if layout == "old":
                out.append(f"add rule {T} {ext} jump mark-for-masquerade")
            else:
                out.append(f"add rule {T} {ext} mark set mark or 0x4000")
            out.append(f"add rule {T} {ext} goto {svc}")
            out.append(f"add element {T} service-nodeports {{ tcp . {30000 + s // 10} : goto {ext} }}")
    return out


def listing_lines(services: int, endpoints: int, layout: str) -> list[str]:
    """The same ruleset as ``nft list ruleset`` prints it (tabs, wrapped element lists, nft's spellings)."""
    from kptrace.model.nft import format_rule
    from kptrace.parsers.nft_text import parse_nft_text

    rs = parse_nft_text("\n".join(knftables_lines(services, endpoints, layout)) + "\n", "gen")
    out: list[str] = []
    for (family, name), t in rs.tables.items():
        out.append(f"table {family} {name} {{")
        if t.comment:
            out.append(f'\tcomment "{t.comment}"')
        for s in t.sets.values():
            out.append(f"\t{'map' if s.is_map else 'set'} {s.name} {{")
            typ = " . ".join(s.key_type) + (" : " + " . ".join(s.data_type) if s.is_map else "")
            out.append(f"\t\ttype {typ}")
            if s.flags:
                out.append(f"\t\tflags {','.join(s.flags)}")
            if s.timeout:
                out.append(f"\t\ttimeout {int(s.timeout) // 3600}h")
            if s.comment:
                out.append(f'\t\tcomment "{s.comment}"')
            els = s.elements
            if els:
                def one(k, v):
                    key = " . ".join(k) if isinstance(k, tuple) else k
                    return f"{key} : {v.kind} {v.target}" if v is not None and v.target else (f"{key} : {v.kind}" if v else key)
                items = [one(k, v) for k, v in els]
                per = 1 if s.is_map else 2
                rows = [", ".join(items[i:i + per]) for i in range(0, len(items), per)]
                out.append("\t\telements = { " + (",\n\t\t\t     ".join(rows)) + " }")
            out.append("\t}")
            out.append("")
        for c in t.chains.values():
            out.append(f"\tchain {c.name} {{")
            if c.hook:
                out.append(f"\t\ttype {c.type} hook {c.hook} priority {c.priority}; policy {c.policy};")
            for r in c.rules:
                out.append("\t\t" + format_rule(r.exprs, r.comment))
            out.append("\t}")
            out.append("")
        out.append("}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--layout", choices=("old", "new"), default="old")
    ap.add_argument("--form", choices=("knftables", "listing"), default="knftables")
    a = ap.parse_args()
    gen = knftables_lines if a.form == "knftables" else listing_lines
    sys.stdout.write("\n".join(gen(a.services, a.endpoints, a.layout)) + "\n")


if __name__ == "__main__":
    main()
