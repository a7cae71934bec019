"""The kernel is the ground truth: these tests run the bundled dumps in real netfilter, in throwaway
network namespaces, and compare with kptrace. They need root (CI runs them; on a laptop they skip
with the reason printed).

* every bundled sample loads with iptables-nft-restore and iptables-save gives back the same rules;
* connections from the node itself to a ClusterIP: the endpoints the kernel's conntrack shows
  (reply source) match kptrace's outcomes, each endpoint's share lies within a 99.9% binomial bound
  of kptrace's probability, and masquerading happens exactly when kptrace says.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections import Counter
from contextlib import contextmanager

import pytest
from conftest import FIXTURES, require_netns

from kptrace.load import load_dumps
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

pytestmark = pytest.mark.netns  # every test here runs in network namespaces (root)

SAMPLES = sorted(p for p in FIXTURES.glob("samples/*.rules*"))


def _run(*cmd: str, ns: str | None = None, input: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    res = subprocess.run(full, input=input, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


@contextmanager
def netns(tag: str):
    name = f"kpt-test-{tag}-{os.getpid()}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "set", "lo", "up", ns=name)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _restore(ns: str, path, family: int) -> None:
    text = path.read_text()
    for acct in sorted(set(re.findall(r"--nfacct-name\s+(\S+)", text))):
        _run("nfacct", "add", acct, ns=ns)
    _run("ip6tables-nft-restore" if family == 6 else "iptables-nft-restore", ns=ns, input=text)


def _rule_lines(text: str) -> list[str]:
    lines = (re.sub(r"^\[\d+:\d+\] ", "", line) for line in text.splitlines())  # -c counters
    return sorted(" ".join(line.split()) for line in lines if line.startswith(("-A ", ":", "*")))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_loads_in_the_kernel_and_saves_back_unchanged(path):
    require_netns("iptables-nft-restore", "nfacct")
    family = 6 if path.suffix == ".rules6" else 4
    with netns("load") as ns:
        _restore(ns, path, family)
        saved = _run("ip6tables-nft-save" if family == 6 else "iptables-nft-save", ns=ns)
    want = [line for line in _rule_lines(path.read_text()) if not line.startswith(":")]
    got = [line for line in _rule_lines(saved) if not line.startswith(":")]
    assert got == want


def _binomial_ok(count: int, n: int, p: float, z: float = 3.29) -> bool:
    # 99.9% two-sided normal approximation to the binomial (n is large and p is not extreme here).
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= z * sd + 1


def _conntrack_flows(ns: str, dst: str, dport: int) -> list[tuple[str, str]]:
    """(reply source, reply destination) of every tracked connection to dst:dport."""
    out = _run("conntrack", "-L", "-p", "tcp", "--orig-dst", dst, ns=ns)
    flows = []
    for line in out.splitlines():
        fields = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
        if len(fields) < 8 or fields[3][1] != str(dport):
            continue
        reply = dict(fields[4:8])
        flows.append((f"{reply['src']}:{reply['sport']}", reply["dst"]))
    return flows


@pytest.mark.parametrize("sample,node_ip,egress,dst,dport", [
    ("bootcamp.rules", "192.168.193.172", "10.244.0.0/16", "10.106.224.41", 8080),
    ("yaobank.rules", "10.240.0.11", "198.19.16.0/20", "198.19.40.210", 80),
    ("yaobank-modern.rules", "10.240.0.11", "198.19.16.0/20", "198.19.32.10", 9153),
])
def test_node_to_cluster_ip_agrees_with_conntrack(sample, node_ip, egress, dst, dport):
    require_netns("iptables-nft-restore", "conntrack", "nfacct")
    path = FIXTURES / "samples" / sample
    dp = load_dumps([str(path)], node_ips=[node_ip])
    trace = trace_packet(dp, plan_packet(dp, dst, dport, origin=Origin.NODE))
    predicted = {o.dnat: o for o in trace.outcomes}
    assert all(o.verdict == "ACCEPT" and o.dnat for o in trace.outcomes)

    flows = _connect_from_node(path, node_ip, egress, dst, dport, n := 1200)
    assert len(flows) == n, f"conntrack shows {len(flows)} of {n} connections"
    seen = Counter(endpoint for endpoint, _ in flows)
    assert set(seen) == set(predicted), f"kernel chose {sorted(seen)}, kptrace predicted {sorted(predicted)}"
    for endpoint, o in predicted.items():
        assert _binomial_ok(seen[endpoint], n, float(o.probability)), (endpoint, seen[endpoint], float(o.probability))
    # Masquerade: the kernel's reply goes back to the node's egress address.
    masqueraded = {endpoint for endpoint, reply_dst in flows if reply_dst == node_ip}
    assert {e for e, o in predicted.items() if o.masquerade} == masqueraded == set(predicted)


def test_session_affinity_pins_a_client_as_kptrace_says():
    """yaobank-modern's summary has ClientIP affinity: the first connection picks an endpoint (a third
    each), and every later one from that client goes to the same endpoint, which is what kptrace says
    for a client pinned there (--affinity)."""
    require_netns("iptables-nft-restore", "conntrack", "nfacct")
    path = FIXTURES / "samples" / "yaobank-modern.rules"
    node_ip, dst, dport = "10.240.0.11", "198.19.40.210", 80
    dp = load_dumps([str(path)], node_ips=[node_ip])
    fresh = trace_packet(dp, plan_packet(dp, dst, dport, origin=Origin.NODE))
    assert len(fresh.outcomes) == 3
    flows = _connect_from_node(path, node_ip, "198.19.16.0/20", dst, dport, 200)
    seen = Counter(endpoint for endpoint, _ in flows)
    assert len(seen) == 1 and sum(seen.values()) == 200, seen
    (endpoint,) = seen
    assert endpoint in {o.dnat for o in fresh.outcomes}
    from kptrace.tracer.defaults import resolve_affinity

    pinned = trace_packet(dp, plan_packet(dp, dst, dport, origin=Origin.NODE), affinity=resolve_affinity(dp, 4, endpoint))
    assert [(o.dnat, o.probability) for o in pinned.outcomes] == [(endpoint, 1)]


def _connect_from_node(path, node_ip: str, egress: str, dst: str, dport: int, n: int) -> list[tuple[str, str]]:
    with netns("node") as ns, netns("sink") as sink:
        # The node: its address on a veth whose other end is in a namespace that drops everything, a
        # route to the pods out of it (the SYNs leave and vanish; conntrack has recorded each
        # connection's NAT by then), and the dump's rules.
        _run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "sink0", "netns", sink, ns=ns)
        _run("ip", "link", "set", "sink0", "up", ns=sink)
        _run("ip", "addr", "add", f"{node_ip}/24", "dev", "eth0", ns=ns)
        _run("ip", "link", "set", "eth0", "up", ns=ns)
        _run("ip", "route", "add", egress, "dev", "eth0", "src", node_ip, ns=ns)
        _run("ip", "route", "add", "default", "dev", "eth0", ns=ns)
        _restore(ns, path, 4)
        script = (
            "import socket, sys\n"
            f"for i in range({n}):\n"
            "    s = socket.socket(); s.setblocking(False)\n"
            f"    s.bind(('{node_ip}', 20000 + i))\n"
            f"    s.connect_ex(('{dst}', {dport}))\n"
            "    s.close()\n"
        )
        _run("python3", "-c", script, ns=ns)
        return _conntrack_flows(ns, dst, dport)


def _our_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("kpt-")}


def test_verify_leaves_nothing_behind_on_ctrl_c_and_never_touches_the_host():
    require_netns("iptables-nft-restore", "conntrack", "xtables-monitor")
    import signal
    import sys
    import time

    host_rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout if shutil_which("nft") else None
    before = _our_namespaces()
    proc = subprocess.Popen([sys.executable, "-m", "kptrace", "verify", "--dump", str(FIXTURES / "samples" / "bootcamp.rules"),
                             "--all-services", "--node-ip", "192.168.193.172"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (_our_namespaces() - before):
        time.sleep(0.1)
    assert _our_namespaces() - before, "verify never built its namespaces"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    assert _our_namespaces() - before == set()
    if host_rules is not None:
        assert subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout == host_rules


def shutil_which(tool: str):
    import shutil

    return shutil.which(tool)
