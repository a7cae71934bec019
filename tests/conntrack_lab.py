"""Live connections to a node's Services while kube-proxy changes the rules under them: the kernel side of
tests/test_stale_kernel.py, and what made fixtures/conntrack/stale/.

A dual-stack node in network namespaces (fixtures/nft/make_nft.py's ``Topology``: the node, a pod, an external
client, one namespace per endpoint, routed like a Calico node) holds kube-proxy's rules for ``before()``, in
nftables mode (make_nft's ``ruleset``: kube-proxy's transaction, loaded with ``nft -f``) or in iptables mode
(fixtures/samples/make_samples.py's ``modern_service``, as fixtures/nft/make_migration.py programs the same
Services, loaded with ``iptables-nft-restore``). The endpoints keep their TCP connections open and answer
every message with the address it reached. Clients open UDP flows and TCP connections to the Services
(ClusterIPs from the pod and from the node, NodePorts from outside) until every endpoint has some, and close a
few TCP ones again; the rules are then replaced by those of ``after()`` the way kube-proxy replaces them (one
transaction, conntrack left as it is): endpoints removed, endpoints replaced by others, Services deleted, one
scaled to zero, one unchanged. ``conntrack -L`` of the node is saved, and each flow sends its next packet on
the same 5-tuple (the same UDP socket, the same TCP connection; a closed TCP connection reconnects from the same
address and port): the endpoint that answers is where the kernel sent it.

Run as root to remake fixtures/conntrack/stale/::

    python3 tests/conntrack_lab.py fixtures/conntrack/stale
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    """A fixture generator, imported by path (fixtures/ is no package); the one copy every test shares."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


make_nft = _load("make_nft", ROOT / "fixtures" / "nft" / "make_nft.py")
make_samples = _load("make_samples", ROOT / "fixtures" / "samples" / "make_samples.py")

FAM4, FAM6 = make_nft.FAM[4], make_nft.FAM[6]
NODE_IPS = (FAM4["node_ip"], FAM6["node_ip"])  # 192.168.0.2, 2001:db8::1
SERVICE_CIDRS = (FAM4["service_cidr"], FAM6["service_cidr"])  # 172.30.0.0/16, fd00:172:30::/112
MODES = ("iptables", "nft-1.37", "nft-classic")

E, S = make_nft.Endpoint, make_nft.Service


def _before4() -> list:
    return [
        S("shop", "web", "http", "tcp", "172.30.0.42", 80, [E("10.180.0.2", 80, True), E("10.180.1.2", 80)],
          what="ClusterIP, 2 endpoints: 10.180.1.2 is replaced by 10.180.2.2"),
        S("kube-system", "dns", "dns", "udp", "172.30.0.52", 53, [E("10.180.0.12", 53, True), E("10.180.1.12", 53)],
          what="UDP ClusterIP, 2 endpoints: 10.180.1.12 is removed"),
        S("shop", "api", "http", "tcp", "172.30.0.44", 80, [E("10.180.0.4", 80, True), E("10.180.1.4", 80)],
          node_port=30004, what="NodePort 30004, 2 endpoints: 10.180.1.4 is removed"),
        S("games", "lobby", "game", "udp", "172.30.0.45", 7777, [E("10.180.0.5", 7777, True), E("10.180.1.5", 7777)],
          node_port=30005, what="UDP NodePort 30005, 2 endpoints: 10.180.0.5 is replaced by 10.180.2.5"),
        S("logs", "syslog", "syslog", "udp", "172.30.0.60", 514, [E("10.180.1.20", 514)],
          what="UDP ClusterIP: the Service is deleted"),
        S("old", "legacy", "http", "tcp", "172.30.0.61", 80, [E("10.180.1.21", 80)],
          what="ClusterIP: the Service is deleted"),
        S("monitoring", "statsd", "statsd", "udp", "172.30.0.62", 8125, [E("10.180.1.22", 8125)],
          what="UDP ClusterIP: scaled to zero (the Service stays, without endpoints)"),
        S("shop", "static", "http", "tcp", "172.30.0.43", 80, [E("10.180.0.3", 8080, True), E("10.180.1.3", 8080)],
          what="ClusterIP, targetPort 8080: unchanged"),
    ]


def _after4() -> list:
    now = {"web": [E("10.180.0.2", 80, True), E("10.180.2.2", 80)], "dns": [E("10.180.0.12", 53, True)],
           "api": [E("10.180.0.4", 80, True)], "lobby": [E("10.180.2.5", 7777), E("10.180.1.5", 7777)], "statsd": []}
    out = []
    for s in _before4():
        if s.name in ("syslog", "legacy"):
            continue  # deleted
        s.endpoints = now.get(s.name, s.endpoints)
        out.append(s)
    return out


#: the Services the node also has in IPv6 (dual-stack), with the same changes (make_nft.v6_of's addresses)
V6 = ("web", "dns")


def _v6(services: list) -> list:
    v6 = make_nft.v6_of
    return [S(s.ns, s.name, s.port_name, s.proto, v6(s.cluster_ip), s.port, [E(v6(e.ip), e.port, e.local) for e in s.endpoints],
              what=s.what) for s in services if s.name in V6]


def before(family: int = 4) -> list:
    """The node's Service ports (one family) before the change."""
    return _before4() if family == 4 else _v6(_before4())


def after(family: int = 4) -> list:
    """... and after it: kube-proxy's next full sync."""
    return _after4() if family == 4 else _v6(_after4())


#: (Service name, family, origin, how many flows each endpoint gets at least, TCP connections closed per endpoint)
CLIENTS = (
    ("web", 4, "pod", 2, 1),
    ("dns", 4, "pod", 2, 0),
    ("dns", 4, "node", 1, 0),
    ("api", 4, "external", 2, 1),
    ("lobby", 4, "external", 2, 0),
    ("syslog", 4, "pod", 2, 0),
    ("legacy", 4, "pod", 2, 0),
    ("statsd", 4, "pod", 2, 0),
    ("static", 4, "pod", 1, 1),
    ("web", 6, "pod", 1, 1),
    ("dns", 6, "pod", 2, 0),
)


def all_endpoints() -> list[tuple[str, int, str]]:
    seen = []
    for fam in (4, 6):
        for svcs in (before(fam), after(fam)):
            for s in svcs:
                for e in s.endpoints:
                    if (e.ip, e.port, s.proto) not in seen:
                        seen.append((e.ip, e.port, s.proto))
    return seen


def iptables_restore(services: list, family: int) -> str:
    """kube-proxy's iptables-mode restore input for ``services`` (make_migration.py's restore(), any Services)."""
    ms = make_samples
    v6, pod_cidr = family == 6, make_nft.FAM[family]["pod_cidr"]
    saved = ms.add_calico, ms.add_calico_chains
    ms.add_calico = ms.add_calico_chains = lambda *a: None  # no CNI chains, as the nftables side has none
    try:
        pol = {t: {c: ("ACCEPT", 0, 0) for c in ms.BUILTINS[t]} for t in ms.BUILTINS}
        r = ms.modern_base(v6, pod_cidr, pol)
        for s in services:
            p = ms.Port(s.ns, s.name, s.port_name, s.proto, s.cluster_ip, s.port, [(e.ip, e.port, e.local) for e in s.endpoints],
                        s.node_port, list(s.external_ips), list(s.lb_ips), list(s.source_ranges), s.etp_local, s.itp_local,
                        s.affinity)
            ms.modern_service(r, p, pod_cidr, v6, {})
        ms.modern_tail(r, v6, pod_cidr)
        return r.text()
    finally:
        ms.add_calico, ms.add_calico_chains = saved


# The endpoints: every TCP connection stays open (closed when the client says "bye", the endpoint closing
# first) and each message, TCP or UDP, is answered with "SERVER-ADDRESS PEER-ADDRESS" (where it arrived, who
# sent it as the endpoint sees it).
SERVER_PY = r"""
import ctypes, json, os, selectors, socket, sys
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
root = os.open("/proc/self/ns/net", os.O_RDONLY)
sel = selectors.DefaultSelector()
def hp(a):
    return ("[%s]:%d" if ":" in a[0] else "%s:%d") % (a[0], a[1])
for ns, eps in spec.items():
    fd = os.open("/var/run/netns/" + ns, os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0
    os.close(fd)
    for ip, port, proto in eps:
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        if proto == "tcp":
            s.listen(256)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, proto)
    assert libc.setns(root, 0x40000000) == 0
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "tcp":
                c, _peer = s.accept()
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
            elif key.data == "conn":
                data = s.recv(2048)
                if not data or data.startswith(b"bye"):
                    sel.unregister(s)
                    s.close()
                else:
                    s.sendall(("%s %s\n" % (hp(s.getsockname()), hp(s.getpeername()))).encode())
            else:
                data, peer = s.recvfrom(2048)
                s.sendto(("%s %s\n" % (hp(s.getsockname()), hp(peer))).encode(), peer)
        except OSError:
            pass
"""


class Topology(make_nft.Topology):
    """make_nft's node, pod, external client and endpoint namespaces, with endpoints that keep connections."""

    def _build(self, families, endpoints) -> None:
        super()._build(families, endpoints)
        self.server.kill()  # make_nft's endpoints close each TCP connection at once: these keep them
        self.server.wait()
        spec: dict[str, list] = {}
        for ip, port, proto in endpoints:
            spec.setdefault(self.ep_ns[ip].name, []).append([ip, port, proto])
        self.server = subprocess.Popen([sys.executable, "-c", SERVER_PY, json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        if self.server.stdout.readline().strip() != "ready":
            raise RuntimeError("endpoint server did not start")


@dataclass
class Flow:
    """One client's UDP flow or TCP connection to a Service entry point, and where its packets went."""

    service: str  # the Service's name
    family: int
    origin: str  # pod, node, external
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    sock: socket.socket | None
    first: str  # the endpoint that answered before the rules changed (IP:PORT, [IPv6]:PORT)
    closed: bool = False  # a TCP connection closed before the change (its entry lingers in TIME_WAIT)
    next: str | None = None  # the endpoint that answered the next packet, after the change
    error: str | None = None

    @property
    def key(self) -> tuple:
        """As ``kptrace conntrack -o json`` names an entry: protocol, src, sport, dst, dport."""
        return (self.proto, self.src, self.sport, self.dst, self.dport)

    def label(self) -> str:
        return (f"{self.proto} {make_nft.hostport(self.src, self.sport)} -> {make_nft.hostport(self.dst, self.dport)} "
                f"({self.service}, from {self.origin}{', closed' if self.closed else ''})")


def _ask(sock: socket.socket) -> str:
    """Send one message on the flow; the endpoint that answered (IP:PORT)."""
    sock.send(b"ping\n")
    data = sock.recv(200).decode()
    if not data:
        raise ConnectionError("closed by the endpoint")
    return data.split()[0]


@dataclass
class Lab:
    """A dual-stack node of ``mode`` (iptables, nft-1.37, nft-classic) with live flows to its Services;
    :meth:`change` applies ``after()``."""

    mode: str
    topo: Topology = None
    flows: list[Flow] = field(default_factory=list)

    def __enter__(self) -> "Lab":
        self.topo = Topology([4, 6], all_endpoints())
        try:
            self._load(before)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in self.flows:
            if f.sock is not None:
                f.sock.close()
        if self.topo is not None:
            self.topo.close()
            self.topo = None

    @property
    def node(self):
        return self.topo.node

    def _load(self, services, replace: bool = False) -> None:
        if self.mode == "iptables":
            if not replace:
                self.node.run([sys.executable, "-c", make_samples.NFACCT_PY, "localhost_nps_accepted_pkts",
                               "ct_state_invalid_dropped_pkts"])
            # each table replaced in one transaction, as kube-proxy's iptables-restore does
            self.node.run(["iptables-nft-restore"], iptables_restore(services(4), 4))
            self.node.run(["ip6tables-nft-restore"], iptables_restore(services(6), 6))
        else:
            # kube-proxy's full resync is one nft transaction too; conntrack is not touched
            layout = self.mode.removeprefix("nft-")
            text = make_nft.ruleset(services(4), 4, layout) + "\n" + make_nft.ruleset(services(6), 6, layout)
            self.node.run(["nft", "-f", "-"], ("delete table ip kube-proxy\ndelete table ip6 kube-proxy\n" if replace else "") + text)

    def saved_rules(self) -> dict[str, str]:
        """The node's rules as the kernel tools list them now: file suffix -> text."""
        if self.mode == "iptables":
            return {".iptables-save": self.node.run(["iptables-save"]), ".ip6tables-save": self.node.run(["ip6tables-save"])}
        return {".nft": self.node.run(["nft", "list", "ruleset"])}

    def conntrack(self) -> dict[int, str]:
        """``conntrack -L`` and ``conntrack -L -f ipv6`` of the node."""
        return {4: self.node.run(["conntrack", "-L"]), 6: self.node.run(["conntrack", "-L", "-f", "ipv6"])}

    def change(self) -> None:
        """The rules of ``after()``, replaced as kube-proxy replaces them; conntrack is left as it is."""
        self._load(after, replace=True)

    # flows

    def _connect(self, svc, family: int, origin: str, src: str | None = None, sport: int = 0) -> Flow:
        dst, dport = (make_nft.FAM[family]["node_ip"], svc.node_port) if origin == "external" else (svc.cluster_ip, svc.port)
        with make_nft.NetnsSwitch(self.topo.client_ns(origin, None)):
            s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                              socket.SOCK_STREAM if svc.proto == "tcp" else socket.SOCK_DGRAM)
        try:
            s.settimeout(3.0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bind = make_nft.FAM[family]["origins"][origin] if origin != "node" else src
            if bind or sport:
                s.bind((bind or "", sport))
            s.connect((dst, dport))
            got = _ask(s)
            lip, lport = s.getsockname()[:2]
            return Flow(svc.name, family, origin, svc.proto, lip, lport, dst, dport, s, got)
        except BaseException:
            s.close()
            raise

    def open_flows(self) -> None:
        """Flows to the Services of ``CLIENTS`` until each endpoint has its share; some TCP ones closed again."""
        for name, family, origin, each, closed in CLIENTS:
            svc = next(s for s in before(family) if s.name == name)
            want = {e.str: each + closed for e in svc.endpoints}
            got: dict[str, list[Flow]] = {ep: [] for ep in want}
            for _ in range(60):
                if all(len(got[ep]) >= n for ep, n in want.items()):
                    break
                f = self._connect(svc, family, origin)
                got.setdefault(f.first, []).append(f)
                self.flows.append(f)
            else:
                raise RuntimeError(f"{name} from {origin}: endpoints reached {sorted((k, len(v)) for k, v in got.items())}")
            for flows in got.values():
                for f in flows[:closed]:
                    f.sock.send(b"bye\n")  # the endpoint closes first, so the client's port is free again at once
                    f.sock.settimeout(2.0)
                    if f.sock.recv(10) != b"":
                        raise RuntimeError(f"{f.label()}: the endpoint did not close")
                    f.sock.close()
                    f.sock, f.closed = None, True

    def send_next(self) -> None:
        """The next packet of every flow, on the same 5-tuple; ``next`` is the endpoint that answered."""
        for f in self.flows:
            try:
                if f.closed:  # a new connection from the same address and port: the same 5-tuple
                    svc = next(s for s in before(f.family) if s.name == f.service)
                    g = self._connect(svc, f.family, f.origin, src=f.src, sport=f.sport)
                    if g.key != f.key:
                        raise RuntimeError(f"{f.label()}: reconnected as {g.label()}")
                    f.sock, f.next = g.sock, g.first
                else:
                    f.next = _ask(f.sock)
            except OSError as e:
                f.error = f"{type(e).__name__}: {e}"

    def now_endpoints(self, f: Flow) -> set[str]:
        """The endpoints ``after()`` gives the flow's entry point (none: the Service is gone or has none)."""
        svc = next((s for s in after(f.family) if s.name == f.service), None)
        return {e.str for e in svc.endpoints} if svc else set()


def spn(name: str) -> str:
    return next(s.spn for s in before() if s.name == name)


def observed(lab: Lab) -> list[dict]:
    """Every flow of ``lab`` after :meth:`Lab.send_next`: its 5-tuple, where its first and next packets went, and
    the endpoints its entry point has now."""
    return [{"protocol": f.proto, "src": f.src, "sport": f.sport, "dst": f.dst, "dport": f.dport, "service": spn(f.service),
             "origin": f.origin, "closed": f.closed, "first": f.first, "next": f.next, "now": sorted(lab.now_endpoints(f)),
             "error": f.error} for f in lab.flows]


def main(argv: list[str]) -> int:
    """Make fixtures/conntrack/stale/ (see its README.md): for nftables mode (1.37) and iptables mode, the rules
    after the change, `conntrack -L` between the change and the next packets (both families: conntrack-tools 1.4.7
    lists IPv6 entries too), and every flow's fate; the rules before, in nftables mode."""
    out = Path(argv[0]) if argv else ROOT / "fixtures" / "conntrack" / "stale"
    out.mkdir(parents=True, exist_ok=True)
    for mode, tag in (("nft-1.37", ""), ("iptables", "-iptables")):
        with Lab(mode) as lab:
            if mode != "iptables":
                (out / "before.nft").write_text(lab.saved_rules()[".nft"])
            lab.open_flows()
            lab.change()
            for ext, text in lab.saved_rules().items():
                (out / f"node{ext}").write_text(text)
            (out / f"node{tag}.conntrack").write_text(lab.conntrack()[4])
            lab.send_next()
            flows = observed(lab)
        (out / f"observed{tag}.json").write_text("[\n" + ",\n".join(json.dumps(f) for f in flows) + "\n]\n")
        removed = [f for f in flows if f["next"] not in f["now"]]
        print(f"{mode}: {len(flows)} flows, {sum(not f['closed'] for f in removed)} open ones still sent to a removed "
              f"endpoint; {sum(f['closed'] for f in flows)} closed TCP connections, reopened on the same 5-tuple")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: it makes network namespaces")
    sys.exit(main(sys.argv[1:]))
