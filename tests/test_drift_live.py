"""`kptrace drift` and `svc --node-name` against the live API: the real `kubernetes` client talks to the
stand-in API server (tests/kubeapi_standin.py) serving recorded Services, EndpointSlices and Nodes, and,
for --all-nodes, execs the bundle commands in network namespaces holding the sample's rules."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT, require_netns
from kubeapi_standin import StandIn

MODERN = "fixtures/samples/yaobank-modern.rules"
STATE = ROOT / "fixtures/drift/yaobank/cluster.json"
STALE = ROOT / "fixtures/drift/yaobank/stale-endpoint.cluster.json"


def _objects(path) -> list[dict]:
    return json.loads(path.read_text())["items"]




def test_live_api_in_sync(run, tmp_path):
    with StandIn(objects=_objects(STATE)) as api:
        code, out, err = run("drift", "--dump", MODERN, "--node-name", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                             "-o", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["findings"] == [] and r["cluster_state"] == "the Kubernetes API"
    assert len(r["services"]) == 13
    # read-only lists, nothing else
    assert {p.split("?")[0] for p in api.requests} == {"/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/nodes"}


def test_live_api_stale_endpoint_across_pages(run, tmp_path):
    with StandIn(objects=_objects(STALE)) as api:
        code, out, err = run("drift", "--dump", MODERN, "--node-name", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"),
                             "-o", "json")
    assert code == 1, err
    [f] = json.loads(out)["findings"]
    assert (f["kind"], f["service"], f["endpoint"]) == ("stale-endpoint", "yaobank/summary:http", "198.19.22.130:80")


def test_live_api_forbidden_is_a_clear_error(run, tmp_path):
    with StandIn(objects=_objects(STATE)) as api:
        api.fail("/apis/discovery.k8s.io/v1/endpointslices", 403)
        code, _, err = run("drift", "--dump", MODERN, "--node-name", "node1", "--kubeconfig", api.kubeconfig(tmp_path / "kc"))
    assert code == 5
    assert "endpointslices" in err and "rbac.yaml" in err


def test_svc_node_name_uses_the_live_api(run, tmp_path):
    with StandIn(objects=_objects(STALE)) as api:
        code, out, err = run("svc", "yaobank/summary", "--dump", MODERN, "--node-name", "node1",
                             "--kubeconfig", api.kubeconfig(tmp_path / "kc"), "-o", "json")
    assert code == 0, err
    v = json.loads(out)["services"][0]
    assert v["expected"]["endpoints"] == ["198.19.21.67:80", "198.19.21.68:80"]
    assert [f["kind"] for f in v["expected"]["findings"]] == ["stale-endpoint"]


@pytest.fixture
def modern_nodes():
    require_netns("iptables-nft-restore", "nfacct")
    names = []

    def make(i: int) -> str:
        ns = f"kpt-dnode-{os.getpid()}-{i}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        names.append(ns)
        for argv in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                     ["ip", "addr", "add", f"10.240.0.{11 + i}/24", "dev", "eth0"],
                     ["nfacct", "add", "localhost_nps_accepted_pkts"], ["nfacct", "add", "ct_state_invalid_dropped_pkts"]):
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)
        subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-restore"], input=(ROOT / MODERN).read_text(), text=True, check=True)
        return ns

    yield make
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.netns
def test_all_nodes_collects_through_kube_proxy_pods_and_checks_each(run, tmp_path, modern_nodes):
    # node1 holds node1's rules (in sync); node2 holds node1's rules too (drift: node1's local endpoints are not local
    # there); node3 has no kube-proxy pod (reported, the others still checked: exit 6)
    objects = _objects(STATE)
    objects.append({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node3"}})
    with StandIn({"node1": modern_nodes(0), "node2": modern_nodes(1), "node3": None}, objects=objects,
                 missing_tools={"ipvsadm", "ipvsadm-save", "ipset", "nft"}) as api:
        junit = tmp_path / "drift.xml"
        code, out, err = run("drift", "--all-nodes", "--kubeconfig", api.kubeconfig(tmp_path / "kc"), "--junit", str(junit),
                             "-o", "json")
    assert code == 6, err
    r = json.loads(out)
    assert sorted(n["node"] for n in r["nodes"]) == ["node1", "node2"]
    assert [e["node"] for e in r["errors"]] == ["node3"] and "kube-proxy" in r["errors"][0]["message"]
    assert not [f for f in r["findings"] if f["node"] == "node1"]
    assert [f for f in r["findings"] if f["node"] == "node2"]
    assert 'errors="1"' in junit.read_text()
