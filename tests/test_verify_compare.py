"""The comparison behind `kptrace verify`, on recorded kernel output (no root needed): parsing
xtables-monitor and nft monitor traces and conntrack events, and the agreement rules."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from conftest import CASES, FIXTURES

from kptrace.checks.verify import compare
from kptrace.lab.kernel_text import parse_conntrack, parse_nft_trace, parse_trace, trace_ended
from kptrace.load import load_dumps
from kptrace.model.kernel import KernelFlow, KernelObservation
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

BOOTCAMP = str(FIXTURES / "samples" / "bootcamp.rules")


def _trace(origin=Origin.POD, src="10.244.255.254"):
    dp = load_dumps([BOOTCAMP], node_ips=["192.168.193.172"])
    return dp, trace_packet(dp, plan_packet(dp, "10.106.224.41", 8080, origin=origin, src=src))


def _index_from(dp):
    def lookup(table, chain, text):
        c = dp.rulesets[4].chain(table, chain)
        for i, r in enumerate(c.rules):
            if " ".join(r.text.split()) == " ".join(text.split()):
                return i + 1
        return text
    return lookup


def test_parse_trace_keeps_the_first_packet_and_drops_the_trace_rule():
    path = parse_trace((CASES / "verify" / "xtables-monitor-trace.txt").read_text())
    assert path[0] == ("raw", "PREROUTING", "policy ACCEPT")
    assert ("nat", "KUBE-SEP-FTIQ6MSD3LWO5HZX", "-A KUBE-SEP-FTIQ6MSD3LWO5HZX -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080") in path
    assert not any("TRACE" in text for _, _, text in path)
    assert path[-1] == ("nat", "POSTROUTING", "policy ACCEPT") and len([p for p in path if p[1] == "POSTROUTING"]) == 4


def test_parse_conntrack_reads_nat_and_source_rewrites():
    text = (CASES / "verify" / "conntrack-events.txt").read_text()
    flows = parse_conntrack(text, "10.244.255.254", "10.106.224.41", 8080, range(20000, 20010), 4)
    assert flows == [KernelFlow("ACCEPT", "10.244.1.2:8080", False), KernelFlow("ACCEPT", "10.244.2.2:8080", False),
                     KernelFlow("ACCEPT", "10.244.1.3:8080", True)]  # the node's own connection and the probe are left out


def test_compare_agrees_with_a_kernel_that_did_what_was_predicted():
    dp, trace = _trace()
    path = parse_trace((CASES / "verify" / "xtables-monitor-trace.txt").read_text())
    obs = KernelObservation(Counter({KernelFlow("ACCEPT", "10.244.1.2:8080", False): 68,
                                     KernelFlow("ACCEPT", "10.244.1.3:8080", False): 64,
                                     KernelFlow("ACCEPT", "10.244.2.2:8080", False): 68}), 200, path)
    r = compare("x", trace, obs, _index_from(dp), tables=set(dp.rulesets[4].tables))
    assert r.status == "agree", r.problems
    assert r.path_ok is True


def test_compare_finds_a_skewed_share():
    dp, trace = _trace()
    obs = KernelObservation(Counter({KernelFlow("ACCEPT", "10.244.1.2:8080", False): 150,
                                     KernelFlow("ACCEPT", "10.244.1.3:8080", False): 25,
                                     KernelFlow("ACCEPT", "10.244.2.2:8080", False): 25}), 200, [])
    r = compare("x", trace, obs, _index_from(dp))
    assert r.status == "disagree"
    assert any("10.244.1.2:8080: 150 of 200" in p for p in r.problems)


def test_compare_finds_an_unpredicted_outcome_and_a_wrong_path():
    dp, trace = _trace()
    path = parse_trace((CASES / "verify" / "xtables-monitor-trace.txt").read_text())[:-3]  # POSTROUTING cut off
    obs = KernelObservation(Counter({KernelFlow("REJECT", None, False): 200}), 200, path)
    r = compare("x", trace, obs, _index_from(dp), tables=set(dp.rulesets[4].tables))
    assert r.status == "disagree" and r.path_ok is False
    assert any("did not predict: REJECT" in p for p in r.problems)


def test_compare_masquerade_must_match():
    dp, trace = _trace(Origin.NODE, "192.168.193.172")
    # From the node through eth0 (whose address the connection already has), masquerading keeps the
    # source: the kernel records no rewrite.
    kept = KernelObservation(Counter({KernelFlow("ACCEPT", d, False): 67
                                      for d in ("10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.2:8080")}), 201, [])
    assert compare("x", trace, kept, _index_from(dp), egress="192.168.193.172").status == "agree"
    # With another egress address the source must change.
    r = compare("x", trace, kept, _index_from(dp), egress="192.168.193.200")
    assert r.status == "disagree"


# ---------------------------------------------------------------- nftables: nft monitor trace, rules by handle

NFT_TRACE = CASES / "verify" / "nft-monitor-trace.txt"  # the probe 10.0.1.2 -> 172.30.0.42:80 in a lab of overall-classic
NFT_LAB = CASES / "verify" / "nft-lab-ruleset.json"  # `nft -j list ruleset` of that lab: the handles the kernel gave


def _nft_case(form: str):
    from kptrace.lab.kernel_text import kernel_handles
    from kptrace.lab.verify import _nft_rule_index
    from kptrace.tracer.defaults import PacketPlan

    dp = load_dumps([str(FIXTURES / "nft" / f"overall-classic{form}")], node_ips=["192.168.0.2"], full=True)
    p = plan_packet(dp, "172.30.0.42", 80, src="10.0.1.2", origin=Origin.POD).packet
    packet = type(p)(p.src, p.dst, p.dport, p.proto, p.sport, p.origin, "cl0", "eth0")  # the lab's interfaces
    trace = trace_packet(dp, PacketPlan(packet, (), ()))
    model_table, lookup = _nft_rule_index(dp, 4, kernel_handles(NFT_LAB.read_text()))
    path = [(model_table(t), c, r) for t, c, r in parse_nft_trace(NFT_TRACE.read_text())]
    return dp, trace, path, lookup


def test_parse_nft_trace_keeps_the_first_packet_by_handle_and_leaves_out_the_lab_table():
    path = parse_nft_trace(NFT_TRACE.read_text())
    assert path[0] == ("ip kube-proxy", "filter-prerouting-pre-dnat", 65)
    assert path[1] == ("ip kube-proxy", "filter-prerouting-pre-dnat", "policy ACCEPT")
    assert ("ip kube-proxy", "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80", 95) in path
    assert not any(t.startswith("inet kptrace") for t, _, _ in path)
    assert path[-1] == ("ip kube-proxy", "nat-postrouting", "policy ACCEPT")
    lines = NFT_TRACE.read_text().splitlines()
    assert trace_ended(lines) and not trace_ended(lines[:-3])  # ends at the lab's postrouting-end chain


def test_parse_nft_trace_of_a_second_packet_and_without_handles():
    text = NFT_TRACE.read_text()
    second = text.replace("ac58b99a", "0badf00d")
    assert parse_nft_trace(text + second) == parse_nft_trace(text)
    assert parse_nft_trace(re.sub(r" # handle \d+", "", text)) == []  # `nft monitor trace` without -a: no usable path


@pytest.mark.parametrize("form", [".knft", ".json", ".handles.nft"])
def test_compare_maps_the_kernels_handles_to_the_model_rules(form):
    # The model's own handles (JSON, nft -a) are not the lab kernel's: rules are found by their place in the chain.
    dp, trace, path, lookup = _nft_case(form)
    obs = KernelObservation(Counter({KernelFlow("ACCEPT", "10.180.0.2:80", False): 97,
                                     KernelFlow("ACCEPT", "10.180.1.2:80", False): 103}), 200, path,
                            tracer="nft monitor trace")
    tables = {"ip kube-proxy"}
    r = compare("x", trace, obs, lookup, tables=tables)
    assert r.status == "agree", r.problems
    assert r.path_ok is True
    assert ("ip kube-proxy", "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80", 2) in r.kernel_path
    # A path the kernel took to the other endpoint's chain is not one kptrace predicted for this rule order.
    wrong = [(t, c, 94 if r_ == 95 else r_) for t, c, r_ in path]
    assert compare("x", trace, KernelObservation(obs.flows, 200, wrong, tracer="nft monitor trace"), lookup,
                   tables=tables).path_ok is False


def test_compare_nft_masquerade_fully_random_from_the_node():
    # `masquerade fully-random` picks a new source port even when the address stays: conntrack may or may not
    # record a rewrite for the node's own connection.
    dp = load_dumps([str(FIXTURES / "nft" / "overall-classic.knft")], node_ips=["192.168.0.2"], full=True)
    trace = trace_packet(dp, plan_packet(dp, "172.30.0.41", 80, src="192.168.0.2", origin=Origin.NODE))
    obs = KernelObservation(Counter({KernelFlow("ACCEPT", "10.180.0.1:80", True): 30}), 30, [], tracer="nft monitor trace")
    r = compare("x", trace, obs, lambda *a: None, egress="192.168.0.2")
    assert r.status == "agree", r.problems
    assert "nft monitor trace gave no usable trace" in " ".join(r.notes)


def test_docstring_examples_of_the_lab():
    import doctest

    import kptrace.lab.kernel_text

    result = doctest.testmod(kptrace.lab.kernel_text)
    assert result.attempted > 0 and result.failed == 0


def test_compare_a_path_through_a_rule_the_lab_cannot_load_is_unverifiable():
    # nft -j shows iptables-nft's `-m comment ... -j CNI-FORWARD` as `xt match comment`: kptrace takes it (a comment
    # matches everything), nft cannot load it, so the lab's FORWARD drops what kptrace predicts accepted.
    from kptrace.lab.verify import _omitted

    dp = load_dumps([str(FIXTURES / "nft" / "mixed-1.37.json")], node_ips=["192.168.0.2"], full=True)
    trace = trace_packet(dp, plan_packet(dp, "172.30.0.42", 80, src="10.0.1.2", origin=Origin.POD))
    obs = KernelObservation(Counter({KernelFlow("DROP", None, False): 30}), 30, [], tracer="nft monitor trace")
    r = compare("x", trace, obs, lambda *a: None, omitted=_omitted(dp))
    assert r.status == "unverifiable" and "xt expression" in r.problems[0]
    assert compare("x", trace, obs, lambda *a: None).status == "disagree"
