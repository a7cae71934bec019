"""Stale conntrack entries against the rules (hand-made entries over the nft overall fixture; the kernel-made
tables are in tests/test_stale_kernel.py): an entry is stale when the endpoint it still goes to is not one
the entry point leads to now from the entry's origin; UDP and unreplied flows are blackholed; a deleted
Service's ClusterIP is told by the Service CIDR nftables mode writes; a `conntrack -D` clears each group."""

from __future__ import annotations

import pytest
from conftest import ROOT

from kptrace.checks.stale import delete_command, find_stale
from kptrace.load import load_dumps
from kptrace.model.conntrack import ConntrackEntry


def E(proto, src, sport, dst, dport, rsrc, rsport, state=None, flags=(), line=1):
    return ConntrackEntry(6 if ":" in src else 4, proto, state, 30, src, dst, sport, dport, rsrc, src, rsport, sport, flags,
                          source="test", line=line)


ENTRIES = [
    E("udp", "10.0.1.2", 40000, "172.30.0.52", 53, "10.180.9.9", 53, line=1),  # endpoint gone: stale, blackholed
    E("udp", "10.0.1.2", 40001, "172.30.0.52", 53, "10.180.0.12", 53, line=2),  # a current endpoint: fine
    E("tcp", "10.0.1.2", 40002, "172.30.0.42", 80, "10.180.7.7", 80, "ESTABLISHED", ("ASSURED",), line=3),  # old TCP
    E("tcp", "10.0.1.2", 40003, "172.30.0.99", 80, "10.180.5.5", 80, "SYN_SENT", ("UNREPLIED",), line=4),  # deleted Service
    E("tcp", "10.0.1.2", 40004, "8.8.8.8", 443, "8.8.8.8", 443, "ESTABLISHED", line=5),  # not DNATed: not a Service flow
    E("tcp", "203.0.113.2", 40005, "192.168.0.2", 3004, "10.180.0.4", 80, "ESTABLISHED", line=6),  # NodePort, current
    E("tcp", "203.0.113.2", 40006, "192.168.0.2", 3004, "10.180.3.3", 80, "SYN_SENT", ("UNREPLIED",), line=7),  # NodePort, gone
]


@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_stale_entries_are_the_ones_the_rules_no_longer_explain(layout):
    dp = load_dumps([str(ROOT / f"fixtures/nft/overall-{layout}.nft")])
    r = find_stale(dp, iter(ENTRIES))
    assert r.entries == 7 and r.service_entries == 6
    got = {s.entry.line: (s.service, s.endpoint, s.blackholed) for s in r.stale}
    assert got == {
        1: ("ns12/svc12:dns", "10.180.9.9:53", True),
        3: ("ns2/svc2:p80", "10.180.7.7:80", False),
        4: (None, "10.180.5.5:80", True),
        7: ("ns4/svc4:p80", "10.180.3.3:80", True),
    }
    one = next(s for s in r.stale if s.entry.line == 1)
    assert one.now == ("10.180.0.12:53", "10.180.1.12:53")
    assert delete_command(one) == "conntrack -D -p udp --orig-dst 172.30.0.52 --orig-port-dst 53 --reply-src 10.180.9.9 --reply-port-src 53"
    by = r.by_service()
    assert by["ns12/svc12:dns"]["stale"] == 1 and by["ns12/svc12:dns"]["blackholed"] == 1


def test_the_api_can_make_an_entry_stale_that_the_rules_still_explain():
    dp = load_dumps([str(ROOT / "fixtures/nft/overall-classic.nft")])
    ok = E("udp", "10.0.1.2", 40001, "172.30.0.52", 53, "10.180.0.12", 53)
    r = find_stale(dp, [ok], expected={"ns12/svc12:dns": {"10.180.1.12:53"}})
    assert [s.reason for s in r.stale] == ["10.180.0.12:53 is still in the node's rules but not an endpoint of ns12/svc12:dns "
                                          "in the API (the rules are behind)"]


def test_without_a_service_cidr_other_dnat_is_only_counted():
    dp = load_dumps([str(ROOT / "fixtures/samples/yaobank-modern.rules")], node_ips=["10.240.0.11"])
    other = E("tcp", "10.0.1.2", 40003, "10.96.9.9", 80, "198.19.5.5", 80, "ESTABLISHED")
    r = find_stale(dp, [other])
    assert r.stale == [] and "give --service-cidr" in r.notes[0]
    r = find_stale(dp, [other], service_cidrs=["10.96.0.0/12"])
    assert [s.service for s in r.stale] == [None]
