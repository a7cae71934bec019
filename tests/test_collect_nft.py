"""Collecting an nftables-mode node: `kptrace collect --local` run inside a network namespace that holds
a fixtures/nft ruleset loaded with `nft -f` (kube-proxy's table; for a mixed node also a CNI's iptables-nft
tables and a flannel-like inet table), then every flow of the scenario traced from the written bundle
must come out as from the saved dumps (`--dump X.iptables-save --dump X.nft`), which test_nft_flows.py
holds to what the kernel did. Also: kube-proxy's mode from its own configuration, and what a node
without nft, or without the permission to read it, gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib

import pytest
from conftest import FIXTURES, ROOT, require_netns

from kptrace.errors import EnvironmentProblem
from kptrace.load import load_bundle, load_dumps
from kptrace.model.addr import format_addr, parse_endpoint
from kptrace.sources.bundle import Bundle, CommandResult, collect, configured_mode, read_bundle
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

NFT = FIXTURES / "nft"
_ORIGIN = {"pod": Origin.POD, "hairpin": Origin.POD, "node": Origin.NODE, "external": Origin.EXTERNAL,
           "external-denied": Origin.EXTERNAL}


def _ns(ns: str, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check, **kw)


def _expect(scenario: str) -> dict:
    return tomllib.loads((NFT / f"{scenario}.expect.toml").read_text())


@pytest.fixture
def nft_node():
    """``make(scenario) -> namespace``: a node with the scenario's node addresses on eth0 (a default route
    out of it) and its ruleset loaded as make_nft.py loads it: kube-proxy's transaction with `nft -f`, then
    (mixed) the CNI's rules with iptables-nft-restore and the inet table with `nft -f`."""
    require_netns("nft", "iptables-nft-restore")
    made = []

    def make(scenario: str) -> str:
        ns = f"kpt-cnft-{os.getpid()}-{len(made)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        made.append(ns)
        data = _expect(scenario)
        _ns(ns, "ip", "link", "set", "lo", "up")
        _ns(ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0")
        _ns(ns, "ip", "link", "set", "eth0", "up")
        if "ipv4" in data:
            _ns(ns, "ip", "addr", "add", data["ipv4"]["node_ip"] + "/24", "dev", "eth0")
            _ns(ns, "ip", "route", "add", "default", "via", "192.168.0.1", "dev", "eth0")
        if "ipv6" in data:
            _ns(ns, "ip", "-6", "addr", "add", data["ipv6"]["node_ip"] + "/64", "dev", "eth0", "nodad")
            _ns(ns, "ip", "-6", "route", "add", "default", "via", "2001:db8::ff", "dev", "eth0")
        _ns(ns, "nft", "-f", str(NFT / f"{scenario}.knft"))
        if scenario.startswith("mixed"):
            _ns(ns, "iptables-nft-restore", input=(NFT / "src" / "mixed.iptables-restore").read_text())
            _ns(ns, "nft", "-f", str(NFT / "src" / "cni-overlay.nft"))
        return ns

    yield make
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _collect(ns: str, out, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _ns(ns, sys.executable, "-m", "kptrace", "collect", "--local", "-o", str(out), "--node-name", "node1", *extra,
               check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})})


def _outcomes(dp, flow) -> list[tuple]:
    fam, addr, port = parse_endpoint(flow["dst"])
    trace = trace_packet(dp, plan_packet(dp, format_addr(fam, addr), port, src=flow["src"], origin=_ORIGIN[flow["origin"]],
                                         proto=flow.get("protocol", "tcp")))
    # the masquerade address is left out: the bundle knows the node's routes (an address), a dump does not (the word)
    return sorted((o.verdict, o.dnat, o.probability, o.masquerade, tuple(o.assumptions)) for o in trace.outcomes)


@pytest.mark.netns
@pytest.mark.parametrize("scenario", ["mixed-1.37", "mixed-classic", "dualstack-1.37"])
def test_a_collected_nftables_node_traces_as_its_dumps(nft_node, tmp_path, scenario):
    ns = nft_node(scenario)
    res = _collect(ns, tmp_path / "snap")
    assert res.returncode == 0, res.stderr
    assert "nftables mode" in res.stdout and "Traceback" not in res.stderr
    b = read_bundle(str(tmp_path / "snap" / "node1"))
    assert b.meta["kube_proxy_mode"] == "nftables" and "tables" in b.meta["kube_proxy_mode_from"]
    assert b.files["nft-ruleset.nft"].startswith("table ") and json.loads(b.files["nft-ruleset.json"])["nftables"]
    assert [n for n, _ in b.dumps()][-1].endswith("nft-ruleset.nft")  # one form of the ruleset, not both

    data = _expect(scenario)
    dp = load_bundle(str(tmp_path / "snap" / "node1"))
    node_ips = [data[k]["node_ip"] for k in ("ipv4", "ipv6") if k in data]
    assert sorted(dp.node_ips) == sorted(node_ips)
    mixed = scenario.startswith("mixed")
    dumps = [str(NFT / f"{scenario}.iptables-save")] if mixed else []
    reference = load_dumps(dumps + [str(NFT / f"{scenario}.nft")], node_ips=node_ips)
    tables = sorted(f"{fam} {name}" for fam, name in dp.nft.tables)
    assert tables == sorted(f"{fam} {name}" for fam, name in reference.nft.tables)
    if mixed:
        # iptables-nft's tables are in iptables-save.txt and in the nft listing: read once, from iptables-save
        assert tables == ["inet cni-overlay", "ip kube-proxy"] and set(dp.rulesets[4].tables) >= {"filter", "nat"}
    # and as kube-proxy's own transaction with iptables-save (test_nft_flows' form: no table given twice)
    transaction = load_dumps(dumps + [str(NFT / f"{scenario}.knft")], node_ips=node_ips)
    differ = []
    for flow in data["flow"]:
        got = _outcomes(dp, flow)
        for name, ref in (("the dumps", reference), ("the transaction", transaction)):
            want = _outcomes(ref, flow)
            if got != want:
                differ.append(f"{flow['dst']} from {flow['origin']}: bundle {got} != {name} {want}")
        if {o[0] for o in got} != {flow["verdict"].upper()}:
            differ.append(f"{flow['dst']} from {flow['origin']}: {sorted({o[0] for o in got})}, the kernel {flow['verdict']}")
    assert not differ, f"{len(differ)} of {len(data['flow'])} flows:\n  " + "\n  ".join(differ[:10])


@pytest.mark.netns
def test_packet_with_the_bundle_is_packet_with_the_dumps(nft_node, tmp_path, run):
    ns = nft_node("mixed-1.37")
    assert _collect(ns, tmp_path / "snap").returncode == 0
    args = ["--dst", "172.30.0.44:80", "--from", "external", "-o", "json"]
    code, out, err = run("packet", "--bundle", str(tmp_path / "snap" / "node1"), *args)
    assert code == 0, err
    code, ref, err = run("packet", "--dump", str(NFT / "mixed-1.37.iptables-save"), "--dump", str(NFT / "mixed-1.37.nft"),
                         "--node-ip", "192.168.0.2", *args)
    assert code == 0, err
    got, want = json.loads(out)["outcomes"], json.loads(ref)["outcomes"]
    assert [(o["verdict"], o["dnat"]) for o in got] == [(o["verdict"], o["dnat"]) for o in want] == \
        [("DROP", "10.180.0.4:80"), ("DROP", "10.180.1.4:80")]  # the CNI's FORWARD policy drop, once


@pytest.fixture
def fake_kube_proxy(tmp_path):
    """``start(*args, config=None) -> pid``: a process named kube-proxy (a shell script of that name: the
    kernel names a script's process after the script) with kube-proxy's command line, and its config file."""
    procs = []

    def start(*args: str, config: str | None = None) -> int:
        exe = tmp_path / "bin" / "kube-proxy"
        exe.parent.mkdir(exist_ok=True)
        exe.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
        exe.chmod(0o755)
        if config is not None:
            (tmp_path / "config.conf").write_text(config)
            args = (f"--config={tmp_path / 'config.conf'}", *args)
        p = subprocess.Popen([str(exe), *args], start_new_session=True)
        procs.append(p)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the exec has named it
            try:
                if open(f"/proc/{p.pid}/comm").read().strip() == "kube-proxy":
                    break
            except OSError:
                pass
            time.sleep(0.02)
        return p.pid

    yield start
    for p in procs:
        os.killpg(p.pid, 9)
        p.wait()


@pytest.mark.netns
def test_the_mode_kube_proxy_is_configured_with_wins_and_a_disagreement_is_said(nft_node, fake_kube_proxy, tmp_path):
    ns = nft_node("overall-1.37")
    fake_kube_proxy("--hostname-override=node1", "--proxy-mode=nftables",
                    config="apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                           "ipvs:\n  scheduler: rr\nmode: \"iptables\"\ndetectLocalMode: ClusterCIDR\n")
    res = _collect(ns, tmp_path / "snap")
    assert res.returncode == 0, res.stderr
    b = read_bundle(str(tmp_path / "snap" / "node1"))
    # kube-proxy ignores its flags when it has a config file; the tables show nftables mode (left over, or not synced)
    assert b.meta["kube_proxy_mode"] == "iptables" and b.meta["kube_proxy_mode_from"].startswith("kube-proxy's --config ")
    assert "iptables mode (from kube-proxy's --config" in res.stdout
    assert "says iptables mode, but the tables are kube-proxy's nftables mode's" in res.stderr
    assert "nft-ruleset.nft" in b.files  # kube-proxy's table is not in iptables-save: saved whatever the mode


@pytest.mark.netns
def test_nftables_mode_without_nft_is_a_reported_partial_collection(nft_node, fake_kube_proxy, tmp_path):
    ns = nft_node("mixed-1.37")
    fake_kube_proxy("--proxy-mode", "nftables")
    bin_dir = tmp_path / "path"  # the node's tools, but no nft
    bin_dir.mkdir()
    for tool in ("iptables-save", "ip6tables-save", "iptables", "ip", "uname", "hostname", "sh", "cat", "sleep"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if found:
            os.symlink(found, bin_dir / tool)
    res = _collect(ns, tmp_path / "snap", env={"PATH": str(bin_dir)})
    assert res.returncode == 6, (res.stdout, res.stderr)  # collected, but not what its mode needs
    assert "Traceback" not in res.stderr
    assert "nft list tables: not installed" in res.stderr
    assert "kube-proxy runs in nftables mode, but nft did not run: not installed" in res.stderr
    b = read_bundle(str(tmp_path / "snap" / "node1"))  # the rest of the bundle is there
    assert b.meta["kube_proxy_mode"] == "nftables" and b.meta["kube_proxy_mode_from"] == "kube-proxy's --proxy-mode"
    assert b.meta["incomplete"].startswith("kube-proxy runs in nftables mode") and "CNI-FORWARD" in b.files["iptables-save.txt"]


@pytest.mark.netns
def test_no_permission_to_read_the_rules_is_a_clear_error(nft_node, tmp_path):
    ns = nft_node("mixed-1.37")
    # root without CAP_NET_ADMIN: the kernel refuses both nft and iptables-save
    res = _ns(ns, "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", sys.executable, "-m", "kptrace", "collect",
              "--local", "-o", str(tmp_path / "snap"), "--node-name", "node1", check=False, cwd=ROOT,
              env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert res.returncode == 5, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "iptables-save -c` failed" in res.stderr and "Operation not permitted" in res.stderr, res.stderr
    assert not (tmp_path / "snap" / "node1").exists() and not [n for n in os.listdir(tmp_path / "snap") if n.startswith(".")]


# ---------------------------------------------------------------- recorded nodes: the cases a namespace cannot make

class _Node:
    """Replays a node's answers: ``answers`` maps an argv prefix to (rc, stdout, stderr)."""

    name = "recorded"

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]):
        self.answers = answers
        self.ran: list[tuple[str, ...]] = []

    def run(self, argv):
        self.ran.append(argv)
        for prefix, (rc, out, err) in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if argv[:len(prefix)] == prefix:
                return CommandResult(rc, out, err)
        return CommandResult(127, "", f"{argv[0]}: command not found")


def _kube_proxy(cmdline: list[str], config: str | None = None, pid: str = "4242") -> dict:
    answers = {("sh", "-c"): (0, pid + "\n" + "\0".join(cmdline) + "\0", "")}
    if config is not None:
        answers[("cat",)] = (0, config, "")
    return answers


@pytest.mark.parametrize("answers,mode,told", [
    (_kube_proxy(["kube-proxy", "--config=/var/lib/kube-proxy/config.conf"], "kind: KubeProxyConfiguration\nmode: nftables\n"),
     "nftables", "kube-proxy's --config /var/lib/kube-proxy/config.conf"),
    (_kube_proxy(["kube-proxy", "--config", "/etc/kp.json"], '{"kind": "KubeProxyConfiguration", "mode": "IPVS"}'),
     "ipvs", "kube-proxy's --config /etc/kp.json"),
    (_kube_proxy(["kube-proxy", "--config=/c.yaml", "--proxy-mode=ipvs"], "mode: ''\n"), "", "leaves mode unset"),
    (_kube_proxy(["/usr/local/bin/kube-proxy", "--proxy-mode", "nftables", "--v=2"]), "nftables", "kube-proxy's --proxy-mode"),
    (_kube_proxy(["kube-proxy", "--v=2"]), "", "without --config or --proxy-mode"),
    ({("sh", "-c"): (3, "", "")}, "", "no kube-proxy process"),
    ({}, "", "not installed"),
    ({**_kube_proxy(["kube-proxy", "--config=/k.conf"]), ("cat",): (1, "", "cat: /proc/4242/root/k.conf: Permission denied")},
     "", "Permission denied"),
])
def test_kube_proxy_mode_from_its_configuration(answers, mode, told):
    node = _Node(answers)
    got_mode, got_told = configured_mode(node)
    assert got_mode == mode and told in got_told, got_told
    cats = [a for a in node.ran if a[0] == "cat"]
    assert all(a[1].startswith("/proc/4242/root/") for a in cats)  # the file as kube-proxy's container sees it


def test_a_sudo_that_allows_only_the_dumps_leaves_the_mode_to_the_tables():
    class SudoForDumpsOnly(_Node):
        def run(self, argv):
            if argv[0] in ("sh", "cat"):
                raise EnvironmentProblem(f"sudo would prompt for a password to run {argv[0]}")
            return super().run(argv)

    b = collect(SudoForDumpsOnly(_answers("table ip kube-proxy\n")), "n1")
    assert b.meta["kube_proxy_mode"] == "nftables" and "sudo would prompt" in b.meta["kube_proxy_mode_from"]


_IPT = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
_ADDR = '[{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.168.0.2", "prefixlen": 24, "scope": "global"}]}]'


def _answers(tables: str, over: dict | None = None) -> dict:
    base = {("iptables-save",): (0, _IPT, ""), ("ip", "-j", "addr"): (0, _ADDR, ""), ("ip",): (0, "[]", ""),
            ("nft", "list", "tables"): (0, tables, ""), ("nft", "list", "ruleset"): (0, (NFT / "mixed-1.37.nft").read_text(), ""),
            ("nft", "-j"): (0, (NFT / "mixed-1.37.json").read_text(), ""), ("sh", "-c"): (3, "", "")}
    base.update(over or {})
    return base


def test_nft_saved_only_when_it_holds_what_iptables_save_does_not():
    only_iptables = collect(_Node(_answers("table ip filter\ntable bridge filter\n")), "n1")
    assert "nft-ruleset.nft" not in only_iptables.files and "iptables-save.txt" in only_iptables.meta["skipped"]["nft-ruleset.nft"]
    assert not [n for n in only_iptables.notes if "nft" in n]  # normal on an iptables-nft node: not a note
    cni = collect(_Node(_answers("table ip filter\ntable inet flannel\n")), "n1")
    assert cni.meta["kube_proxy_mode"] == "unknown" and "nft-ruleset.nft" in cni.files and "nft-ruleset.json" in cni.files
    kp = collect(_Node(_answers("table ip filter\ntable ip kube-proxy\n")), "n1")
    assert kp.meta["kube_proxy_mode"] == "nftables" and kp.meta["nft_tables"] == ["ip filter", "ip kube-proxy"]


def test_nft_refused_on_an_nftables_node_is_recorded_and_the_bundle_completes():
    refused = (1, "", "netlink: Error: cache initialization failed: Operation not permitted\n")
    b = collect(_Node(_answers("table ip kube-proxy\n", {("nft", "list", "ruleset"): refused, ("nft", "-j"): refused})), "n1")
    assert b.meta["incomplete"].endswith("Operation not permitted")
    assert b.meta["skipped"]["nft-ruleset.json"].endswith("Operation not permitted") and "iptables-save.txt" in b.files
    assert any("nft list ruleset: netlink: Error" in n for n in b.notes)


def test_a_pure_nftables_node_needs_no_iptables_save():
    b = collect(_Node(_answers("table ip kube-proxy\n", {("iptables-save",): (127, "", "")})), "n1")
    assert "iptables-save.txt" not in b.files and b.meta["kube_proxy_mode"] == "nftables"
    with pytest.raises(EnvironmentProblem, match="iptables-save -c` failed: not installed, and there is no nft ruleset"):
        collect(_Node(_answers("", {("iptables-save",): (127, "", "")})), "n1")


def test_the_json_is_read_when_the_text_listing_was_cut_short(tmp_path):
    text = (NFT / "mixed-1.37.nft").read_text()
    b = Bundle({"iptables-save.txt": (NFT / "mixed-1.37.iptables-save").read_text(), "ip-addr.json": _ADDR,
                "nft-ruleset.nft": text[: len(text) // 2], "nft-ruleset.json": (NFT / "mixed-1.37.json").read_text()},
               {"node": "n1", "kube_proxy_mode": "nftables"})
    assert [n for n, _ in b.dumps()] == ["n1:iptables-save.txt", "n1:nft-ruleset.json"]
    dp = load_bundle(bundle=Bundle(dict(b.files), dict(b.meta)))
    assert sorted(f"{f} {n}" for f, n in dp.nft.tables) == ["inet cni-overlay", "ip kube-proxy"]
    assert any("cut short" in n for n in dp.notes)
