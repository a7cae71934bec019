"""`kptrace drift` in nftables mode: every form of every nft fixture (knftables text, `nft list ruleset`
with and without handles, `nft -j`, with counters, mixed with iptables-nft tables) is in sync with the
cluster it was made from (fixtures/nft/*.cluster.json, written by make_nft.py from the same Service
list), and the findings' evidence points at the map element or rule that programs it. The drift
scenarios (a changed cluster, unchanged rules) are tests/cases/drift/nft-*.toml."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

NFT = ROOT / "fixtures" / "nft"
FORMS = sorted(p for p in NFT.iterdir() if p.suffix in (".nft", ".knft", ".json") and not p.name.endswith(".cluster.json"))




@pytest.mark.parametrize("path", FORMS, ids=[p.name for p in FORMS])
def test_every_form_is_in_sync_with_its_cluster(path, run):
    kind = path.name.split("-", 1)[0]
    kind = "overall" if kind == "mixed" else kind
    code, out, err = run("drift", "--dump", str(path.relative_to(ROOT)), "--cluster-state",
                          f"fixtures/nft/{kind}.cluster.json", "--node-name", "node1", "-o", "json")
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["findings"] == [], report["findings"]
    assert code == 0
    # every Service port of the cluster was compared, with the node's endpoints read from the ruleset
    cluster = json.loads((NFT / f"{kind}.cluster.json").read_text())
    n_ports = sum(len(o["spec"]["ports"]) * len(o["spec"]["clusterIPs"]) for o in cluster["items"] if o["kind"] == "Service")
    assert report["nodes"][0]["ports_checked"] == n_ports
    services = report["services"]
    assert len(services) == n_ports
    with_eps = [s for s in services if s["expected"]["endpoints"]]
    assert with_eps and all(sorted(s["expected"]["endpoints"]) == sorted(s["actual"]["endpoints"]) for s in with_eps)
    local = [s for s in services if s["expected"]["local_endpoints"]]
    assert bool(local) or kind == "dualstack"
    assert all(sorted(s["expected"]["local_endpoints"]) == sorted(s["actual"]["local_endpoints"]) for s in local)


def test_evidence_points_at_the_map_element(run):
    code, out, err = run("drift", "--dump", "fixtures/nft/overall-1.37.nft", "--cluster-state",
                          "fixtures/nft/drift/stale-service.cluster.json", "--node-name", "node1", "-o", "json")
    assert code == 1, err
    f = json.loads(out)["findings"][0]
    ev = {e["location"]: e["text"] for e in f["evidence"]}
    lines = (NFT / "overall-1.37.nft").read_text().splitlines()
    for loc, text in ev.items():
        n = int(loc.rsplit(":", 1)[1])
        key = text.split("{ ", 1)[1].split(" :", 1)[0]
        assert key in lines[n - 1], (loc, text, lines[n - 1])
    assert any("172.30.0.50 . tcp . 80" in t for t in ev.values())


def test_junit_output_in_nftables_mode(tmp_path, run):
    junit = tmp_path / "drift.xml"
    code, out, err = run("drift", "--dump", "fixtures/nft/overall-classic.knft", "--cluster-state",
                          "fixtures/nft/drift/stale-endpoint.cluster.json", "--node-name", "node1", "--junit", str(junit))
    assert code == 1, err
    import xml.etree.ElementTree as ET

    root = ET.fromstring(junit.read_text())
    failures = [f for f in root.iter("failure")]
    assert len(failures) == 1 and "10.180.1.2:80" in failures[0].get("message", "") + (failures[0].text or "")
