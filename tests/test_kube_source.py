"""The Kubernetes API source: the real ``kubernetes`` client against the stand-in API server
(tests/kubeapi_standin.py), whose pod exec runs the commands in network namespaces holding real
kube-proxy rules."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import FIXTURES, require_netns
from kubeapi_standin import StandIn

from kptrace.cli.main import main
from kptrace.sources.bundle import read_bundle

SAMPLE = FIXTURES / "samples" / "yaobank.rules"


@pytest.fixture
def node_namespaces():
    require_netns("iptables-nft-restore")
    names = []

    def make(i: int, nft: str | None = None) -> str:
        ns = f"kpt-knode-{os.getpid()}-{i}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        names.append(ns)
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"10.240.0.{11 + i}/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-restore"], input=SAMPLE.read_text(), text=True, check=True)
        if nft:  # an nftables-mode node: kube-proxy's table beside the iptables rules
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", nft], check=True)
        return ns

    yield make
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _run(args, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.netns
def test_svc_through_the_api_execs_in_the_nodes_kube_proxy_pod(node_namespaces, tmp_path, capsys, monkeypatch):
    with StandIn({"node1": node_namespaces(0)}, missing_tools={"ipvsadm", "ipvsadm-save"}) as api:
        code, out, err = _run(["svc", "yaobank/summary", "--node", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                               "-o", "json"], capsys, monkeypatch)
    assert code == 0, err
    svc = json.loads(out)["services"][0]
    assert sorted(e["address"] for e in svc["endpoints"]) == ["198.19.21.67:80", "198.19.22.130:80"]
    assert any("fieldSelector=spec.nodeName%3Dnode1" in r or "fieldSelector=spec.nodeName=node1" in r for r in api.requests)
    assert any("/pods/kube-proxy-node1/exec" in r and "iptables-save" in r for r in api.requests)
    assert "ipvsadm" in err and "not found" in err or "not installed" in err  # a tool the pod lacks is a note


@pytest.mark.netns
def test_collect_all_nodes_with_one_without_kube_proxy(node_namespaces, tmp_path, capsys, monkeypatch):
    nodes = {"node1": node_namespaces(0), "node2": node_namespaces(1), "node3": None}
    with StandIn(nodes) as api:
        code, out, err = _run(["collect", "--all-nodes", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                               "-o", str(tmp_path / "snap")], capsys, monkeypatch)
    assert code == 6, (out, err)  # two collected, one failed
    assert "2 of 3 nodes collected" in out
    assert "node3: no running kube-proxy pod" in err and "--ssh" in err
    b = read_bundle(str(tmp_path / "snap" / "node2"))
    assert b.meta["source"] == "node2" and "10.240.0.12" in b.node_ips
    assert "KUBE-SVC-OIQIZJVJK6E34BR4" in b.files["iptables-save.txt"]


@pytest.mark.netns
def test_exec_forbidden_says_which_permission(node_namespaces, tmp_path, capsys, monkeypatch):
    with StandIn({"node1": node_namespaces(0)}, forbid_exec=True) as api:
        code, out, err = _run(["collect", "--node", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                               "-o", str(tmp_path / "snap")], capsys, monkeypatch)
    assert code == 5
    assert "forbidden" in err and "pods/exec" in err


def test_no_kubeconfig_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = _run(["svc", "x/y", "--node", "node1", "--kubeconfig", str(tmp_path / "missing")], capsys, monkeypatch)
    assert code == 5 and "kubeconfig" in err


@pytest.mark.netns
def test_collect_through_the_api_saves_an_nftables_nodes_ruleset(node_namespaces, tmp_path, capsys, monkeypatch):
    require_netns("nft")
    ns = node_namespaces(0, nft=str(FIXTURES / "nft" / "overall-classic.knft"))
    with StandIn({"node1": ns}) as api:
        code, out, err = _run(["collect", "--node", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                               "-o", str(tmp_path / "snap")], capsys, monkeypatch)
        assert any("/pods/kube-proxy-node1/exec" in r and "nft" in r for r in api.requests)
    assert code == 0, err
    assert "nftables mode" in out
    b = read_bundle(str(tmp_path / "snap" / "node1"))
    assert b.meta["kube_proxy_mode"] == "nftables"
    assert "table ip kube-proxy {" in b.files["nft-ruleset.nft"] and json.loads(b.files["nft-ruleset.json"])["nftables"]
    code, out, err = _run(["packet", "--bundle", str(tmp_path / "snap" / "node1"), "--dst", "172.30.0.41:80", "--src", "10.0.1.2",
                           "-o", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert [o["dnat"] for o in json.loads(out)["outcomes"]] == ["10.180.0.1:80"]
