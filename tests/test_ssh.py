"""Collecting over SSH, against real OpenSSH sshd processes started by the test, each in a network
namespace that holds kube-proxy rules (so what comes back is real kernel state). The client runs in
its own namespace too. Cases: success, refused, bad key, changed host key, unknown host key, timeout,
a command missing on the node, and a fan-out over 50 nodes with some failing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, require_netns

from kptrace.sources.bundle import read_bundle

pytestmark = pytest.mark.netns  # every test here runs in network namespaces (root)

SAMPLE = FIXTURES / "samples" / "yaobank.rules"


def _ip(*args: str, ns: str | None = None, check: bool = True, **kw):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, **kw)


class SshLab:
    """A client namespace wired to ``n`` node namespaces, 10.77.<i>.2 each; an sshd in each node that
    ``kind(i)`` says should run one."""

    def __init__(self, tmp: Path, n: int, kind, jump: dict[int, int] | None = None, setup=None) -> None:
        self.tmp, self.n, self.kind = tmp, n, kind
        self.setup = setup  # setup(namespace): more of a node's state (an nft ruleset)
        self.jump = jump or {}  # node i -> the node it is reachable through (ProxyJump); not wired to the client
        self.pid = os.getpid()
        self.client = f"kpt-sshc-{self.pid}"
        self.nodes = [f"kpt-sshn-{self.pid}-{i}" for i in range(n)]
        self.daemons: list[subprocess.Popen] = []

    def __enter__(self):
        t = self.tmp
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "hostkey")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "otherhostkey")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "id_user")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "id_stranger")], check=True)
        shutil.copy(t / "id_user.pub", t / "authorized_keys")
        host_pub = (t / "hostkey.pub").read_text().split()[:2]
        other_pub = (t / "otherhostkey.pub").read_text().split()[:2]
        _ip("ip", "netns", "add", self.client)
        _ip("ip", "link", "set", "lo", "up", ns=self.client)
        known, config = [], []
        for i, ns in enumerate(self.nodes):
            kind = self.kind(i)
            _ip("ip", "netns", "add", ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
            net = 78 if i in self.jump else 77
            near = self.nodes[self.jump[i]] if i in self.jump else self.client
            _ip("ip", "link", "add", f"n{i}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=near)
            _ip("ip", "addr", "add", f"10.{net}.{i}.1/30", "dev", f"n{i}", ns=near)
            _ip("ip", "link", "set", f"n{i}", "up", ns=near)
            _ip("ip", "addr", "add", f"10.{net}.{i}.2/30", "dev", "eth0", ns=ns)
            _ip("ip", "link", "set", "eth0", "up", ns=ns)
            _ip("iptables-nft-restore", ns=ns, input=SAMPLE.read_text())
            if self.setup is not None:
                self.setup(ns)
            if kind == "timeout":
                _ip("iptables-nft", "-I", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP", ns=ns)
            if kind != "refused":
                cfg = t / f"sshd_{i}.conf"
                cfg.write_text(f"Port 22\nListenAddress 10.{net}.{i}.2\nHostKey {t / 'hostkey'}\nPidFile {t / f'sshd_{i}.pid'}\n"
                               f"AuthorizedKeysFile {t / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
                               "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
                self.daemons.append(subprocess.Popen(["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
                                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            key = other_pub if kind == "changed-host-key" else host_pub
            if kind != "unknown-host-key":
                known.append(f"10.{net}.{i}.2 {key[0]} {key[1]}")
            identity = t / ("id_stranger" if kind == "bad-key" else "id_user")
            config.append(f"Host node{i}\n  HostName 10.{net}.{i}.2\n  User root\n  IdentityFile {identity}\n"
                          f"  UserKnownHostsFile {t / 'known_hosts'}\n  IdentitiesOnly yes\n"
                          + (f"  ProxyJump node{self.jump[i]}\n" if i in self.jump else ""))
        (t / "known_hosts").write_text("\n".join(known) + "\n")
        (t / "ssh_config").write_text("\n".join(config))
        (t / "home").mkdir(exist_ok=True)
        deadline = time.monotonic() + 10  # wait for the daemons to listen
        for i, ns in enumerate(self.nodes):
            if self.kind(i) in ("refused", "timeout"):
                continue
            while time.monotonic() < deadline:
                if f".{i}.2:22" in _ip("ss", "-ltn", ns=ns).stdout:
                    break
                time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        for d in self.daemons:
            d.kill()
        for d in self.daemons:
            d.wait()
        for ns in [*self.nodes, self.client]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def kptrace(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env.update(HOME=str(self.tmp / "home"), PYTHONPATH=str(ROOT), CI="true")
        return _ip(sys.executable, "-m", "kptrace", *args, "--ssh-config", str(self.tmp / "ssh_config"), ns=self.client,
                   check=False, env=env, cwd=ROOT, timeout=300)


@pytest.fixture
def tools():
    require_netns("iptables-nft-restore", "sshd", "ssh-keygen")


def test_collect_over_ssh_reads_the_nodes_kernel_state(tools, tmp_path):
    with SshLab(tmp_path, 1, lambda i: "ok") as lab:
        res = lab.kptrace("collect", "--ssh", "node0", "-o", str(tmp_path / "snap"))
        assert res.returncode == 0, res.stderr
        b = read_bundle(str(tmp_path / "snap" / "node0"))
        assert "KUBE-SVC-OIQIZJVJK6E34BR4" in b.files["iptables-save.txt"]
        assert "10.77.0.2" in b.node_ips and b.meta["source"] == "node0"
        # ipvsadm missing on the node, or present without IPVS in its kernel: either way a note, and the rest collected
        assert "ipvsadm" in res.stderr and any(w in res.stderr for w in ("not found", "not installed", "skipped"))
        assert "ipvsadm-save.txt" in b.meta.get("skipped", {}), b.meta
        # and the service view straight over SSH
        res = lab.kptrace("svc", "yaobank/summary", "--ssh", "node0", "-o", "json")
        assert res.returncode == 0, res.stderr
        svc = json.loads(res.stdout)["services"][0]
        assert sorted(e["address"] for e in svc["endpoints"]) == ["198.19.21.67:80", "198.19.22.130:80"]


def test_collect_over_ssh_saves_an_nftables_nodes_ruleset(tools, tmp_path):
    require_netns("nft")
    ruleset = FIXTURES / "nft" / "overall-1.37.knft"
    with SshLab(tmp_path, 1, lambda i: "ok", setup=lambda ns: _ip("nft", "-f", str(ruleset), ns=ns)) as lab:
        res = lab.kptrace("collect", "--ssh", "node0", "-o", str(tmp_path / "snap"))
    assert res.returncode == 0, res.stderr
    assert "nftables mode" in res.stdout
    b = read_bundle(str(tmp_path / "snap" / "node0"))
    assert b.meta["kube_proxy_mode"] == "nftables" and "ip kube-proxy" in b.meta["nft_tables"]
    assert "table ip kube-proxy {" in b.files["nft-ruleset.nft"] and json.loads(b.files["nft-ruleset.json"])["nftables"]
    res = subprocess.run([sys.executable, "-m", "kptrace", "packet", "--bundle", str(tmp_path / "snap" / "node0"),
                          "--dst", "172.30.0.42:80", "--src", "10.0.1.2", "-o", "json"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert sorted(o["dnat"] for o in json.loads(res.stdout)["outcomes"]) == ["10.180.0.2:80", "10.180.1.2:80"]


@pytest.mark.parametrize("kind,message", [
    ("refused", "connection refused by 10.77.0.2:22"),
    ("bad-key", "authentication failed as root"),
    ("changed-host-key", "has CHANGED"),
    ("unknown-host-key", "host key is unknown"),
    ("timeout", "no answer from 10.77.0.2:22"),
])
def test_ssh_failures_name_the_node_and_say_what_went_wrong(tools, tmp_path, kind, message):
    with SshLab(tmp_path, 1, lambda i: kind) as lab:
        res = lab.kptrace("collect", "--ssh", "node0", "-o", str(tmp_path / "snap"), "--timeout", "2")
        assert res.returncode == 5, (res.stdout, res.stderr)
        assert "node0" in res.stderr and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert not (tmp_path / "snap" / "node0").exists()


def test_an_unknown_host_key_is_accepted_only_when_asked(tools, tmp_path):
    with SshLab(tmp_path, 1, lambda i: "unknown-host-key") as lab:
        res = lab.kptrace("collect", "--ssh", "node0", "-o", str(tmp_path / "snap"), "--accept-new-host-key")
        assert res.returncode == 0, res.stderr
        assert "10.77.0.2" in (tmp_path / "known_hosts").read_text()  # remembered


def test_fan_out_over_50_nodes_with_some_failing(tools, tmp_path):
    failing = {7: "refused", 19: "bad-key", 33: "changed-host-key", 41: "refused"}
    with SshLab(tmp_path, 50, lambda i: failing.get(i, "ok")) as lab:
        start = time.monotonic()
        res = lab.kptrace("collect", *[a for i in range(50) for a in ("--ssh", f"node{i}")], "-o", str(tmp_path / "snap"),
                          "--parallel", "16", "--timeout", "3")
        took = time.monotonic() - start
    assert res.returncode == 6, res.stderr  # some nodes failed, the rest were collected
    assert "46 of 50 nodes collected" in res.stdout
    for i in range(50):
        assert (tmp_path / "snap" / f"node{i}" / "meta.json").exists() == (i not in failing), i
    for i in failing:
        assert f"node{i}" in res.stderr
    # no wall-clock assertion: machines here are noisy (the guide keeps speed in benchmarks/); the time is printed
    print(f"50 nodes over SSH, 16 at a time: {took:.1f} s")


def test_a_node_behind_a_jump_host(tools, tmp_path):
    # node1 is wired to node0 only: the client reaches it through node0's sshd (ProxyJump in ssh config).
    with SshLab(tmp_path, 2, lambda i: "ok", jump={1: 0}) as lab:
        unreachable = _ip("ip", "route", "get", "10.78.1.2", ns=lab.client, check=False)
        assert unreachable.returncode != 0  # no direct route: only the jump gets there
        res = lab.kptrace("collect", "--ssh", "node1", "-o", str(tmp_path / "snap"))
    assert res.returncode == 0, res.stderr
    assert "10.78.1.2" in read_bundle(str(tmp_path / "snap" / "node1")).node_ips
