"""The comparison behind `kptrace verify`, on recorded kernel output (no root needed): parsing
xtables-monitor traces and conntrack events, and the agreement rules."""

from __future__ import annotations

from collections import Counter

from kptrace.checks.verify import compare
from kptrace.lab.netns import KernelFlow, KernelObservation, parse_conntrack, parse_trace
from kptrace.load import load_dumps
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

from conftest import CASES, FIXTURES

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
    kept = KernelObservation(Counter({KernelFlow("ACCEPT", d, False): 67 for d in ("10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.2:8080")}), 201, [])
    assert compare("x", trace, kept, _index_from(dp), egress="192.168.193.172").status == "agree"
    # With another egress address the source must change.
    r = compare("x", trace, kept, _index_from(dp), egress="192.168.193.200")
    assert r.status == "disagree"
