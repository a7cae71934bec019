"""The commands as a user runs them: output, JSON schema, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import CASES, ROOT

from kptrace.cli.main import main
from kptrace.errors import EXIT_CODES

YAOBANK = "fixtures/samples/yaobank.rules"
MODERN = "fixtures/samples/yaobank-modern.rules"
BOOTCAMP = "fixtures/samples/bootcamp.rules"
UPSTREAM = "fixtures/upstream/TestOverallIPTablesRules.iptables-save"


@pytest.fixture
def run(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")

    def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(stdin.encode())})())
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return _run


def test_svc_yaobank_summary_shows_both_endpoints_with_half_each(run):
    code, out, _ = run("svc", "yaobank/summary", "--dump", YAOBANK, "--node-ip", "10.240.0.11")
    assert code == 0
    assert "yaobank/summary:http" in out
    assert "198.19.21.67:80" in out and "198.19.22.130:80" in out
    assert out.count("1/2 (50.00%)") >= 2
    assert "source outside the pod CIDR 198.19.16.0/20" in out  # why the node's connections are masqueraded


def test_svc_json_schema(run):
    code, out, _ = run("svc", "yaobank/frontend", "--dump", MODERN, "--node-ip", "10.240.0.11", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "kptrace/service/v1"
    (svc,) = doc["services"]
    assert svc["traffic_policy"] == {"internal": "Cluster", "external": "Local"}
    assert svc["source_ranges"] == ["198.51.100.0/24"]
    kinds = {e["kind"] for e in svc["entry_points"]}
    assert {"ClusterIP", "LoadBalancerIP", "NodePort", "HealthCheckNodePort"} <= kinds
    local = [e for e in svc["endpoints"] if e["local"]]
    assert [e["address"] for e in local] == ["198.19.21.70:8080"]
    for t in svc["traces"]:
        assert abs(sum(o["probability"] for o in t["outcomes"]) - 1) < 1e-12


def test_svc_finds_the_service_by_cluster_ip_and_by_chain(run):
    for query in ("198.19.40.210:80", "198.19.40.210", "KUBE-SVC-OIQIZJVJK6E34BR4", "KUBE-SEP-SM7K3SBPDNHJZKFW"):
        code, out, _ = run("svc", query, "--dump", MODERN, "-o", "json")
        assert code == 0, query
        assert [s["name"] for s in json.loads(out)["services"]] == ["yaobank/summary:http"], query


def test_svc_reports_affinity_and_equal_thirds(run):
    code, out, _ = run("svc", "yaobank/summary", "--dump", MODERN, "--node-ip", "10.240.0.11", "-o", "json")
    svc = json.loads(out)["services"][0]
    assert svc["session_affinity"] == {"timeout_seconds": 10800}
    assert [e["share"] for e in svc["endpoints"]] == ["1/3", "1/3", "1/3"]
    assert svc["warnings"] == []


def test_svc_without_comments_is_found_by_hash(run, tmp_path):
    text = (ROOT / MODERN).read_text()
    stripped = re.sub(r' -m comment --comment "[^"]*"', "", text)
    assert "--comment" not in stripped
    dump = tmp_path / "nocomments.rules"
    dump.write_text(stripped)
    code, out, _ = run("svc", "yaobank/summary:http", "--dump", str(dump), "-o", "json")
    assert code == 0
    svc = json.loads(out)["services"][0]
    assert svc["name"] == "yaobank/summary:http"
    assert sorted(e["address"] for e in svc["endpoints"]) == ["198.19.21.67:80", "198.19.21.68:80", "198.19.22.130:80"]
    # Without the port name there is nothing to hash: a clear not-found with the way out.
    code, _, err = run("svc", "yaobank/summary", "--dump", str(dump))
    assert code == 4
    assert "yaobank/summary:PORTNAME" in err


def test_svc_warns_about_unequal_shares(run):
    code, out, _ = run("svc", "ns1/web", "--dump", str(CASES / "svc" / "unequal-shares.rules"), "-o", "json")
    (w,) = json.loads(out)["services"][0]["warnings"]
    assert "unequal shares" in w and "90.0%" in w
    code, _, _ = run("svc", "ns1/web", "--dump", str(CASES / "svc" / "unequal-shares.rules"), "--strict")
    assert code == 1


def test_svc_warns_about_duplicates_and_shadowed_rules(run):
    code, out, _ = run("svc", "ns1/web", "--dump", str(CASES / "svc" / "duplicate-endpoint-and-shadowed-rule.rules"), "-o", "json")
    warnings = json.loads(out)["services"][0]["warnings"]
    assert any("10.1.0.1:8080 is listed 2 times" in w for w in warnings)
    assert any("rule 2" in w and "can never match" in w for w in warnings)


def test_svc_no_endpoints_reject(run):
    code, out, _ = run("svc", "yaobank/legacy", "--dump", MODERN, "--node-ip", "10.240.0.11")
    assert code == 0
    assert "REJECT" in out and "has no endpoints" in out


def test_packet_json_schema_and_probabilities(run):
    code, out, _ = run("packet", "--dump", BOOTCAMP, "--dst", "10.106.224.41:8080", "--node-ip", "192.168.193.172",
                       "--from", "node", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "kptrace/trace/v1"
    outcomes = doc["outcomes"]
    assert len(outcomes) == 3
    assert abs(sum(o["probability"] for o in outcomes) - 1) < 1e-12
    for o in outcomes:
        assert set(o) >= {"probability", "verdict", "dnat", "snat", "masquerade", "path"}
        assert o["masquerade"] is True and o["snat"] == "MASQUERADE" and o["verdict"] == "ACCEPT"
        for step in o["path"]:
            assert set(step) >= {"table", "chain", "rule", "text"}
            assert step["rule"] is None or step["rule"] >= 1
        assert any(s["chain"] == "KUBE-SVC-RPP7DHNHMGOIIFDC" for s in o["path"])
        assert o["path"][-1]["text"].endswith("-j MASQUERADE")


def test_packet_from_stdin(run):
    code, out, _ = run("packet", "--dump", "-", "--dst", "10.106.224.41:8080", "-o", "json", stdin=(ROOT / BOOTCAMP).read_text())
    assert code == 0
    assert len(json.loads(out)["outcomes"]) == 3


def test_packet_nodeport_needs_node_ip_or_says_assumed(run):
    code, out, _ = run("packet", "--dump", YAOBANK, "--dst", "10.240.0.11:30180", "--from", "external", "-o", "json")
    doc = json.loads(out)
    (o,) = doc["outcomes"]
    assert o["dnat"] == "198.19.22.129:80"
    assert o["assumed"] and any("--node-ip" in a for a in o["assumptions"])
    code, out, _ = run("packet", "--dump", YAOBANK, "--dst", "10.240.0.11:30180", "--from", "external", "-o", "json",
                       "--node-ip", "10.240.0.11")
    (o,) = json.loads(out)["outcomes"]
    assert o["dnat"] == "198.19.22.129:80" and not any("--node-ip" in a for a in o["assumptions"])


def test_packet_restore_input_says_jumps_were_assumed(run):
    code, out, _ = run("packet", "--dump", UPSTREAM, "--dst", "172.30.0.41:80", "-o", "json")
    doc = json.loads(out)
    assert any("standard jumps" in n for n in doc["notes"])
    (o,) = doc["outcomes"]
    assert o["path"][0]["synthetic"] is True


def test_packet_partial_dump_says_which_chain_it_needs(run):
    code, out, _ = run("packet", "--dump", "fixtures/upstream/TestSyncProxyRulesRepeated-3.iptables-save",
                       "--dst", "172.30.0.41:80", "-o", "json")
    (o,) = json.loads(out)["outcomes"]
    assert o["verdict"] == "INCOMPLETE"
    assert "KUBE-SVC-XPGD46QRK7WJZT7O, which is not in this input" in o["reason"]


@pytest.mark.parametrize("args,code,needle", [
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1"], 2, "has no port"),
    (["packet", "--dump", YAOBANK, "--dst", "nonsense:80"], 2, "not IP:PORT"),
    (["packet", "--dst", "10.0.0.1:80"], 2, "--dump"),
    (["packet", "--dump", "no/such/file", "--dst", "10.0.0.1:80"], 3, "no such file"),
    (["packet", "--dump", YAOBANK, "--dst", "[2001:db8::1]:80"], 4, "no IPv6 rules"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--node-ip", "node1"], 2, "not an IP address"),
    # issue 12: command-line values are usage errors (2), checked before any input is read
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--node-ip", "nope"], 2, "not an IP address"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--proto", "foo"], 2, "'foo' is not one of tcp, udp, sctp"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--proto", "icmp"], 2, "ICMP has no ports"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--max-size", "10Q"], 2, "is not a size"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--max-size", "nanM"], 2, "is not a size"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:99999"], 2, "port 99999 is out of range"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:0"], 2, "port 0 is out of range"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:-1"], 2, "out of range"),
    (["packet", "--dump", YAOBANK, "--dst", "[2001:db8::1]:70000"], 2, "port 70000 is out of range"),
    (["svc", "ns/x", "--dump", YAOBANK, "--node-ip", "nope"], 2, "not an IP address"),
    (["parse", YAOBANK, "--max-size", "-5"], 2, "is not a size"),
    (["packet", "--dump", YAOBANK, "--ipvs", YAOBANK, "--dst", "10.0.0.1:80"], 3, "given as an `ipvsadm` listing, but this is iptables-save"),
    (["svc", "nope/nothing", "--dump", YAOBANK], 4, "no rules for nope/nothing"),
    (["svc", "not a query", "--dump", YAOBANK], 2, "not a Service name"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80", "--graph", "-", "-o", "json"], 2, "writes the graph to stdout"),
    (["packet", "--dump", YAOBANK, "--ipvs", "fixtures", "--dst", "10.0.0.1:80"], 3, "pass the ipvsadm -Ln output file"),
    (["packet", "--dump", "-", "--dump", "-", "--dst", "10.0.0.1:80"], 2, "can be read only once"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:+8080"], 2, "is not IP:PORT"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:80_80"], 2, "is not IP:PORT"),
    (["packet", "--dump", YAOBANK, "--dst", "10.0.0.1:\uff18\uff10"], 2, "is not IP:PORT"),
    (["packet", "--dump", YAOBANK, "--dst", "198.19.40.210:80", "--affinity", "garbage"], 2, "neither IP:PORT nor a KUBE-SEP-"),
    (["packet", "--dump", YAOBANK, "--dst", "198.19.40.210:80", "--affinity", "10.9.9.9:80"], 4, "no endpoint chain DNATs to it"),
    (["packet", "--dump", "tests/cases/parse/errors/missing-commit.rules", "--dst", "10.96.0.1:443"], 3, "has no COMMIT"),
])
def test_bad_input_is_a_clear_error(run, args, code, needle):
    got, out, err = run(*args)
    assert got == code, (out, err)
    assert needle in out + err


def test_lenient_traces_a_truncated_dump(run):
    code, out, err = run("packet", "--dump", "tests/cases/parse/errors/missing-commit.rules", "--dst", "10.96.0.1:443", "--lenient", "-o", "json")
    assert code == 0
    assert "has no COMMIT" in err
    assert json.loads(out)["outcomes"][0]["verdict"] == "ACCEPT"


def test_help_documents_every_exit_code(run):
    code, out, _ = run("--help")
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())
    for c, text in EXIT_CODES.items():
        assert f"{c} {text[:30]}" in flat, c


def test_docs_document_the_exit_codes():
    page = (ROOT / "docs/exit-codes.md").read_text()
    for c, text in EXIT_CODES.items():
        assert re.search(rf"^\| {c} \| {re.escape(text)} \|$", page, re.M), f"docs/exit-codes.md lacks exit code {c}"


def test_cli_start_does_not_import_heavy_modules():
    code = ("import sys, kptrace.cli.main as m; "
            "bad = [x for x in ('kubernetes', 'paramiko', 'pyparsing') if x in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api():
    import kptrace

    for name in kptrace.__all__:
        assert getattr(kptrace, name) is not None, name


def test_verify_show_normalised_makes_restore_input_loadable(run):
    code, out, err = run("verify", "--dump", UPSTREAM, "--show-normalised", "--node-ip", "192.168.0.2")
    assert code == 0
    assert ":PREROUTING ACCEPT [0:0]" in out and ":POSTROUTING ACCEPT [0:0]" in out  # built-in chains written out
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in out  # assumed jump
    assert '--comment "ns1/svc1:p80"' in out  # kube-proxy's unquoted comments quoted
    assert out.count("COMMIT") == 2


def test_verify_without_root_says_so(run, monkeypatch):
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = run("verify", "--dump", BOOTCAMP, "--dst", "10.106.224.41:8080")
    assert code == 5
    assert "needs root" in err


@pytest.mark.parametrize("args,code,needle", [
    # Defects the hypothesis suite found (tests/test_properties.py keeps them as examples too): each used to exit 70.
    (["packet", "--dump", "tests/cases/semantic/ipvs-ipv6-real-server.ipvsadm", "--dst", "10.0.0.50:80", "--src", "10.1.1.1"],
     0, "is IPv6 behind the IPv4 virtual service"),
    (["svc", "KUBE-SVC-AAAAAAAAAAAAAAAA", "--dump", "tests/cases/semantic/bad-service-address.rules", "--lenient"],
     0, "is not an address: not traced"),
    (["packet", "--dump", "tests/cases/semantic/connmark-non-ascii-digit.rules", "--dst", "10.0.0.1:80", "--lenient"],
     0, "not understood"),
    (["packet", "--dump", "tests/cases/semantic/connmark-non-ascii-digit.rules", "--dst", "10.0.0.1:80"],
     3, "is not a mark"),
    (["parse", "tests/cases/semantic/comment-starting-with-dash.rules"], 0, "no problems"),
])
def test_found_by_the_property_suite(run, args, code, needle):
    got, out, err = run(*args)
    assert got == code, (out, err)
    assert needle in out + err, (out, err)


def test_without_node_ip_a_destination_is_the_nodes_only_on_a_nodeport(run):
    """No --node-ip: 203.0.113.9:30180 (yaobank/customer's NodePort) is taken for the node's own address and is
    DNATed to the Service; 8.8.8.8:53 (no NodePort has 53) is a pod going out. Both say what they assumed."""
    code, out, err = run("packet", "--dump", YAOBANK, "--dst", "203.0.113.9:30180", "-o", "json")
    d = json.loads(out)
    assert code == 0 and all(o["dnat"] for o in d["outcomes"]), d["outcomes"]
    assert any("203.0.113.9 assumed to be a node address" in a for o in d["outcomes"] for a in o["assumptions"])
    code, out, err = run("packet", "--dump", YAOBANK, "--dst", "8.8.8.8:53", "--proto", "udp", "-o", "json")
    d = json.loads(out)
    assert code == 0 and [o["delivery"] for o in d["outcomes"]] == ["forward"], d["outcomes"]
    assert any("8.8.8.8 assumed not to be a node address" in a for o in d["outcomes"] for a in o["assumptions"])
