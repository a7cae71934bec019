"""IPVS mode as a user meets it: packet with an ipvsadm listing alone or with ipsets, svc by name
(through the cluster state) and by address, and the schedulers' choices."""

from __future__ import annotations

import json
from fractions import Fraction

from kptrace.model.ipvs import Location, RealServer, VirtualService
from kptrace.tracer.ipvs import choose

IPVS = "fixtures/ipvs/node1.ipvsadm"
IPSET = "fixtures/ipvs/node1.ipset-save"
STATE = "fixtures/ipvs/node1.cluster.json"




def _outcomes(out: str) -> list[tuple]:
    return sorted((o["dnat"], o["verdict"], o["probability_exact"]) for o in json.loads(out)["outcomes"])


def test_an_ipvsadm_listing_alone_answers_which_real_server(run):
    code, out, _ = run("packet", "--ipvs", IPVS, "--dst", "10.96.0.10:53", "--proto", "udp", "-o", "json")
    assert code == 0
    assert _outcomes(out) == [("10.244.1.2:53", "ACCEPT", "1/2"), ("10.244.2.3:53", "ACCEPT", "1/2")]
    assert any("no iptables rules given" in n for n in json.loads(out)["notes"])


def test_the_udp_and_tcp_services_on_one_address_are_apart(run):
    code, out, _ = run("packet", "--ipvs", IPVS, "--dst", "10.96.0.1:443", "-o", "json")
    assert [d for d, _, p in _outcomes(out)] == ["192.168.0.2:6443", "192.168.0.3:6443", "192.168.0.4:6443"]
    assert {p for _, _, p in _outcomes(out)} == {"1/3"}
    code, out, _ = run("packet", "--ipvs", IPVS, "--dst", "10.96.0.1:443", "--proto", "udp", "-o", "json")
    assert [d for d, _, _ in _outcomes(out)] == [None]  # no UDP virtual service there: nothing rewrites it


def test_weight_zero_is_never_chosen_and_persistence_is_shown(run):
    code, out, _ = run("packet", "--ipvs", IPVS, "--dst", "10.96.112.40:8080", "-o", "json")
    got = _outcomes(out)
    assert got == [("10.244.1.7:8080", "ACCEPT", "1/2"), ("10.244.2.9:8080", "ACCEPT", "1/2")]
    steps = [s for o in json.loads(out)["outcomes"] for s in o["path"] if s["table"] == "ipvs"]
    assert steps and all("persistent 10800 s" in s["note"] for s in steps)


def test_a_virtual_service_without_real_servers_fails_connections(run):
    code, out, _ = run("packet", "--ipvs", IPVS, "--dst", "203.0.113.10:80", "--from", "external", "-o", "json")
    [o] = json.loads(out)["outcomes"]
    assert o["verdict"] == "REJECT" and "no real servers" in o["reason"]


def test_svc_by_name_through_the_cluster_state(run):
    code, out, _ = run("svc", "kube-system/kube-dns", "--ipvs", IPVS, "--ipset", IPSET, "--cluster-state", STATE, "-o", "json")
    assert code == 0
    views = json.loads(out)["services"]
    assert sorted(v["name"] for v in views) == ["kube-system/kube-dns:dns", "kube-system/kube-dns:dns-tcp", "kube-system/kube-dns:metrics"]
    dns = next(v for v in views if v["name"] == "kube-system/kube-dns:dns")
    assert dns["protocol"] == "udp"
    assert sorted((e["address"], e["share"]) for e in dns["endpoints"]) == [("10.244.1.2:53", "1/2"), ("10.244.2.3:53", "1/2")]


def test_svc_etp_local_lb_without_local_real_servers_is_warned(run):
    code, out, _ = run("svc", "shop/web", "--ipvs", IPVS, "--cluster-state", STATE, "--node-ip", "192.168.0.2", "-o", "json")
    v = next(v for v in json.loads(out)["services"] if v["family"] == 4)
    kinds = {e["kind"] for e in v["entry_points"]}
    assert {"ClusterIP", "LoadBalancerIP", "NodePort"} <= kinds
    assert any("LoadBalancerIP" in w and "no real server" in w and "Local" in w for w in v["warnings"])
    assert v["traffic_policy"] == {"internal": "Cluster", "external": "Local"}


def test_svc_by_address_without_names(run):
    code, out, _ = run("svc", "10.96.7.3:3000", "--ipvs", IPVS, "-o", "json")
    [v] = json.loads(out)["services"]
    assert v["name"].startswith("? (TCP 10.96.7.3:3000")
    assert [e["address"] for e in v["endpoints"]] == ["10.244.1.5:3000"]


def test_svc_by_name_without_cluster_state_says_how(run):
    code, _, err = run("svc", "kube-system/kube-dns", "--ipvs", IPVS)
    assert code == 4 and "IPVS holds no Service names" in err and "--cluster-state" in err


def _rs(addr: str, weight: int) -> RealServer:
    return RealServer(addr, 80, "Masq", weight, 0, 0, Location("t", 1), "")


def _vs(sched: str, servers, flags=()) -> VirtualService:
    return VirtualService("TCP", "10.96.0.5", 80, None, sched, tuple(flags), None, None, tuple(servers), Location("t", 1), "")


def test_wrr_shares_follow_the_weights():
    got = {c.server.address: c.probability for c in choose(_vs("wrr", [_rs("10.0.0.1", 3), _rs("10.0.0.2", 1), _rs("10.0.0.3", 0)]),
                                                            "10.1.1.1", 1000)}
    assert got == {"10.0.0.1": Fraction(3, 4), "10.0.0.2": Fraction(1, 4)}


def test_least_connection_is_weight_based_and_marked_approximate():
    choices = choose(_vs("wlc", [_rs("10.0.0.1", 1), _rs("10.0.0.2", 1)]), "10.1.1.1", 1000)
    assert all(c.approximate for c in choices) and {c.probability for c in choices} == {Fraction(1, 2)}


def test_source_hashing_is_one_server_per_source_and_spreads_sources():
    vs = _vs("sh", [_rs("10.0.0.1", 1), _rs("10.0.0.2", 1)])
    picks = {}
    for i in range(1, 41):
        [c] = choose(vs, f"10.1.1.{i}", 1000)
        assert c.probability == 1 and not c.approximate
        assert choose(vs, f"10.1.1.{i}", 2000)[0].server == c.server  # the port does not count without sh-port
        picks[i] = c.server.address
    assert set(picks.values()) == {"10.0.0.1", "10.0.0.2"}


def test_source_hashing_to_a_weight_zero_server_finds_none_unless_fallback():
    vs = _vs("sh", [_rs("10.0.0.1", 1), _rs("10.0.0.2", 0)])
    sources = [f"10.1.1.{i}" for i in range(1, 60)]
    none = [s for s in sources if not choose(vs, s, 1)]
    assert none and len(none) < len(sources)  # some sources hash to the drained server's bucket
    fallback = _vs("sh", vs.real_servers, flags=("sh-fallback",))
    assert all(choose(fallback, s, 1)[0].server.address == "10.0.0.1" for s in sources)


BUNDLE = "fixtures/ipvs/bundle-node1"


def test_the_issues_three_commands_on_the_bundled_ipvs_node(run):
    # packet through iptables (marks, ipsets), IPVS and POSTROUTING
    code, out, _ = run("packet", "--dump", "fixtures/ipvs/node1.rules", "--ipvs", IPVS, "--ipset", IPSET, "--dst", "10.96.0.10:53",
                       "--proto", "udp", "--from", "node", "-o", "json")
    outcomes = json.loads(out)["outcomes"]
    assert sorted((o["dnat"], o["probability_exact"], o["masquerade"]) for o in outcomes) == [
        ("10.244.1.2:53", "1/2", True), ("10.244.2.3:53", "1/2", True)]
    # svc by name from a bundle (its cluster.json names the virtual services)
    code, out, _ = run("svc", "kube-system/kube-dns", "--bundle", BUNDLE, "-o", "json")
    assert code == 0 and len(json.loads(out)["services"]) == 3
    # drift: in sync as the kube-proxy that left eTP Local virtual services empty; current ones fall back
    code, out, _ = run("drift", "--bundle", BUNDLE, "--cluster-state", STATE, "--kube-proxy-version", "1.20", "-o", "json")
    assert code == 0 and json.loads(out)["findings"] == []
    code, out, _ = run("drift", "--bundle", BUNDLE, "--cluster-state", STATE, "-o", "json")
    assert code == 1
    assert {(f["kind"], f["endpoint"]) for f in json.loads(out)["findings"]} == {
        ("missing-endpoint", "10.244.2.11:80"), ("missing-endpoint", "10.244.2.12:80")}
