"""`kptrace diff`: behaviour, not text. The same cluster written differently (kube-proxy's two nftables
layouts, every form of a ruleset, an iptables dump without comments) is no change; an edit that changes
where connections go is reported for exactly the entry points and origins it affects, with the rule on each
side; the JSON has the documented schema; exit codes 0/1/2."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from kptrace.checks.diff import diff_dataplanes
from kptrace.load import load_dumps

NFT = ROOT / "fixtures" / "nft"




@pytest.mark.parametrize("scenario", ["overall", "ipv6", "dualstack"])
@pytest.mark.parametrize("form", [".nft", ".knft", ".json", ".handles.nft"])
def test_the_two_nftables_layouts_of_one_cluster_behave_alike(scenario, form):
    before = load_dumps([str(NFT / f"{scenario}-classic.nft")])
    after = load_dumps([str(NFT / f"{scenario}-1.37{form}")])
    r = diff_dataplanes(before, after)
    assert r.changes == [], [(c.probe, c.cause) for c in r.changes]
    assert r.compared > 20 and r.unchanged == r.compared


def test_an_iptables_dump_without_comments_behaves_like_the_commented_one():
    before = load_dumps([str(ROOT / "fixtures/samples/yaobank-modern.rules")], node_ips=["192.168.0.2"])
    after = load_dumps([str(ROOT / "fixtures/drift/yaobank/no-comments.rules")], node_ips=["192.168.0.2"])
    r = diff_dataplanes(before, after)
    assert r.changes == [] and r.compared > 20


def _without_endpoint(tmp_path, layout: str):
    """overall-LAYOUT.nft with ns2/svc2's second endpoint taken out of its numgen (as kube-proxy would write it)."""
    text = (NFT / f"overall-{layout}.nft").read_text()
    if layout == "classic":
        old = ("numgen random mod 2 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80, "
               "1 : goto endpoint-CWKA3H5Q-ns2/svc2/tcp/p80__10.180.1.2/80 }")
        new = "numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }"
    else:
        old = "meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.180.0.2 . 80, 1 : 10.180.1.2 . 80 }"
        new = "meta l4proto tcp dnat to 10.180.0.2:80"
    assert old in text
    line = text[:text.index(old)].count("\n") + 1
    path = tmp_path / f"after-{layout}.nft"
    path.write_text(text.replace(old, new))
    return path, line


@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_a_removed_endpoint_is_reported_where_it_changes_behaviour(layout, tmp_path, run):
    after, line = _without_endpoint(tmp_path, layout)
    code, out, err = run("diff", f"fixtures/nft/overall-{layout}.nft", str(after), "-o", "json")
    assert code == 1, err
    d = json.loads(out)
    assert d["schema"] == "kptrace/diff/v1"
    got = sorted((c["service"], c["dst"], c["protocol"], c["origin"]) for c in d["changes"])
    assert got == [("ns2/svc2:p80", "172.30.0.42:80", "tcp", "node"), ("ns2/svc2:p80", "172.30.0.42:80", "tcp", "pod")]
    for c in d["changes"]:
        before = {o["endpoint"]: o["share"] for o in c["before"]["outcomes"]}
        after_ = {o["endpoint"]: o["share"] for o in c["after"]["outcomes"]}
        assert before == {"10.180.0.2:80": "1/2", "10.180.1.2:80": "1/2"} and after_ == {"10.180.0.2:80": "1/1"}
        assert c["cause"]["summary"] == "no longer sent to 10.180.1.2:80"
        assert c["cause"]["after_rule"] == f"{after}:{line}"
    assert d["unchanged"] == d["comparisons"][0]["compared"] - 2


def test_rich_output_names_the_service_and_both_sides(tmp_path, monkeypatch, run):
    after, _ = _without_endpoint(tmp_path, "classic")
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run("diff", "fixtures/nft/overall-classic.nft", str(after))
    assert code == 1
    assert re.search(r"2 changes \(1 Service port\)", out)
    assert "ns2/svc2:p80" in out and "no longer sent to 10.180.1.2:80" in out


def test_junit(tmp_path, run):
    after, _ = _without_endpoint(tmp_path, "1.37")
    junit = tmp_path / "diff.xml"
    code, out, err = run("diff", "--before", "fixtures/nft/overall-1.37.nft", "--after", str(after),
                          "--junit", str(junit))
    assert code == 1
    import xml.etree.ElementTree as ET

    root = ET.fromstring(junit.read_text())
    assert int(root.get("failures")) == 2 and len(list(root.iter("failure"))) == 2


@pytest.mark.parametrize("args", [["fixtures/nft/overall-1.37.nft"], ["--before", "fixtures/nft/overall-1.37.nft"],
                                  ["a", "b", "c"]])
def test_usage_errors(args, run):
    code, out, err = run("diff", *args)
    assert code == 2 and "Traceback" not in err


def test_the_shortcut_traces_a_sample_and_agrees_with_full(tmp_path):
    """With equal surroundings, ports whose programmed facts are equal are not traced (a sample is): the
    changes found are the same as with every entry point traced."""
    after, _ = _without_endpoint(tmp_path, "classic")
    before = load_dumps([str(NFT / "overall-classic.nft")])
    a = load_dumps([str(after)])
    quick = diff_dataplanes(before, a, sample=4)
    full = diff_dataplanes(before, a, full=True)
    assert quick.traced < full.traced == full.compared
    assert [(c.probe, c.cause) for c in quick.changes] == [(c.probe, c.cause) for c in full.changes]


@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_a_migration_from_iptables_to_nftables(layout, run):
    """The same cluster in iptables mode (fixtures/nft/migration, made by make_migration.py from make_nft's
    Service list) and in nftables mode: every Service entry point behaves alike; the three known differences
    between the modes are reported, each with its one-line explanation."""
    code, out, err = run("diff", "fixtures/nft/migration/overall.iptables-save",
                          f"fixtures/nft/overall-{layout}.nft", "--node-ip", "192.168.0.2", "-o", "json")
    assert code == 1, err
    d = json.loads(out)
    assert all(c["probe"] for c in d["changes"]), [c for c in d["changes"] if not c["probe"]]
    got = {c["probe"]: (c["dst"], c["origin"], [o["verdict"] for o in c["after"]["outcomes"]], c["cause"]["explanation"])
           for c in d["changes"]}
    assert set(got) == {"unused-port", "unallocated", "localhost-nodeport"}
    assert got["unused-port"][2] == ["REJECT"] and "cluster-ips-check" in got["unused-port"][3]
    assert got["unallocated"][2] == ["DROP"] and got["unallocated"][0].startswith("172.30.")
    assert got["localhost-nodeport"][0] == "127.0.0.1:3004" and "route_localnet" in got["localhost-nodeport"][3]
    before = next(c for c in d["changes"] if c["probe"] == "localhost-nodeport")["before"]["outcomes"]
    assert {o["endpoint"] for o in before} == {"10.180.0.4:80", "10.180.1.4:80"}


IPVS = ["fixtures/ipvs/node1.ipvsadm", "fixtures/ipvs/node1.ipset-save", "fixtures/ipvs/node1.rules"]


def test_ipvs_forms_of_one_node_behave_alike(run):
    args = ["diff", "--node-ip", "192.168.0.2", "-o", "json"]
    args += [x for f in IPVS for x in ("--before", f)]
    args += [x for f in ("fixtures/ipvs/node1.ipvsadm-save", "fixtures/ipvs/node1.ipset-list", "fixtures/ipvs/node1.rules")
             for x in ("--after", f)]
    code, out, err = run(*args)
    d = json.loads(out)
    assert code == 0 and d["changes"] == [] and d["comparisons"][0]["compared"] > 20, err


def test_ipvs_real_server_removed(tmp_path, run):
    text = (ROOT / "fixtures/ipvs/node1.ipvsadm").read_text()
    gone = next(line for line in text.splitlines() if "10.244.2.12:80" in line)
    after = tmp_path / "node1-after.ipvsadm"
    after.write_text(text.replace(gone + "\n", ""))
    args = ["diff", "--node-ip", "192.168.0.2", "-o", "json"] + [x for f in IPVS for x in ("--before", f)]
    args += ["--after", str(after), "--after", IPVS[1], "--after", IPVS[2]]
    code, out, err = run(*args)
    assert code == 1, err
    d = json.loads(out)
    # IPVS does not say which virtual service is a ClusterIP (the cluster state would): traced from outside too
    assert {(c["dst"], c["origin"]) for c in d["changes"]} == {("10.96.5.20:80", o) for o in ("pod", "node", "external")}
    assert all(c["cause"]["summary"] == "no longer sent to 10.244.2.12:80" for c in d["changes"])


@pytest.mark.parametrize("before,after", [
    ("fixtures/samples/yaobank-modern.rules", "fixtures/drift/yaobank/topology-zone-a.rules"),
    ("fixtures/nft/overall-classic.nft", None),  # None: the endpoint-removed edit
    ("fixtures/nft/overall-1.37.knft", "fixtures/nft/overall-1.37.knft"),
])
def test_two_texts_of_one_mode_trace_only_what_changed_and_agree_with_full(before, after, tmp_path):
    """Line by line, only the ports whose own lines differ are traced: the changes are those of --full."""
    from kptrace.checks.textdelta import changed_ports, port_count

    b = load_dumps([str(ROOT / before)], node_ips=["192.168.0.2"])
    a_path = _without_endpoint(tmp_path, "classic")[0] if after is None else ROOT / after
    a = load_dumps([str(a_path)], node_ips=["192.168.0.2"])
    ports = changed_ports(b, a)
    assert ports is not None
    quick = diff_dataplanes(b, a)
    full = diff_dataplanes(b, a, full=True)
    assert [(c.probe, c.cause) for c in quick.changes] == [(c.probe, c.cause) for c in full.changes]
    assert quick.identical == port_count(b) - len(ports) > 0 and quick.traced < full.traced
    assert len(ports) == len({c.service for c in full.changes})  # each edit changed one port's behaviour


def test_a_changed_line_outside_the_services_turns_the_text_shortcut_off(tmp_path):
    from kptrace.checks.textdelta import changed_ports

    text = (NFT / "overall-classic.nft").read_text()
    path = tmp_path / "masq-all.nft"
    path.write_text(text.replace("meta mark & 0x00004000 == 0x00000000 return", "meta mark & 0x00000000 == 0x00000000 return"))
    b = load_dumps([str(NFT / "overall-classic.nft")])
    a = load_dumps([str(path)])
    assert changed_ports(b, a) is None
    r = diff_dataplanes(b, a)
    assert r.changes and r.traced == r.compared  # every entry point traced: the masquerading chain changed for all


def _bundle(directory, name: str, nft_text: str) -> None:
    import json as _json

    d = directory / name
    d.mkdir()
    (d / "nft-ruleset.nft").write_text(nft_text)
    (d / "ip-addr.json").write_text(_json.dumps([{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.168.0.2",
                                                                                    "prefixlen": 24, "scope": "global"}]}]))
    (d / "meta.json").write_text(_json.dumps({"version": 1, "node": name, "kube_proxy_mode": "nftables"}))


def test_nodes_against_the_majority(tmp_path, run):
    """Three nodes alike and one that lost an endpoint, and one unreadable bundle: the odd node is named with
    what differs, the unreadable one is reported, exit 1."""
    good = (NFT / "overall-classic.nft").read_text()
    odd, _ = _without_endpoint(tmp_path, "classic")
    nodes = tmp_path / "snap"
    nodes.mkdir()
    for n in ("node-a", "node-c", "node-d"):
        _bundle(nodes, n, good)
    _bundle(nodes, "node-b", odd.read_text())
    _bundle(nodes, "node-e", "table ip kube-proxy {\n\tchain services {\n")  # cut short
    code, out, err = run("diff", "--nodes", str(nodes), "-o", "json")
    assert code == 1
    d = json.loads(out)
    assert d["reference"] == "node-a"
    changed = {c["nodes"] for c in d["changes"]}
    assert changed == {"node-a -> node-b"}
    assert {c["service"] for c in d["changes"]} == {"ns2/svc2:p80"}
    assert [x["label"] for x in d["comparisons"]] == ["node-a -> node-b", "node-a -> node-c", "node-a -> node-d"]
    assert "node-e: not compared" in err


def test_the_reference_is_the_majority_not_the_first_node(tmp_path, run):
    good = (NFT / "overall-1.37.nft").read_text()
    odd, _ = _without_endpoint(tmp_path, "1.37")
    nodes = tmp_path / "snap"
    nodes.mkdir()
    _bundle(nodes, "node-a", odd.read_text())
    for n in ("node-b", "node-c"):
        _bundle(nodes, n, good)
    code, out, err = run("diff", "--nodes", str(nodes), "-o", "json")
    d = json.loads(out)
    assert code == 1 and d["reference"] == "node-b"
    assert {c["nodes"] for c in d["changes"]} == {"node-b -> node-a"}


def test_a_migration_with_a_second_node_address(run):
    """With two node addresses, the NodePort on the second one is probed too: iptables mode serves it (every
    local address), nftables mode does not (nodeport-ips holds the primary one)."""
    code, out, err = run("diff", "fixtures/nft/migration/overall.iptables-save",
                          "fixtures/nft/overall-1.37.nft", "--node-ip", "192.168.0.2", "--node-ip", "192.168.7.2", "-o", "json")
    assert code == 1, err
    c = next(c for c in json.loads(out)["changes"] if c["probe"] == "nodeport-other-address")
    assert c["dst"] == "192.168.7.2:3004" and c["origin"] == "external"
    assert {o["endpoint"] for o in c["before"]["outcomes"]} == {"10.180.0.4:80", "10.180.1.4:80"}
    assert [o["endpoint"] for o in c["after"]["outcomes"]] == [None]
    assert "nodeport-ips" in c["cause"]["explanation"]


def _without_affinity(tmp_path, kind: str):
    """ns9/svc9:p80 (session affinity, endpoints 10.180.0.9 and 10.180.1.9) with its affinity taken out, as
    kube-proxy writes the Service after sessionAffinity: None (nft classic layout, or iptables)."""
    if kind == "nft":
        src = ROOT / "fixtures/nft/overall-classic.nft"
        lines = [x for x in src.read_text().splitlines()
                 if not re.search(r"ip saddr @affinity-\S+ goto |update @affinity-", x)]
    else:
        src = ROOT / "fixtures/nft/migration/overall.iptables-save"
        lines = []
        for x in src.read_text().splitlines():
            if "-m recent --rcheck" in x:
                continue
            lines.append(re.sub(r" -m recent --set --name \S+ --mask \S+ --rsource", "", x))
    after = tmp_path / f"after-{kind}"
    after.write_text("\n".join(lines) + "\n")
    return src, after


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_returning_clients_of_a_service_with_affinity_are_their_own_source_class(kind, tmp_path, run):
    before, after = _without_affinity(tmp_path, kind)
    code, out, err = run("diff", str(before), str(after), "-o", "json", "--node-ip", "192.168.0.2")
    assert code == 1, err
    changes = json.loads(out)["changes"]
    got = {(c["service"], c["dst"], c["origin"], c["returning_to"]) for c in changes}
    # a new client's behaviour did not change (1/2 each); a returning one's did: it kept its endpoint, now it is sent
    # anywhere
    assert got == {("ns9/svc9:p80", "172.30.0.49:80", "pod", "10.180.0.9:80"),
                   ("ns9/svc9:p80", "172.30.0.49:80", "pod", "10.180.1.9:80")}
    for c in changes:
        before_ = {o["endpoint"]: o["share"] for o in c["before"]["outcomes"]}
        after_ = {o["endpoint"]: o["share"] for o in c["after"]["outcomes"]}
        assert before_ == {c["returning_to"]: "1/1"}
        assert after_ == {"10.180.0.9:80": "1/2", "10.180.1.9:80": "1/2"}
    code, out, err = run("diff", str(before), str(after), "--node-ip", "192.168.0.2")
    assert code == 1 and "returning client of 10.180.0.9:80" in out


def test_returning_clients_keep_their_endpoint_across_a_migration(run):
    code, out, err = run("diff", "fixtures/nft/migration/overall.iptables-save", "fixtures/nft/overall-classic.nft",
                         "--node-ip", "192.168.0.2", "-o", "json", "--full")
    d = json.loads(out)
    assert not [c for c in d["changes"] if c["returning_to"]], err  # affinity kept: the same endpoint on both sides
