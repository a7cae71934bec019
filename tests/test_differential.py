"""The differential suite: every fixture, and synthetic dumps with every kube-proxy feature, replayed
in real netfilter (`kptrace verify --all-services`): for every Service entry point from every origin,
the kernel must do what kptrace predicts (path, outcomes, shares within a binomial bound, masquerade,
REJECT/DROP). Needs root; CI runs it (a skip is a failure there).

Confidence per packet is 99.999% (Bonferroni over its outcomes), so the suite's hundreds of checks
are not flaky, while a real skew (a wrong probability, a missing endpoint) still fails by far.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, require_netns

from kptrace.lab.verify import packets_for_all_services, run_verify
from kptrace.load import load_dumps

CONFIDENCE = 0.99999

FIXTURE_CASES = [
    # (id, dumps, node addresses)
    ("sample-yaobank", ["samples/yaobank.rules"], ["10.240.0.11"]),
    ("sample-bootcamp", ["samples/bootcamp.rules"], ["192.168.193.172"]),
    ("sample-yaobank-modern-dual-stack", ["samples/yaobank-modern.rules", "samples/yaobank-modern.rules6"],
     ["10.240.0.11", "fd00:10:240::11"]),
    ("upstream-overall", ["upstream/TestOverallIPTablesRules.iptables-save"], ["192.168.0.2"]),
    ("upstream-bad-ips", ["upstream/TestBadIPs.iptables-save"], ["192.168.0.2"]),
    ("upstream-partial-sync-1", ["upstream/TestSyncProxyRulesRepeated-1.iptables-save"], ["192.168.0.2"]),
    ("upstream-partial-sync-9", ["upstream/TestSyncProxyRulesRepeated-9.iptables-save"], ["192.168.0.2"]),
    ("realworld-kind-1.23", ["realworld/004-kind-v1.23-traefik-kindmasq.iptables-save"], ["172.18.0.5"]),
    ("realworld-kubeadm-1.22-flannel", ["realworld/006-kubeadm-v1.22-flannel-docker-libvirt.iptables-save"], ["10.210.40.172"]),
    ("realworld-kind-no-endpoints", ["realworld/014-kind-2020-kube-dns-no-endpoints-reject.iptables-save"], ["172.18.0.5"]),
]

SYNTHETIC_CASES = [
    # (id, generate() arguments): the node is 192.168.0.2 (the generator's), or 2001:db8:100::2 for IPv6
    ("synthetic-2-endpoints-all-features", dict(services=5, endpoints=2, nodeport_every=2, affinity_every=5, local_every=3,
                                                lb_source_ranges_every=4, no_endpoints_every=5)),
    ("synthetic-5-endpoints-no-comments", dict(services=3, endpoints=5, nodeport_every=1, comments=False)),
    ("synthetic-13-endpoints", dict(services=2, endpoints=13, nodeport_every=2)),
    ("synthetic-20-endpoints", dict(services=1, endpoints=20, nodeport_every=1)),
    ("synthetic-ipv6", dict(services=3, endpoints=3, nodeport_every=2, affinity_every=3, family=6)),
]


def _check(dp) -> None:
    packets = packets_for_all_services(dp)
    assert packets, "the dump has no Service entry points"
    results = run_verify(dp, packets, confidence=CONFIDENCE)
    report = []
    for r in results:
        if r.status == "disagree":
            report.append(f"{r.label}: " + "; ".join(r.problems))
            report.extend(f"    kernel path: {step}" for step in r.kernel_path)
    assert not report, "kernel and kptrace disagree:\n" + "\n".join(report)
    assert any(r.status == "agree" for r in results)


@pytest.mark.netns
@pytest.mark.parametrize("dumps,node_ips", [pytest.param(d, n, id=i) for i, d, n in FIXTURE_CASES])
def test_fixture_agrees_with_the_kernel(dumps, node_ips):
    require_netns("iptables-nft-restore", "conntrack", "xtables-monitor", "nfacct")
    _check(load_dumps([str(FIXTURES / d) for d in dumps], node_ips=node_ips, full=True))


@pytest.mark.netns
@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in SYNTHETIC_CASES])
def test_synthetic_dump_agrees_with_the_kernel(args, tmp_path):
    require_netns("iptables-nft-restore", "conntrack", "xtables-monitor")
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gen_synthetic import generate

    path: Path = tmp_path / "node.rules"
    path.write_text("\n".join(generate(**args)) + "\n")
    node_ip = "2001:db8:100::2" if args.get("family") == 6 else "192.168.0.2"
    _check(load_dumps([str(path)], node_ips=[node_ip], full=True))


def test_every_fixture_dump_is_in_the_differential_suite():
    covered = {d for _, ds, _ in FIXTURE_CASES for d in ds}
    dumps = {str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*") if p.suffix in (".rules", ".rules6", ".iptables-save")
             and ".counters." not in p.name}
    partial = {d for d in dumps if "SyncProxyRulesRepeated" in d}
    # IPVS mode's rules send traffic into IPVS and use -m ipvs, neither of which this kernel has: the IPVS
    # fixtures are checked by their flow cases (tests/cases/flows/ipvs-node1.toml), not replayed.
    partial |= {d for d in dumps if d.startswith("ipvs/")}
    # nft/*.iptables-save is the CNI half of a mixed node (kube-proxy's half is nft): the pair is traced together
    # by tests/test_nft_flows.py against flows the kernel ran (fixtures/nft/make_nft.py --check).
    partial |= {d for d in dumps if d.startswith("nft/")}
    # edge/ dumps are replayed from their own text, each by its own test (the kernel reads the text, not kptrace's
    # model of it): test_a_comment_without_its_closing_quote_is_read_as_the_kernel_reads_it.
    partial |= {"edge/bootcamp-unterminated-quote.rules"}
    # The partial syncs are alike; two of them stand for the rest.
    assert dumps - partial <= covered, sorted(dumps - partial - covered)


@pytest.mark.netns
def test_a_comment_without_its_closing_quote_is_read_as_the_kernel_reads_it():
    """fixtures/edge/bootcamp-unterminated-quote.rules: the kernel is loaded with the file's own text, so it reads the
    line itself (the rest of the line into the comment: no --dport, no jump), and the packets of every Service, and
    one to the Service whose rule it is, go where kptrace says."""
    require_netns("iptables-nft-restore", "conntrack", "xtables-monitor", "nfacct")
    from kptrace.lab.verify import VerifyPacket
    from kptrace.tracer.defaults import plan_packet

    path = FIXTURES / "edge" / "bootcamp-unterminated-quote.rules"
    dp = load_dumps([str(path)], node_ips=["192.168.193.172"], full=True)
    assert any("a quote that nothing closes" in d.message for d in dp.diagnostics)
    broken = plan_packet(dp, "10.106.224.41", 8080)
    packets = [VerifyPacket("default/kubernetes-bootcamp-v1 (its rule's quote unclosed) from a pod", broken),
               *packets_for_all_services(dp)]
    results = run_verify(dp, packets, confidence=CONFIDENCE, restore={4: path.read_text()})
    report = [f"{r.label}: " + "; ".join(r.problems) for r in results if r.status == "disagree"]
    assert not report, "kernel and kptrace disagree:\n" + "\n".join(report)
    assert results[0].status == "agree", results[0]
