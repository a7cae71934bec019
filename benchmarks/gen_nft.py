#!/usr/bin/env python3
"""Generate a synthetic kube-proxy nftables-mode node: the nftables twin of ``gen_synthetic.py``.

The Services are exactly those ``gen_synthetic.generate`` puts in its iptables dump for the same
arguments (same names ``ns{i//100}/svc{i}:p80``, ClusterIPs, endpoints ``10.x.y.z:8080`` in the same
order, NodePorts, LoadBalancer IPs, Local-policy endpoints), so the two proxy modes of one cluster can be
compared.  The rules are written the way kube-proxy's nftables proxier writes them, in either layout:

* ``--layout classic`` (1.31-1.35): ``jump mark-for-masquerade``, ``numgen random mod N vmap`` of
  ``endpoint-*`` chains, each endpoint chain ``ip saddr EP jump mark-for-masquerade`` + ``dnat to``;
* ``--layout 1.37``: inline ``mark set mark or 0x4000``, one DNAT rule per service chain
  (``dnat to EP:PORT`` or ``dnat ip addr . port to numgen random mod N map {...}``), the
  ``hairpin-connections`` set.

The rule shapes come from ``fixtures/nft/make_nft.py`` (the same code writes the nft fixtures, whose
behaviour is checked in the kernel; see fixtures/nft/README.md).

Two output forms:

* ``--form knft`` (default): knftables transaction text, kube-proxy's own form (``add table|set|map|chain|
  rule|element ...``), loadable with ``nft -f``;
* ``--form list``: what ``nft list ruleset`` prints for that ruleset, written directly in nft's canonical
  spelling (``meta mark set meta mark | 0x00004000``, ``dnat ip to numgen ...``, ``priority dstnat - 10``,
  sorted and wrapped element lists, ``timeout 3h``, ...).  ``--verify`` checks that spelling: it loads a
  small instance with every feature into a throwaway network namespace (root) and diffs ``nft list
  ruleset`` against the generated text.  Do not load the 10k instance: the kernel takes minutes over it.

Usable as a module (``generate(...)`` returns the text) and as a CLI::

    python3 benchmarks/gen_nft.py --layout 1.37 -o /tmp/node-1.37.knft
    python3 benchmarks/gen_nft.py --layout classic --form list -o /tmp/node-classic.nft
    sudo python3 benchmarks/gen_nft.py --verify
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from gen_synthetic import LB_SOURCE_RANGE, PORT, _build_services  # noqa: E402

__all__ = ["generate", "services", "to_listing", "main"]


def _load_make_nft():
    spec = importlib.util.spec_from_file_location("make_nft", ROOT / "fixtures" / "nft" / "make_nft.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_nft", mod)
    spec.loader.exec_module(mod)
    return mod


mk = _load_make_nft()


# --------------------------------------------------------------------------- model


def services(n: int, endpoints: int, nodeport_every: int = 10, *, seed: int = 0, family: int = 4,
             affinity_every: int = 0, local_every: int = 0, lb_source_ranges_every: int = 0,
             no_endpoints_every: int = 0) -> list:
    """gen_synthetic's Services as make_nft Service ports."""
    out = []
    for s in _build_services(n, endpoints, nodeport_every, seed, family, affinity_every, local_every,
                             lb_source_ranges_every, no_endpoints_every):
        ns_name, port_name = s.spn.split(":")
        ns, name = ns_name.split("/")
        local = {ep for ep, _sep in s.local_eps}
        eps = []
        for ep, _sep in s.eps:
            ip, port = mk.split_hostport(ep)
            eps.append(mk.Endpoint(ip, port, ep in local))
        out.append(mk.Service(
            ns, name, port_name, "tcp", s.cip, PORT, eps, s.nodeport or 0, [],
            [s.lb_ip] if s.lb_ip else [], [LB_SOURCE_RANGE[family]] if s.lb_ip else [],
            etp_local=s.local, affinity=s.affinity))
    return out


def generate(n: int = 10000, endpoints: int = 10, nodeport_every: int = 10, *, layout: str = "1.37",
             form: str = "knft", family: int = 4, **kw) -> str:
    svcs = services(n, endpoints, nodeport_every, family=family, **kw)
    cidr = None
    if family == 4 and n >= 65000:
        cidr = "172.16.0.0/12"  # gen_synthetic allocates ClusterIPs in 172.16.0.0/12 from 172.30.0.1
    text = mk.ruleset(svcs, family, layout, service_cidr=cidr)
    return to_listing(text) if form == "list" else text


# --------------------------------------------------------------------------- nft list ruleset form

_CMD = re.compile(r"add (table|set|map|chain|rule|element) (ip6?|inet) (\S+)(?: (\S+))?(?: (.*))?$")
_PROTO = {"tcp": 6, "udp": 17, "sctp": 132}
_PRIO_NAMES = {  # name: (value, hooks it is printed for; None = every hook)
    "raw": (-300, None), "mangle": (-150, None), "dstnat": (-100, {"prerouting"}),
    "filter": (0, None), "security": (50, None), "srcnat": (100, {"postrouting"}),
}


def _prio(hook: str, prio: int) -> str:
    """nft's spelling of a base chain priority (family ip/ip6/inet)."""
    best = None
    for name, (val, hooks) in _PRIO_NAMES.items():
        if hooks is not None and hook not in hooks:
            continue
        d = prio - val
        if abs(d) <= 10 and (best is None or abs(d) < abs(best[1])):
            best = (name, d)
    if best is None:
        return str(prio)
    name, d = best
    return name if d == 0 else f"{name} {'+' if d > 0 else '-'} {abs(d)}"


def _mark(v: str) -> str:
    return "0x%08x" % int(v, 0)


def _rule(text: str) -> str:
    """knftables rule text -> nft's canonical spelling (for the rules kube-proxy writes)."""
    t = text
    t = re.sub(r"\bmark set mark or (0x[0-9a-f]+)", lambda m: f"meta mark set meta mark | {_mark(m[1])}", t)
    t = re.sub(r"\bmark set mark xor (0x[0-9a-f]+)", lambda m: f"meta mark set meta mark ^ {_mark(m[1])}", t)
    t = re.sub(r"\bmark and (0x[0-9a-f]+) (==|!=) (\S+)",
               lambda m: f"meta mark & {_mark(m[1])} {m[2]} {_mark(m[3])}", t)
    t = re.sub(r"dnat (ip6?) addr \. port to ", r"dnat \1 to ", t)
    # anonymous sets: one element is unwrapped, more are ", "-separated
    def anon(m: re.Match) -> str:
        items = [x.strip() for x in m[2].split(",")]
        return m[1] + (items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }")
    t = re.sub(r"((?:saddr|daddr) (?:!= )?)\{ ([^{}]*) \}", anon, t)
    t = t.replace(" , ", ", ")
    return t


def _key_bytes(key: str, types: list[str]) -> bytes:
    parts = key.split(" . ")
    out = b""
    concat = len(types) > 1
    for p, t in zip(parts, types):
        if t == "ipv4_addr":
            b = ipaddress.IPv4Address(p).packed
        elif t == "ipv6_addr":
            b = ipaddress.IPv6Address(p).packed
        elif t == "inet_proto":
            b = bytes([_PROTO[p]])
        elif t == "inet_service":
            b = int(p).to_bytes(2, "big")
        else:
            raise ValueError(f"element type {t}")
        if concat:
            b += b"\0" * (-len(b) % 4)  # each field of a concatenation takes whole 32-bit registers
        out += b
    return out


def _elem_key(elem: str) -> str:
    e = elem.split(" : ")[0]
    return e.split(" comment ")[0]


class _Set:
    __slots__ = ("kind", "name", "type", "flags", "timeout", "comment", "elements", "size")

    def __init__(self, kind, name, attrs):
        self.kind, self.name = kind, name
        self.type = self.flags = self.timeout = self.comment = self.size = None
        for a in [x.strip() for x in attrs.strip("{} ").split(" ; ") if x.strip()]:
            a = a.rstrip(" ;")
            k, _, v = a.partition(" ")
            if k == "type":
                self.type = v
            elif k == "flags":
                self.flags = v
            elif k == "timeout":
                self.timeout = v
            elif k == "comment":
                self.comment = v
        if self.flags and "dynamic" in self.flags:
            self.size = 65535  # the kernel gives dynamic sets a size
        self.elements: list[str] = []


def _timeout(v: str) -> str:
    s = int(v.rstrip("s"))
    out = ""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n:
            out += f"{s // n}{unit}"
            s %= n
    return out or "0s"


def to_listing(knft: str) -> str:
    """What `nft list ruleset` prints after `nft -f` of this transaction (kube-proxy's commands only:
    add table/set/map/chain/rule/element, each element in its own command)."""
    tables: dict[tuple[str, str], dict] = {}
    for line in knft.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _CMD.match(line)
        if not m:
            raise ValueError(f"cannot read: {line}")
        what, fam, table, name, rest = m.groups()
        tb = tables.setdefault((fam, table), {"comment": None, "sets": {}, "chains": {}})
        if what == "table":
            c = re.search(r'comment ("[^"]*")', line)
            tb["comment"] = c[1] if c else None
        elif what in ("set", "map"):
            tb["sets"][name] = _Set(what, name, rest or "")
        elif what == "chain":
            ch = tb["chains"].setdefault(name, {"base": None, "comment": None, "rules": []})
            if rest:
                b = re.search(r"type (\w+) hook (\w+) priority (-?\d+)", rest)
                if b:
                    ch["base"] = (b[1], b[2], int(b[3]))
                c = re.search(r'comment ("[^"]*")', rest)
                if c:
                    ch["comment"] = c[1]
        elif what == "rule":
            tb["chains"][name]["rules"].append(_rule(rest))
        elif what == "element":
            tb["sets"][name].elements.append(rest.strip()[1:-1].strip())
    out: list[str] = []
    for (fam, table), tb in tables.items():
        out.append(f"table {fam} {table} {{")
        if tb["comment"]:
            out.append(f"\tcomment {tb['comment']}")
        blocks: list[list[str]] = []
        for s in tb["sets"].values():
            b = [f"\t{s.kind} {s.name} {{", f"\t\ttype {s.type}"]
            if s.size:
                b.append(f"\t\tsize {s.size}")
            if s.flags:
                b.append(f"\t\tflags {s.flags}")
            if s.timeout:
                b.append(f"\t\ttimeout {_timeout(s.timeout)}")
            if s.comment:
                b.append(f"\t\tcomment {s.comment}")
            if s.elements:
                types = s.type.split(" : ")[0].split(" . ")
                elems = sorted(s.elements, key=lambda e: _key_bytes(_elem_key(e), types)[::-1])
                per_line = 2 if types == ["ipv4_addr"] else 1  # (an ipv6_addr set: one a line)
                lines = [", ".join(elems[i:i + per_line]) for i in range(0, len(elems), per_line)]
                b.append("\t\telements = { " + ",\n\t\t\t     ".join(lines) + " }")
            b.append("\t}")
            blocks.append(b)
        for name, ch in tb["chains"].items():
            b = [f"\tchain {name} {{"]
            if ch["base"]:
                typ, hook, prio = ch["base"]
                b.append(f"\t\ttype {typ} hook {hook} priority {_prio(hook, prio)}; policy accept;")
            if ch["comment"]:
                b.append(f"\t\tcomment {ch['comment']}")
            b += [f"\t\t{r}" for r in ch["rules"]]
            b.append("\t}")
            blocks.append(b)
        for i, b in enumerate(blocks):
            if i:
                out.append("")
            out.extend(b)
        out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- verification


def verify(n: int = 40) -> int:
    """Load a small instance of each layout and family (every feature on) with nft -f in a throwaway
    network namespace and compare `nft list ruleset` with to_listing()."""
    if os.geteuid() != 0:
        print("--verify needs root (a network namespace)", file=sys.stderr)
        return 2
    import difflib

    bad = 0
    features = dict(affinity_every=5, local_every=3, lb_source_ranges_every=7, no_endpoints_every=11)
    # every feature on (3 endpoints, every 4th a NodePort); then the benchmark's own mix (10 endpoints,
    # every 10th a NodePort, nothing else: empty sets and maps)
    for family in (4, 6):
        for layout in ("classic", "1.37"):
            for feat in (features, {}):
                knft = generate(n, 3, 4, layout=layout, family=family, **feat) if feat else \
                    generate(n, 10, 10, layout=layout, family=family)
                bad += _verify_one(knft, f"IPv{family} {layout} {'all features' if feat else 'NodePorts only'}",
                                   n, difflib)
    return 1 if bad else 0


def _verify_one(knft: str, label: str, n: int, difflib) -> int:
    want = to_listing(knft)
    ns = f"kpt-fx-gennft-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=knft, text=True, check=True)
        got = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True,
                             text=True, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    diff = list(difflib.unified_diff(got.splitlines(), want.splitlines(), "nft list ruleset",
                                     "gen_nft --form list", lineterm="", n=1))
    what = f"{label}: {n} Services, {len(knft.splitlines())} knft lines, {len(got.splitlines())} listing lines"
    if diff:
        print(f"{what}: DIFFERS")
        print("\n".join(diff[:60]))
        return 1
    print(f"{what}: identical")
    return 0


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate a synthetic kube-proxy nftables ruleset "
                                             "(the same Services as gen_synthetic.py).")
    ap.add_argument("--layout", choices=("classic", "1.37"), default="1.37")
    ap.add_argument("--form", choices=("knft", "list"), default="knft",
                    help="knft: kube-proxy's transaction text; list: what `nft list ruleset` prints")
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--nodeport-every", type=int, default=10, metavar="K")
    ap.add_argument("--affinity-every", type=int, default=0, metavar="K")
    ap.add_argument("--local-every", type=int, default=0, metavar="K")
    ap.add_argument("--lb-source-ranges-every", type=int, default=0, metavar="K")
    ap.add_argument("--no-endpoints-every", type=int, default=0, metavar="K")
    ap.add_argument("--family", type=int, choices=(4, 6), default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify", action="store_true",
                    help="check the --form list spelling against the kernel on small instances (root)")
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args(argv)
    if a.verify:
        return verify()
    t0 = time.perf_counter()
    text = generate(a.services, a.endpoints, a.nodeport_every, layout=a.layout, form=a.form, family=a.family,
                    seed=a.seed, affinity_every=a.affinity_every, local_every=a.local_every,
                    lb_source_ranges_every=a.lb_source_ranges_every, no_endpoints_every=a.no_endpoints_every)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text)
    dt = time.perf_counter() - t0
    print(f"gen_nft: {a.layout} {a.form}: {text.count(chr(10))} lines, {len(text)} bytes "
          f"({len(text) / 1e6:.1f} MB) in {dt:.2f}s" + ("" if a.output == "-" else f" -> {a.output}"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
