"""`kptrace conntrack`, and the stale counts in `svc` and `drift`, as a user runs them: exit 0 when nothing
is stale and 1 when something is, the JSON schema, the command that clears each group, a bundle's own
tables. (The tables the kernel made are checked in tests/test_stale_kernel.py.)"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import CASES, ROOT

TABLE = str(CASES / "stale" / "overall-after-rollout.conntrack")




@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_json(layout, run):
    code, out, err = run("conntrack", "--dump", f"fixtures/nft/overall-{layout}.nft", "--conntrack", TABLE,
                          "-o", "json")
    assert code == 1, err
    d = json.loads(out)
    assert d["schema"] == "kptrace/conntrack/v1" and d["entries"] == 3 and d["service_entries"] == 3
    got = {(s["protocol"], s["dst"], s["dport"], s["endpoint"], s["service"], s["blackholed"], s["line"]) for s in d["stale"]}
    assert got == {("udp", "172.30.0.52", 53, "10.180.9.9:53", "ns12/svc12:dns", True, 1),
                   ("tcp", "172.30.0.42", 80, "10.180.7.7:80", "ns2/svc2:p80", False, 3)}
    assert d["by_service"]["ns12/svc12:dns"]["commands"] == [
        "conntrack -D -p udp --orig-dst 172.30.0.52 --orig-port-dst 53 --reply-src 10.180.9.9 --reply-port-src 53"]


def test_rich_and_nothing_stale(tmp_path, run):
    code, out, err = run("conntrack", "--dump", "fixtures/nft/overall-1.37.nft", "--conntrack", TABLE)
    assert code == 1 and "2 stale entries (1 blackholed)" in out and "conntrack -D -p tcp" in out
    only_ok = tmp_path / "ok.conntrack"
    only_ok.write_text((CASES / "stale" / "overall-after-rollout.conntrack").read_text().splitlines()[1] + "\n")
    code, out, err = run("conntrack", "--dump", "fixtures/nft/overall-1.37.nft", "--conntrack", str(only_ok))
    assert code == 0 and "no stale entries" in out


def test_svc_shows_the_services_stale_entries(run):
    code, out, err = run("svc", "ns12/svc12", "--dump", "fixtures/nft/overall-classic.nft", "--conntrack", TABLE)
    assert code == 0, err
    assert "1 stale UDP entry -> 10.180.9.9:53 (1 blackholed)" in out
    code, out, err = run("svc", "ns1/svc1", "--dump", "fixtures/nft/overall-classic.nft", "--conntrack", TABLE,
                          "-o", "json")
    assert json.loads(out)["services"][0]["stale_conntrack"] == []


def test_drift_reports_stale_entries_as_findings(run):
    code, out, err = run("drift", "--dump", "fixtures/nft/overall-1.37.nft", "--cluster-state",
                          "fixtures/nft/overall.cluster.json", "--node-name", "node1", "--conntrack", TABLE, "-o", "json")
    assert code == 1, err
    f = json.loads(out)["findings"]
    assert sorted((x["kind"], x["service"], x["endpoint"]) for x in f) == [
        ("stale-conntrack", "ns12/svc12:dns", "10.180.9.9:53"), ("stale-conntrack", "ns2/svc2:p80", "10.180.7.7:80")]


def test_a_bundles_own_tables_are_read(tmp_path, run):
    b = tmp_path / "node1"
    b.mkdir()
    shutil.copy(ROOT / "fixtures/nft/overall-1.37.nft", b / "nft-ruleset.nft")
    shutil.copy(TABLE, b / "conntrack.txt")
    (b / "conntrack6.txt").write_text("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n")
    (b / "meta.json").write_text(json.dumps({"version": 1, "node": "node1", "kube_proxy_mode": "nftables"}))
    code, out, err = run("conntrack", "--bundle", str(b), "-o", "json")
    assert code == 1, err
    assert len(json.loads(out)["stale"]) == 2


@pytest.mark.parametrize("args,code", [
    (["conntrack", "--dump", "fixtures/nft/overall-1.37.nft"], 2),  # no table
    (["conntrack", "--dump", "fixtures/nft/overall-1.37.nft", "--conntrack", TABLE, "--service-cidr", "nope"], 2),
    (["conntrack", "--dump", "fixtures/nft/overall-1.37.nft", "--conntrack", "fixtures/nft/overall-1.37.nft"], 3),  # not a table
    (["drift", "--bundle", "fixtures/ipvs/bundle-node1", "--cluster-state", "fixtures/ipvs/node1.cluster.json", "--conntrack", TABLE], 2),
])
def test_errors(args, code, run):
    got, out, err = run(*args)
    assert got == code, err
    assert "Traceback" not in err


def test_a_bundle_names_its_node_for_the_cluster_state(tmp_path, run):
    b = tmp_path / "node1"
    b.mkdir()
    shutil.copy(ROOT / "fixtures/nft/overall-1.37.nft", b / "nft-ruleset.nft")
    ok = (CASES / "stale" / "overall-after-rollout.conntrack").read_text().splitlines()[1]
    (b / "conntrack.txt").write_text(ok + "\n")
    (b / "meta.json").write_text(json.dumps({"version": 1, "node": "node1", "kube_proxy_mode": "nftables"}))
    state = json.loads((ROOT / "fixtures/nft/overall.cluster.json").read_text())
    for o in state["items"]:  # the API no longer has 10.180.0.12 for ns12/svc12: the rules are behind
        if o["kind"] == "EndpointSlice" and o["metadata"]["name"].startswith("svc12"):
            o["endpoints"] = [e for e in o["endpoints"] if e["addresses"] != ["10.180.0.12"]]
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    code, out, err = run("conntrack", "--bundle", str(b), "--cluster-state", str(tmp_path / "cluster.json"),
                          "-o", "json")
    assert code == 1, err
    (s,) = json.loads(out)["stale"]
    assert s["endpoint"] == "10.180.0.12:53" and "not an endpoint of ns12/svc12:dns in the API" in s["reason"]
