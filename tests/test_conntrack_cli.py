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


@pytest.mark.parametrize("name", ["crlf-elided", "prompt-stats", "xml-cut"])
def test_what_reading_a_pasted_table_found_is_in_the_report(name, run):
    """A paste's elisions and a count that does not add up make a partial table: `conntrack` says so (the notes the
    fixture's .expect.toml lists), in the text and in the JSON, whatever it found stale."""
    import tomllib

    pasted = ROOT / "fixtures" / "conntrack" / "pasted"
    expect = tomllib.loads((pasted / f"{name}.expect.toml").read_text())
    path = next(p for p in pasted.iterdir() if p.stem == name and p.suffix != ".toml")
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(path), "-o", "json")
    notes = json.loads(out)["notes"]
    assert expect["notes"], name
    for want in expect["notes"]:
        assert any(want in n for n in notes), (want, notes)
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(path))
    for want in expect["notes"]:
        assert want in out + err, (want, out, err)


def test_lines_a_lenient_reading_skipped_are_reported(tmp_path, run):
    cut = tmp_path / "cut.conntrack"
    cut.write_text((ROOT / "fixtures" / "conntrack" / "stale" / "node.conntrack").read_text()[:3000])  # ends mid-line
    last = len(cut.read_text().splitlines())
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(cut))
    assert code == 3 and f"cut.conntrack:{last}:" in err
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(cut), "--lenient", "-o", "json")
    notes = json.loads(out)["notes"]
    assert any("1 line skipped" in n and f"line {last}," in n for n in notes), notes


def test_an_empty_table_is_said_and_a_binary_one_is_one_error(tmp_path, run):
    empty = tmp_path / "empty.conntrack"
    empty.write_text("")
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(empty))
    assert code == 0 and "0 read" in out and "no entries at all" in out + err
    binary = tmp_path / "table.bin"
    binary.write_bytes(b"tcp 6 " + bytes(range(256)) * 8)
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(binary))
    assert code == 3 and err.count("error:") == 1 and "binary data (a NUL byte)" in err, err
    corrupt = tmp_path / "table.gz"  # a .gz is read through gzip: one that is not gzip is said so
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", str(corrupt))
    assert code == 3 and "cannot be read as gzip" in err and "internal error" not in err, err


def test_closed_connections_are_counted_apart(run):
    """TIME_WAIT and CLOSE entries to Service entry points are not checked (the next SYN replaces them); the report
    says how many, so the count of entries to entry points does not silently leave them out."""
    table = ROOT / "fixtures" / "conntrack" / "ipt-overall.conntrack"
    closed = sum(1 for line in table.read_text().splitlines() if line.startswith("tcp") and line.split()[3] in ("TIME_WAIT", "CLOSE"))
    assert closed
    code, out, err = run("conntrack", "--dump", "fixtures/nft/migration/overall.iptables-save", "--conntrack", str(table),
                          "--node-ip", "192.168.0.2", "-o", "json")
    d = json.loads(out)
    assert any(n.startswith(f"{closed} closed TCP connection") for n in d["notes"]), d["notes"]


def test_stdin_twice_is_a_usage_error(run):
    code, out, err = run("conntrack", "--dump", "fixtures/conntrack/stale/node.nft", "--conntrack", "-", "--conntrack", "-")
    assert code == 2 and "once" in err
