"""`kptrace drift` as CI and people use it: JUnit and JSON reports, --ignore, --fail-on, bundles of many
nodes with one unreadable, YAML cluster state, errors with file:line:col, and svc's expected column."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT

from kptrace.sources.bundle import Bundle, write_bundle

MODERN = "fixtures/samples/yaobank-modern.rules"
MODERN6 = "fixtures/samples/yaobank-modern.rules6"
STATE = "fixtures/drift/yaobank/cluster.json"
STALE = "fixtures/drift/yaobank/stale-endpoint.cluster.json"
AFFINITY = "fixtures/drift/yaobank/affinity-none.cluster.json"




def test_in_sync_node_exits_0_and_says_so(run):
    code, out, _ = run("drift", "--dump", MODERN, "--dump", MODERN6, "--node-name", "node1", "--cluster-state", STATE)
    assert code == 0
    assert "node1" in out and "in sync" in out


def test_stale_endpoint_table_names_service_endpoint_and_rule(run):
    code, out, _ = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE)
    assert code == 1
    assert "stale-endpoint" in out and "yaobank/summary:http" in out and "198.19.22.130:80" in out
    assert "yaobank-modern.rules:" in out  # the evidence: file:line of the rule


def test_junit_has_a_case_per_node_and_service_port_and_fails_the_drifted_one(run, tmp_path):
    report = tmp_path / "drift.xml"
    code, _, _ = run("drift", "--dump", MODERN, "--dump", MODERN6, "--node-name", "node1", "--cluster-state", STALE,
                     "--junit", str(report))
    assert code == 1
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["kptrace drift node1"]
    cases = suites[0].findall("testcase")
    names = {c.get("name") for c in cases}
    assert "yaobank/summary:http tcp/IPv4" in names and "yaobank/summary:http tcp/IPv6" in names
    assert "kube-system/kube-dns:dns udp/IPv4" in names
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["yaobank/summary:http tcp/IPv4"]
    failure = failed[0].find("failure")
    assert failure.get("message") == "stale-endpoint"
    assert "198.19.22.130:80" in failure.text
    assert root.get("tests") == str(len(cases)) and root.get("failures") == "1"


def test_json_report_has_findings_and_expected_vs_actual_per_port(run):
    code, out, _ = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "-o", "json")
    assert code == 1
    r = json.loads(out)
    assert r["schema"] == "kptrace/drift/v1"
    [f] = r["findings"]
    assert (f["kind"], f["service"], f["endpoint"], f["node"]) == ("stale-endpoint", "yaobank/summary:http", "198.19.22.130:80", "node1")
    assert f["evidence"] and f["evidence"][0]["location"].startswith("fixtures/samples/yaobank-modern.rules:")
    port = next(p for p in r["services"] if p["service"] == "yaobank/summary:http" and p["family"] == 4)
    assert port["expected"]["endpoints"] == ["198.19.21.67:80", "198.19.21.68:80"]
    assert port["actual"]["endpoints"] == ["198.19.21.67:80", "198.19.21.68:80", "198.19.22.130:80"]
    assert r["summary"] == {"nodes": 1, "nodes_failed": 0, "findings": 1, "by_kind": {"stale-endpoint": 1}}


@pytest.mark.parametrize("pattern", ["yaobank", "yaobank/summary", "yaobank/summary:http", "yaobank/sum*"])
def test_ignore_drops_the_namespace_or_service(run, pattern):
    code, out, _ = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "--ignore", pattern, "-o", "json")
    assert code == 0
    r = json.loads(out)
    assert r["findings"] == []
    assert all(not p["service"].startswith("yaobank/summary") for p in r["services"])


def test_ignore_of_another_service_keeps_the_finding(run):
    code, _, _ = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "--ignore", "kube-system")
    assert code == 1


def test_fail_on_thresholds(run):
    args = ("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", AFFINITY)
    assert run(*args)[0] == 1  # default: any finding (affinity-mismatch is a warning)
    assert run(*args, "--fail-on", "error")[0] == 0
    assert run(*args, "--fail-on", "never")[0] == 0
    assert run(*args, "--fail-on", "stale-endpoint,affinity-mismatch")[0] == 1
    assert run(*args, "--fail-on", "stale-endpoint")[0] == 0
    code, _, err = run(*args, "--fail-on", "stale-endpoints")
    assert code == 2 and "unknown finding kind" in err


def test_yaml_cluster_state_gives_the_same_findings(run, tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(json.loads((ROOT / STALE).read_text())))
    a = json.loads(run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "-o", "json")[1])
    b = json.loads(run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", str(path), "-o", "json")[1])
    assert [(f["kind"], f["endpoint"]) for f in a["findings"]] == [(f["kind"], f["endpoint"]) for f in b["findings"]]


def test_cluster_state_from_stdin(run):
    code, out, _ = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", "-", "-o", "json",
                       stdin=(ROOT / STALE).read_text())
    assert code == 1 and json.loads(out)["findings"][0]["kind"] == "stale-endpoint"


def test_broken_cluster_state_points_at_line_and_column(run, tmp_path):
    bad = tmp_path / "cluster.json"
    bad.write_text('{"kind": "List",\n "items": [\n  {"kind": "Service", "metadata": {"name": "x"},}\n ]}\n')
    code, _, err = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", str(bad))
    assert code == 3
    assert f"{bad}:3:" in err and "not valid JSON" in err and "^" in err


def test_cluster_state_of_other_objects_is_rejected_with_a_hint(run, tmp_path):
    other = tmp_path / "pods.json"
    other.write_text(json.dumps({"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}))
    code, _, err = run("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", str(other))
    assert code == 3 and "no Services, EndpointSlices or Nodes" in err and "1 Pod" in err


def test_dump_needs_node_name(run):
    code, _, err = run("drift", "--dump", MODERN, "--cluster-state", STATE)
    assert code == 2 and "--node-name" in err


def test_unknown_node_is_a_note_not_an_error(run):
    code, out, _ = run("drift", "--dump", MODERN, "--node-name", "node9", "--cluster-state", STATE, "-o", "json")
    r = json.loads(out)
    assert any("no Node 'node9'" in n for n in r["nodes"][0]["notes"])
    # node1's local endpoints are remote for node9: its Local-policy chains hold endpoints kube-proxy on node9 would not
    assert code == 1 and any(f["kind"] in ("stale-endpoint", "reject-rule-mismatch") for f in r["findings"])


def _bundle(directory, node: str, rules: str | None) -> None:
    files = {"ip-addr.json": json.dumps([{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.240.0.11",
                                                                            "prefixlen": 24, "scope": "global"}]}])}
    if rules is not None:
        files["iptables-save.txt"] = (ROOT / rules).read_text()
    write_bundle(Bundle(files, {"node": node, "time": "2026-11-23T00:00:00Z", "kube_proxy_mode": "iptables"}), str(directory / node))


def test_directory_of_bundles_with_one_unreadable_node_reports_the_rest_and_exits_6(run, tmp_path):
    _bundle(tmp_path, "node1", MODERN)
    _bundle(tmp_path, "node2", MODERN)
    _bundle(tmp_path, "node3", None)  # no iptables-save output in it
    report = tmp_path / "drift.xml"
    code, out, _ = run("drift", "--bundle", str(tmp_path), "--cluster-state", STATE, "--junit", str(report), "-o", "json")
    assert code == 6
    r = json.loads(out)
    assert [n["node"] for n in r["nodes"]] == ["node1", "node2"]
    assert [e["node"] for e in r["errors"]] == ["node3"]
    # node2 holds node1's rules: node1's local endpoints are not local there
    assert not [f for f in r["findings"] if f["node"] == "node1"]
    assert [f for f in r["findings"] if f["node"] == "node2"]
    root = ET.parse(report).getroot()
    assert root.get("errors") == "1"
    assert {s.get("name") for s in root.findall("testsuite")} == {"kptrace drift node1", "kptrace drift node2", "kptrace drift node3"}


def test_not_a_bundle_is_a_clear_error(run, tmp_path):
    code, _, err = run("drift", "--bundle", str(tmp_path), "--cluster-state", STATE)
    assert code == 3 and "neither a node bundle nor a directory of bundles" in err


def test_svc_gains_an_expected_column_and_the_services_drift(run):
    code, out, _ = run("svc", "yaobank/summary", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE)
    assert code == 0
    assert "expected (API, as node1)" in out
    assert "✗ not expected" in out and out.count("✓ expected") == 2
    assert "stale-endpoint 198.19.22.130:80" in out


def test_svc_shows_endpoints_the_node_is_missing(run):
    code, out, _ = run("svc", "yaobank/customer", "--dump", MODERN, "--node-name", "node1", "--cluster-state",
                       "fixtures/drift/yaobank/missing-endpoint.cluster.json", "-o", "json")
    v = json.loads(out)["services"][0]
    assert v["expected"]["endpoints"] == ["198.19.22.129:80", "198.19.22.150:80"]
    assert [f["kind"] for f in v["expected"]["findings"]] == ["missing-endpoint"]


def test_svc_strict_fails_on_drift(run):
    code, _, _ = run("svc", "yaobank/summary", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "--strict")
    assert code == 1
