"""Node bundles and the --local source, against real kernel state in a network namespace, and
MASQUERADE's address from the node's routes checked against the kernel's own choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT, require_netns

from kptrace.cli.main import main
from kptrace.errors import EnvironmentProblem, InputError
from kptrace.load import load_bundle
from kptrace.sources.bundle import CommandResult, collect, read_bundle, write_bundle
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

MODERN = FIXTURES / "samples" / "yaobank-modern.rules"


def _ns(cmd: list[str], ns: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=True, **kw)


@pytest.fixture
def node_ns():
    """A node: yaobank-modern's rules, 10.240.0.11 on eth0 (default route to a sink), and a tunnel-like
    device tun0 holding 198.19.21.64/26 that routes the pod network, as Calico's tunl0 does."""
    require_netns("iptables-nft-restore", "conntrack", "nfacct")
    pid = os.getpid()
    node, sink = f"kpt-bnode-{pid}", f"kpt-bsink-{pid}"
    subprocess.run(["ip", "netns", "add", node], check=True)
    subprocess.run(["ip", "netns", "add", sink], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "s0", "netns", sink],
                    ["ip", "link", "add", "tun0", "type", "veth", "peer", "name", "s1", "netns", sink],
                    ["ip", "addr", "add", "10.240.0.11/24", "dev", "eth0"],
                    ["ip", "addr", "add", "198.19.21.64/26", "dev", "tun0"],
                    ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "tun0", "up"],
                    ["ip", "route", "add", "default", "via", "10.240.0.1", "dev", "eth0"],
                    ["ip", "route", "add", "198.19.16.0/20", "dev", "tun0"],
                    ["nfacct", "add", "localhost_nps_accepted_pkts"], ["nfacct", "add", "ct_state_invalid_dropped_pkts"]):
            _ns(cmd, node)
        for cmd in (["ip", "addr", "add", "10.240.0.1/24", "dev", "s0"], ["ip", "link", "set", "s0", "up"],
                    ["ip", "link", "set", "s1", "up"]):
            _ns(cmd, sink)
        _ns(["iptables-nft-restore"], node, input=MODERN.read_text())
        yield node
    finally:
        subprocess.run(["ip", "netns", "del", node], capture_output=True)
        subprocess.run(["ip", "netns", "del", sink], capture_output=True)


@pytest.mark.netns
def test_collect_local_reads_the_nodes_real_state(node_ns, tmp_path):
    out = tmp_path / "snap" / "node1"
    res = _ns([sys.executable, "-m", "kptrace", "collect", "--local", "-o", str(tmp_path / "snap"), "--node-name", "node1"], node_ns,
              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "node1" in res.stdout
    b = read_bundle(str(out))
    assert b.meta["node"] == "node1" and b.meta["kube_proxy_mode"] == "iptables" and b.meta["iptables_backend"] == "nft"
    assert "10.240.0.11" in b.node_ips and "198.19.21.64" in b.node_ips
    assert "KUBE-SVC-OIQIZJVJK6E34BR4" in b.files["iptables-save.txt"]
    assert b.files["iptables-save.txt"].lstrip().startswith("#") and "[0:0]" in b.files["iptables-save.txt"]  # -c counters
    for name in ("ip-addr.json", "ip-route.json"):
        json.loads(b.files[name])
    assert not [n for n in os.listdir(tmp_path / "snap") if n.startswith(".")], "a partial bundle was left behind"


@pytest.mark.netns
def test_masquerade_address_from_the_bundles_routes_is_the_kernels(node_ns, tmp_path):
    out = tmp_path / "snap" / "node1"
    _ns([sys.executable, "-m", "kptrace", "collect", "--local", "-o", str(tmp_path / "snap"), "--node-name", "node1"], node_ns,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    dp = load_bundle(str(out))
    assert set(dp.node_ips) >= {"10.240.0.11", "198.19.21.64"}  # no --node-ip needed
    trace = trace_packet(dp, plan_packet(dp, "198.19.40.210", 80, origin=Origin.NODE, src="10.240.0.11"))
    predicted = {o.snat for o in trace.outcomes}
    assert predicted == {"198.19.21.64"}, predicted  # tun0's address, not the word MASQUERADE
    # The kernel: connections from the node to the ClusterIP, and the source conntrack rewrote them to.
    script = ("import socket\nfor i in range(30):\n    s = socket.socket(); s.setblocking(False)\n"
              "    s.bind(('10.240.0.11', 30000 + i)); s.connect_ex(('198.19.40.210', 80)); s.close()\n")
    _ns([sys.executable, "-c", script], node_ns)
    listing = _ns(["conntrack", "-L", "-p", "tcp", "--orig-dst", "198.19.40.210"], node_ns).stdout
    kernel = {line.split("dst=")[2].split()[0] for line in listing.splitlines() if line.count("dst=") >= 2}
    assert kernel == predicted


@pytest.mark.netns
def test_svc_reads_a_bundle(node_ns, tmp_path, capsys, monkeypatch):
    out = tmp_path / "snap" / "node1"
    _ns([sys.executable, "-m", "kptrace", "collect", "--local", "-o", str(tmp_path / "snap"), "--node-name", "node1"], node_ns,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main(["svc", "yaobank/customer", "--bundle", str(out), "-o", "json"])
    assert exc.value.code in (0, None)
    svc = json.loads(capsys.readouterr().out)["services"][0]
    node_port = [t for t in svc["traces"] if t["entry"]["kind"] == "NodePort" and t["origin"] == "external"][0]
    assert node_port["packet"]["dst"] == "10.240.0.11"  # the bundle's address, not a stand-in
    assert {o["snat"] for o in node_port["outcomes"]} == {"198.19.21.64"}


class _Runner:
    """Replays recorded command output: for the parts of collect() that are about files, not about nodes."""

    name = "recorded"

    def __init__(self, missing=()):
        self.missing = set(missing)

    def run(self, argv):
        if argv[0] in self.missing:
            return CommandResult(127, "", f"{argv[0]}: command not found")
        if argv[0] == "iptables-save":
            return CommandResult(0, MODERN.read_text(), "")
        if argv[:2] == ("ip", "-j"):
            return CommandResult(0, '[{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.240.0.11", '
                                    '"prefixlen": 24, "scope": "global"}]}]' if argv[2] == "addr" else "[]", "")
        return CommandResult(0, "", "")


def test_bundle_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    bundle = collect(_Runner(missing={"ipvsadm", "ipvsadm-save", "ipset", "nft"}), "n1")
    assert any("ipvsadm" in n and "not installed" in n for n in bundle.notes)
    assert bundle.meta["skipped"]["ipset-save.txt"] == "not installed"

    def broken_dump(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError):
        write_bundle(bundle, str(tmp_path / "n1"))
    assert os.listdir(tmp_path) == []  # neither the bundle nor a partial one
    monkeypatch.undo()
    write_bundle(bundle, str(tmp_path / "n1"))
    assert read_bundle(str(tmp_path / "n1")).node_ips == ["10.240.0.11"]
    with pytest.raises(InputError, match="already exists"):
        write_bundle(bundle, str(tmp_path / "n1"))


def test_a_node_without_iptables_save_is_a_clear_error():
    with pytest.raises(EnvironmentProblem, match="iptables-save -c` failed: not installed"):
        collect(_Runner(missing={"iptables-save"}))


def test_not_a_bundle(tmp_path):
    with pytest.raises(InputError, match="no such bundle"):
        read_bundle(str(tmp_path / "nope"))
    (tmp_path / "half").mkdir()
    with pytest.raises(InputError, match="not a kptrace bundle"):
        read_bundle(str(tmp_path / "half"))


@pytest.mark.netns
def test_packet_local_reads_this_node(node_ns):
    # `kptrace packet --local` on the node itself: its rules, its addresses (no --node-ip), its routes.
    res = _ns([sys.executable, "-m", "kptrace", "packet", "--dst", "198.19.40.210:80", "--from", "node", "--local", "-o", "json"],
              node_ns, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    doc = json.loads(res.stdout)
    assert doc["packet"]["src"] == "10.240.0.11"
    assert sorted(o["dnat"] for o in doc["outcomes"]) == ["198.19.21.67:80", "198.19.21.68:80", "198.19.22.130:80"]
    assert {o["snat"] for o in doc["outcomes"]} == {"198.19.21.64"}
    assert not any("--node-ip" in a for o in doc["outcomes"] for a in o["assumptions"])
