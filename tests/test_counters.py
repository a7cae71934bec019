"""Observed vs predicted shares from packet counters: counts the kernel made (real connections through the
sample's rules in a network namespace, then `iptables-save -c`), --since deltas between two snapshots,
and a skew that is significant (an endpoint starved) against one that is chance."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import FIXTURES, require_netns

from kptrace.checks.counters import chi2_sf

SUMMARY_IP = "198.19.40.210"




def _run_json(run, *args: str):
    code, out, err = run(*args)
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def _save_counters(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-save", "-c"], capture_output=True, text=True, check=True).stdout


@pytest.mark.netns
def test_counts_the_kernel_made_match_the_prediction_and_since_takes_the_difference(run, tmp_path):
    require_netns("iptables-nft-restore", "conntrack", "xtables-monitor")
    from kptrace.lab.netns import Lab

    with Lab({4: (FIXTURES / "samples" / "yaobank.rules").read_text()}, {4: ["10.240.0.11"]}) as lab:
        lab.observe(4, "198.19.21.99", SUMMARY_IP, 80, "tcp", False, 400, trace=False)
        first = tmp_path / "before.rules"
        first.write_text(_save_counters(lab.node))
        lab.observe(4, "198.19.21.99", SUMMARY_IP, 80, "tcp", False, 300, trace=False)
        second = tmp_path / "after.rules"
        second.write_text(_save_counters(lab.node))

    code, r, err = _run_json(run, "svc", "yaobank/summary", "--dump", str(first), "--node-ip", "10.240.0.11", "-o", "json")
    assert code == 0, err
    c = r["services"][0]["counters"]
    assert c["total"] == 400  # every connection the lab opened, counted by the kernel's DNAT rules
    assert sum(e["connections"] for e in c["endpoints"]) == 400
    assert {e["predicted"] for e in c["endpoints"]} == {0.5}
    assert not c["skewed"] and c["p_value"] > 0.001  # fails by chance once in a thousand runs (alpha)

    code, r, _ = _run_json(run, "svc", "yaobank/summary", "--dump", str(second), "--since", str(first), "--node-ip", "10.240.0.11", "-o", "json")
    c = r["services"][0]["counters"]
    assert c["total"] == 300 and c["since"] == str(first)
    assert not c["skewed"]


def _with_counters(text: str, counts: dict[str, int]) -> str:
    """The sample with the DNAT rules of the given endpoints holding these packet counts."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\[\d+:\d+\] (-A KUBE-SEP-\S+ .*-j DNAT --to-destination (\S+))", line)
        if m and m.group(2) in counts:
            line = f"[{counts[m.group(2)]}:{counts[m.group(2)] * 60}] {m.group(1)}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_an_endpoint_that_gets_nothing_is_a_significant_skew(run, tmp_path):
    text = (FIXTURES / "samples" / "yaobank-modern.counters.rules").read_text()
    dump = tmp_path / "starved.rules"
    dump.write_text(_with_counters(text, {"198.19.21.72:8125": 0, "198.19.22.144:8125": 200}))
    code, r, _ = _run_json(run, "svc", "yaobank/metrics-sink", "--dump", str(dump), "-o", "json", "--strict")
    c = r["services"][0]["counters"]
    assert c["skewed"] and "198.19.21.72:8125 got no connection of 200" in c["verdict"]
    assert code == 1  # --strict: a significant skew fails


def test_a_small_difference_is_chance_not_skew(run, tmp_path):
    text = (FIXTURES / "samples" / "yaobank-modern.counters.rules").read_text()
    dump = tmp_path / "chance.rules"
    dump.write_text(_with_counters(text, {"198.19.21.72:8125": 55, "198.19.22.144:8125": 45}))
    code, r, _ = _run_json(run, "svc", "yaobank/metrics-sink", "--dump", str(dump), "-o", "json")
    c = r["services"][0]["counters"]
    assert not c["skewed"] and c["p_value"] == pytest.approx(chi2_sf(1.0, 1), rel=1e-6)  # (55-50)²/50 + (45-50)²/50


def test_since_without_counters_is_a_clear_error(run):
    code, _, err = run("svc", "yaobank/summary", "--dump", "fixtures/samples/yaobank.rules", "--since", "fixtures/samples/yaobank.rules")
    assert code == 3 and "no packet counters" in err


def test_counter_reset_between_snapshots_is_said(run, tmp_path):
    text = (FIXTURES / "samples" / "yaobank-modern.counters.rules").read_text()
    before, after = tmp_path / "before.rules", tmp_path / "after.rules"
    before.write_text(_with_counters(text, {"198.19.21.72:8125": 500, "198.19.22.144:8125": 500}))
    after.write_text(_with_counters(text, {"198.19.21.72:8125": 30, "198.19.22.144:8125": 520}))
    code, r, _ = _run_json(run, "svc", "yaobank/metrics-sink", "--dump", str(after), "--since", str(before), "-o", "json")
    c = r["services"][0]["counters"]
    assert any("went down" in n for n in c["notes"])
    assert [e["connections"] for e in c["endpoints"]] == [30, 20]


def test_since_given_the_later_snapshot_takes_the_growth_the_other_way(run, tmp_path):
    # the issue's own example reads "--dump before.rules --since after.rules"
    text = (FIXTURES / "samples" / "yaobank-modern.counters.rules").read_text()
    before, after = tmp_path / "before.rules", tmp_path / "after.rules"
    before.write_text(_with_counters(text, {"198.19.21.72:8125": 100, "198.19.22.144:8125": 100}))
    after.write_text(_with_counters(text, {"198.19.21.72:8125": 160, "198.19.22.144:8125": 150}))
    code, r, _ = _run_json(run, "svc", "yaobank/metrics-sink", "--dump", str(before), "--since", str(after), "-o", "json")
    c = r["services"][0]["counters"]
    assert [e["connections"] for e in c["endpoints"]] == [60, 50] and c["total"] == 110
    assert any("later one" in n for n in c["notes"])


def test_rounded_counts_of_a_listing_without_x_are_shown_not_judged(run, tmp_path):
    text = (FIXTURES / "listings" / "yaobank-modern" / "nat.L-n-v.txt").read_text().splitlines()
    for i, line in enumerate(text):
        if "DNAT" in line and "to:198.19.22.144:8125" in line:
            text[i] = line.replace("    0     0 DNAT", " 300K   18M DNAT", 1)
        if "DNAT" in line and "to:198.19.21.72:8125" in line:
            text[i] = line.replace("    0     0 DNAT", " 200K   12M DNAT", 1)
    listing = tmp_path / "nat.txt"
    listing.write_text("\n".join(text) + "\n")
    code, r, err = _run_json(run, "svc", "yaobank/metrics-sink", "--dump", str(listing), "-o", "json")
    assert code == 0, err
    c = r["services"][0]["counters"]
    assert [e["connections"] for e in c["endpoints"]] == [200000, 300000]
    assert not c["skewed"] and any("rounded" in n for n in c["notes"])  # 40/60 would be "significant" if exact
