"""What kube-proxy programmed in its nftables tables (``ip kube-proxy``, ``ip6 kube-proxy``), per Service
port, as the same :class:`~kptrace.model.programmed.ProgrammedPort` values the iptables reader
(``checks/programmed.py``) makes, so
drift, ``svc`` and the counters compare and show both modes with one code.

Where nftables mode keeps each fact (kube-proxy's ``pkg/proxy/nftables/proxier.go``; both layouts, the
classic one of 1.31-1.35 and 1.36-1.37's inline one):

* entry points: elements of the ``service-ips`` verdict map (ClusterIP, external and LoadBalancer IPs:
  ``IP . proto . port : goto CHAIN``) and ``service-nodeports`` (``proto . port : goto external-…``);
  ``firewall-ips`` marks the LoadBalancer IPs that have source ranges;
* "no endpoints" verdicts: ``no-endpoint-services`` / ``no-endpoint-nodeports`` elements (``drop``, or
  ``goto reject-chain``), whose element comments name the Service port;
* endpoints: the ``service-``/``local-`` chain's ``numgen random mod N vmap { i : goto endpoint-… }``
  (each endpoint chain's ``dnat to``), or the 1.37 ``dnat ip to numgen random mod N map { i : IP . PORT }``,
  or a single ``dnat to IP:PORT``; shares are exact counts of ``numgen`` values;
* session affinity: ``ip saddr @affinity-…`` rules and the affinity sets' ``timeout``;
* source ranges: the ``firewall-`` chain's ``ip saddr != RANGES drop``; external traffic policy: the
  ``external-`` chain (``fib saddr type local`` / ``goto local-…`` is Local).

Service ports are keyed by the iptables chain hash of ``ns/name:port`` + protocol (the name nftables mode
writes in every chain name), so the expected side (``checks/expected.py``) matches both modes alike. ``svc``
reads it too (``tracer/services_nft.py``).
"""

from __future__ import annotations

import re

from kptrace.model.kube import service_chain_hash
from kptrace.model.nft import (
    AnonMap,
    AnonSet,
    Fib,
    Match,
    Meta,
    Nat,
    NftChain,
    NftRuleset,
    NftSet,
    NftTable,
    Numgen,
    Payload,
    Prefix,
    Range,
    SetRef,
    SetUpdate,
    Value,
    Verdict,
    Vmap,
)
from kptrace.model.programmed import ChainEndpoint, Entry, Evidence, ProgrammedPort

__all__ = ["KUBE_PROXY_TABLE", "nft_chain_service", "read_nft"]

KUBE_PROXY_TABLE = "kube-proxy"
_FAMILIES = {"ip": 4, "ip6": 6}
#: service-HASH-ns/name/proto/portname, endpoint-HASH-ns/name/proto/portname__IP/port (proxier.go's chain names)
_CHAIN = re.compile(r"^(service|local|external|endpoint|firewall)-([A-Z2-7]{8})-"
                    r"([^/]+)/([^/]+)/([a-z]+)/([^_]*)(?:__(.*))?$")


def nft_chain_service(name: str) -> tuple[str, str, str, str | None] | None:
    """``(kind, spn, protocol, endpoint base)`` of a kube-proxy nftables chain name, or None.

    >>> nft_chain_service("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80")
    ('endpoint', 'ns1/svc1:p80', 'tcp', '10.180.0.1/80')
    >>> nft_chain_service("service-ABCDEFGH-ns/web/udp/")[:3]
    ('service', 'ns/web', 'udp')
    """
    m = _CHAIN.match(name)
    if m is None:
        return None
    kind, _h, ns, svc, proto, port, ep = m.groups()
    return kind, f"{ns}/{svc}" + (f":{port}" if port else ""), proto, ep


def _endpoint_text(family: int, addr: str, port: str | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


def _ev(rule) -> Evidence:
    return Evidence(rule.location, rule.text)


class _Table:
    """One kube-proxy table: element lines found once per map, for evidence."""

    def __init__(self, fam: int, table: NftTable) -> None:
        self.fam = fam
        self.t = table
        self._lines: dict[str, dict] = {}
        self._asked: dict[str, int] = {}

    def element_ev(self, s: NftSet, key, text: str) -> Evidence:
        if s.line == 0:  # JSON: no lines
            return Evidence(s.source + (f" (handle {s.handle})" if s.handle is not None else ""), text)
        lines = self._lines.get(s.name)
        if lines is None:
            n = self._asked[s.name] = self._asked.get(s.name, 0) + 1
            if n <= 16:  # a few (svc): find each one's spelling; many (drift): index the whole set once
                return Evidence(f"{s.source}:{_element_line(s, key)}", text)
            lines = self._lines[s.name] = s.element_lines()
        return Evidence(f"{s.source}:{lines.get(key, s.line)}", text)

    def set(self, name: str) -> NftSet | None:
        return self.t.sets.get(name)

    def chain(self, name: str) -> NftChain | None:
        return self.t.chains.get(name)


def _element_line(s: NftSet, key) -> int:
    """The input line an element is written on, found by its spelling (the set's line when not found)."""
    parts = key if isinstance(key, tuple) else (key,)
    first = parts[0] if isinstance(parts[0], str) else None
    if first is None:
        return s.line
    spelled = " . ".join(p for p in parts if isinstance(p, str))
    for op, line, payload in s._chunks:
        if op != "add" or not isinstance(payload, tuple) or len(payload) != 2 or not isinstance(payload[1], str):
            continue
        text = payload[1]
        at = text.find(spelled)
        while at >= 0:  # as a whole element: not 10.0.0.1 inside 110.0.0.1 . tcp . 80
            end = at + len(spelled)
            if (at == 0 or text[at - 1] in " \t\n{,") and (end == len(text) or text[end] in " \t\n:,}"):
                return line + text.count("\n", 0, at)
            at = text.find(spelled, at + 1)
    return s.line


def _key_text(key) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return " . ".join(p if isinstance(p, str) else (f"{p.addr}/{p.length}" if type(p) is Prefix else f"{p.lo}-{p.hi}")
                      for p in parts)


def _verdict_text(v) -> str:
    if type(v) is Verdict:
        return v.kind + (f" {v.target}" if v.target else "")
    return " . ".join(v) if isinstance(v, tuple) else str(v)


def read_nft(nft: NftRuleset, ports: dict, unnamed: dict[int, list[Entry]], only: set[str] | None = None,
             names: set[tuple[str, str]] | None = None) -> None:
    """Add every Service port kube-proxy's nftables tables program to ``ports`` ((family, hash) ->
    ProgrammedPort), and "no endpoints" verdicts no comment names to ``unnamed``. ``only`` (chain hashes) or
    ``names`` ((ns/name:port, protocol) pairs): read just those ports (``svc``: one Service of 10k)."""
    for (family, name), table in nft.tables.items():
        fam = _FAMILIES.get(family)
        if fam is None or name != KUBE_PROXY_TABLE:
            continue
        _read_table(_Table(fam, table), _Ports(ports, fam, only, names), unnamed.setdefault(fam, []),
                    only is not None or names is not None)


class _Ports:
    """The ports being read, and which ones are wanted."""

    def __init__(self, ports: dict, fam: int, only: set[str] | None, names: set[tuple[str, str]] | None) -> None:
        self.ports, self.fam, self.only, self.names = ports, fam, only, names
        self._hash: dict[tuple[str, str], str | None] = {}

    def bases(self) -> set[str] | None:
        """With ``names``: the chain-name bases (``ns/name/proto/port``) of the ports asked for."""
        if self.names is None:
            return None
        out = set()
        for spn, proto in self.names:
            ns_name, _, port = spn.partition(":")
            out.add(f"{ns_name}/{proto}/{port}")
        return out

    def get(self, spn: str, proto: str) -> ProgrammedPort | None:
        """The port (made on first use), or None when it is not wanted."""
        key = (spn, proto)
        h = self._hash.get(key, "")
        if h == "":
            h = None if self.names is not None and key not in self.names else service_chain_hash(spn, proto)
            if h is not None and self.only is not None and h not in self.only:
                h = None
            self._hash[key] = h
        if h is None:
            return None
        p = self.ports.get((self.fam, h))
        if p is None:
            p = self.ports[(self.fam, h)] = ProgrammedPort(self.fam, h, spn, proto)
        return p


def _read_table(tb: _Table, ports: _Ports, unnamed: list[Entry], some: bool) -> None:
    by_chain = _port_chains(tb, ports)
    _entry_points(tb, ports, by_chain)
    _no_endpoint_verdicts(tb, ports, unnamed, some)
    _chain_facts(tb, by_chain)
    _firewalled_ips(tb, by_chain)


def _port_chains(tb: _Table, ports: _Ports) -> dict[str, ProgrammedPort]:
    """Each wanted port's service-/local-/external-/firewall- chains: chain name -> its port."""
    by_chain: dict[str, ProgrammedPort] = {}
    bases = ports.bases()
    for cname in tb.t.chains:
        if cname[:1] not in "slef" or cname.startswith("endpoint-"):  # service- local- external- firewall-
            continue
        if bases is not None and cname.split("-", 2)[-1] not in bases:  # not one of the ports asked for
            continue
        info = nft_chain_service(cname)
        if info is None or info[0] == "endpoint":
            continue
        _, spn, proto, _ = info
        p = ports.get(spn, proto)
        if p is None:
            continue
        p.chains.append(cname)
        by_chain[cname] = p
    return by_chain


def _entry_points(tb: _Table, ports: _Ports, by_chain: dict[str, ProgrammedPort]) -> None:
    """Entry points: the elements of the service-ips and service-nodeports verdict maps."""
    cluster_ips = tb.set("cluster-ips")
    firewalled = tb.set("firewall-ips")
    for mname in ("service-ips", "service-nodeports"):
        s = tb.set(mname)
        if s is None:
            continue
        for key, value in s.elements:
            if type(value) is not Verdict or not isinstance(key, tuple) or not value.target:
                continue
            target = value.target
            p = by_chain.get(target)
            if p is None and target not in tb.t.chains:
                info = nft_chain_service(target)
                if info is not None and info[0] != "endpoint":  # a map element naming a chain the input lacks
                    p = ports.get(info[1], info[2])
            if p is None:
                continue
            addr: str | None
            if mname == "service-nodeports":
                if len(key) != 2 or not key[1].isdigit():
                    continue
                kind, addr, proto, port = "NodePort", None, key[0], int(key[1])
            else:
                if len(key) != 3 or not key[2].isdigit():
                    continue
                addr, proto, port = key[0], key[1], int(key[2])
                prefix = target.split("-", 1)[0]
                if prefix in ("service", "local") or (cluster_ips is not None and addr in cluster_ips):
                    kind = "ClusterIP"
                elif prefix == "firewall" or (firewalled is not None and key in firewalled):
                    kind = "LoadBalancerIP"
                else:
                    kind = "ExternalIP/LoadBalancerIP"
            ev = tb.element_ev(s, key, f"element {mname} {{ {_key_text(key)} : {_verdict_text(value)} }}")
            p.entries.append(Entry(kind, addr, port, proto, target, "", ev))


def _no_endpoint_verdicts(tb: _Table, ports: _Ports, unnamed: list[Entry], some: bool) -> None:
    """"No endpoints" verdicts: elements of no-endpoint-services and no-endpoint-nodeports, whose comments
    name the Service port (those without go to ``unnamed`` when every port is read)."""
    cluster_ips = tb.set("cluster-ips")
    for mname in ("no-endpoint-services", "no-endpoint-nodeports"):
        s = tb.set(mname)
        if s is None:
            continue
        comments = s.comments
        for key, value in s.elements:
            if type(value) is not Verdict or not isinstance(key, tuple):
                continue
            target = _no_endpoint_target(tb, value)
            if target is None:
                continue
            addr: str | None
            if mname == "no-endpoint-nodeports":
                if len(key) != 2 or not key[1].isdigit():
                    continue
                kind, addr, proto, port = "NodePort", None, key[0], int(key[1])
            else:
                if len(key) != 3 or not key[2].isdigit():
                    continue
                addr, proto, port = key[0], key[1], int(key[2])
                kind = "ClusterIP" if cluster_ips is not None and addr in cluster_ips else "ExternalIP/LoadBalancerIP"
            comment = comments.get(key) or ""
            said = f' comment "{comment}"' if comment else ""
            ev = tb.element_ev(s, key, f"element {mname} {{ {_key_text(key)}{said} : {_verdict_text(value)} }}")
            e = Entry(kind, addr, port, proto, target, comment, ev)
            spn = comment.split(" ", 1)[0] if "/" in comment else None
            if spn:
                p = ports.get(spn, proto)
                if p is not None:
                    p.verdicts.append(e)
            elif not some:
                unnamed.append(e)


def _no_endpoint_target(tb: _Table, value: Verdict) -> str | None:
    """DROP or REJECT: what a no-endpoint element does (directly, or as its chain's last rule)."""
    if value.kind == "drop":
        return "DROP"
    if value.kind == "reject" or value.target == "reject-chain":
        return "REJECT"
    chain = tb.chain(value.target or "")
    rules = chain.rules if chain is not None else ()
    last = rules[-1].verdict if rules else None
    return {"drop": "DROP", "reject": "REJECT"}.get(last.kind) if last is not None else None


def _chain_facts(tb: _Table, by_chain: dict[str, ProgrammedPort]) -> None:
    """Each port's chains: endpoints, affinity, source ranges, external policy."""
    for cname, p in by_chain.items():
        chain = tb.chain(cname)
        kind = cname.split("-", 1)[0]
        if kind == "service":
            p.cluster = _chain_endpoints(tb, chain, p)
            p.cluster_chain = cname
        elif kind == "local":
            p.local = _chain_endpoints(tb, chain, p)
            p.local_chain = cname
        elif kind in ("external", "firewall") and chain is not None:
            p.jumps[cname] = _targets(chain)
            if kind == "firewall":
                p.source_ranges.extend(_source_ranges(chain))
            else:
                p.external_policy = _external_policy(chain)


def _firewalled_ips(tb: _Table, by_chain: dict[str, ProgrammedPort]) -> None:
    """The firewall chain is reached from firewall-ips (before the service-ips entry): those IPs are
    LoadBalancer IPs."""
    firewalled = tb.set("firewall-ips")
    for key, value in (firewalled.elements if firewalled is not None else ()):
        p = by_chain.get(value.target) if type(value) is Verdict and value.target else None
        if p is not None and isinstance(key, tuple):
            p.entries[:] = [e._replace(kind="LoadBalancerIP") if e.address == key[0] and e.kind != "ClusterIP" else e
                            for e in p.entries]


def _targets(chain: NftChain) -> set[str]:
    out: set[str] = set()
    for r in chain.rules:
        for x in r.exprs:
            if type(x) is Verdict and x.target:
                out.add(x.target)
            elif type(x) is Vmap and type(x.mapping) is AnonMap:
                out.update(v.target for _, v in x.mapping.pairs if type(v) is Verdict and v.target)
    return out


def _source_ranges(chain: NftChain) -> list[tuple[str, Evidence]]:
    """``ip saddr != { RANGES } drop``: the ranges let through."""
    out = []
    for r in chain.rules:
        v = r.verdict
        if v is None or v.kind != "drop":
            continue
        for x in r.exprs:
            if type(x) is Match and type(x.left) is Payload and x.left.field == "saddr" and x.op == "!=":
                items = x.right.elements if type(x.right) is AnonSet else (x.right,)
                for it in items:
                    if type(it) is Prefix:
                        out.append((f"{it.addr}/{it.length}", _ev(r)))
                    elif type(it) is Value:
                        out.append((it.text, _ev(r)))
                    elif type(it) is Range:
                        out.append((f"{it.lo}-{it.hi}", _ev(r)))
                    elif isinstance(it, str):
                        out.append((it, _ev(r)))
    return out


def _external_policy(chain: NftChain) -> tuple[str, Evidence] | None:
    first = None
    for r in chain.rules:
        first = first or r
        if any(type(x) is Fib for m in r.exprs if type(m) is Match for x in (m.left,)):
            return ("Local", _ev(r))
        v = r.verdict
        if v is not None and v.target and v.target.startswith("local-"):
            return ("Local", _ev(r))
    return ("Cluster", _ev(first)) if first is not None else None


def _conditional(r) -> bool:
    """A rule that some new connections of the port do not take (``meta l4proto tcp`` is every one of them)."""
    for x in r.exprs:
        if type(x) is Match and not (type(x.left) is Meta and x.left.key == "l4proto"):
            return True
    return False


def _numgen_share(ng: Numgen, pairs) -> tuple[dict[int, list], int]:
    """For ``numgen ... mod N [offset K]`` looked up in ``pairs``: value index -> [values], and N."""
    hits: dict[int, list] = {}
    for k, v in pairs:
        if isinstance(k, str) and k.isdigit() and ng.offset <= int(k) < ng.offset + ng.mod:
            hits.setdefault(int(k), []).append(v)
    return hits, ng.mod


# kube-proxy's own rule shapes in service-/local-/endpoint- chains, read from the text (counters taken out):
# parsing 220k rules of a 10k-Service node costs ~12 s, reading their text ~0.3 s. Any other text is parsed.
_COUNTER = re.compile(r"counter(?: packets \d+ bytes \d+)? ")
_SKIP = re.compile(r"^(?:(?:ip6? [sd]addr (?:!= )?\S+ )*jump mark-for-masquerade|(?:meta )?mark set .*)"
                   r"(?: comment \"[^\"]*\")?$")
_AFFINITY = re.compile(r"^ip6? saddr @(affinity-\S+) goto (endpoint-\S+)$")
_VMAP = re.compile(r"^numgen random mod (\d+) vmap \{ (.+) \}$")
_VMAP_PAIR = re.compile(r"^(\d+) : goto (endpoint-\S+)$")
_DMAP = re.compile(r"^meta l4proto [a-z]+ dnat (?:ip6? )?(?:addr \. port )?to numgen random mod (\d+) map \{ (.+) \}$")
_DMAP_PAIR = re.compile(r"^(\d+) : (\S+) \. (\d+)$")
_DNAT = re.compile(r"^meta l4proto [a-z]+ dnat (?:ip6? )?to (?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d+)$")
_UPDATE = re.compile(r"^update @(affinity-\S+) \{ ip6? saddr \}$")


def _all_match(pattern: re.Pattern[str], items: list[str]) -> list[re.Match[str]] | None:
    """Each item (stripped) matched by ``pattern``, or None if one is not."""
    out = []
    for item in items:
        m = pattern.match(item.strip())
        if m is None:
            return None
        out.append(m)
    return out


def _bare(text: str) -> str:
    return _COUNTER.sub("", text) if "counter" in text else text


class _Split:
    """What is left of new connections as a chain's rules are read (None: not computable)."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining: float | None = 1.0

    def numgen(self, mod: int, keys: int, conditional: bool = False) -> float | None:
        share = None if self.remaining is None or conditional or mod < 1 else self.remaining / mod
        if conditional:
            self.remaining = None
        elif self.remaining is not None and mod >= 1:
            self.remaining = self.remaining * (mod - keys) / mod
        return share

    def all(self, conditional: bool = False) -> float | None:
        share = None if self.remaining is None or conditional else self.remaining
        self.remaining = None if conditional else 0.0 if self.remaining is not None else None
        return share


def _chain_endpoints(tb: _Table, chain: NftChain | None, p: ProgrammedPort) -> list[ChainEndpoint]:
    """The endpoints a service-/local- chain sends new connections to, each with its share (an exact
    fraction of ``numgen`` values, as a float like the iptables reader's)."""
    out: list[ChainEndpoint] = []
    if chain is None:
        return out
    split = _Split()
    fam = tb.fam
    for i, (line, text) in enumerate(chain.texts()):
        bare = _bare(text)
        ev = Evidence(f"{chain.source}:{line}", text) if line else None
        if _SKIP.match(bare):
            continue
        m = _AFFINITY.match(bare)
        if m is not None:
            if p.affinity is None:
                s = tb.set(m.group(1))
                p.affinity = (int(s.timeout or 0) if s is not None else 0, ev or _ev(chain.rule_at(i)))
            continue
        m = _VMAP.match(bare)
        if m is not None:
            pairs = _all_match(_VMAP_PAIR, m.group(2).split(","))
            if pairs is not None:
                mod = int(m.group(1))
                hits = [(int(x.group(1)), x.group(2)) for x in pairs if int(x.group(1)) < mod]
                share = split.numgen(mod, len({k for k, _ in hits}))
                ev = ev or _ev(chain.rule_at(i))
                out.extend(ChainEndpoint(_dnat_of(tb, target, p), target, share, ev) for _, target in sorted(hits))
                continue
        m = _DMAP.match(bare)
        if m is not None:
            pairs = _all_match(_DMAP_PAIR, m.group(2).split(","))
            if pairs is not None:
                mod = int(m.group(1))
                dests = [(int(x.group(1)), x.group(2), x.group(3)) for x in pairs if int(x.group(1)) < mod]
                share = split.numgen(mod, len({k for k, _, _ in dests}))
                ev = ev or _ev(chain.rule_at(i))
                out.extend(ChainEndpoint(_endpoint_text(fam, a, port), chain.name, share, ev)
                           for _, a, port in sorted(dests))
                continue
        m = _DNAT.match(bare)
        if m is not None:
            out.append(ChainEndpoint(_endpoint_text(fam, m.group(1) or m.group(2), m.group(3)), chain.name, split.all(),
                                     ev or _ev(chain.rule_at(i))))
            continue
        _rule_endpoints(tb, chain, chain.rule_at(i), p, split, out)
    return out


def _rule_endpoints(tb: _Table, chain: NftChain, r, p: ProgrammedPort, split: _Split, out: list[ChainEndpoint]) -> None:
    """One rule of any shape, parsed: its endpoints and what it leaves for the next rules."""
    exprs = r.exprs
    v = r.verdict
    ev = _ev(r)
    # session affinity: `ip saddr @affinity-… goto endpoint-…` takes only clients seen before
    if any(type(x) is Match and type(x.right) is SetRef and x.right.name.startswith("affinity-") for x in exprs):
        aset = next(x.right.name for x in exprs if type(x) is Match and type(x.right) is SetRef)
        s = tb.set(aset)
        if p.affinity is None:
            p.affinity = (int(s.timeout or 0) if s is not None else 0, ev)
        return
    conditional = _conditional(r)
    fam = tb.fam
    for x in exprs:
        t = type(x)
        if t is Vmap and type(x.key) is Numgen and type(x.mapping) is AnonMap:
            hits, mod = _numgen_share(x.key, x.mapping.pairs)
            share = split.numgen(mod, len(hits), conditional)
            for _k, vs in sorted(hits.items()):
                for val in vs:
                    if type(val) is Verdict and val.target:
                        out.append(ChainEndpoint(_dnat_of(tb, val.target, p), val.target, share, ev))
        elif t is Nat and x.kind == "dnat":
            if type(x.map_key) is Numgen and type(x.addr) is AnonMap:
                hits, mod = _numgen_share(x.map_key, x.addr.pairs)
                share = split.numgen(mod, len(hits), conditional)
                for _k, vs in sorted(hits.items()):
                    for val in vs:
                        addr, port = (val[0], val[1]) if isinstance(val, tuple) and len(val) == 2 else (str(val), None)
                        out.append(ChainEndpoint(_endpoint_text(fam, addr, port), chain.name, share, ev))
            elif type(x.addr) is Value:
                port = x.port.text if type(x.port) is Value else None
                share = split.all(conditional)
                out.append(ChainEndpoint(_endpoint_text(fam, x.addr.text, port), chain.name, share, ev))
        elif t is Verdict and x.target and x.target.startswith("endpoint-"):
            out.append(ChainEndpoint(_dnat_of(tb, x.target, p), x.target, split.all(conditional), ev))
    if v is not None and v.kind in ("drop", "reject") and not conditional and split.remaining is not None:
        split.remaining = 0.0


def _dnat_of(tb: _Table, chain_name: str, p: ProgrammedPort) -> str:
    """``IP:PORT`` an endpoint- chain DNATs to ("?" when the chain is not in the input); its affinity update."""
    chain = tb.chain(chain_name)
    if chain is None:
        return "?"
    dest = "?"
    for i, (line, text) in enumerate(chain.texts()):
        bare = _bare(text)
        if _SKIP.match(bare):
            continue
        m = _DNAT.match(bare)
        if m is not None:
            dest = _endpoint_text(tb.fam, m.group(1) or m.group(2), m.group(3))
            continue
        m = _UPDATE.match(bare)
        if m is not None:
            if p.affinity is None:
                s = tb.set(m.group(1))
                p.affinity = (int(s.timeout or 0) if s is not None else 0,
                              Evidence(f"{chain.source}:{line}", text) if line else _ev(chain.rule_at(i)))
            continue
        r = chain.rule_at(i)
        for x in r.exprs:
            if type(x) is Nat and x.kind == "dnat" and type(x.addr) is Value:
                dest = _endpoint_text(tb.fam, x.addr.text, x.port.text if type(x.port) is Value else None)
            elif type(x) is SetUpdate and x.set.startswith("affinity-") and p.affinity is None:
                s = tb.set(x.set)
                p.affinity = (int(x.timeout or (s.timeout if s is not None else 0) or 0), _ev(r))
    return dest
